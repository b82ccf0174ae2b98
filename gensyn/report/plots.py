"""Figures of the classification report: ROC curves and AUC against views per CT."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


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


def plot_roc_curves(
    preds: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """One panel per class; one curve per arm from its fold-averaged probabilities.

    ``preds``: one test set's rows ``arm, fold, image_id, y_<class>, p_<class>``.
    """
    plt = _pyplot()
    n = len(classes)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.8), squeeze=False)
    mean = preds.groupby(["arm", "image_id"], sort=False).mean(numeric_only=True).reset_index()
    for ax, cls in zip(axes[0], classes, strict=True):
        for arm, group in mean.groupby("arm", sort=False):
            y = group[f"y_{cls}"].to_numpy() > 0.5
            if y.all() or not y.any():
                continue
            fpr, tpr = roc_points(y, group[f"p_{cls}"].to_numpy())
            ax.plot(fpr, tpr, lw=1.2, label=str(arm))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(title=cls, xlabel="false positive rate", xlim=(0, 1), ylim=(0, 1.01))
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("true positive rate")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_auc_vs_views(
    summary: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Per class (and macro): mean AUC ± sd over folds against views per CT, per source.

    ``summary`` rows: ``arm, source, views_per_ct, class, auc_mean, auc_sd``; the baseline
    (source ``none``) is drawn as a horizontal line with its ± sd band.
    """
    plt = _pyplot()
    panels = [*classes, "macro"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2), squeeze=False)
    for ax, cls in zip(axes[0], panels, strict=True):
        rows = summary[summary["class"] == cls]
        base = rows[rows["source"] == "none"]
        if len(base):
            m, sd = float(base["auc_mean"].iloc[0]), float(np.nan_to_num(base["auc_sd"].iloc[0]))
            ax.axhline(m, color="black", lw=1, label="baseline")
            ax.axhspan(m - sd, m + sd, color="black", alpha=0.08)
        for source, group in rows[rows["source"] != "none"].groupby("source"):
            group = group.sort_values("views_per_ct")
            ax.errorbar(
                group["views_per_ct"],
                group["auc_mean"],
                yerr=group["auc_sd"].fillna(0),
                marker="o",
                capsize=3,
                lw=1.2,
                label=str(source),
            )
        ax.set(title=cls, xlabel="views per CT")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10], labels=["1", "2", "5", "10"])
    axes[0][0].set_ylabel("AUC (mean ± sd over folds)")
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: str | os.PathLike[str], plt) -> Path:  # type: ignore[no-untyped-def]
    from gensyn import io

    with io.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def with_column_titles(grid: np.ndarray, titles: Sequence[str], font_px: int = 0) -> np.ndarray:
    """``grid`` (uint8, H x W) under a white header row with ``titles`` centred over equal columns.

    The header is ``font_px + 8`` pixels tall (``font_px`` 0: about a twentieth of the width,
    12 to 24 px), black text; the result is that much taller than ``grid``.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not titles:
        return grid
    width = grid.shape[1]
    size = font_px or int(np.clip(width // 20, 12, 24))
    font = ImageFont.load_default(size=size)
    header = Image.new("L", (width, size + 8), 255)
    draw = ImageDraw.Draw(header)
    column = width / len(titles)
    for j, title in enumerate(titles):
        draw.text(((j + 0.5) * column, 4), str(title), fill=0, font=font, anchor="ma")
    return np.concatenate([np.asarray(header, np.uint8), grid.astype(np.uint8)], axis=0)
