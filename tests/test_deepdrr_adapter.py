"""DeepDRR adapter: geometry mapping, exchange files, clear errors; the real run on a GPU.

The CPU tests check the camera handed to DeepDRR against GENSYN's own projection of
bead positions and against the rays GENSYN casts; the ``gpu`` test renders a bead
phantom with DeepDRR itself (needs the DeepDRR environment, see docs/deepdrr.md:
``GENSYN_DEEPDRR_PYTHON``, optional ``GENSYN_DEEPDRR_PYTHONPATH`` and
``GENSYN_DEEPDRR_SHIMS=1``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from gensyn.base.errors import GensynError
from gensyn.drr.deepdrr_adapter import (
    DeepDrrRenderer,
    DeepDrrSettings,
    _run_worker,
    cuda_unavailable_reason,
    deepdrr_camera,
    project_points_deepdrr,
)
from gensyn.drr.geometry import (
    GEOMETRY_PRESETS,
    CarmGeometry,
    CarmPose,
    detector_pixels_world,
    project_points,
)
from gensyn.drr.physics import PhysicsConfig, density_from_hu

POSES = [
    CarmPose(0.0, 0.0),
    CarmPose(10.0, 0.0),
    CarmPose(0.0, -10.0),
    CarmPose(-7.5, 25.0),
    CarmPose(30.0, 90.0, isocenter_mm=(12.0, -30.0, 40.0)),
]
GEOMETRIES = [
    GEOMETRY_PRESETS["mobile_carm"],
    GEOMETRY_PRESETS["mobile_carm"].resized(512),
    GEOMETRY_PRESETS["pa_chest"].resized(300, 240),
    CarmGeometry(800.0, 400.0, 64, 96, 1.3),
]


def _beads(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-150.0, 150.0, size=(25, 3))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_camera_projects_beads_like_gensyn(geometry: CarmGeometry) -> None:
    rng = np.random.default_rng(0)
    center = np.array([5.0, -20.0, 10.0])
    for pose in POSES:
        beads = _beads(rng) + center
        camera = deepdrr_camera(pose, geometry, center)
        expected = project_points(beads, pose, geometry, center)
        got = project_points_deepdrr(camera, beads)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_camera_rays_match_gensyn_detector() -> None:
    """DeepDRR's kernel casts pixel (r, c) along inv(P[:, :3]) @ (c + .5, r + .5, 1)."""
    geometry = CarmGeometry(1020.0, 530.0, 40, 50, 2.0)
    center = np.zeros(3)
    for pose in POSES:
        camera = deepdrr_camera(pose, geometry, center)
        origin, d_col, d_row, source = detector_pixels_world(pose, geometry, center)
        m_inv = np.linalg.inv(camera.projection[:, :3])
        # source = null space of P: P @ [s, 1] = 0
        np.testing.assert_allclose(camera.projection @ np.append(source, 1.0), 0.0, atol=1e-6)
        for r, c in [(0, 0), (39, 49), (17, 3), (20, 25)]:
            ray = m_inv @ np.array([c + 0.5, r + 0.5, 1.0])
            pixel = origin + c * d_col + r * d_row
            want = (pixel - source) / np.linalg.norm(pixel - source)
            np.testing.assert_allclose(ray / np.linalg.norm(ray), want, atol=1e-9)


def test_camera_intrinsics_and_frame() -> None:
    geometry = GEOMETRY_PRESETS["mobile_carm"]
    camera = deepdrr_camera(CarmPose(10.0, -20.0), geometry, np.zeros(3))
    k = camera.intrinsic
    assert k[0, 0] == pytest.approx(1020.0 / 0.2) and k[1, 1] == pytest.approx(1020.0 / 0.2)
    assert (k[0, 2], k[1, 2]) == (1125.0, 1125.0)
    np.testing.assert_allclose(camera.rotation @ camera.rotation.T, np.eye(3), atol=1e-12)
    # the isocentre lands on the detector centre
    iso = project_points_deepdrr(camera, np.zeros((1, 3)))[0]
    np.testing.assert_allclose(iso, [1124.5, 1124.5], atol=1e-9)
    assert camera.to_json()["sensor_wh"] == [2250, 2250]


def _small_ct() -> tuple[np.ndarray, np.ndarray]:
    hu = np.full((12, 10, 8), -1000.0, dtype=np.float32)
    hu[3:9, 2:8, 2:6] = 40.0
    hu[5, 5, 4] = 900.0
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = (-11.0, -9.0, -8.75)
    return hu, affine


def test_exchange_volume_holds_gensyn_density_and_materials(tmp_path: Path) -> None:
    hu, affine = _small_ct()
    physics = PhysicsConfig(air_max_hu=-500.0, bone_min_hu=300.0)
    renderer = DeepDrrRenderer(hu, affine, physics, workdir=tmp_path)
    with np.load(renderer.volume_path) as vol:
        np.testing.assert_allclose(vol["density_g_cm3"], density_from_hu(hu), rtol=1e-6)
        assert list(vol["materials"]) == ["air", "soft tissue", "bone"]
        labels = vol["labels"]
        np.testing.assert_array_equal(vol["affine"], affine)
    assert (labels[hu <= -500] == 0).all() and (labels[hu > 300] == 2).all()
    assert (labels[(hu > -500) & (hu <= 300)] == 1).all()


def test_physics_spectrum_weights_match_energy_integrating_detector() -> None:
    """DeepDRR weighs each bin by E * pdf(E): with GENSYN's photon fluence that is
    GENSYN's ``signal_weights``."""
    from gensyn.drr.deepdrr_adapter import _spectrum_payload
    from gensyn.drr.physics import spectrum_table

    physics = PhysicsConfig()
    payload = _spectrum_payload(DeepDrrSettings(), physics)
    e = np.asarray(payload["energies_kev"])
    w = np.asarray(payload["photon_weights"])
    table = spectrum_table(physics)
    np.testing.assert_allclose((e * w) / (e * w).sum(), table.signal_weights, rtol=1e-12)
    assert e.max() <= 90.0 + 1e-9
    assert _spectrum_payload(DeepDrrSettings(deepdrr_spectrum="90KV_AL40"), physics) == "90KV_AL40"


def test_projector_deepdrr_config_maps_to_settings(compose) -> None:
    from gensyn.config.settings import to_settings

    def settings_from_config(projector: object) -> DeepDrrSettings:
        return to_settings(projector, DeepDrrSettings)  # the projector group's deepdrr_* keys

    cfg = compose("projector=deepdrr", "projector.deepdrr_spectrum=90KV_AL40")
    assert cfg.projector.name == "deepdrr"
    assert cfg.projector.kvp == 90.0 and cfg.projector.filtration_mm_al == 4.0
    assert settings_from_config(cfg.projector) == DeepDrrSettings(deepdrr_spectrum="90KV_AL40")
    threads = compose("projector=deepdrr", "projector.deepdrr_threads=4").projector
    assert settings_from_config(threads).deepdrr_threads == 4
    # a spectrum DeepDRR lacks is refused when the config is composed, naming the allowed ones
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as refused:
        compose("projector=deepdrr", "projector.deepdrr_spectrum=x")
    assert "90KV_AL40" in str(refused.value.__cause__)


def test_renderer_for_picks_the_configured_projector(compose, tmp_path: Path) -> None:
    from gensyn.drr.render import DrrRenderer
    from gensyn.drr.renderers import renderer_for

    hu, affine = _small_ct()
    physics = PhysicsConfig()
    torch_r = renderer_for(compose().projector.name, hu, affine, physics, "cpu")
    assert isinstance(torch_r, DrrRenderer)
    name = compose("projector=deepdrr").projector.name
    deep_r = renderer_for(name, hu, affine, physics, "cpu")
    assert isinstance(deep_r, DeepDrrRenderer) and deep_r.settings == DeepDrrSettings()
    custom = DeepDrrSettings(deepdrr_threads=4)
    assert renderer_for(name, hu, affine, physics, "cpu", custom).settings == custom
    with pytest.raises(ValueError, match="allowed"):
        renderer_for("astra", hu, affine, physics, "cpu")


def test_settings_reject_unknown_spectrum() -> None:
    with pytest.raises(ValueError, match="allowed"):
        DeepDrrSettings(deepdrr_spectrum="80kV")


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="this machine has CUDA")
def test_render_without_gpu_is_one_clear_error(tmp_path: Path) -> None:
    hu, affine = _small_ct()
    renderer = DeepDrrRenderer(hu, affine, workdir=tmp_path)
    with pytest.raises(GensynError, match=r"needs an NVIDIA GPU with CUDA.*projector=torch"):
        renderer.render([CarmPose()], CarmGeometry(1020.0, 530.0, 8, 8, 2.0))


def test_worker_without_cuda_exits_with_the_gpu_message(tmp_path: Path) -> None:
    """The real worker, run by an interpreter that has no CuPy/CUDA."""
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is importable here")
    except ImportError:
        pass
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"shims": False}))
    with pytest.raises(GensynError, match=r"needs an NVIDIA GPU with CUDA.*CuPy found none"):
        _run_worker(Path(sys.executable), job, DeepDrrSettings())


def test_noise_is_refused(tmp_path: Path) -> None:
    hu, affine = _small_ct()
    renderer = DeepDrrRenderer(hu, affine, PhysicsConfig(photon_count=1e4), workdir=tmp_path)
    with pytest.raises(GensynError, match="noise-free"):
        renderer.render([CarmPose()], CarmGeometry(1020.0, 530.0, 8, 8, 2.0))


def _cuda_tex3d(array: np.ndarray, xyz: np.ndarray, linear: bool) -> float:
    """CUDA ``tex3D`` of ``array`` (I, J, K) at unnormalised coordinates (x, y, z) = (i, j, k)
    axes, clamp addressing (CUDA Programming Guide, "Texture Fetching"): point filtering
    returns T[floor(x)]; linear filtering, with x_B = x - 0.5, i = floor(x_B),
    a = x_B - i, returns (1 - a) T[i] + a T[i + 1] per axis (texel centres at i + 0.5)."""
    top = np.array(array.shape) - 1
    if not linear:
        return float(array[tuple(np.clip(np.floor(xyz).astype(int), 0, top))])
    base = np.floor(xyz - 0.5)
    frac = xyz - 0.5 - base
    value = 0.0
    for corner in np.ndindex(2, 2, 2):
        d = np.array(corner)
        weight = np.prod(np.where(d == 1, frac, 1.0 - frac))
        value += weight * array[tuple(np.clip(base.astype(int) + d, 0, top))]
    return float(value)


def _deepdrr_kernel_sample(
    density: np.ndarray, labels: np.ndarray, n_materials: int, anatomical_from_ijk, x_mm
) -> tuple[float, np.ndarray, np.ndarray]:
    """What DeepDRR 1.2.2's project_kernel.cu takes at world point x: its index point
    p = IJK_from_world x; px = p - 1; density = tex3D(px + 0.5) (linear); material
    weights = trilinear weights of the labels at floor(px) + {0, 1} (point fetches).
    Returns (density, weights per material, p)."""
    p = (np.linalg.inv(anatomical_from_ijk) @ np.append(x_mm, 1.0))[:3]
    px = p - 1.0
    dens = _cuda_tex3d(density, px + 0.5, linear=True)
    base = np.floor(px)
    frac = px - base
    weights = np.zeros(n_materials)
    for corner in np.ndindex(2, 2, 2):
        d = np.array(corner)
        label = int(_cuda_tex3d(labels, px + d, linear=False))
        weights[label] += np.prod(np.where(d == 1, frac, 1.0 - frac))
    return dens, weights, p


def test_deepdrr_kernel_sees_each_voxel_where_gensyn_puts_it() -> None:
    """The volume the worker hands DeepDRR (padded arrays, shifted affine), read the way
    DeepDRR's kernel reads it, is GENSYN's volume model: trilinear in NIfTI indices
    (voxel centres at integers), zero density and air one voxel beyond the edges."""
    from scipy.ndimage import map_coordinates

    from gensyn.drr.deepdrr_worker import deepdrr_volume_arrays

    rng = np.random.default_rng(3)
    shape = (7, 6, 5)
    density = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 2.0, 2.5])
    affine[:3, 3] = (10.0, -4.0, 7.0)
    dens_p, labels_p, anat_from_ijk = deepdrr_volume_arrays(density, labels, affine, 0)
    for _ in range(60):
        ijk = rng.uniform(-0.99, np.array(shape) - 0.01)  # GENSYN's support: [-1, n]
        x_mm = affine[:3, :3] @ ijk + affine[:3, 3]
        dens, weights, p = _deepdrr_kernel_sample(dens_p, labels_p, 3, anat_from_ijk, x_mm)
        # inside DeepDRR's ray box p in [-0.5, n' - 0.5]
        assert np.all(p >= -0.5) and np.all(p <= np.array(dens_p.shape) - 0.5)
        want = map_coordinates(density, ijk[:, None], order=1, mode="grid-constant", cval=0.0)
        assert dens == pytest.approx(float(want[0]), abs=1e-5)
        for m in range(3):
            onehot = (labels == m).astype(float)
            cval = 1.0 if m == 0 else 0.0
            want_m = map_coordinates(onehot, ijk[:, None], order=1, mode="grid-constant", cval=cval)
            assert weights[m] == pytest.approx(float(want_m[0]), abs=1e-9)


def test_raw_affine_explains_the_one_voxel_shift_measured_on_h100() -> None:
    """Handed the NIfTI affine as is (the adapter before the fix), DeepDRR's kernel reads
    voxel i at affine @ (i + 1). For the ``gpu`` bead test's first pose that predicts the
    bead centroid DeepDRR drew on an H100 (48.49, 28.61) px, 2.0 / 1.92 px from GENSYN's
    projection (50.49, 30.53) (docs/deepdrr.md)."""
    shape = (64, 64, 64)
    bead = np.array([40, 22, 30])
    delta = np.zeros(shape, dtype=np.float32)
    delta[tuple(bead)] = 1.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -63.0
    bead_mm = affine[:3, :3] @ bead + affine[:3, 3]
    seen_at_mm = affine[:3, :3] @ (bead + 1) + affine[:3, 3]
    labels = np.zeros(shape, dtype=np.uint8)
    assert _deepdrr_kernel_sample(delta, labels, 1, affine, seen_at_mm)[0] == 1.0
    assert _deepdrr_kernel_sample(delta, labels, 1, affine, bead_mm)[0] == 0.0
    geometry = CarmGeometry(1020.0, 530.0, 96, 96, 2.0)
    center = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    want = project_points(bead_mm[None], CarmPose(0.0, 0.0), geometry, center)[0]
    drawn = project_points(seen_at_mm[None], CarmPose(0.0, 0.0), geometry, center)[0]
    np.testing.assert_allclose(want, [50.49, 30.53], atol=0.01)
    np.testing.assert_allclose(drawn, [48.49, 28.61], atol=0.01)  # measured on the H100


def _deepdrr_settings() -> DeepDrrSettings:
    python = os.environ.get("GENSYN_DEEPDRR_PYTHON", ".venv-deepdrr/bin/python")
    if not Path(python).exists():
        pytest.skip(f"no DeepDRR environment at {python} (GENSYN_DEEPDRR_PYTHON)")
    return DeepDrrSettings(
        deepdrr_python=python,
        deepdrr_spectrum="90KV_AL40",
        deepdrr_pythonpath=os.environ.get("GENSYN_DEEPDRR_PYTHONPATH", ""),
        deepdrr_shims=os.environ.get("GENSYN_DEEPDRR_SHIMS", "") == "1",
    )


@pytest.mark.gpu
def test_deepdrr_renders_bead_where_gensyn_projects_it(tmp_path: Path) -> None:
    settings = _deepdrr_settings()
    shape = (64, 64, 64)
    hu = np.full(shape, -1000.0, dtype=np.float32)  # a bead in air: a flat background
    bead_ijk = np.array([40, 22, 30])
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    hu[(i - bead_ijk[0]) ** 2 + (j - bead_ijk[1]) ** 2 + (k - bead_ijk[2]) ** 2 <= 4] = 2000.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -63.0
    bead_mm = affine[:3, :3] @ bead_ijk + affine[:3, 3]
    geometry = CarmGeometry(1020.0, 530.0, 96, 96, 2.0)
    physics = PhysicsConfig(output="line_integral")
    poses = [CarmPose(0.0, 0.0), CarmPose(10.0, -10.0), CarmPose(-10.0, 30.0)]
    images = DeepDrrRenderer(hu, affine, physics, settings, workdir=tmp_path).render(
        poses, geometry
    )
    assert images.shape == (3, 96, 96)
    center = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    for image, pose in zip(images, poses, strict=True):
        want = project_points(bead_mm[None], pose, geometry, center)[0]
        r0, c0 = np.round(want).astype(int)
        win = image[r0 - 8 : r0 + 9, c0 - 8 : c0 + 9]  # the bead is ~8 px across
        border = np.concatenate([win[0], win[-1], win[:, 0], win[:, -1]])
        excess = np.clip(win - np.median(border), 0, None)
        rr, cc = np.mgrid[r0 - 8 : r0 + 9, c0 - 8 : c0 + 9]
        got = np.array([(excess * rr).sum(), (excess * cc).sum()]) / excess.sum()
        assert np.abs(got - want).max() < 0.5, (pose, got, want)
