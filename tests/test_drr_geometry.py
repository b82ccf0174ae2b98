"""DRR validation (b) geometry and (c) sign conventions (docs/conventions.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gensyn.drr import GEOMETRY_PRESETS, CarmGeometry, CarmPose, PhysicsConfig, project_points
from gensyn.drr.geometry import carm_frame, source_world
from gensyn.drr.projector import line_integrals
from gensyn.drr.render import make_rays, render_drrs

SPACING_MM = 2.0
SHAPE = (60, 60, 60)


def _affine(shape=SHAPE, spacing_mm=SPACING_MM, flip=False):
    aff = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2 * spacing_mm
    if flip:  # same world placement with the first two voxel axes reversed (LPS-like storage)
        aff[0, 0] = aff[1, 1] = -spacing_mm
        aff[:2, 3] *= -1
    return aff


def _beads(centers_mm, sigma_mm=3.0, shape=SHAPE, affine=None):
    """Gaussian beads at world positions (mm) in a voxel grid."""
    affine = _affine(shape) if affine is None else affine
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    vol = np.zeros(shape, np.float32)
    for c in centers_mm:
        vol += np.exp(-((world - np.asarray(c)) ** 2).sum(-1) / (2 * sigma_mm**2)).astype(
            np.float32
        )
    return vol


def _centroid(img):
    img = np.where(img > 0.05 * img.max(), img, 0.0)
    r, c = np.indices(img.shape)
    return np.array([(r * img).sum(), (c * img).sum()]) / img.sum()


@pytest.mark.parametrize(
    ("alpha", "beta", "sid", "sad"),
    [
        (0, 0, 1020, 530),
        (10, -10, 1020, 530),
        (-25, 40, 1200, 800),
        (30, 90, 900, 450),
        (5, 170, 1500, 1000),
    ],
)
def test_bead_lands_on_predicted_pixel(alpha, beta, sid, sad):
    bead = np.array([18.0, -12.0, 25.0])
    geometry = CarmGeometry(sid, sad, 100, 90, 2.0)
    pose = CarmPose(alpha, beta)
    affine = _affine()
    vol = torch.from_numpy(_beads([bead], affine=affine))[None]
    rays = make_rays([pose], geometry, SHAPE, affine)
    img = line_integrals(vol, affine, rays)[0, ..., 0].numpy()
    expected = project_points(bead[None], pose, geometry, np.zeros(3))[0]
    assert np.abs(_centroid(img) - expected).max() < 0.5


def test_isocenter_projects_to_detector_centre_and_magnification():
    geometry = GEOMETRY_PRESETS["mobile_carm"]
    iso = np.array([5.0, -3.0, 12.0])
    for pose in [CarmPose(0, 0, tuple(iso)), CarmPose(17, -33, tuple(iso))]:
        center = project_points(iso[None], pose, geometry)[0]
        np.testing.assert_allclose(center, [(2250 - 1) / 2] * 2, atol=1e-9)
        # a 10 mm offset along the image columns at the isocentre is magnified SID/SAD
        _, cols, _ = carm_frame(pose)
        shifted = project_points((iso + 10 * cols)[None], pose, geometry)[0]
        np.testing.assert_allclose(shifted[1] - center[1], 10 * 1020 / 530 / 0.2, rtol=1e-9)
        assert np.isclose(np.linalg.norm(source_world(pose, geometry) - iso), 530)


def test_signs_at_rest_pose():
    """PA view: patient's left on the image right, head at the top."""
    geometry = CarmGeometry(1000, 600, 64, 64, 2.0)
    pose = CarmPose(0, 0)
    left, head = np.array([-30.0, 0, 0]), np.array([0, 0, 30.0])  # RAS: -x = left
    (r_l, c_l), (r_h, c_h) = project_points(np.stack([left, head]), pose, geometry, np.zeros(3))
    assert c_l > 40 and abs(r_l - 31.5) < 1e-6
    assert r_h < 20 and abs(c_h - 31.5) < 1e-6
    beam, _, _ = carm_frame(pose)
    np.testing.assert_allclose(beam, [0, 1, 0])  # source posterior, detector anterior


def test_signs_lao_and_cranial():
    geometry = CarmGeometry(1000, 600, 64, 64, 2.0)
    anterior = np.array([[0.0, 40.0, 0.0]])
    center = (64 - 1) / 2
    # LAO: detector moves to the patient's left; anterior structures shift to the image left
    beam, _, _ = carm_frame(CarmPose(0, 30))
    assert beam[0] < 0 and beam[1] > 0
    assert project_points(anterior, CarmPose(0, 30), geometry, np.zeros(3))[0, 1] < center - 1
    assert project_points(anterior, CarmPose(0, -30), geometry, np.zeros(3))[0, 1] > center + 1
    # cranial: detector tilts towards the head; anterior structures shift down the image
    beam, _, _ = carm_frame(CarmPose(20, 0))
    assert beam[2] > 0
    assert project_points(anterior, CarmPose(20, 0), geometry, np.zeros(3))[0, 0] > center + 1
    assert project_points(anterior, CarmPose(-20, 0), geometry, np.zeros(3))[0, 0] < center - 1


def test_rendered_image_follows_conventions_and_affine():
    """A bone bead on the patient's left and one towards the head; storage order is irrelevant."""
    geometry = CarmGeometry(1000, 600, 48, 48, 3.0)
    physics = PhysicsConfig(mode="mono", output="line_integral")
    poses = [CarmPose(0, 0), CarmPose(10, -20)]
    images = []
    for flip in (False, True):
        affine = _affine(flip=flip)
        left_bead = _beads([[-40.0, 0.0, 0.0]], affine=affine)
        head_bead = _beads([[0.0, 0.0, 45.0]], affine=affine)
        hu = -1000.0 + 2500.0 * np.clip(left_bead + 0.5 * head_bead, 0, 1)
        images.append(render_drrs(hu, affine, poses, geometry, physics))
    rest = images[0][0]
    _, cols = np.unravel_index(np.argsort(rest.ravel())[-1], rest.shape)
    assert cols > 30  # patient's left bead: image right
    top = rest[:24].max()
    assert top > 0.2 * rest.max()  # head bead in the upper half
    np.testing.assert_allclose(images[0], images[1], rtol=1e-4, atol=1e-4)


def test_make_geometry_crop_and_binning():
    from gensyn.drr.geometry import make_geometry

    g = make_geometry("mobile_carm", 256, crop_fraction=0.5)
    assert (g.detector_rows_px, g.detector_cols_px) == (256, 256)
    assert np.isclose(g.pixel_size_mm * 256, 2250 * 0.2 * 0.5)
    assert make_geometry("mobile_carm").detector_rows_px == 2250  # the preset's own pixels
    g = make_geometry("pa_chest", 128, source_to_detector_mm=2000.0)
    assert (g.source_to_detector_mm, g.source_to_isocenter_mm) == (2000.0, 1650.0)
    with pytest.raises(ValueError, match="allowed"):
        make_geometry("cbct")
    with pytest.raises(ValueError, match="source_to_isocenter_mm"):
        CarmGeometry(500.0, 600.0, 10, 10, 1.0)


def test_presets_images_and_shared_volumes():
    from gensyn.drr import DrrRenderer, preset, to_image

    geometry, physics = preset("pa_chest")
    assert (geometry.source_to_detector_mm, physics.kvp, physics.filtration_mm_al) == (
        1800.0,
        120.0,
        3.0,
    )
    with pytest.raises(ValueError, match="allowed"):
        preset("dental")
    hu = -1000.0 + 1100.0 * _beads([[0.0, 0.0, 0.0]], sigma_mm=20.0)
    renderer = DrrRenderer(hu, _affine(), physics)
    mono = renderer.with_physics(PhysicsConfig(mode="mono", mono_energy_kev=60.0))
    assert mono.volume is renderer.volume
    small = geometry.resized(32)
    poly_img, mono_img = (
        renderer.render([CarmPose()], small)[0],
        mono.render([CarmPose()], small)[0],
    )
    assert poly_img.max() > 0 and not np.allclose(poly_img, mono_img)
    img8, img16 = to_image(poly_img, 8), to_image(poly_img, 16)
    assert img8.dtype == np.uint8 and img16.dtype == np.uint16
    assert img8.max() == 255 and img8.min() == 0
    # brighter where more attenuating (bone bright), monotone mapping
    order = np.argsort(poly_img.ravel())
    assert np.all(np.diff(img16.ravel()[order].astype(int)) >= 0)


def test_batched_windowing_matches_to_image_and_int16_volumes_render_alike():
    """to_images (the drr stage's windowing where the DRRs lie) agrees with to_image within one
    grey level, for 8 and 16 bit; an int16 HU volume renders exactly as its float32 copy."""
    import torch

    from gensyn.drr import DrrRenderer, preset, to_image
    from gensyn.drr.render import to_images

    geometry, physics = preset("pa_chest")
    hu = np.round(-1000.0 + 1100.0 * _beads([[0.0, 0.0, 0.0], [15.0, 5.0, 0.0]], sigma_mm=15.0))
    poses = [CarmPose(), CarmPose(alpha_deg=10.0, beta_deg=-20.0)]
    small = geometry.resized(48)
    as_float = DrrRenderer(hu.astype(np.float32), _affine(), physics).render(poses, small)
    renderer = DrrRenderer(hu.astype(np.int16), _affine(), physics)
    as_tensor = renderer.render(poses, small, as_tensor=True)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    np.testing.assert_array_equal(as_tensor.numpy(), as_float)
    for bits, percentiles in ((8, (0.5, 99.5)), (16, (2.0, 98.0))):
        batch = to_images(as_tensor, bits, percentiles)
        assert batch.dtype == (np.uint8 if bits == 8 else np.uint16)
        for one, drr in zip(batch, as_float, strict=True):
            ref = to_image(drr, bits, percentiles).astype(int)
            assert np.abs(one.astype(int) - ref).max() <= 1
            assert np.mean(one.astype(int) == ref) > 0.99
    flat = to_images(np.full((1, 4, 4), 0.3, np.float32), 8)  # constant image: no division by 0
    assert flat.dtype == np.uint8 and flat.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="bit_depth"):
        to_images(as_tensor, 12)


def test_gpu_only_methods_say_what_they_need_on_the_cpu():
    """``method='texture'`` on a CPU renderer is refused with what it needs, not a CuPy or
    CUDA traceback; an unknown method names the allowed ones."""
    from gensyn.drr.render import DrrRenderer

    hu = np.full((8, 8, 8), -1000.0, np.float32)
    renderer = DrrRenderer(hu, np.eye(4), PhysicsConfig(), "cpu")
    geometry = CarmGeometry(1020.0, 530.0, 8, 8, 4.0)
    with pytest.raises(ValueError, match="needs a CUDA device and CuPy"):
        renderer.render([CarmPose()], geometry, "texture")
    with pytest.raises(ValueError, match=r"allowed:.*texture"):
        renderer.render([CarmPose()], geometry, "nearest")


def test_gpu_kernels_launch_plan_on_the_cpu():
    """The launch plan both GPU kernels share (pose parameters, attenuation table padded to
    the kernel's channels, spectrum weights, detector walk, result scatter), built on the CPU:
    poses of two dominant axes land in their rows of the output, thread order by ``fast``."""
    from gensyn.drr.fused import axis_launch
    from gensyn.drr.projector import poses_by_axis, rays_in_voxels
    from gensyn.drr.render import DrrRenderer

    hu = np.full((20, 24, 16), 40.0, np.float32)
    renderer = DrrRenderer(hu, np.diag([2.0, 2.0, 3.0, 1.0]), PhysicsConfig(), "cpu")
    geometry = CarmGeometry(1020.0, 530.0, 10, 12, 8.0)
    poses = [CarmPose(0, 0), CarmPose(0, 90), CarmPose(5, 0)]  # PA twice, one lateral
    rays = make_rays(poses, geometry, hu.shape, renderer.affine)
    voxel = rays_in_voxels(rays, renderer.affine)
    groups = list(poses_by_axis(rays, *voxel))
    assert sorted(len(g[3]) for g in groups) == [1, 2]
    out = torch.zeros(3, 10, 12)
    table = renderer.table
    for axis, p_ax, q_ax, idx in groups:
        for fast, walk in (("rows", (10, 12, 12, 1)), ("cols", (12, 10, 1, 12))):
            plan = axis_launch(rays, renderer.affine, table, voxel, (axis, p_ax, q_ax), idx, fast, 4, out)  # fmt: skip
            assert (plan.n_fast, plan.n_slow, plan.stride_fast, plan.stride_slow) == walk
        assert plan.params.shape == (len(idx), 24) and not plan.whole
        assert plan.mu.shape == (len(table.energies_kev), 4)
        np.testing.assert_allclose(plan.mu[:, :3].numpy(), table.mu_cm2_per_g.T, rtol=1e-6)
        assert not plan.mu[:, 3:].any() and float(plan.w.sum()) == pytest.approx(1.0, rel=1e-5)
        plan.res.fill_(float(axis + 1))
        plan.finish(out, idx)
        assert (out[idx] == axis + 1).all()
    whole = axis_launch(rays, renderer.affine, table, voxel, (1, 0, 2), [0, 1, 2], "auto", 8, out)
    assert whole.whole and whole.res is out and whole.mu.shape[1] == 8


def test_field_of_view_at_the_isocentre_by_hand():
    """Detector side × source-to-isocentre / source-to-detector, numbers worked by hand."""
    assert np.isclose(
        GEOMETRY_PRESETS["mobile_carm"].field_of_view_at_isocenter_mm, 233.8, atol=0.05
    )
    assert np.isclose(
        GEOMETRY_PRESETS["mobile_carm_wide"].field_of_view_at_isocenter_mm, 420.9, atol=0.05
    )
    assert np.isclose(GEOMETRY_PRESETS["pa_chest"].field_of_view_at_isocenter_mm, 393.25, atol=0.01)
    # binning to the study's 512 px keeps the field of view
    for name in ("mobile_carm", "mobile_carm_wide"):
        g = GEOMETRY_PRESETS[name]
        assert np.isclose(
            g.resized(512).field_of_view_at_isocenter_mm, g.field_of_view_at_isocenter_mm
        )


@pytest.mark.parametrize(("name", "seen_mm"), [("mobile_carm", 100.0), ("mobile_carm_wide", 200.0)])
def test_field_of_view_by_projecting_beads(name, seen_mm):
    """Beads in the isocentre plane at ±200 mm left-right and head-feet (a whole adult chest's
    extent), projected by the renderer: all four land on the wide C-arm's detector at the
    pixels the geometry predicts; the original's C-arm sees none of them (and beads at
    ±100 mm instead)."""
    from gensyn.drr.geometry import make_geometry

    spacing, shape = 2.5, (177, 9, 177)  # 440 mm × 20 mm × 440 mm, centred on the isocentre
    affine = _affine(shape, spacing)
    far = [np.array(p) for p in ([-200.0, 0, 0], [200.0, 0, 0], [0, 0, -200.0], [0, 0, 200.0])]
    geometry = make_geometry(name, image_size_px=256)
    pose = CarmPose(0, 0)

    def image(beads):
        vol = torch.from_numpy(_beads(beads, sigma_mm=3.0, shape=shape, affine=affine))[None]
        rays = make_rays([pose], geometry, shape, affine)
        return line_integrals(vol, affine, rays)[0, ..., 0].numpy()

    img_far = image(far)
    if name == "mobile_carm":
        assert img_far.max() < 1e-3  # ±200 mm is outside its 234 mm field of view
        beads = [p * seen_mm / 200.0 for p in far]
        img = image(beads)
    else:
        beads, img = far, img_far
    predicted = project_points(np.stack(beads), pose, geometry, np.zeros(3))
    n = geometry.detector_rows_px
    assert ((predicted >= 0) & (predicted <= n - 1)).all()  # on the detector
    for row, col in predicted:
        r0, c0 = round(row), round(col)
        window = np.zeros_like(img)
        window[r0 - 5 : r0 + 6, c0 - 5 : c0 + 6] = img[r0 - 5 : r0 + 6, c0 - 5 : c0 + 6]
        assert window.max() > 0.5 * img.max()
        np.testing.assert_allclose(_centroid(window), [row, col], atol=0.5)


def test_projector_option_for_a_whole_chest(compose):
    """projector=mobile_carm_wide: the original's C-arm distances and physics, a field of view
    of >= 400 mm at the isocentre (the original's: 234 mm), at the study's image size."""
    from gensyn.stages.drr import projector_geometry

    def geometry(option):
        p = compose("experiment=thesis", f"projector={option}").projector
        g = projector_geometry(p)
        return p, g

    p, wide = geometry("mobile_carm_wide")
    _, original = geometry("torch")
    assert wide.field_of_view_at_isocenter_mm >= 400.0
    assert round(original.field_of_view_at_isocenter_mm) == 234
    assert (p.kvp, p.filtration_mm_al) == (90.0, 4.0)
    assert wide.detector_rows_px == original.detector_rows_px == 512
    assert (wide.source_to_detector_mm, wide.source_to_isocenter_mm) == (1020.0, 530.0)
