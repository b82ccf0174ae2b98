"""Blinding audit: it catches sources that differ only in framing, not ones drawn alike."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from gensyn.reader.audit import AuditParams, audit_sources, feature_table
from gensyn.reader.blinding import (
    BlindingParams,
    blind_pixels,
)

N = 24  # images per source: 5-fold CV on 48 images; chance accuracy stays well below 0.65
PAIR = {"real": "real", "fake": "fake"}


def _thorax(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A tight thorax crop, as a DRR: two lungs with ribs running off the sides, spine, noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.55 + 0.05 * rng.standard_normal() + 0.25 * yy  # soft tissue, brighter to the feet
    for side in (-1, 1):
        cx = 0.5 + side * rng.uniform(0.28, 0.31)
        a, b = rng.uniform(0.22, 0.25), rng.uniform(0.36, 0.4)
        lung = ((xx - cx) / a) ** 2 + ((yy - 0.45) / b) ** 2 < 1
        img[lung] = 0.2 + 0.08 * (np.sin(yy[lung] * rng.uniform(40, 50)) > 0)  # ribs
    img[np.abs(xx - 0.5) < 0.08] = 0.9  # spine and mediastinum
    img = ndimage.gaussian_filter(img, 1.0)
    return np.clip(img + 0.02 * rng.standard_normal(img.shape), 0.0, 1.0)


def _film(tight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same thorax on a film: chest wall, air around the body, a tilted field, shutters."""
    n = tight.shape[0]
    big = np.zeros((2 * n, 2 * n))
    yy, xx = np.mgrid[0 : 2 * n, 0 : 2 * n] / (2 * n)
    body = ((xx - 0.5) / 0.36) ** 2 + ((yy - 0.5) / 0.6) ** 4 < 1
    big[body] = 0.5
    big[n // 2 : n // 2 + n, n // 2 : n // 2 + n] = tight
    # a collimated field tilted by up to 4 degrees: black wedges at its edges and corners
    tilt = np.deg2rad(rng.uniform(-4, 4))
    u = (xx - 0.5) * np.cos(tilt) + (yy - 0.5) * np.sin(tilt)
    v = (yy - 0.5) * np.cos(tilt) - (xx - 0.5) * np.sin(tilt)
    big[(np.abs(u) > rng.uniform(0.4, 0.46)) | (np.abs(v) > rng.uniform(0.4, 0.46))] = 0.0
    return np.clip(big + 0.01 * rng.standard_normal(big.shape), 0.0, 1.0)


def _accuracy(images: dict[str, list[np.ndarray]], seed: int = 0) -> float:
    """Cross-validated audit accuracy of the one real/fake pair."""
    sources = [name for name, imgs in images.items() for _ in imgs]
    pixels = [img for imgs in images.values() for img in imgs]
    pairs, _ = audit_sources(feature_table(pixels, sources), PAIR, AuditParams(), seed)
    assert bool(pairs["judged"].all())
    return float(pairs["cv_accuracy"].iloc[0])


def test_audit_fails_sources_that_differ_only_in_framing() -> None:
    rng = np.random.default_rng(0)
    tight = [_thorax(rng) for _ in range(2 * N)]
    shown = BlindingParams(image_size_px=64, field_dark_fraction=0.0, framing="centre")
    real = [blind_pixels(_film(t, rng), shown) for t in tight[:N]]  # film, left as it is
    fake = [blind_pixels(t, shown) for t in tight[N:]]
    assert _accuracy({"real": real, "fake": fake}) > 0.9


def test_audit_passes_sources_drawn_alike_whatever_the_seed() -> None:
    accuracies = []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        shown = BlindingParams(image_size_px=64, framing="centre")
        images = [blind_pixels(_thorax(rng), shown) for _ in range(2 * N)]
        accuracies.append(_accuracy({"real": images[:N], "fake": images[N:]}, seed))
    assert max(accuracies) <= AuditParams().max_accuracy
    assert np.mean(accuracies) < 0.6
