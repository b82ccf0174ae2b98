"""The common label table every source is read into, and checks shared by the readers.

Common columns (:data:`COMMON_COLUMNS`): ``source``, ``image_id``, ``patient_id``, ``view``
(``PA``, ``AP``, ``LATERAL``, ``CT`` or the source's own word), ``frontal`` (bool),
``relpath`` (path of the image below the data set's image root), the five study labels
:data:`STUDY_LABELS` as 0/1 (NaN = unknown), and ``labels``: every original finding of the
row, joined by ``|`` in the source's own words. X-ray tables: :mod:`gensyn.data.xray.labels`;
CT tables: :mod:`gensyn.data.ct.labels`.
"""

from __future__ import annotations

import os

import pandas as pd

from gensyn.study import FINDINGS

__all__ = ["COMMON_COLUMNS", "STUDY_LABELS", "folder_findings", "require_columns", "zero_one"]

STUDY_LABELS = FINDINGS  # the study's five findings (gensyn.study), in their order


COMMON_COLUMNS = (
    "source",
    "image_id",
    "patient_id",
    "view",
    "frontal",
    "relpath",
    *STUDY_LABELS,
    "labels",
)


def require_columns(
    table: pd.DataFrame, columns: tuple[str, ...], path: str | os.PathLike[str], what: str
) -> None:
    """A ValueError naming ``path`` and the missing columns when ``table`` lacks any of them."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: not a {what} label table; missing columns {missing} "
            f"(has {list(table.columns)[:12]})"
        )


def folder_findings(raw: pd.DataFrame, path: str | os.PathLike[str]) -> dict[str, str]:
    """Study label -> its column in a user's table (case-insensitive); a column that nearly
    spells a finding (``Efusion``) is an error, not an unknown finding."""
    import difflib

    by_lower = {str(c).strip().lower(): str(c) for c in raw.columns}
    columns = {k: by_lower[k.lower()] for k in STUDY_LABELS if k.lower() in by_lower}
    known = {c.lower() for c in (*columns.values(), *COMMON_COLUMNS, "path", "ct_id")}
    for col in raw.columns:
        if str(col).lower() in known:
            continue
        lower = [k.lower() for k in STUDY_LABELS]
        close = difflib.get_close_matches(str(col).lower(), lower, n=1, cutoff=0.85)
        if close:
            name = next(k for k in STUDY_LABELS if k.lower() == close[0])
            raise ValueError(f"{path}: column {col!r} is not a finding; did you mean {name!r}?")
    return columns


def zero_one(
    raw: pd.DataFrame, column: str, path: str | os.PathLike[str], allow_empty: bool
) -> pd.Series:
    """``raw[column]`` as numbers 0/1 (empty = NaN when ``allow_empty``); else a ValueError
    naming the first bad row."""
    values = pd.to_numeric(raw[column].str.strip(), errors="coerce")  # "" -> NaN
    bad = ~values.isin([0, 1]) & (raw[column].str.strip().ne("") | (not allow_empty))
    if bad.any():
        row = int(bad.to_numpy().argmax())
        what = "0 or 1" + (" (empty = unknown)" if allow_empty else "")
        raise ValueError(
            f"{path}: column {column!r} must hold {what}; row {row + 2} has "
            f"{raw[column].iloc[row]!r}"
        )
    return values
