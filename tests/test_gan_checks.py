"""Translation checks and domain selection, against answers known in advance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gensyn.gan import checks
from gensyn.gan.domains import domain_paths, select_domains


def _noise_images(n: int, mean: float, sd: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(mean, sd, (32, 32)), 0, 1) for _ in range(n)]


def test_histogram_distance_is_the_shift_between_two_spikes() -> None:
    bins = 100
    p, q = np.zeros(bins), np.zeros(bins)
    p[10], q[40] = 1.0, 1.0
    assert checks.histogram_distance(p, q) == pytest.approx(0.30)
    assert checks.histogram_distance(p, p) == 0.0
    h = checks.intensity_histogram([np.full((4, 4), 255, np.uint8)], bins=8)
    assert h[-1] == 1.0 and h.sum() == 1.0


def test_domain_gap_separates_different_and_not_identical_distributions() -> None:
    real = _noise_images(30, 0.5, 0.10, seed=0)
    same = _noise_images(30, 0.5, 0.10, seed=1)
    other = _noise_images(30, 0.3, 0.02, seed=2)
    assert checks.domain_gap_accuracy(real, other) >= 0.95
    assert checks.domain_gap_accuracy(real, same) <= 0.75
    with pytest.raises(ValueError, match="heldout_size"):
        checks.domain_gap_accuracy(real[:3], other[:3])


def test_image_grid_layout() -> None:
    a = np.zeros((8, 8), np.uint8)
    b = np.full((16, 16), 65535, np.uint16)  # resized to the first tile's size
    grid = checks.image_grid([[a, b], [b, a]], pad_px=1)
    assert grid.shape == (2 * 9 + 1, 2 * 9 + 1) and grid.dtype == np.uint8
    assert grid[1, 1] == 0 and grid[1, 10] == 255


def test_select_domains_holds_out_whole_groups_and_is_seeded() -> None:
    drrs = pd.DataFrame(
        {"path": [f"/d/{i}.png" for i in range(30)], "ct_id": [f"ct{i // 3}" for i in range(30)]}
    )
    xrays = pd.DataFrame(
        {
            "path": [f"/x/{i}.png" for i in range(40)],
            "patient_id": [f"p{i // 2}" for i in range(40)],
            "split": ["test" if i < 10 else "train" for i in range(40)],
        }
    )
    t1 = select_domains(drrs, xrays, max_per_domain=12, heldout_size=5, seed=7)
    t2 = select_domains(drrs, xrays, max_per_domain=12, heldout_size=5, seed=7)
    t3 = select_domains(drrs, xrays, max_per_domain=12, heldout_size=5, seed=8)
    pd.testing.assert_frame_equal(t1, t2)
    assert not t1.equals(t3)
    for domain in "AB":
        train = t1[(t1.domain == domain) & (t1.subset == "train")]
        held = t1[(t1.domain == domain) & (t1.subset == "heldout")]
        assert len(train) == 12 and len(held) == 5
        assert not set(train.group) & set(held.group)
    assert not {p for p in domain_paths(t1, "B", "train")} & {f"/x/{i}.png" for i in range(10)}
    with pytest.raises(ValueError, match="domain A is empty"):
        select_domains(drrs.iloc[:0], xrays, 12, 5)
