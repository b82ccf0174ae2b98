"""DRR validation (a): analytic phantoms of known attenuation.

Line integrals through a partial-volume sphere and cylinder are compared with the
exact chord lengths; Beer-Lambert intensities (mono and polychromatic) through a
uniform water box with intensities computed independently with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gensyn.drr import CarmGeometry, CarmPose, PhysicsConfig, render_drrs
from gensyn.drr.physics import mass_attenuation_cm2_per_g, spectrum_table
from gensyn.drr.projector import line_integrals
from gensyn.drr.render import make_rays

SPACING_MM = 1.5
SHAPE = (84, 84, 84)
MU_PER_MM = 0.01  # 1/mm; intensities then vary over exp(-0.8)
RAMP_VOXELS = 2.0  # width of the partial-volume ramp across the surface
GEOMETRY = CarmGeometry(1000.0, 700.0, 48, 48, 4.0)


def _voxel_centers(shape, spacing_mm):
    """World coordinates (mm) of voxel centres, volume centred at 0."""
    axes = [(np.arange(n) - (n - 1) / 2) * spacing_mm for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _partial_volume(distance, shape, spacing_mm):
    """Occupancy of each voxel of a solid with signed distance ``distance(x, y, z)`` (mm).

    A linear ramp one voxel wide across the surface: exact partial volume for a flat
    surface, and no sub-sampling noise.
    """
    x, y, z = _voxel_centers(shape, spacing_mm)
    return np.clip(0.5 - distance(x, y, z) / (RAMP_VOXELS * spacing_mm), 0.0, 1.0).astype(
        np.float32
    )


def _affine(shape, spacing_mm):
    aff = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2 * spacing_mm
    return aff


def _ray_dirs(rays, b):
    r, c = np.meshgrid(np.arange(rays.rows), np.arange(rays.cols), indexing="ij")
    pix = rays.origin[b] + c[..., None] * rays.d_col[b] + r[..., None] * rays.d_row[b]
    d = pix - rays.source[b]
    return rays.source[b], d / np.linalg.norm(d, axis=-1, keepdims=True)


def _sphere_chord(src, u, radius):
    """Chord through a sphere at the origin of rays from ``src`` along unit ``u``."""
    t_closest = -(u @ src)
    d2 = ((src + t_closest[..., None] * u) ** 2).sum(-1)
    return 2 * np.sqrt(np.clip(radius**2 - d2, 0, None))


def _cylinder_chord(src, u, radius):
    """Chord through an infinite cylinder along z through the origin."""
    a = u[..., 0] ** 2 + u[..., 1] ** 2
    b = 2 * (src[0] * u[..., 0] + src[1] * u[..., 1])
    c = src[0] ** 2 + src[1] ** 2 - radius**2
    disc = np.clip(b**2 - 4 * a * c, 0, None)
    return np.sqrt(disc) / a


POSES = [CarmPose(0, 0), CarmPose(15, -25), CarmPose(-30, 60)]


@pytest.mark.parametrize("method", ["joseph", "trilinear"])
@pytest.mark.parametrize("shape_name", ["sphere", "cylinder"])
def test_line_integrals_match_chords(method, shape_name):
    radius = 40.0
    if shape_name == "sphere":
        occ = _partial_volume(
            lambda x, y, z: np.sqrt(x**2 + y**2 + z**2) - radius, SHAPE, SPACING_MM
        )
    else:
        occ = _partial_volume(lambda x, y, z: np.sqrt(x**2 + y**2) - radius, SHAPE, SPACING_MM)
    affine = _affine(SHAPE, SPACING_MM)
    vol = torch.from_numpy(occ * MU_PER_MM)[None]
    poses = POSES if shape_name == "sphere" else [CarmPose(0, b) for b in (0, 35, -70)]
    rays = make_rays(poses, GEOMETRY, SHAPE, affine)
    got = line_integrals(vol, affine, rays, method=method, step_mm=0.5)[..., 0].numpy()
    for b in range(len(poses)):
        src, u = _ray_dirs(rays, b)
        if shape_name == "sphere":
            chord = _sphere_chord(src, u, radius)
        else:
            chord = _cylinder_chord(src, u, radius)
            # keep rays that leave through the side, well inside the 128 mm slab in z
            t_mid = -(src[0] * u[..., 0] + src[1] * u[..., 1]) / (u[..., 0] ** 2 + u[..., 1] ** 2)
            t_exit = t_mid + chord / 2
            z_exit = src[2] + t_exit * u[..., 2]
            chord = np.where(np.abs(z_exit) < 40, chord, 0)
        central = chord > 0.7 * chord.max()  # away from the rim, where chords are steep
        assert central.sum() > 50
        expected = MU_PER_MM * chord[central]
        rel = np.abs(got[b][central] - expected) / expected
        assert np.median(rel) < 0.002, (b, np.median(rel))
        assert rel.max() < 0.005, (b, rel.max())
        # Beer-Lambert intensity of a monochromatic beam
        np.testing.assert_allclose(np.exp(-got[b][central]), np.exp(-expected), rtol=0.005)


def _box_lengths_mm(rays, b, shape, affine):
    """Exact path length (mm) of each ray inside the voxel box [-0.5, n - 0.5]."""
    src, u = _ray_dirs(rays, b)
    lo = affine[:3, 3] - 0.5 * SPACING_MM
    hi = lo + np.asarray(shape) * SPACING_MM
    with np.errstate(divide="ignore"):
        t0, t1 = (lo - src) / u, (hi - src) / u
    t_in = np.minimum(t0, t1).max(-1)
    t_out = np.maximum(t0, t1).min(-1)
    return np.clip(t_out - t_in, 0, None)


@pytest.mark.parametrize("mode", ["mono", "poly"])
def test_water_box_beer_lambert(mode):
    shape = (40, 40, 40)
    affine = _affine(shape, SPACING_MM)
    hu = np.zeros(shape, np.float32)  # water: 1.0 g/cm^3
    masks = {
        "air": np.zeros(shape, bool),
        "soft_tissue": np.ones(shape, bool),
        "bone": np.zeros(shape, bool),
    }
    physics = PhysicsConfig(mode=mode, output="intensity", mono_energy_kev=60.0)
    geometry = CarmGeometry(1000.0, 600.0, 32, 32, 3.0)
    poses = [CarmPose(0, 0), CarmPose(20, 30)]
    got = render_drrs(hu, affine, poses, geometry, physics, masks=masks)
    rays = make_rays(poses, geometry, shape, affine)
    table = spectrum_table(physics)
    for b in range(len(poses)):
        length_cm = _box_lengths_mm(rays, b, shape, affine) / 10.0
        inside = length_cm > 2.0
        if mode == "mono":
            mu = mass_attenuation_cm2_per_g("soft_tissue", np.array([60.0]))[0]
            expected = np.exp(-mu * 1.0 * length_cm)
        else:
            mu = mass_attenuation_cm2_per_g("soft_tissue", table.energies_kev)
            w = table.energies_kev * table.photon_weights
            expected = (np.exp(-length_cm[..., None] * mu) * w).sum(-1) / w.sum()
        rel = np.abs(got[b][inside] - expected[inside]) / expected[inside]
        assert np.median(rel) < 0.001, np.median(rel)
        assert np.percentile(rel, 95) < 0.005, np.percentile(rel, 95)


def test_poisson_noise_statistics():
    shape = (20, 20, 20)
    affine = _affine(shape, SPACING_MM)
    hu = np.zeros(shape, np.float32)
    geometry = CarmGeometry(1000.0, 600.0, 64, 64, 0.5)
    clean = render_drrs(
        hu, affine, [CarmPose()], geometry, PhysicsConfig(output="intensity", mode="mono")
    )
    physics = PhysicsConfig(output="intensity", mode="mono", photon_count=10000.0)
    noisy = render_drrs(hu, affine, [CarmPose()], geometry, physics, seed=3)
    again = render_drrs(hu, affine, [CarmPose()], geometry, physics, seed=3)
    np.testing.assert_array_equal(noisy, again)
    center = clean[0, 24:40, 24:40]
    # Poisson: variance of the transmitted fraction = I / N0 in the mono case
    expected_var = center.mean() / 10000.0
    got_var = (noisy[0, 24:40, 24:40] - center).var()
    assert 0.7 < got_var / expected_var < 1.3
    assert abs((noisy[0, 24:40, 24:40] - center).mean()) < 3 * np.sqrt(expected_var / 256)


def test_density_from_hu_matches_calibration_table():
    from gensyn.drr.physics import DENSITY_KNOTS_G_CM3, DENSITY_KNOTS_HU, density_from_hu

    hu = np.linspace(-1500, 2900, 1001)
    expected = np.interp(hu, DENSITY_KNOTS_HU, DENSITY_KNOTS_G_CM3)
    np.testing.assert_allclose(density_from_hu(hu), expected, rtol=1e-5, atol=1e-6)
    assert density_from_hu(torch.tensor([4000.0])).item() > DENSITY_KNOTS_G_CM3[-1]  # extrapolated


def test_poisson_noise_is_seeded_per_view_not_per_batch():
    """A view's noise depends on (seed, CT, view) only: not on the batch it was rendered in."""
    from gensyn.drr.render import view_noise_seed

    shape = (20, 20, 20)
    affine = _affine(shape, SPACING_MM)
    hu = np.zeros(shape, np.float32)
    geometry = CarmGeometry(1000.0, 600.0, 32, 32, 1.0)
    physics = PhysicsConfig(output="intensity", mode="mono", photon_count=1000.0)
    poses = [CarmPose(alpha_deg=a) for a in (0.0, 5.0, -5.0)]
    seeds = [view_noise_seed(0, "ct-1", i) for i in range(3)]
    together = render_drrs(hu, affine, poses, geometry, physics, seed=seeds)
    alone = render_drrs(hu, affine, poses[2:], geometry, physics, seed=seeds[2:])
    np.testing.assert_array_equal(together[2], alone[0])
    # other CT, other view or other run seed: other noise
    assert not np.array_equal(together[0], together[1] * 1.0)
    other_ct = render_drrs(
        hu, affine, poses[:1], geometry, physics, seed=[view_noise_seed(0, "ct-2", 0)]
    )
    other_seed = render_drrs(
        hu, affine, poses[:1], geometry, physics, seed=[view_noise_seed(1, "ct-1", 0)]
    )
    assert not np.array_equal(together[0], other_ct[0])
    assert not np.array_equal(together[0], other_seed[0])
    assert len(set(seeds)) == 3 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="one per pose"):
        render_drrs(hu, affine, poses, geometry, physics, seed=seeds[:2])


def test_spectra_are_cached_on_disk(tmp_path, monkeypatch):
    """A spectrum is computed by spekpy once, then read from GENSYN_SPECTRUM_CACHE."""
    from gensyn.drr import spectra

    monkeypatch.setenv("GENSYN_SPECTRUM_CACHE", str(tmp_path))
    spectra.spekpy_spectrum.cache_clear()
    energies, fluence = spectra.spekpy_spectrum(77.0, 2.5, 12.0, 2.0)
    path = spectra.cache_file(77.0, 2.5, 12.0, 2.0)
    assert path.parent == tmp_path and path.is_file()
    assert not list(tmp_path.glob("*.partial*"))
    spectra.spekpy_spectrum.cache_clear()

    def no_spekpy(*args):
        raise AssertionError("spekpy called although the spectrum is cached")

    monkeypatch.setattr(spectra, "_compute", no_spekpy)
    again_e, again_f = spectra.spekpy_spectrum(77.0, 2.5, 12.0, 2.0)
    np.testing.assert_array_equal(energies, again_e)
    np.testing.assert_array_equal(fluence, again_f)
    spectra.spekpy_spectrum.cache_clear()
