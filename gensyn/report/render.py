"""The classification report: tables of a grid's predictions, figures, Markdown + HTML page.

Input is one long table of predictions, one row per (arm, fold, test set, image) with
``arm, source, views_per_ct, fold, test_set, image_id, patient_id, y_<class>, p_<class>``.

Statistics per test set, arm and class:

* ``auc_mean``, ``auc_sd``: mean and sample standard deviation of the folds' AUCs;
* ``ci_low``, ``ci_high``: patient-level bootstrap percentile interval of the fold-mean AUC
  (test patients resampled; every fold model scored on the same replicate);
* ``delta``, ``delta_ci_low/high``, ``p_bootstrap``: the arm's fold-mean AUC minus the
  baseline's, its paired bootstrap interval and two-sided p-value;
* ``p_delong``: DeLong's paired test of the fold-averaged probabilities of arm and baseline
  (image level; a second opinion, it ignores patient clustering and fold variability).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gensyn.report import metrics, plots

PRED_KEYS = ("arm", "source", "views_per_ct", "fold", "test_set", "image_id", "patient_id")


def _arm_order(preds: pd.DataFrame) -> list[str]:
    arms = preds[["arm", "source", "views_per_ct"]].drop_duplicates()
    src_rank = {"none": 0, "drr": 1, "synthex": 2}
    arms = arms.assign(r=arms["source"].map(src_rank).fillna(9)).sort_values(["r", "views_per_ct"])
    return list(arms["arm"])


def summarise_test_set(
    preds: pd.DataFrame,
    classes: Sequence[str],
    baseline: str = "baseline",
    n_boot: int = metrics.DEFAULT_N_BOOTSTRAP,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One test set's statistics: a row per (arm, class incl. ``macro``); see module docstring."""
    classes = list(classes)
    arms = _arm_order(preds)
    first = preds[(preds["arm"] == arms[0]) & (preds["fold"] == preds["fold"].min())]
    images = first.drop_duplicates("image_id")[["image_id", "patient_id"]].reset_index(drop=True)
    y = first.set_index("image_id").loc[images["image_id"], [f"y_{c}" for c in classes]].to_numpy()

    scores: dict[str, Sequence[np.ndarray]] = {}
    folds: dict[str, list[int]] = {}
    for arm in arms:
        arm_scores: list[np.ndarray] = []
        scores[arm], folds[arm] = arm_scores, []
        for fold, group in preds[preds["arm"] == arm].groupby("fold", sort=True):
            g = group.set_index("image_id")
            if set(g.index) != set(images["image_id"]):
                raise ValueError(f"arm {arm} fold {fold} predicted other images than {arms[0]}")
            arm_scores.append(g.loc[images["image_id"], [f"p_{c}" for c in classes]].to_numpy())
            folds[arm].append(int(str(fold)))
    reps = metrics.fold_mean_replicates(y, scores, images["patient_id"].to_numpy(), n_boot, seed)
    meta = preds.drop_duplicates("arm").set_index("arm")
    rows = []
    for arm in arms:
        fold_aucs = np.array([metrics.per_class_auc(y, s) for s in scores[arm]])  # (F, C)
        fold_aucs = np.concatenate([fold_aucs, metrics.macro_of(fold_aucs)[:, None]], axis=1)
        arm_reps = np.concatenate([reps[arm], metrics.macro_of(reps[arm])[:, None]], axis=1)
        has_base = baseline in reps and arm != baseline
        if has_base:
            base_reps = np.concatenate(
                [reps[baseline], metrics.macro_of(reps[baseline])[:, None]], axis=1
            )
            base_aucs = np.array([metrics.per_class_auc(y, s) for s in scores[baseline]])
            base_mean = np.r_[np.nanmean(base_aucs, axis=0), metrics.macro_of(base_aucs).mean()]
            ens_arm, ens_base = np.mean(scores[arm], axis=0), np.mean(scores[baseline], axis=0)
        for k, cls in enumerate([*classes, "macro"]):
            col = fold_aucs[:, k]
            finite = col[np.isfinite(col)]
            row: dict[str, Any] = {
                "arm": arm,
                "source": meta.loc[arm, "source"],
                "views_per_ct": int(str(meta.loc[arm, "views_per_ct"])),
                "class": cls,
                "n_folds": len(folds[arm]),
                "auc_mean": float(finite.mean()) if finite.size else float("nan"),
                "auc_sd": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
            }
            row["ci_low"], row["ci_high"] = metrics.percentile_ci(arm_reps[:, k], level)
            if has_base:
                diff = arm_reps[:, k] - base_reps[:, k]
                row["delta"] = row["auc_mean"] - float(base_mean[k])
                row["delta_ci_low"], row["delta_ci_high"] = metrics.percentile_ci(diff, level)
                row["p_bootstrap"] = metrics.bootstrap_p_value(diff)
                row["p_delong"] = (
                    metrics.delong_paired_test(y[:, k], ens_arm[:, k], ens_base[:, k])[1]
                    if cls != "macro"
                    else float("nan")
                )
            rows.append(row)
    return pd.DataFrame(rows)


def _pretty(summary: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Arms as rows, classes as columns, 'mean ± sd [ci]' cells."""

    def cell(r: pd.Series) -> str:
        sd = f" ± {r.auc_sd:.3f}" if np.isfinite(r.auc_sd) else ""  # one fold: no sd
        return f"{r.auc_mean:.3f}{sd} [{r.ci_low:.3f}, {r.ci_high:.3f}]"

    table = summary.assign(cell=summary.apply(cell, axis=1))
    wide = table.pivot(index="arm", columns="class", values="cell")
    wide = wide.loc[list(dict.fromkeys(summary["arm"])), [*classes, "macro"]]
    return wide.reset_index()


def _deltas(summary: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame | None:
    if "delta" not in summary:
        return None
    rows = summary.dropna(subset=["delta"])
    if rows.empty:
        return None

    def cell(r: pd.Series) -> str:
        star = "*" if r.p_bootstrap < 0.05 else ""
        return f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}] p={r.p_bootstrap:.3f}{star}"

    wide = rows.assign(cell=rows.apply(cell, axis=1)).pivot(
        index="arm", columns="class", values="cell"
    )
    wide = wide.loc[list(dict.fromkeys(rows["arm"])), [*classes, "macro"]]
    return wide.reset_index()


def missing_note(missing: Sequence[tuple[str, int]], n_folds: int) -> str:
    """'arm (folds 1, 2)' per arm, 'arm (all folds)' where every fold is missing."""
    by_arm: dict[str, list[int]] = {}
    for arm, fold in missing:
        by_arm.setdefault(arm, []).append(fold)
    parts = [
        f"{arm} (all {n_folds} folds)"
        if len(folds) == n_folds
        else f"{arm} (fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, sorted(folds)))})"
        for arm, folds in by_arm.items()
    ]
    return "Not finished, so not in the tables: " + "; ".join(parts) + "."


def write_report(
    out_dir: str | os.PathLike[str],
    preds: pd.DataFrame,
    classes: Sequence[str],
    title: str = "Classification report",
    baseline: str = "baseline",
    n_boot: int = metrics.DEFAULT_N_BOOTSTRAP,
    level: float = 0.95,
    seed: int = 0,
    notes: Sequence[str] = (),
) -> tuple[Path, pd.DataFrame]:
    """Write ``report.md``/``report.html``, ``auc_summary.csv`` and figures into ``out_dir``.

    Returns the page path and the long summary table (all test sets).
    """
    from gensyn import io
    from gensyn.report.page import Page

    out_dir = Path(out_dir)
    missing = [c for c in PRED_KEYS if c not in preds.columns]
    if missing:
        raise ValueError(f"prediction table lacks columns {missing}")
    page = Page(title)
    for note in notes:
        page.text(note)
    page.text(
        "Cells: AUC mean ± sd over folds [patient-level bootstrap 95% CI of the fold mean]. "
        f"Differences are arm minus {baseline}, paired bootstrap over test patients "
        f"({n_boot} replicates); * p < 0.05 (not corrected for multiple comparisons)."
    )
    summaries = []
    for test_set, group in preds.groupby("test_set", sort=True):
        summary = summarise_test_set(group, classes, baseline, n_boot, level, seed)
        summaries.append(summary.assign(test_set=test_set))
        n_img = group["image_id"].nunique()
        n_pat = group["patient_id"].nunique()
        page.heading(f"Test set: {test_set} ({n_img} images, {n_pat} patients)")
        page.table(_pretty(summary, classes), caption="per-class and macro AUC")
        deltas = _deltas(summary, classes)
        if deltas is not None:
            page.table(deltas, caption=f"AUC difference to {baseline} [95% CI], bootstrap p")
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(test_set))
        roc = plots.plot_roc_curves(
            group,
            classes,
            out_dir / "figures" / f"roc_{safe}.png",
            title=f"{test_set}: ROC (fold-averaged probabilities)",
        )
        page.figure(roc, caption=f"ROC curves, {test_set}")
        if (summary["source"] != "none").any():
            views = plots.plot_auc_vs_views(
                summary,
                classes,
                out_dir / "figures" / f"auc_vs_views_{safe}.png",
                title=f"{test_set}: AUC against views per CT",
            )
            page.figure(views, caption=f"AUC against views per CT, {test_set}")
    table = pd.concat(summaries, ignore_index=True)
    io.write_table(out_dir / "auc_summary.csv", table)
    return page.write(out_dir), table
