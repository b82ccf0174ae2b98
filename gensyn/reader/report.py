"""Figures and the markdown/HTML report of a reader study."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gensyn.base import io
from gensyn.reader.analyze import INTERVALS, VERDICTS, StudyResults

TRUTH_COLOURS = {"real": "#4C72B0", "fake": "#DD8452"}


def _bounds(name: str, table: pd.DataFrame) -> tuple[str, str]:
    """Columns of the reported interval of ``name``: cluster if computed, else Wilson."""
    if f"{name}_cluster_ci_low" in table.columns:
        return f"{name}_cluster_ci_low", f"{name}_cluster_ci_high"
    return f"{name}_ci_low", f"{name}_ci_high"


def _ci_err(table: pd.DataFrame, name: str) -> np.ndarray:
    """2 × n error-bar lengths (below, above) of the reported interval; 0 where undefined."""
    value = table[name].to_numpy(dtype=float)
    low, high = _bounds(name, table)
    lo = np.nan_to_num(value - table[low].to_numpy(dtype=float))
    hi = np.nan_to_num(table[high].to_numpy(dtype=float) - value)
    return np.vstack([lo, hi])


def plot_sources(results: StudyResults, path: Path) -> Path:
    """Bar chart: share of correct answers per source, with 95% cluster CIs, chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results.sources
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(t) + 2), 3.6))
    x = np.arange(len(t))
    ax.bar(
        x,
        t["accuracy"].fillna(0),
        color=[TRUTH_COLOURS[v] for v in t["truth"]],
        yerr=_ci_err(t, "accuracy"),
        capsize=4,
    )
    ax.axhline(0.5, color="grey", lw=1, ls="--", label="chance (two choices)")
    ax.set_xticks(
        x, [f"{s}\n({v})" for s, v in zip(t["source"], t["truth"], strict=True)], fontsize=8
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("correct answers (share)")
    ax.set_title("Correct per source (real: called real; synthetic: called fake)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with io.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_readers(results: StudyResults, path: Path) -> Path:
    """Accuracy, sensitivity and specificity per reader (and pooled), with 95% cluster CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overall = pd.DataFrame([{"reader_id": "all"} | results.overall])
    t = pd.concat([results.readers, overall], ignore_index=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(t) + 2), 3.6))
    x = np.arange(len(t))
    for i, (name, colour) in enumerate(
        [("accuracy", "#55A868"), ("sensitivity", "#DD8452"), ("specificity", "#4C72B0")]
    ):
        ax.errorbar(
            x + (i - 1) * 0.2,
            t[name],
            yerr=_ci_err(t, name),
            fmt="o",
            color=colour,
            capsize=3,
            label=name,
        )
    ax.set_xticks(x, t["reader_id"])
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_ylabel("share")
    ax.set_title("Per reader (sensitivity = fakes spotted)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with io.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_time(results: StudyResults, path: Path) -> Path:
    """Box plot of seconds per image for each source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = results.scored.dropna(subset=["lead_time_s"])
    sources = sorted(scored["source"].unique())
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(sources) + 2), 3.4))
    if sources:
        ax.boxplot([scored.loc[scored["source"] == s, "lead_time_s"] for s in sources])
        ax.set_xticks(np.arange(1, len(sources) + 1), sources, fontsize=8)
    ax.set_ylabel("seconds per image")
    ax.set_title("Reading time per image", fontsize=9)
    fig.tight_layout()
    with io.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _pct(value: float, lo: float, hi: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"


def _metric_table(t: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    """Counts, rates with their reported 95% CI, and accuracy's Wilson CI for comparison."""
    out = t[first].copy()
    out["answers"] = t["answers"]
    out["uncertain"] = t["uncertain"]
    for name in ("accuracy", "sensitivity", "specificity"):
        low, high = _bounds(name, t)
        out[f"{name} (95% CI)"] = [
            f"{k}/{n} = " + _pct(v, lo, hi)
            for k, n, v, lo, hi in zip(
                t[f"{name}_k"], t[f"{name}_n"], t[name], t[low], t[high], strict=True
            )
        ]
    if "accuracy_cluster_ci_low" in t.columns:
        out["accuracy, Wilson CI (independent answers)"] = [
            _pct(v, lo, hi).split(" ", 1)[-1].strip("()")
            for v, lo, hi in zip(
                t["accuracy"], t["accuracy_ci_low"], t["accuracy_ci_high"], strict=True
            )
        ]
        out["design effect"] = t["accuracy_design_effect"].round(2)
    out["median s/image"] = t["median_time_s"].round(1)
    return out


def _verdict_shares(t: pd.DataFrame) -> pd.DataFrame:
    """Per source: how often each verdict was given, share and its reported 95% CI."""
    out = t[["source", "truth", "answers"]].copy()
    for verdict in VERDICTS:
        name = f"said_{verdict}_share"
        low, high = _bounds(name, t)
        out[f"said {verdict} (95% CI)"] = [
            f"{c} = " + _pct(v, lo, hi)
            for c, v, lo, hi in zip(t[f"said_{verdict}"], t[name], t[low], t[high], strict=True)
        ]
    return out


def _clean(text: str) -> str:
    """One line, no table separators (reasons are free text)."""
    return " ".join(str(text).replace("|", "/").split())


def write_report(
    results: StudyResults,
    out_dir: str | os.PathLike[str],
    title: str,
    context: dict[str, Any] | None = None,
) -> Path:
    """Write figures, result tables (CSV/JSON) and ``report.md`` / ``report.html``."""
    from gensyn.report.page import Page

    out = Path(out_dir)
    figs = {
        "sources": plot_sources(results, out / "figures" / "correct_by_source.png"),
        "readers": plot_readers(results, out / "figures" / "readers.png"),
        "time": plot_time(results, out / "figures" / "time_by_source.png"),
    }
    io.write_table(out / "answers_scored.csv", results.scored)
    io.write_table(out / "readers.csv", results.readers)
    io.write_table(out / "sources.csv", results.sources)
    io.write_table(out / "reasons.csv", results.reasons)
    io.write_json(
        out / "results.json",
        {
            "uncertain_as": results.uncertain_as,
            "rule": results.rule,
            "intervals": INTERVALS,
            "bootstrap_replicates": results.bootstrap_replicates,
            "seed": results.seed,
            "overall": results.overall,
            "agreement": results.agreement,
            "notes": results.notes,
        },
    )

    page = Page(title)
    ctx = context or {}
    n_images = results.scored["image_id"].nunique()
    page.text(
        f"{n_images} images from {results.sources.shape[0]} sources, "
        f"{results.readers.shape[0]} readers, {results.overall['answers']} answers. "
        + " ".join(f"{k}: {v}." for k, v in ctx.items())
    )
    page.text(f"How 'uncertain' counts: {results.rule} (uncertain_as={results.uncertain_as})")
    page.text(
        "Positive = synthetic (fake). Sensitivity = synthetic images called fake; specificity "
        "= real images called real."
    )
    if results.bootstrap_replicates:
        page.text(
            f"{INTERVALS} ({results.bootstrap_replicates} bootstrap replicates, seed "
            f"{results.seed}; design effect = clustered variance / independent variance.)"
        )
    else:
        page.text("Intervals: Wilson score 95% CIs (answers treated as independent).")
    for note in results.notes:
        page.text("Note: " + note)
    page.heading("Overall (all readers pooled)")
    page.table(_metric_table(pd.DataFrame([{"readers": "all"} | results.overall]), ["readers"]))
    page.heading("Per reader")
    page.table(_metric_table(results.readers, ["reader_id"]))
    page.figure(figs["readers"], "Per reader, with 95% intervals (cluster intervals)")
    page.heading("Per source")
    src = _metric_table(results.sources, ["source", "truth"])
    page.table(src.drop(columns=["sensitivity (95% CI)", "specificity (95% CI)"]))
    page.table(_verdict_shares(results.sources))
    page.figure(figs["sources"], "Share correct per source, 95% intervals (cluster intervals)")
    page.heading("Agreement between readers")
    agr = results.agreement
    page.text(
        f"Fleiss' kappa over real/fake/uncertain on the {agr['images']} images all "
        f"{agr['readers']} readers answered: {agr['fleiss_kappa']:.3f}."
    )
    page.heading("Time per image")
    page.table(results.time_by_reader.round(1))
    page.table(results.time_by_source.round(1))
    page.figure(figs["time"], "Seconds per image by source (Label Studio lead time)")
    page.heading("Reasons given, by source")
    if len(results.reasons):
        page.table(results.reasons.assign(reason=results.reasons["reason"].map(_clean)))
    else:
        page.text("No reasons were given.")
    if len(results.missing):
        page.heading("Missing answers")
        page.table(results.missing)
    return page.write(out, "report")
