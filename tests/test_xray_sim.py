"""Simulated clinical radiograph chain: analytic checks of each physical step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from gensyn.data.phantom.volume import generate_phantom
from gensyn.data.phantom.xray_sim import (
    MU_WATER_PER_MM,
    ChainParams,
    acquire,
    pa_line_integral,
    sample_chain_params,
    simulate_real_radiograph,
)

# An ideal acquisition: no pose change, no collimation, no marker, no scatter, no noise.
IDEAL = ChainParams(
    rotation_deg=0.0, scale=1.0, shift_px=(0.0, 0.0), photons_per_px=1e12,
    electronic_noise=0.0, scatter_to_primary=0.0, scatter_sigma_frac=0.1,
    detector_blur_px=1e-3, unsharp_gain=0.8, unsharp_sigma_frac=0.08, detail_gain=0.5,
    tone_gamma=1.5, tone_gain=6.0, tone_centre=0.5, collimation_frac=(0.0, 0.0, 0.0, 0.0),
    marker="",
)  # fmt: skip


@pytest.fixture(scope="module")
def chest_line() -> np.ndarray:
    ph = generate_phantom(4, {}, shape_vox=(64, 64, 64), spacing_mm=(5.6, 5.6, 5.2))
    return pa_line_integral(ph.hu, ph.affine, 128)


def test_output_dtype_range_and_bit_depth(chest_line: np.ndarray) -> None:
    img = simulate_real_radiograph(chest_line, np.random.default_rng(0))
    assert img.dtype == np.uint8 and img.shape == chest_line.shape
    assert img.min() <= 10 and img.max() >= 245
    img16 = simulate_real_radiograph(chest_line, np.random.default_rng(0), bit_depth=16)
    assert img16.dtype == np.uint16 and img16.max() > 60000
    with pytest.raises(ValueError, match="bit_depth"):
        simulate_real_radiograph(chest_line, np.random.default_rng(0), bit_depth=12)


def test_deterministic_for_a_seed(chest_line: np.ndarray) -> None:
    a = simulate_real_radiograph(chest_line, np.random.default_rng(7))
    b = simulate_real_radiograph(chest_line, np.random.default_rng(7))
    c = simulate_real_radiograph(chest_line, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.3


def _edge_width_10_90(profile: np.ndarray) -> float:
    """Distance (px) between the 10 % and 90 % crossings of a rising edge profile."""
    p = (profile - profile.min()) / (profile.max() - profile.min())
    x = np.arange(len(p), dtype=float)
    return float(np.interp(0.9, p, x) - np.interp(0.1, p, x))


@pytest.mark.parametrize("sigma_px", [1.0, 1.5, 2.5])
def test_detector_blur_has_the_gaussian_edge_spread(sigma_px: float) -> None:
    line = np.full((64, 128), 2.0, dtype=np.float32)
    line[:, 64:] = 0.5  # a vertical edge: dense left half, thin right half
    params = dataclasses.replace(IDEAL, detector_blur_px=sigma_px)
    signal = np.exp(-acquire(line, params, np.random.default_rng(0)))
    # The 10-90 % width of a Gaussian-blurred step is 2 * 1.2816 * sigma.
    width = _edge_width_10_90(signal[32, 40:88])
    assert width == pytest.approx(2 * 1.2816 * sigma_px, rel=0.05)


def test_scatter_glow_adds_the_scatter_to_primary_ratio() -> None:
    line = np.full((96, 96), 2.0, dtype=np.float32)
    params = dataclasses.replace(IDEAL, scatter_to_primary=0.5)
    density = acquire(line, params, np.random.default_rng(0))
    # Uniform object: scatter = 0.5 * primary everywhere, so density = 2 - ln(1.5).
    np.testing.assert_allclose(density[30:66, 30:66], 2.0 - np.log(1.5), atol=1e-3)
    # On an edge: behind the body (line > 0.5) the glow adds half the mean primary, and it is
    # low-frequency, so it lifts the dense side most next to the bright side.
    edge = np.full((96, 96), 3.0, dtype=np.float32)
    edge[:, 48:] = 0.5
    clean = acquire(edge, IDEAL, np.random.default_rng(0))
    glowing = acquire(edge, params, np.random.default_rng(0))
    body = edge > 0.5
    ratio = np.exp(-glowing)[body].mean() / np.exp(-clean)[body].mean()
    assert ratio == pytest.approx(1.5, rel=1e-3)
    drop = clean - glowing
    assert drop[48, 44] > 1.5 * drop[48, 4] > 0


def test_quantum_noise_follows_poisson_statistics() -> None:
    line = np.full((128, 128), 1.0, dtype=np.float32)
    params = dataclasses.replace(IDEAL, photons_per_px=1000.0)
    density = acquire(line, params, np.random.default_rng(0))
    # Poisson: var(quanta) = mean = N0 e^-1, so std(density) ~ 1 / sqrt(N0 e^-1).
    expected = 1.0 / np.sqrt(1000.0 * np.exp(-1.0))
    assert density[20:108, 20:108].std() == pytest.approx(expected, rel=0.1)


def test_pose_jitter_moves_a_point_as_documented() -> None:
    line = np.zeros((128, 128), dtype=np.float32)
    p = np.array([40.0, 90.0])
    line[39:42, 89:92] = 3.0
    params = dataclasses.replace(IDEAL, rotation_deg=12.0, scale=1.05, shift_px=(0.02, -0.03))
    density = acquire(line, params, np.random.default_rng(0))
    weights = np.clip(density - 0.5, 0.0, None)
    rows, cols = np.indices(weights.shape)
    found = np.array([(weights * rows).sum(), (weights * cols).sum()]) / weights.sum()
    t = np.deg2rad(-12.0)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.array([63.5, 63.5])
    expected = c + np.array([0.02, -0.03]) * 128 + 1.05 * r @ (p - c)
    np.testing.assert_allclose(found, expected, atol=0.6)


@pytest.mark.parametrize("letter", ["L", "R"])
def test_marker_letter_burnt_in_on_its_side(chest_line: np.ndarray, letter: str) -> None:
    line = ndimage.zoom(chest_line, 2, order=1)  # 256 px: a 7 % letter is 17 px tall
    params = dataclasses.replace(
        sample_chain_params(np.random.default_rng(3)), rotation_deg=0.0, shift_px=(0.0, 0.0)
    )
    plain = simulate_real_radiograph(
        line, np.random.default_rng(1), dataclasses.replace(params, marker="")
    )
    marked = simulate_real_radiograph(
        line, np.random.default_rng(1), dataclasses.replace(params, marker=letter)
    )
    rows, cols = np.nonzero(marked.astype(int) - plain.astype(int) > 60)
    assert len(rows) > 30, "the lead letter must show as bright pixels"
    assert rows.max() < 0.3 * line.shape[0]  # near the top
    # PA film as read: the patient's right ("R") is on the image left.
    on_left = cols.max() < line.shape[1] / 2
    assert on_left == (letter == "R")


def test_collimated_border_is_unexposed_and_bright(chest_line: np.ndarray) -> None:
    params = dataclasses.replace(
        sample_chain_params(np.random.default_rng(5)), collimation_frac=(0.1, 0.1, 0.1, 0.1)
    )
    img = simulate_real_radiograph(chest_line, np.random.default_rng(0), params)
    assert img[:5].mean() > 230 and img[:, -5:].mean() > 230


def test_pa_line_integral_water_box_and_orientation() -> None:
    spacing = np.array([2.0, 3.0, 2.5])
    hu = np.full((40, 30, 48), -1000.0, dtype=np.float32)
    hu[10:30, 5:25, 12:36] = 0.0  # water box, 20 voxels = 60 mm deep along y
    hu[32:36, 5:25, 40:44] = 1000.0  # a dense block on the patient's right (+x), high (+z)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.array(hu.shape) - 1) / 2 * spacing
    line = pa_line_integral(hu, affine, size_px=100)
    # Through the water box: mu_water * 60 mm (analytic).
    assert line[50, 50] == pytest.approx(MU_WATER_PER_MM * 60.0, rel=1e-3)
    # The dense block shows at the top left (patient's right on the image left, head up).
    r, c = np.unravel_index(np.argmax(line), line.shape)
    assert r < 30 and c < 30
    # The same patient stored with flipped i and k axes (an LPI-like affine) looks the same.
    flipped = np.diag([-1.0, 1.0, -1.0, 1.0]) @ affine
    flipped[:3, 3] = affine[:3, 3] * np.array([-1, 1, -1])
    hu_flipped = hu[::-1, :, ::-1]
    np.testing.assert_allclose(pa_line_integral(hu_flipped, flipped, 100), line, atol=1e-5)
