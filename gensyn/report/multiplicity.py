"""Multiple comparisons: one declared primary comparison, Holm within declared families.

A grid of 8 arms × 6 AUCs (5 findings and the macro) × 2 test sets makes 96 comparisons with
the baseline; at p < 0.05 several would be "significant" by chance alone. The report therefore

* declares one **primary** comparison before looking (``report.primary``: by default the
  macro AUC of the largest SyntheX arm against the baseline on the external test set) and
  reports its p-value unadjusted;
* groups every other comparison into a **family** and adjusts its p-values with Holm's
  step-down method (Holm 1979), which controls the family-wise error rate at 5 % under any
  dependence between the tests:

  - ``macro, <test set>``: the macro-AUC comparisons of the other arms on one test set;
  - ``per finding, <test set>, <arm>``: one arm's per-finding comparisons on one test set.

Stars in the report mark adjusted p < 0.05 only; :func:`format_p` prints every p-value of the
report, never rounding one across 0.05 or 0.01.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PRIMARY_FAMILY = "primary"


@dataclass
class PrimaryComparison:
    """The comparison a study declares as its primary question (``report.primary``).

    ``metric``: ``macro`` or a finding; ``test_set``: ``external`` (the first of
    ``report.test_datasets`` that was predicted), ``internal`` (the training data set's own
    held-out images) or a test set's name; ``arm``: a ``sampling`` option (``synthex_10``).
    An arm or test set that is not in the grid is replaced by the nearest one there (the
    largest arm of the same source, else of SyntheX, then DRR), and the report says so.
    """

    metric: str = "macro"
    test_set: str = "external"
    arm: str = "synthex_10"


@dataclass(frozen=True)
class ResolvedPrimary:
    """The primary comparison as taken: test set and arm names of the report, and why."""

    metric: str
    test_set: str
    arm: str
    note: str = ""  # non-empty when the declared arm or test set was not in the grid

    def describe(self, baseline: str) -> str:
        """E.g. 'macro AUC, synthex_10 vs baseline on chestxray14'."""
        metric = "macro AUC" if self.metric == "macro" else f"{self.metric} AUC"
        return f"{metric}, {self.arm} vs {baseline} on {self.test_set}"


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN stays NaN and is not counted as a test.

    With the m finite p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max over k <= i of min(1, (m - k + 1) · p_(k)) (Holm 1979), in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    values = p[finite]
    m = values.size
    if m:
        order = np.argsort(values, kind="mergesort")
        stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * values[order]))
        adjusted = np.empty(m)
        adjusted[order] = stepped
        out[finite] = adjusted
    return out


def _pick_arm(arms: pd.DataFrame, wanted: str) -> str:
    """``wanted`` if compared, else the largest arm of its source, else of synthex, then drr."""
    if wanted in set(arms["arm"]):
        return wanted
    source = wanted.rpartition("_")[0] or wanted
    for src in (source, "synthex", "drr"):
        same = arms[arms["source"] == src]
        if len(same):
            return str(same.sort_values("views_per_ct")["arm"].iloc[-1])
    return str(arms.sort_values("views_per_ct")["arm"].iloc[-1])


def resolve_primary(
    summary: pd.DataFrame,
    declared: PrimaryComparison,
    external_test_sets: Sequence[str] = (),
    internal_test_set: str | None = None,
) -> ResolvedPrimary | None:
    """The declared primary comparison, or the nearest one the grid has (None if no comparison).

    ``summary``: the long table (``test_set, arm, source, views_per_ct, class, vs_baseline``);
    rows with ``vs_baseline`` true are comparisons with the baseline.
    """
    compared = summary[summary["vs_baseline"].astype(bool)]
    if compared.empty:
        return None
    classes = set(summary["class"])
    if declared.metric not in classes:
        raise ValueError(
            f"report.primary.metric={declared.metric!r} is not a finding of this report; "
            f"allowed: {sorted(classes)}"
        )
    present = list(dict.fromkeys(compared["test_set"]))
    externals = [t for t in external_test_sets if t in present]
    notes = []
    if declared.test_set == "external":
        test_set = externals[0] if externals else (internal_test_set or present[0])
        if not externals:
            notes.append("no external test set was predicted")
    elif declared.test_set == "internal":
        test_set = internal_test_set if internal_test_set in present else present[0]
    elif declared.test_set in present:
        test_set = declared.test_set
    else:
        test_set = externals[0] if externals else (internal_test_set or present[0])
        notes.append(f"test set {declared.test_set!r} was not predicted")
    if test_set not in present:
        test_set = present[0]
    arms = compared[compared["test_set"] == test_set].drop_duplicates("arm")
    arm = _pick_arm(arms, declared.arm)
    if arm != declared.arm:
        notes.append(f"arm {declared.arm!r} is not in the grid")
    note = ""
    if notes:
        note = (
            f"The declared primary comparison (report.primary: {declared.metric}, "
            f"{declared.test_set}, {declared.arm}) is not in this grid ({'; '.join(notes)}): "
            f"{arm} on {test_set} was taken as primary."
        )
    return ResolvedPrimary(declared.metric, test_set, arm, note)


def assign_families(
    summary: pd.DataFrame, primary: ResolvedPrimary | None, macro: str = "macro"
) -> pd.DataFrame:
    """``summary`` with ``primary`` (bool), ``family`` and ``p_adjusted`` (Holm in family).

    Comparison rows are those with ``vs_baseline`` true (a NaN p-value, e.g. of a finding
    without a positive case, is listed in its family but not counted as a test); other rows
    get family "" and p_adjusted NaN.
    """
    out = summary.copy()
    is_cmp = out["vs_baseline"].astype(bool)
    is_primary = pd.Series(False, index=out.index)
    if primary is not None:
        is_primary = (
            is_cmp
            & (out["test_set"] == primary.test_set)
            & (out["arm"] == primary.arm)
            & (out["class"] == primary.metric)
        )
    family = np.where(
        out["class"] == macro,
        "macro, " + out["test_set"].astype(str),
        "per finding, " + out["test_set"].astype(str) + ", " + out["arm"].astype(str),
    )
    family = np.where(is_primary, PRIMARY_FAMILY, family)
    out["family"] = np.where(is_cmp, family, "")
    out["primary"] = is_primary.to_numpy()
    out["p_adjusted"] = np.nan
    for name, rows in out[is_cmp].groupby("family", sort=False):
        p = rows["p_value"].to_numpy(dtype=np.float64)
        out.loc[rows.index, "p_adjusted"] = p if name == PRIMARY_FAMILY else holm_adjust(p)
    return out


#: Thresholds a printed p-value never crosses by rounding.
P_THRESHOLDS = (0.05, 0.01)


def format_p(p: float) -> str:
    """A p-value as printed: 'p < 0.001', 'p = 0.31', 'p = 0.0496', 'p = n/a' for NaN.

    Two significant digits from 0.1 up, three below, and more where rounding would carry the
    value across 0.05 or 0.01 (0.04996 prints as 0.04996, never as 0.050).
    """
    if not np.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    digits = 2 if p >= 0.1 else 3
    text = f"{p:.{digits}g}"
    while digits < 8 and any((p < t) != (float(text) < t) for t in P_THRESHOLDS):
        digits += 1
        text = f"{p:.{digits}g}"
    return f"p = {text}"
