"""Small labelled chest-X-ray-like PNG sets for the classification tests.

Each finding draws a visible, finding-specific mark on a noisy 'chest' so a small CNN can
learn it in seconds: Effusion (bright band at the bottom), Pneumothorax (dark region at the
top right), Atelectasis (bright small blob in the left lung), Cardiomegaly (large bright
ellipse in the middle, otherwise small), Pneumonia (bright patchy texture on the right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gensyn.base import io

FINDINGS = ["Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia"]


def draw_xray(labels: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    """A uint8 (size, size) image with the marks of the 0/1 ``labels`` (order: FINDINGS)."""
    yy, xx = np.mgrid[0:size_px, 0:size_px] / size_px
    img = 0.35 + 0.1 * np.sin(6 * xx) + rng.normal(0, 0.06, (size_px, size_px))
    # lungs a little darker
    for cx in (0.3, 0.7):
        img -= 0.12 * (((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    heart_r = 0.2 if labels[3] else 0.11
    img += 0.25 * (((xx - 0.52) / heart_r) ** 2 + ((yy - 0.6) / (heart_r * 0.8)) ** 2 < 1)
    if labels[0]:
        img += 0.3 * (yy > 0.82)
    if labels[1]:
        img -= 0.25 * (((xx - 0.75) / 0.12) ** 2 + ((yy - 0.25) / 0.1) ** 2 < 1)
    if labels[2]:
        cy = rng.uniform(0.35, 0.6)
        img += 0.35 * (((xx - 0.28) / 0.06) ** 2 + ((yy - cy) / 0.06) ** 2 < 1)
    if labels[4]:
        patch = ((xx - 0.72) / 0.14) ** 2 + ((yy - 0.55) / 0.14) ** 2 < 1
        img += 0.3 * patch * (rng.random((size_px, size_px)) > 0.4)
    return io.to_uint(img, 8, vmin=0.0, vmax=1.0)


def make_xray_set(
    folder: Path,
    n_patients: int = 60,
    size_px: int = 32,
    seed: int = 0,
    test_fraction: float = 0.25,
    prevalence: float = 0.3,
    prefix: str = "img",
) -> pd.DataFrame:
    """Write a PNG set and return the prepare_xrays-style table.

    Columns: image_id, patient_id, view, path, the five FINDINGS, split (train | test).
    Patients have 1-3 images that share the patient's findings.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(n_patients):
        labels = (rng.random(5) < prevalence).astype(int)
        split = "test" if rng.random() < test_fraction else "train"
        for i in range(int(rng.integers(1, 4))):
            image_id = f"{prefix}_p{p:04d}_{i}"
            path = folder / f"{image_id}.png"
            io.write_image(path, draw_xray(labels, size_px, rng))
            rows.append(
                {
                    "image_id": image_id,
                    "patient_id": f"{prefix}_p{p:04d}",
                    "view": "PA",
                    "path": str(path),
                    **dict(zip(FINDINGS, labels, strict=True)),
                    "split": split,
                }
            )
    return pd.DataFrame(rows)
