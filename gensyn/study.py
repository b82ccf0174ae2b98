"""The study's shared facts: the five findings, the sampling arms and their names.

One module that the science packages (classify, data), the report and tracking import, so a
finding or an arm is spelt in one place. Plain Python: no config, no run folders.
"""

from __future__ import annotations

from enum import Enum

#: The five findings every classifier predicts, in the order of every label table's columns.
FINDINGS = ("Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia")


class SyntheticSource(Enum):
    """Where a sampling arm's added images come from (``sampling.source``)."""

    none = "none"  # baseline: real images only
    drr = "drr"  # stage drr's manifest
    synthex = "synthex"  # stage gan_translate's manifest (DRRs translated to the real domain)


#: The sources' names, in that order.
SOURCES = tuple(s.value for s in SyntheticSource)
#: The original study's nine arms, as names of options of the ``sampling`` group.
THESIS_ARMS = (
    "none",
    "drr_1",
    "drr_2",
    "drr_5",
    "drr_10",
    "synthex_1",
    "synthex_2",
    "synthex_5",
    "synthex_10",
)


def check_arm(source: str, views_per_ct: int, max_views: int | None = None) -> None:
    """Raise ValueError for an unknown source or an impossible number of views."""
    if source not in SOURCES:
        raise ValueError(f"sampling.source must be one of {SOURCES}, got {source!r}")
    if views_per_ct < 1:
        raise ValueError(f"sampling.views_per_ct must be >= 1, got {views_per_ct}")
    if max_views is not None and views_per_ct > max_views:
        raise ValueError(
            f"sampling.views_per_ct={views_per_ct} but the CTs have at most {max_views} views "
            "(centre + angled) in the upstream manifest"
        )


def arm_name(source: str, views_per_ct: int) -> str:
    """A readable, unique arm name: ``baseline``, ``drr_5``, ``synthex_10`` ..."""
    check_arm(source, views_per_ct)
    return "baseline" if source == "none" else f"{source}_{views_per_ct}"


def parse_arm(option: str) -> tuple[str, int]:
    """``(source, views_per_ct)`` of a ``sampling`` option name: none, drr, drr_5, synthex_10 ..."""
    source, _, views = option.partition("_")
    try:
        n = int(views) if views else 1
    except ValueError:
        raise ValueError(f"unknown sampling arm {option!r}; e.g. none, drr_5, synthex_10") from None
    check_arm(source, n)
    return source, n
