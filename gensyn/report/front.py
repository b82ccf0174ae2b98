"""The pipeline report's front page: the answer first, then where the details are.

From the classification report's summary table (``auc_summary.csv``, one row per test set,
arm and finding, see :mod:`gensyn.report.render`) it writes: one headline sentence per
test set, a forest plot of Δ macro AUC (arm − baseline) with its CI, a heatmap of the
per-finding Δ with the same CIs, and a compact table; the page then links the detailed
report relative to itself. Reads ``p_value`` where the summary has it, else ``p_bootstrap``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gensyn.report import plots
from gensyn.report.multiplicity import format_p
from gensyn.report.page import Page
from gensyn.report.sweep import p_column


def headline_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Macro rows of the arms compared with the baseline: ``test_set, arm, n_models, auc_mean,
    ci_low, ci_high, delta, delta_ci_low, delta_ci_high, p`` in the summary's order."""
    macro = summary[(summary["class"] == "macro") & summary["delta"].notna()]
    p_col = p_column(summary)
    cols = ["test_set", "arm", "n_models", "auc_mean", "ci_low", "ci_high", "delta",
            "delta_ci_low", "delta_ci_high"]  # fmt: skip
    rows = macro[cols].reset_index(drop=True)
    return rows.assign(p=macro[p_col].to_numpy() if p_col else np.nan)


def baseline_row(summary: pd.DataFrame, test_set: str) -> pd.Series | None:
    """The baseline's macro row of ``test_set`` (the arm with no Δ), or None."""
    rows = summary[
        (summary["class"] == "macro") & (summary["test_set"] == test_set) & summary["delta"].isna()
    ]
    return rows.iloc[0] if len(rows) else None


def headline_sentence(summary: pd.DataFrame, test_set: str, level: float = 0.95) -> str:
    """'demo: baseline macro AUC 0.812 [0.75, 0.86]; drr_1 +0.012 [−0.030, +0.050] ...'."""
    pct = f"{level:.0%}"
    base = baseline_row(summary, test_set)
    rows = headline_rows(summary)
    rows = rows[rows["test_set"] == test_set]
    head = f"Test set {test_set}: "
    if base is not None:
        head += (
            f"{base['arm']} macro AUC {base['auc_mean']:.3f} "
            f"[{base['ci_low']:.3f}, {base['ci_high']:.3f}]"
        )
    parts = []
    for arm, d, lo, hi in zip(rows["arm"], rows["delta"], rows["delta_ci_low"],
                              rows["delta_ci_high"], strict=True):  # fmt: skip
        word = "better" if lo > 0 else "worse" if hi < 0 else "no clear change"
        parts.append(f"{arm} {d:+.3f} [{lo:+.3f}, {hi:+.3f}] ({word})")
    tail = "; Δ macro AUC vs baseline (" + pct + " CI): " + ", ".join(parts) if parts else ""
    return head + tail + "."


def models_note(summary: pd.DataFrame) -> str:
    """How many models the intervals rest on, and what they vary."""
    n = int(summary["n_models"].max()) if "n_models" in summary else 1
    if n <= 1:
        return (
            "One trained model per arm (one fold): the intervals vary the test patients only, "
            "not the training; the study's 5 folds (split_idx=0,1,2,3,4 -m) give the full answer."
        )
    return f"Up to {n} trained models per arm (folds × seeds); see the detailed report's tests."


def add_front_page(
    page: Page,
    summary: pd.DataFrame,
    fig_dir: Path,
    detailed: Path | None = None,
    level: float = 0.95,
) -> None:
    """Add the answer to ``page``: headline, forest plot, per-finding heatmap, table, link.

    ``summary``: the classification report's long summary table; figures are written into
    ``fig_dir``; ``detailed``: the detailed report page, linked relative to the page.
    """
    pct = f"{level:.0%}"
    rows = headline_rows(summary)
    classes = [c for c in dict.fromkeys(summary["class"]) if c != "macro"]
    page.heading("Do synthetic images help the classifier?")
    for test_set in dict.fromkeys(summary["test_set"]):
        page.headline(headline_sentence(summary, str(test_set), level))
    if rows.empty:
        page.text("No arm was compared with the baseline (only one arm finished).")
    else:
        forest = plots.plot_forest(rows, fig_dir / "forest_macro_auc.png", level=level)
        page.figure(
            forest,
            caption=f"Δ macro AUC, arm minus baseline, with its {pct} CI (how it is computed: "
            "the detailed report); right of the dashed line = better than the baseline",
        )
        page.text(models_note(summary))
        heat = plots.plot_delta_heatmap(summary, classes, fig_dir / "delta_per_finding.png",
                                        level=level)  # fmt: skip
        page.figure(heat, caption=f"Δ AUC per finding with its {pct} CI (blue: arm better)")
        page.table(_headline_table(summary, pct), caption=f"Macro AUC per arm ({pct} CI)")
    if detailed is not None:
        page.link(
            "detailed classification report",
            detailed,
            before="Per-finding AUC tables, ROC curves and the tests across trained models: ",
        )


def _headline_table(summary: pd.DataFrame, pct: str) -> pd.DataFrame:
    """Every arm's macro AUC with its CI (the baseline included), Δ and p of the others."""
    macro = summary[summary["class"] == "macro"]
    p_col = p_column(summary)
    out = []
    for r in macro.to_dict("records"):
        compared = pd.notna(r.get("delta"))
        out.append(
            {
                "test set": r["test_set"],
                "arm": r["arm"],
                "models": int(r["n_models"]),
                f"macro AUC [{pct} CI]": f"{r['auc_mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
                f"Δ vs baseline [{pct} CI]": (
                    f"{r['delta']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}]"
                    if compared
                    else "—"
                ),
                "p": format_p(float(r[p_col])) if compared and p_col else "",
            }
        )
    return pd.DataFrame(out)


def domain_gap_note(summary: Mapping[str, Any]) -> str | None:
    """One line on the GAN check (``domain_gap_acc_drr`` / ``_translated``), or None.

    Says what the two accuracies mean, what they show, and when the held-out sets
    (``heldout_a`` / ``heldout_b``) are too small for them to mean much (under 20 images).
    """
    try:
        before = float(summary["domain_gap_acc_drr"])
        after = float(summary["domain_gap_acc_translated"])
    except (KeyError, TypeError, ValueError):
        return None
    line = (
        f"GAN check: a simple classifier on intensity, edge and texture features tells real "
        f"X-rays from DRRs with accuracy {before:.2f} and from translated DRRs with {after:.2f} "
        "(0.5 = cannot tell them apart, 1.0 = always can): "
    )
    if after <= 0.6:
        line += "the translated images look like real X-rays to it"
    elif after < before - 0.05:
        line += "translation narrowed the gap but did not close it"
    elif after > before + 0.05:
        line += "translated DRRs were easier to tell from real X-rays than the raw DRRs"
    else:
        line += "translation did not narrow the gap"
    if after > 0.6 and not after < before - 0.05:
        line += (
            " (a GAN trained as briefly as the demo's does this; train longer: generator.n_epochs)"
        )
    held = [int(summary[k]) for k in ("heldout_a", "heldout_b") if k in summary]
    if held and min(held) < 20:
        line += f"; only {min(held)} held-out images per domain, too few for a firm answer"
    return line + "."


def relative(target: str | os.PathLike[str], page_dir: Path) -> str:
    """``target`` relative to the page's folder (POSIX separators), as the page links it."""
    return Path(os.path.relpath(target, page_dir)).as_posix()
