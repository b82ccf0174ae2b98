"""The classification report: tables of a grid's predictions, figures, Markdown + HTML page.

Input is one long table of predictions, one row per (arm, fold, test set, image) with
``arm, source, views_per_ct, fold, test_set, image_id, patient_id, y_<class>, p_<class>``
and optionally ``seed``: a trained model is one (fold, seed); without the column every model
counts as seed 0.

Statistics per test set, arm and class:

* ``n_folds``, ``n_models``: distinct folds, and trained models (folds × seeds) of the arm;
* ``auc_mean``, ``auc_sd``: mean and sample standard deviation of the models' AUCs;
* ``ci_low``, ``ci_high``: patient-level bootstrap percentile interval of the model-mean AUC
  (test patients resampled; every model scored on the same replicate);
* ``delta``, ``delta_ci_low/high``, ``p_bootstrap``: the arm's model-mean AUC minus the
  baseline's, its paired bootstrap interval and two-sided p-value;
* ``p_delong``: DeLong's paired test of the model-averaged probabilities of arm and baseline
  (image level; a second opinion, it ignores patient clustering and model variability);
* ``n_pairs``, ``delta_models_mean``, ``delta_models_sd``, ``t_corrected``, ``p_corrected``,
  ``note_corrected``: across trained models, the differences d_j of the arm's and the
  baseline's model j (same fold and seed) and their Nadeau–Bengio corrected resampled t-test
  (:func:`metrics.corrected_resampled_ttest`); the bootstrap above varies the test patients
  only, this varies the training data and initialisation too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gensyn.report import metrics, plots
from gensyn.report.glossary import REPORT_TERMS

if TYPE_CHECKING:
    from gensyn.report.page import Page

PRED_KEYS = ("arm", "source", "views_per_ct", "fold", "test_set", "image_id", "patient_id")
MODEL_KEYS = ("fold", "seed")  # one trained model; ``seed`` is optional in the predictions
#: ``classifier.schedule`` values and what they mean for comparing arms.
SCHEDULE_NOTES = {
    "epochs": "Training schedule: epochs (every arm trained for the same number of epochs, so "
    "arms with more training images also got more optimiser steps; part of a difference "
    "between arms may be the extra steps, not the images).",
    "steps": "Training schedule: steps (every arm took as many optimiser steps as the "
    "baseline of the same fold, whatever its number of training images).",
    "real_epochs": "Training schedule: real_epochs (every arm saw each real training image "
    "once per epoch; synthetic images were added on top at a fixed share of each batch, so "
    "arms differ only by the synthetic images, and the steps they add).",
}


def format_p(p: float) -> str:
    """A p-value as the report prints it: 'p < 0.001', 'p = 0.042', or 'p = n/a' for NaN."""
    if not np.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def schedule_note(schedule: str) -> str:
    """The report's sentence on the training schedule (``classifier.schedule``)."""
    if schedule not in SCHEDULE_NOTES:
        raise ValueError(
            f"unknown classifier.schedule {schedule!r}; allowed: {list(SCHEDULE_NOTES)}"
        )
    return SCHEDULE_NOTES[schedule]


def _with_seed(preds: pd.DataFrame) -> pd.DataFrame:
    return preds if "seed" in preds.columns else preds.assign(seed=0)


def _corrected(a: np.ndarray, b: np.ndarray, ratio: float | None) -> dict[str, Any]:
    """Columns of the corrected t-test of paired values (NaN where it cannot be run)."""
    ok = np.isfinite(a) & np.isfinite(b)
    row: dict[str, Any] = {"n_pairs": int(ok.sum())}
    if ratio is None or ok.sum() < 2:
        why = "fewer than 2 paired models" if ok.sum() < 2 else "fewer than 2 folds"
        nan = float("nan")
        row.update(delta_models_mean=float(np.mean(a[ok] - b[ok])) if ok.any() else nan)
        row.update(delta_models_sd=nan, t_corrected=nan, p_corrected=nan, note_corrected=why)
        return row
    res = metrics.corrected_resampled_ttest(a[ok], b[ok], ratio)
    row.update(
        delta_models_mean=res.mean_diff,
        delta_models_sd=res.sd_diff,
        t_corrected=res.t,
        p_corrected=res.p_value,
        note_corrected=res.note,
    )
    return row


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
    test_train_ratio: float | None = None,
) -> pd.DataFrame:
    """One test set's statistics: a row per (arm, class incl. ``macro``); see module docstring.

    ``test_train_ratio`` is n_test / n_train of the corrected t-test across models; default
    1 / (k - 1) with k the number of distinct folds in ``preds`` (no test with one fold).
    """
    classes = list(classes)
    preds = _with_seed(preds)
    if test_train_ratio is None and preds["fold"].nunique() >= 2:
        test_train_ratio = metrics.kfold_test_train_ratio(int(preds["fold"].nunique()))
    arms = _arm_order(preds)
    first_arm = preds[preds["arm"] == arms[0]]
    fold0 = first_arm["fold"].min()
    seed0 = first_arm.loc[first_arm["fold"] == fold0, "seed"].min()
    first = first_arm[(first_arm["fold"] == fold0) & (first_arm["seed"] == seed0)]
    images = first.drop_duplicates("image_id")[["image_id", "patient_id"]].reset_index(drop=True)
    y = first.set_index("image_id").loc[images["image_id"], [f"y_{c}" for c in classes]].to_numpy()

    scores: dict[str, Sequence[np.ndarray]] = {}
    models: dict[str, list[tuple[int, int]]] = {}  # arm -> its (fold, seed) models
    for arm in arms:
        arm_scores: list[np.ndarray] = []
        scores[arm], models[arm] = arm_scores, []
        for key, group in preds[preds["arm"] == arm].groupby(list(MODEL_KEYS), sort=True):
            g = group.set_index("image_id")
            if set(g.index) != set(images["image_id"]):
                raise ValueError(f"arm {arm} model {key} predicted other images than {arms[0]}")
            arm_scores.append(g.loc[images["image_id"], [f"p_{c}" for c in classes]].to_numpy())
            models[arm].append((int(str(key[0])), int(str(key[1]))))
    reps = metrics.fold_mean_replicates(y, scores, images["patient_id"].to_numpy(), n_boot, seed)
    meta = preds.drop_duplicates("arm").set_index("arm")
    model_aucs = {}  # arm -> (models, C + 1) per-class and macro AUC of each model
    for arm in arms:
        aucs = np.array([metrics.per_class_auc(y, s) for s in scores[arm]])
        model_aucs[arm] = np.concatenate([aucs, metrics.macro_of(aucs)[:, None]], axis=1)
    rows = []
    for arm in arms:
        fold_aucs = model_aucs[arm]
        arm_reps = np.concatenate([reps[arm], metrics.macro_of(reps[arm])[:, None]], axis=1)
        has_base = baseline in reps and arm != baseline
        if has_base:
            base_reps = np.concatenate(
                [reps[baseline], metrics.macro_of(reps[baseline])[:, None]], axis=1
            )
            base_aucs = np.array([metrics.per_class_auc(y, s) for s in scores[baseline]])
            base_mean = np.r_[np.nanmean(base_aucs, axis=0), metrics.macro_of(base_aucs).mean()]
            ens_arm, ens_base = np.mean(scores[arm], axis=0), np.mean(scores[baseline], axis=0)
            pairs = sorted(set(models[arm]) & set(models[baseline]))
            pair_arm = model_aucs[arm][[models[arm].index(m) for m in pairs]]
            pair_base = model_aucs[baseline][[models[baseline].index(m) for m in pairs]]
        for k, cls in enumerate([*classes, "macro"]):
            col = fold_aucs[:, k]
            finite = col[np.isfinite(col)]
            row: dict[str, Any] = {
                "arm": arm,
                "source": meta.loc[arm, "source"],
                "views_per_ct": int(str(meta.loc[arm, "views_per_ct"])),
                "class": cls,
                "n_folds": len({fold for fold, _ in models[arm]}),
                "n_models": len(models[arm]),
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
                row.update(_corrected(pair_arm[:, k], pair_base[:, k], test_train_ratio))
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
        ci = f"[{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]"
        return f"{r.delta:+.3f} {ci} {format_p(r.p_bootstrap)}{star}"

    wide = rows.assign(cell=rows.apply(cell, axis=1)).pivot(
        index="arm", columns="class", values="cell"
    )
    wide = wide.loc[list(dict.fromkeys(rows["arm"])), [*classes, "macro"]]
    return wide.reset_index()


ACROSS_MODELS_TITLE = "Arms vs baseline across trained models"


def across_models_table(summary: pd.DataFrame, test_set: str) -> pd.DataFrame | None:
    """Macro-AUC rows of the corrected t-test across models, formatted for the page.

    Columns: arm, test set, J (models), mean Δ macro AUC, sd, corrected t, p (and a note
    column where a test was degenerate). None if no arm was compared with the baseline.
    """
    if "n_pairs" not in summary:
        return None
    rows = summary[(summary["class"] == "macro") & summary["n_pairs"].notna()]
    if rows.empty:
        return None

    def num(value: float, spec: str) -> str:
        return format(value, spec) if np.isfinite(value) else "n/a"

    table = pd.DataFrame(
        {
            "arm": rows["arm"],
            "test set": test_set,
            "J (models)": rows["n_pairs"].astype(int),
            "mean Δ macro AUC": [num(v, "+.3f") for v in rows["delta_models_mean"]],
            "sd": [num(v, ".3f") for v in rows["delta_models_sd"]],
            "corrected t": [num(v, ".2f") for v in rows["t_corrected"]],
            "p": [format_p(v) for v in rows["p_corrected"]],
        }
    )
    notes = rows["note_corrected"].fillna("").astype(str)
    if (notes != "").any():
        table["note"] = list(notes)
    return table.reset_index(drop=True)


def missing_note(
    missing: Sequence[tuple[str, int]],
    n_folds: int,
    prefix: str = "Not finished, so not in the tables: ",
) -> str:
    """``prefix`` + 'arm (folds 1, 2)' per arm, 'arm (all folds)' where every fold is missing."""
    by_arm: dict[str, list[int]] = {}
    for arm, fold in missing:
        by_arm.setdefault(arm, []).append(fold)
    parts = [
        f"{arm} (all {n_folds} folds)"
        if len(folds) == n_folds
        else f"{arm} (fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, sorted(folds)))})"
        for arm, folds in by_arm.items()
    ]
    return prefix + "; ".join(parts) + "."


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
    n_folds: int | None = None,
    lead: Callable[[pd.DataFrame], Page] | None = None,
    extra_tables: Sequence[tuple[str, pd.DataFrame]] = (),
) -> tuple[Path, pd.DataFrame]:
    """Write ``report.md``/``report.html``, ``auc_summary.csv`` and figures into ``out_dir``.

    ``n_folds`` is k of the cross-validation (``classifier.n_folds``), which sets the
    corrected t-test's n_test / n_train = 1 / (k - 1); default: the distinct folds in
    ``preds``. ``extra_tables``: (caption, table) pairs shown after the notes; ``lead``
    builds blocks from the summary table (all test sets) that go first, right after
    ``notes`` and ``extra_tables`` (e.g. a sweep's comparison). Returns the page path and
    the long summary table.
    """
    from gensyn import io
    from gensyn.report.page import Page

    out_dir = Path(out_dir)
    missing = [c for c in PRED_KEYS if c not in preds.columns]
    if missing:
        raise ValueError(f"prediction table lacks columns {missing}")
    k = int(n_folds) if n_folds is not None else int(preds["fold"].nunique())
    ratio = metrics.kfold_test_train_ratio(k) if k >= 2 else None
    pct = f"{level:.0%}"
    page = Page(title)
    for note in notes:
        page.text(note)
    for caption, extra in extra_tables:
        page.table(extra, caption=caption)
    page.text(
        f"Cells: AUC mean ± sd over trained models (folds × seeds) [patient-level bootstrap "
        f"{pct} CI of the model mean]. Differences are arm minus {baseline}, paired bootstrap "
        f"over test patients ({n_boot} replicates); * p < 0.05 (not corrected for multiple "
        "comparisons). The bootstrap varies the test patients only, not the training."
    )
    ratio_text = f"1/(k - 1) = {ratio:.3g} for k = {k} folds" if ratio is not None else "n/a"
    page.text(
        f"{ACROSS_MODELS_TITLE}: d_j = macro AUC of the arm's model j minus the {baseline}'s "
        "model j (same fold and seed, same test set), over the J paired models; corrected "
        "resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) t = mean(d) / "
        "sqrt((1/J + n_test/n_train) var(d)), J - 1 degrees of freedom, two-sided p, with "
        f"n_test/n_train = {ratio_text} (several seeds: J = folds × seeds, same ratio). The "
        "folds' training sets overlap, so the J models are not independent and the plain "
        "paired t-test would be too confident. Per-class tests: auc_summary.csv."
    )
    page.table(
        [{"term": term, "meaning": text.format(pct=pct)} for term, text in REPORT_TERMS.items()],
        caption="Glossary",
    )
    summaries = []
    for test_set, group in preds.groupby("test_set", sort=True):
        summary = summarise_test_set(group, classes, baseline, n_boot, level, seed, ratio)
        summaries.append(summary.assign(test_set=test_set))
        n_img = group["image_id"].nunique()
        n_pat = group["patient_id"].nunique()
        head = f"{test_set} ({n_img} images, {n_pat} patients)"
        page.heading(f"Test set: {head}")
        page.table(_pretty(summary, classes), caption=f"{head}: per-class and macro AUC")
        deltas = _deltas(summary, classes)
        if deltas is not None:
            page.table(
                deltas,
                caption=f"{head}: AUC difference to {baseline} [{pct} CI], paired patient "
                "bootstrap p",
            )
        across = across_models_table(summary, str(test_set))
        if across is not None:
            page.table(across, caption=f"{head}: {ACROSS_MODELS_TITLE}")
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
                level=level,
            )
            page.figure(views, caption=f"AUC against views per CT ({pct} CI), {test_set}")
    table = pd.concat(summaries, ignore_index=True)
    io.write_table(out_dir / "auc_summary.csv", table)
    if lead is not None:
        page.blocks[len(notes) : len(notes)] = lead(table).blocks
    return page.write(out_dir), table
