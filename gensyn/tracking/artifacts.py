"""Which files of a finished run folder become W&B artifacts (``logger.artifacts``).

Two kinds:

* ``checkpoints``: the final weights a stage leaves at the top of its run folder (model
  files: ``best.keras`` of ``classify``, ``generator_a2b.pt`` / ``generator_b2a.pt`` of
  ``gan_train``). Resume state (``checkpoint.*``, files in sub-folders such as ``train/``) is
  not final and is left out.
* ``report``: the pages a stage lists in ``summary["reports"]`` (each ``.html`` with its
  ``.md`` twin) and the figures it lists in ``summary["figures"]``, for stages that write a
  report (``report``, ``reader_study_analyze``, ``carbon_summary``).

Paths in ``summary`` are relative to the run folder, as stages write them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gensyn.base.errors import GensynError

ARTIFACT_KINDS = ("checkpoints", "report")
#: The W&B artifact type of each kind.
ARTIFACT_TYPES = {"checkpoints": "model", "report": "report"}
#: Suffixes of model weight files (Keras, PyTorch, safetensors, HDF5).
MODEL_SUFFIXES = frozenset({".keras", ".pt", ".pth", ".safetensors", ".h5"})
#: Prefix of resume state files, which are not final weights.
RESUME_PREFIX = "checkpoint"


def artifact_kinds(value: Any) -> tuple[str, ...]:
    """``logger.artifacts`` as a tuple of kinds.

    ``false`` / ``null`` / ``[]``: none; ``true`` or ``all``: every kind; a kind or a list of
    kinds: those. Anything else is a GensynError naming the allowed values.
    """
    if value is None or value is False:
        return ()
    if value is True:
        return ARTIFACT_KINDS
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise GensynError(_bad_value(value))
    if "all" in names:
        return ARTIFACT_KINDS
    unknown = [n for n in names if n not in ARTIFACT_KINDS]
    if unknown:
        raise GensynError(_bad_value(value))
    return tuple(k for k in ARTIFACT_KINDS if k in names)


def _bad_value(value: Any) -> str:
    return (
        f"logger.artifacts={value!r}; allowed: false, true, all, one of "
        f"{', '.join(ARTIFACT_KINDS)}, or a list of them (e.g. logger.artifacts=[report])"
    )


def checkpoint_files(out_dir: Path) -> list[Path]:
    """The final model files at the top of run folder ``out_dir`` (resume state left out)."""
    return sorted(
        p
        for p in Path(out_dir).iterdir()
        if p.is_file()
        and p.suffix in MODEL_SUFFIXES
        and not p.name.startswith((RESUME_PREFIX, "."))
    )


def report_files(out_dir: Path, summary: Mapping[str, Any]) -> list[Path]:
    """The report pages (HTML and Markdown) and figures a run lists in its ``summary``.

    Empty for a run that lists no report: its figures alone are no report.
    """
    out = Path(out_dir)
    pages = list(_listed(summary.get("reports")))
    if not pages:
        return []
    files: list[Path] = []
    for page in pages:
        files += [out / Path(page).with_suffix(s) for s in (".html", ".md")]
    files += [out / fig for fig in _listed(summary.get("figures"))]
    unique = dict.fromkeys(p for p in files if p.is_file() and _inside(p, out))
    return list(unique)


def artifact_files(kind: str, out_dir: Path, summary: Mapping[str, Any]) -> list[Path]:
    """The files of artifact ``kind`` (one of :data:`ARTIFACT_KINDS`) in run folder ``out_dir``."""
    if kind == "checkpoints":
        return checkpoint_files(out_dir)
    if kind == "report":
        return report_files(out_dir, summary)
    raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {kind!r}")


def _listed(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or ()]


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())
