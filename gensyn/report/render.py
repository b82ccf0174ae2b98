"""The classification report: tables of a grid's predictions, figures, Markdown + HTML page.

The statistics are :func:`gensyn.report.summary.summarise_test_set`'s (one row per test set,
arm and finding; its docstring lists the columns of ``auc_summary.csv``). This module lays
them out: the primary comparison first, then per test set the AUC table, the differences to
the baseline, the variance parts of the macro differences and the figures. p-values are
Holm-adjusted within their family except the primary's (:mod:`gensyn.report.multiplicity`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gensyn.report import metrics, multiplicity, plots
from gensyn.report.glossary import REPORT_TERMS
from gensyn.report.inference import COVERS_BOTH
from gensyn.report.multiplicity import format_p
from gensyn.report.summary import MODEL_KEYS, summarise_test_set

__all__ = [
    "MODEL_KEYS",
    "PRED_KEYS",
    "SCHEDULE_NOTES",
    "missing_note",
    "schedule_note",
    "summarise_test_set",
    "variance_table",
    "write_report",
]

if TYPE_CHECKING:
    from gensyn.report.page import Page

PRED_KEYS = ("arm", "source", "views_per_ct", "fold", "test_set", "image_id", "patient_id")
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


def schedule_note(schedule: str) -> str:
    """The report's sentence on the training schedule (``classifier.schedule``)."""
    if schedule not in SCHEDULE_NOTES:
        raise ValueError(
            f"unknown classifier.schedule {schedule!r}; allowed: {list(SCHEDULE_NOTES)}"
        )
    return SCHEDULE_NOTES[schedule]


def _na(reason: object) -> str:
    return f"n/a ({reason})" if reason else "n/a"


def _pretty(summary: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Arms as rows, classes as columns, 'mean ± sd [ci]' cells ('n/a (why)' without an AUC)."""

    def cell(r: pd.Series) -> str:
        if not np.isfinite(r.auc_mean):
            return _na(r.na_reason)
        sd = f" ± {r.auc_sd:.3f}" if np.isfinite(r.auc_sd) else ""  # one model: no sd
        return f"{r.auc_mean:.3f}{sd} [{r.ci_low:.3f}, {r.ci_high:.3f}]"

    table = summary.assign(cell=summary.apply(cell, axis=1))
    wide = table.pivot(index="arm", columns="class", values="cell")
    wide = wide.loc[list(dict.fromkeys(summary["arm"])), [*classes, "macro"]]
    return wide.reset_index()


def _p_text(r: pd.Series) -> str:
    """'p = 0.012 (primary)' or 'p = 0.012, Holm p = 0.048*'; * only on adjusted p < 0.05."""
    star = "*" if r.p_adjusted < 0.05 else ""
    if r.primary:
        return f"{format_p(r.p_value)}{star} (primary)"
    return f"{format_p(r.p_value)}, Holm {format_p(r.p_adjusted)}{star}"


def _deltas(summary: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame | None:
    """Compared arms as rows, classes as columns: 'Δ [CI] p, Holm p' or 'n/a (why)'."""
    rows = summary[summary["vs_baseline"].astype(bool)] if "vs_baseline" in summary else None
    if rows is None or rows.empty:
        return None

    def cell(r: pd.Series) -> str:
        if not np.isfinite(r.delta):
            return _na(r.delta_na_reason)
        dagger = "" if r.delta_ci_covers == COVERS_BOTH else " †"
        ci = f"[{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]"
        return f"{r.delta:+.3f} {ci}{dagger} {_p_text(r)}"

    wide = rows.assign(cell=rows.apply(cell, axis=1)).pivot(
        index="arm", columns="class", values="cell"
    )
    wide = wide.loc[list(dict.fromkeys(rows["arm"])), [*classes, "macro"]]
    return wide.reset_index()


VARIANCE_TITLE = "Δ macro AUC: where its uncertainty comes from"


def variance_table(summary: pd.DataFrame) -> pd.DataFrame | None:
    """The macro comparisons with their standard-error parts, formatted for the page.

    Columns: arm, J (models), Δ, CI, p, p (Holm), then the square roots of the three variance
    parts (shared test-patient noise, model spread s/√J, training overlap) and the degrees of
    freedom, then the one-source p-values (test patients only; models only). None if no arm
    was compared with the baseline.
    """
    if "vs_baseline" not in summary:
        return None
    rows = summary[(summary["class"] == "macro") & summary["vs_baseline"].astype(bool)]
    if rows.empty:
        return None

    def num(values: pd.Series, spec: str) -> list[str]:
        return [format(v, spec) if np.isfinite(v) else "n/a" for v in values.astype(float)]

    def root(values: pd.Series) -> list[str]:
        return num(values.astype(float).clip(lower=0) ** 0.5, ".4f")

    table = pd.DataFrame(
        {
            "arm": rows["arm"],
            "J (models)": rows["n_pairs"].astype(int),
            "Δ": num(rows["delta"], "+.3f"),
            "CI": [
                f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else "n/a"
                for lo, hi in zip(rows["delta_ci_low"], rows["delta_ci_high"], strict=True)
            ],
            "p": [format_p(v) for v in rows["p_value"]],
            "p (Holm)": [
                "primary" if prim else format_p(v)
                for v, prim in zip(rows["p_adjusted"], rows["primary"], strict=True)
            ],
            "SE: test patients, shared": root(rows["var_shared_test"]),
            "SE: models (s/√J)": root(rows["var_models"]),
            "SE: training overlap": root(rows["var_training_overlap"]),
            "df": [
                "∞" if v == np.inf else t
                for v, t in zip(rows["df_delta"], num(rows["df_delta"], ".1f"), strict=True)
            ],
            "p, test patients only": [format_p(v) for v in rows["p_bootstrap"]],
            "p, models only": [format_p(v) for v in rows["p_corrected"]],
        }
    )
    return table.reset_index(drop=True)


def _macro_line(summary: pd.DataFrame, classes: Sequence[str]) -> str:
    """Which findings the macro AUCs average, and why the others are left out."""
    macro = summary[summary["class"] == "macro"]
    sets = dict.fromkeys(macro["macro_over"].fillna("").astype(str))
    findings = summary[summary["class"] != "macro"].drop_duplicates("class").set_index("class")
    left_out = [
        f"{c}: {_na(findings.loc[c, 'na_reason'])}"
        for c in classes
        if c in findings.index and findings.loc[c, "na_reason"]
    ]
    if len(sets) == 1:
        text = f"Macro AUC = mean over {next(iter(sets)) or 'no finding'}"
    else:
        text = "Macro AUC = mean over " + "; ".join(
            f"{str(r.macro_over) or 'no finding'} ({r.arm!s})" for r in macro.itertuples()
        )
    if left_out:
        text += f" (left out: {'; '.join(left_out)})"
    if "delta_macro_over" in summary:
        over = summary.loc[macro.index, "delta_macro_over"].dropna().astype(str)
        if len(set(over)) > 1 or (len(over) and set(over) != set(sets)):
            text += "; Δ macro over the findings with an AUC for both arms: " + "; ".join(
                f"{arm}: {o}" for arm, o in zip(summary.loc[over.index, "arm"], over, strict=True)
            )
    return text + "."


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


def primary_line(summary: pd.DataFrame, primary: multiplicity.ResolvedPrimary, baseline: str,
                 level: float) -> str:  # fmt: skip
    """The report's first sentence: the primary comparison's Δ, interval and p-value."""
    rows = summary[summary["primary"]]
    head = f"Primary comparison ({primary.describe(baseline)}): "
    if rows.empty or not np.isfinite(rows["delta"].iloc[0]):
        reason = rows["delta_na_reason"].iloc[0] if len(rows) else "not in the grid"
        return head + _na(reason) + "."
    r = rows.iloc[0]
    covers = (
        "test patients and trained models"
        if r.delta_ci_covers == COVERS_BOTH
        else ("test patients only: one model pair, training variability not estimable")
    )
    return (
        head + f"Δ = {r.delta:+.3f} [{level:.0%} CI {r.delta_ci_low:+.3f}, "
        f"{r.delta_ci_high:+.3f}], {format_p(r.p_value)} (unadjusted), over J = "
        f"{int(r.n_pairs)} model pair(s); the interval covers {covers}."
    )


MULTIPLICITY_LINE = (
    "Multiplicity: the primary comparison is reported unadjusted; every other p-value is "
    "Holm-adjusted within its family (the macro-AUC comparisons of the other arms on one test "
    "set; one arm's per-finding comparisons on one test set); * marks adjusted p < 0.05."
)


def _method_text(baseline: str, n_boot: int, pct: str, ratio: float | None, k: int) -> str:
    ratio_text = (
        f"1/(k - 1) = {ratio:.3g} for k = {k} folds" if ratio is not None else "0 (one fold)"
    )
    return (
        f"Cells: AUC mean ± sd over trained models (folds × seeds) [patient-level bootstrap "
        f"{pct} CI of the model mean, {n_boot} replicates]. Δ = mean over the J models trained "
        f"for both (same fold and seed) of the arm's AUC minus the {baseline}'s. Its {pct} CI "
        "and p-value cover both sources of variance: which test patients were drawn (every "
        "model of both arms scored on the same bootstrap replicates) and which models training "
        "produced (the spread of the J paired differences, widened for the folds' overlapping "
        f"training sets by n_test/n_train = {ratio_text}): Obuchowski–Rockette's analysis with "
        "models as readers and patients as cases, plus Nadeau–Bengio's correction, t interval "
        "with Hillis' degrees of freedom (docs/classification.md). † marks an interval over "
        "test patients only (one model pair). A finding without a positive or a negative case "
        "in a test set has no AUC (n/a) and is left out of the macro AUC; a finding one arm did "
        "not predict is not compared."
    )


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
    primary: multiplicity.PrimaryComparison | None = None,
    external_test_sets: Sequence[str] = (),
    internal_test_set: str | None = None,
    extra_tables: Sequence[tuple[str, pd.DataFrame]] = (),
) -> tuple[Path, pd.DataFrame]:
    """Write ``report.md``/``report.html``, ``auc_summary.csv`` and figures into ``out_dir``.

    ``n_folds`` is k of the cross-validation (``classifier.n_folds``), which sets Nadeau and
    Bengio's n_test / n_train = 1 / (k - 1); default: the distinct folds in ``preds``.
    ``primary`` is the declared primary comparison (default :class:`PrimaryComparison`: macro
    AUC, largest SyntheX arm, external test set), its arm named as in ``preds``;
    ``external_test_sets`` are the test sets of other data sets (``external``), in order,
    ``internal_test_set`` the training data set's own. ``extra_tables`` ((caption, table)
    pairs) are shown after the notes; ``lead`` builds blocks from the summary table (all
    test sets) that go first, right after the notes (e.g. a sweep's comparison). Returns the page path and the long summary table.
    """
    from gensyn.base import io
    from gensyn.report.page import Page

    out_dir = Path(out_dir)
    missing = [c for c in PRED_KEYS if c not in preds.columns]
    if missing:
        raise ValueError(f"prediction table lacks columns {missing}")
    k = int(n_folds) if n_folds is not None else int(preds["fold"].nunique())
    ratio = metrics.kfold_test_train_ratio(k) if k >= 2 else None
    pct = f"{level:.0%}"
    groups = {str(name): group for name, group in preds.groupby("test_set", sort=True)}
    summaries = [
        summarise_test_set(group, classes, baseline, n_boot, level, seed, ratio).assign(
            test_set=test_set
        )
        for test_set, group in groups.items()
    ]
    table = pd.concat(summaries, ignore_index=True)
    resolved = multiplicity.resolve_primary(
        table, primary or multiplicity.PrimaryComparison(), external_test_sets, internal_test_set
    )
    table = multiplicity.assign_families(table, resolved)

    page = Page(title)
    for note in notes:
        page.text(note)
    if resolved is not None:
        page.text(primary_line(table, resolved, baseline, level))
        if resolved.note:
            page.text(resolved.note)
        page.text(MULTIPLICITY_LINE)
    for caption, extra in extra_tables:
        page.table(extra, caption=caption)
    page.text(_method_text(baseline, n_boot, pct, ratio, k))
    page.table(
        [{"term": term, "meaning": text.format(pct=pct)} for term, text in REPORT_TERMS.items()],
        caption="Glossary",
    )
    for test_set, group in groups.items():
        summary = table[table["test_set"] == test_set]
        n_img, n_pat = group["image_id"].nunique(), group["patient_id"].nunique()
        head = f"{test_set} ({n_img} images, {n_pat} patients)"
        page.heading(f"Test set: {head}")
        page.table(_pretty(summary, classes), caption=f"{head}: per-class and macro AUC")
        page.text(_macro_line(summary, classes))
        deltas = _deltas(summary, classes)
        if deltas is not None:
            page.table(
                deltas,
                caption=f"{head}: AUC difference to {baseline} [{pct} CI over test patients "
                "and models], p (primary unadjusted, others Holm-adjusted in their family)",
            )
        variance = variance_table(summary)
        if variance is not None:
            page.table(variance, caption=f"{head}: {VARIANCE_TITLE}")
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(test_set))
        roc = plots.plot_roc_curves(
            group,
            classes,
            out_dir / "figures" / f"roc_{safe}.png",
            title=f"{test_set}: ROC (fold-averaged probabilities)",
            na_reasons=_reasons(summary),
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
    io.write_table(out_dir / "auc_summary.csv", table)
    if lead is not None:
        page.blocks[len(notes) : len(notes)] = lead(table).blocks
    return page.write(out_dir), table


def _reasons(summary: pd.DataFrame) -> dict[str, str]:
    """Finding -> why it has no AUC in this test set (label reasons only; '' if it has one)."""
    rows = summary[summary["class"] != "macro"].drop_duplicates("class")
    label = {"no positive case", "no negative case", "labels missing"}
    return {
        r["class"]: (r["na_reason"] if r["na_reason"] in label else "") for _, r in rows.iterrows()
    }
