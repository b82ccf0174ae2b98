"""Checks of a translation: intensity histograms, a domain-gap classifier, image grids.

The domain gap is measured the way a sceptical reader would: can a simple classifier tell
real X-rays from synthetic images? Each image is reduced to a few dozen hand-made
features (intensity histogram and percentiles, gradient-magnitude histogram, radial power
spectrum, i.e. brightness, contrast, edges and noise texture) and a logistic regression
is cross-validated on held-out real vs held-out synthetic images. Accuracy 1.0 means the
two are trivially separable, 0.5 means the classifier cannot tell them apart. Comparing
real-vs-DRR with real-vs-translated DRR on the same images shows what translation gained.

Images are 2-D uint8/uint16 arrays or float arrays in [0, 1].
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

HIST_BINS = 32


def to_unit(image: np.ndarray) -> np.ndarray:
    """A grey image as float64 in [0, 1] (uint8 / 255, uint16 / 65535, floats clipped)."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr.mean(axis=-1) if arr.shape[-1] in (3, 4) else arr[0]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def _radial_power(image: np.ndarray, n_bins: int = 8) -> np.ndarray:
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    edges = np.linspace(0, 1, n_bins + 1)
    total = spectrum.sum() + 1e-12
    return np.array(
        [
            spectrum[(radius >= lo) & (radius < hi)].sum() / total
            for lo, hi in itertools.pairwise(edges)
        ]
    )


def image_features(image: np.ndarray) -> np.ndarray:
    """A 1-D feature vector (intensity, edges, texture) of one grey image."""
    img = to_unit(image)
    hist = np.histogram(img, bins=HIST_BINS, range=(0, 1))[0] / img.size
    pct = np.percentile(img, [1, 5, 25, 50, 75, 95, 99])
    gy, gx = np.gradient(img)
    grad = np.hypot(gx, gy)
    grad_hist = np.histogram(np.clip(grad, 0, 0.25), bins=16, range=(0, 0.25))[0] / img.size
    stats = [img.mean(), img.std(), grad.mean(), grad.std()]
    return np.concatenate([hist, pct, grad_hist, _radial_power(img), stats])


def domain_gap_accuracy(
    real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], seed: int = 0, folds: int = 5
) -> float:
    """Cross-validated accuracy of a logistic regression telling ``real`` from ``synthetic``.

    Balanced classes are drawn (the larger set is subsampled, seeded). Needs at least
    ``folds`` images per class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(real), len(synthetic))
    if n < folds:
        raise ValueError(
            f"domain gap needs >= {folds} images per class, got {len(real)} real and "
            f"{len(synthetic)} synthetic (raise generator.heldout_size)"
        )
    rng = np.random.default_rng(seed)
    pick_r = rng.choice(len(real), n, replace=False)
    pick_s = rng.choice(len(synthetic), n, replace=False)
    x = np.stack(
        [image_features(real[i]) for i in pick_r] + [image_features(synthetic[i]) for i in pick_s]
    )
    y = np.r_[np.ones(n), np.zeros(n)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, x, y, cv=cv, scoring="accuracy")))


def intensity_histogram(images: Sequence[np.ndarray], bins: int = 64) -> np.ndarray:
    """Normalised histogram (sums to 1) of all pixel intensities in [0, 1] of ``images``."""
    counts = np.zeros(bins)
    for image in images:
        counts += np.histogram(to_unit(image), bins=bins, range=(0, 1))[0]
    return counts / max(counts.sum(), 1.0)


def histogram_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Earth mover's distance between two normalised histograms on [0, 1] (intensity units)."""
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() / len(p))


def image_grid(
    rows: Sequence[Sequence[np.ndarray]], pad_px: int = 2, titles: Sequence[str] = ()
) -> np.ndarray:
    """Tile grey images (any sizes, resized to the first one's) into one uint8 grid.

    ``rows[i][j]`` is the image in row i, column j; images are scaled to uint8 by
    :func:`to_unit`. ``titles`` (one per column, e.g. ``("DRR", "SyntheX", "real")``) are
    written in a header row above the grid.
    """
    from PIL import Image

    first = to_unit(rows[0][0])
    h, w = first.shape
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    grid = np.full((n_rows * (h + pad_px) + pad_px, n_cols * (w + pad_px) + pad_px), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            tile = (to_unit(image) * 255).round().astype(np.uint8)
            if tile.shape != (h, w):
                tile = np.asarray(Image.fromarray(tile).resize((w, h), Image.Resampling.BILINEAR))
            y, x = pad_px + i * (h + pad_px), pad_px + j * (w + pad_px)
            grid[y : y + h, x : x + w] = tile
    from gensyn.base.io import with_column_titles

    return with_column_titles(grid, titles)


def plot_histograms(
    path: str | os.PathLike[str], histograms: Mapping[str, np.ndarray], title: str = ""
) -> Path:
    """Save a line plot of normalised intensity histograms (one line per name) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gensyn.base.io import atomic_write

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for name, hist in histograms.items():
        centres = (np.arange(len(hist)) + 0.5) / len(hist)
        ax.plot(centres, hist, label=name, lw=1.5)
    ax.set_xlabel("intensity (0 = black, 1 = white)")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
