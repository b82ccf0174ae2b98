"""Figures of the classification report: ROC curves and AUC against views per CT."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (false positive rate, true positive rate), one point per distinct threshold."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def _na_text(ax, text: str) -> None:  # type: ignore[no-untyped-def]
    """Write 'n/a (why)' across an empty panel."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="dimgrey", wrap=True)  # fmt: skip


def plot_roc_curves(
    preds: pd.DataFrame,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    na_reasons: dict[str, str] | None = None,
) -> Path:
    """One panel per class; one curve per arm from its fold-averaged probabilities.

    ``preds``: one test set's rows ``arm, fold, image_id, y_<class>, p_<class>``. A class
    without a positive or a negative case gets an empty panel saying so (``na_reasons``:
    class -> reason, else found from the labels); an arm without a class's probabilities
    has no curve in that panel.
    """
    plt = _pyplot()
    n = len(classes)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.8), squeeze=False)
    mean = preds.groupby(["arm", "image_id"], sort=False).mean(numeric_only=True).reset_index()
    for ax, cls in zip(axes[0], classes, strict=True):
        y_all = mean[f"y_{cls}"].to_numpy() > 0.5 if f"y_{cls}" in mean else np.zeros(0, bool)
        reason = (na_reasons or {}).get(cls) or (
            "no positive case" if not y_all.any() else "no negative case" if y_all.all() else ""
        )
        if reason:
            _na_text(ax, f"n/a ({reason})")
        for arm, group in mean.groupby("arm", sort=False):
            if reason or f"p_{cls}" not in group:
                continue
            y, p = group[f"y_{cls}"].to_numpy() > 0.5, group[f"p_{cls}"].to_numpy()
            if not np.isfinite(p).all():
                continue
            fpr, tpr = roc_points(y, p)
            ax.plot(fpr, tpr, lw=1.2, label=str(arm))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(title=cls, xlabel="false positive rate", xlim=(0, 1), ylim=(0, 1.01))
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("true positive rate")
    labelled = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[-1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_auc_vs_views(
    summary: pd.DataFrame,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    level: float = 0.95,
) -> Path:
    """Save :func:`draw_auc_vs_views` as a PNG at ``path``."""
    plt = _pyplot()
    fig = plt.figure(figsize=(3.0 * (len(classes) + 1), 3.2))
    draw_auc_vs_views(fig, summary, classes, title, level)
    return _save(fig, path, plt)


def auc_ylim(summary: pd.DataFrame, pad: float = 0.02) -> tuple[float, float]:
    """One AUC range for every panel: all means and CI ends, padded, within [0, 1]."""
    values = summary[["auc_mean", "ci_low", "ci_high"]].to_numpy(dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    low, high = float(values.min()) - pad, float(values.max()) + pad
    return max(low, 0.0), min(high, 1.0)


def draw_auc_vs_views(
    fig: Figure,
    summary: pd.DataFrame,
    classes: Sequence[str],
    title: str = "",
    level: float = 0.95,
) -> Figure:
    """Per class (and macro): mean AUC over models against views per CT, per source.

    ``summary`` rows (:func:`gensyn.report.render.summarise_test_set`): ``arm, source,
    views_per_ct, class, auc_mean, ci_low, ci_high``; error bars are the patient-level
    bootstrap ``level`` CI of the model-mean AUC. The baseline (source ``none``) is a
    horizontal line with its CI as a band. All panels share one AUC range. A class without an
    AUC for any arm shows 'n/a (reason)' (``na_reason`` column) instead.
    """
    panels = [*classes, "macro"]
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, cls in zip(axes, panels, strict=True):
        rows = summary[summary["class"] == cls]
        if not np.isfinite(rows["auc_mean"].to_numpy(dtype=np.float64)).any():
            reasons = rows["na_reason"] if "na_reason" in rows else pd.Series([], dtype=str)
            reason = next((str(r) for r in reasons if isinstance(r, str) and r), "")
            _na_text(ax, f"n/a ({reason})" if reason else "n/a")
        base = rows[rows["source"] == "none"]
        if len(base) and np.isfinite(base["auc_mean"].iloc[0]):
            m = float(base["auc_mean"].iloc[0])
            ax.axhline(m, color="black", lw=1, label="baseline")
            low, high = float(base["ci_low"].iloc[0]), float(base["ci_high"].iloc[0])
            if np.isfinite(low) and np.isfinite(high):
                ax.axhspan(low, high, color="black", alpha=0.08)
        for source, group in rows[rows["source"] != "none"].groupby("source"):
            if not np.isfinite(group["auc_mean"].to_numpy(dtype=np.float64)).any():
                continue
            group = group.sort_values("views_per_ct")
            mean = group["auc_mean"].to_numpy(dtype=np.float64)
            below = np.nan_to_num(mean - group["ci_low"].to_numpy(dtype=np.float64))
            above = np.nan_to_num(group["ci_high"].to_numpy(dtype=np.float64) - mean)
            ax.errorbar(
                group["views_per_ct"],
                mean,
                yerr=np.clip(np.vstack([below, above]), 0.0, None),
                marker="o",
                capsize=3,
                lw=1.2,
                label=str(source),
            )
        ax.set(title=cls, xlabel="views per CT")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10], labels=["1", "2", "5", "10"])
    axes[0].set_ylim(*auc_ylim(summary[summary["class"].isin(panels)]))
    axes[0].set_ylabel(f"AUC (model mean, {level:.0%} CI)")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_auc_vs_factors(
    table: pd.DataFrame,
    keys: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    level: float = 0.95,
) -> Path:
    """Macro AUC with its CI against each swept key, one panel per key; saved as a PNG.

    ``table``: one test set's :func:`gensyn.report.sweep.comparison_table` rows. In the panel
    of key k the x axis lists k's values in sweep order, one line per arm (and values of the
    other keys); a baseline that k does not change is a black line with its CI as a band, a
    baseline that k changes is its point ringed in black.
    """
    from gensyn.report.sweep import format_value, present, short_names

    plt = _pyplot()
    names = short_names(list(keys))
    fig = plt.figure(figsize=(max(4.2, 3.6 * len(keys)) + 1.6, 3.4))
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    base = table[table["is_baseline"]]
    for ax, key in zip(axes, keys, strict=True):
        on = table[table[key].notna()]
        ticks = list(dict.fromkeys(format_value(v) for v in on[key]))
        if len(base) and base[key].isna().all():
            b = base.iloc[0]
            name = "baseline" if b["arm"] == "baseline" else f"baseline ({b['arm']})"
            ax.axhline(float(b["auc_mean"]), color="black", lw=1, label=name)
            if np.isfinite(b["ci_low"]) and np.isfinite(b["ci_high"]):
                ax.axhspan(float(b["ci_low"]), float(b["ci_high"]), color="black", alpha=0.08)
        others = [k for k in keys if k != key]
        series = on.assign(
            series=[
                " ".join(
                    [str(r["arm"])]
                    + [f"{names[k]}={format_value(r[k])}" for k in others if present(r[k])]
                )
                for _, r in on.iterrows()
            ]
        )
        for label, group in series.groupby("series", sort=False):
            x = [ticks.index(format_value(v)) for v in group[key]]
            mean = group["auc_mean"].to_numpy(dtype=np.float64)
            below = np.nan_to_num(mean - group["ci_low"].to_numpy(dtype=np.float64))
            above = np.nan_to_num(group["ci_high"].to_numpy(dtype=np.float64) - mean)
            ax.errorbar(x, mean, yerr=np.clip(np.vstack([below, above]), 0.0, None), marker="o",
                        capsize=3, lw=1.2, label=str(label))  # fmt: skip
            ringed = group["is_baseline"].to_numpy(dtype=bool)
            if ringed.any():
                ax.plot(np.asarray(x)[ringed], mean[ringed], "o", ms=11, mfc="none", mec="black",
                        mew=1.5, label="baseline")  # fmt: skip
        ax.set_xticks(range(len(ticks)), labels=ticks)
        ax.set_xlim(-0.5, len(ticks) - 0.5)
        ax.set(xlabel=key)
        ax.grid(axis="y", color="#ddd", lw=0.6)
    axes[0].set_ylim(*auc_ylim(table))
    axes[0].set_ylabel(f"macro AUC (model mean, {level:.0%} CI)")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_forest(
    rows: pd.DataFrame, path: str | os.PathLike[str], title: str = "", level: float = 0.95
) -> Path:
    """Forest plot of Δ macro AUC (arm − baseline) with its CI, one line per arm and test set.

    ``rows``: ``arm, test_set, delta, delta_ci_low, delta_ci_high`` (the report summary's
    macro rows of compared arms). Arms are listed top to bottom in the given order, grouped
    by test set; the value and interval are printed at the right; 0 (no change) is dashed.
    """
    plt = _pyplot()
    n = len(rows)
    fig, ax = plt.subplots(figsize=(7.6, 0.95 + 0.36 * max(n, 1)))
    labels = [f"{r.arm}  ({r.test_set})" if rows["test_set"].nunique() > 1 else str(r.arm)
              for r in rows.itertuples()]  # fmt: skip
    y = np.arange(n)[::-1]
    mean = rows["delta"].to_numpy(dtype=np.float64)
    low = rows["delta_ci_low"].to_numpy(dtype=np.float64)
    high = rows["delta_ci_high"].to_numpy(dtype=np.float64)
    sure = (low > 0) | (high < 0)  # interval excludes 0
    ax.axvline(0.0, color="grey", lw=1, ls="--")
    ax.hlines(y, low, high, color="#1f4e79", lw=2)
    ax.plot(mean[~sure], y[~sure], "o", color="white", mec="#1f4e79", mew=1.6, ms=7)
    ax.plot(mean[sure], y[sure], "o", color="#1f4e79", ms=7)
    ends = np.r_[low, high, 0.0]
    span = float(np.nanmax(np.abs(ends[np.isfinite(ends)]))) if np.isfinite(ends).any() else 0.1
    span = max(span, 0.01) * 1.15
    ax.set_xlim(-span, span)
    for yi, m, lo, hi in zip(y, mean, low, high, strict=True):
        text = f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(m) else "n/a"
        ax.annotate(text, (1.01, yi), xycoords=("axes fraction", "data"), va="center",
                    fontsize=9, family="monospace")  # fmt: skip
    ax.annotate(f"Δ [{level:.0%} CI]", (1.01, n - 0.45), xycoords=("axes fraction", "data"),
                va="bottom", fontsize=9, weight="bold")  # fmt: skip
    ax.set_yticks(y, labels=labels)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(f"Δ macro AUC vs baseline ({level:.0%} CI); filled: CI excludes 0")
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, loc="left", fontsize=10)
    fig.tight_layout()
    fig.subplots_adjust(right=0.70)
    return _save(fig, path, plt)


def plot_delta_heatmap(
    summary: pd.DataFrame,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
    level: float = 0.95,
) -> Path:
    """Heatmap of Δ AUC (arm − baseline) per finding and macro, each cell with its CI.

    ``summary``: the report's long table (``arm, test_set, class, delta, delta_ci_low,
    delta_ci_high``); rows are (arm, test set) with a Δ, columns the findings then macro.
    Colour: Δ on a diverging scale symmetric about 0 (blue better, red worse); cells whose
    CI excludes 0 are printed bold.
    """
    plt = _pyplot()
    cols = [*classes, "macro"]
    rows = summary.dropna(subset=["delta"])
    keys = list(dict.fromkeys(zip(rows["arm"], rows["test_set"], strict=True)))
    several = len({t for _, t in keys}) > 1
    grid = np.full((len(keys), len(cols)), np.nan)
    text: dict[tuple[int, int], tuple[str, bool]] = {}
    at = {(r["arm"], r["test_set"], r["class"]): r for _, r in rows.iterrows()}
    for i, (arm, test_set) in enumerate(keys):
        for j, cls in enumerate(cols):
            if (arm, test_set, cls) not in at:
                continue
            r = at[arm, test_set, cls]
            grid[i, j] = float(r["delta"])
            lo, hi = float(r["delta_ci_low"]), float(r["delta_ci_high"])
            text[i, j] = (f"{grid[i, j]:+.3f}\n[{lo:+.3f}, {hi:+.3f}]", lo > 0 or hi < 0)
    finite = np.abs(grid[np.isfinite(grid)])
    vmax = max(float(finite.max()) if finite.size else 0.05, 0.02)
    fig, ax = plt.subplots(figsize=(1.25 * len(cols) + 2.6, 0.62 * len(keys) + 1.5))
    image = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    for (i, j), (label, bold) in text.items():
        dark = abs(grid[i, j]) > 0.6 * vmax
        ax.text(j, i, label, ha="center", va="center", fontsize=8,
                color="white" if dark else "black", weight="bold" if bold else "normal")  # fmt: skip
    ax.set_xticks(range(len(cols)), labels=cols, rotation=20, ha="right")
    ax.set_yticks(range(len(keys)), labels=[f"{a} ({t})" if several else str(a) for a, t in keys])
    ax.axvline(len(classes) - 0.5, color="white", lw=3)  # macro apart from the findings
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="Δ AUC")
    ax.set_title(title or f"Δ AUC vs baseline per finding ({level:.0%} CI); bold: CI excludes 0",
                 loc="left", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: str | os.PathLike[str], plt) -> Path:  # type: ignore[no-untyped-def]
    from gensyn.base import io

    with io.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
