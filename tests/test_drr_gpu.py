"""DRR validation (e): CPU and GPU paths agree (torch Joseph on CPU = reference).

Marked ``gpu``: skipped without CUDA. The fused Triton kernel is checked too when
Triton is importable.
"""

from __future__ import annotations

import numpy as np
import pytest

from gensyn.drr import CarmGeometry, CarmPose, PhysicsConfig
from gensyn.drr.render import DrrRenderer, make_rays

pytestmark = pytest.mark.gpu


def _phantom(shape=(96, 90, 80), spacing=(3.0, 3.0, 3.5)):
    rng = np.random.default_rng(0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    xyz = (ijk - (np.asarray(shape) - 1) / 2) * np.asarray(spacing)
    hu = np.where(((xyz / [130.0, 100.0, 120.0]) ** 2).sum(-1) < 1, 40.0, -1000.0)
    hu = np.where(((np.abs(xyz[..., 0]) - 55) / 40) ** 2 + (xyz[..., 1] / 60) ** 2 < 1, -850.0, hu)
    hu = np.where(xyz[..., 0] ** 2 + (xyz[..., 1] + 70) ** 2 < 18**2, 900.0, hu)
    hu = hu + rng.normal(0, 20, shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return hu.astype(np.float32), affine[[1, 0, 2, 3]]  # voxel axes not in RAS order


POSES = [CarmPose(0, 0), CarmPose(10, -10), CarmPose(-5, 7), CarmPose(20, 100)]


@pytest.mark.parametrize("output", ["intensity", "line_integral"])
def test_cpu_and_cuda_agree(output):
    import torch

    hu, affine = _phantom()
    physics = PhysicsConfig(output=output)
    geometry = CarmGeometry(1020.0, 530.0, 64, 56, 6.0)
    on_cpu = DrrRenderer(hu, affine, physics, "cpu")
    cpu = on_cpu.render(POSES, geometry, "joseph")
    cuda = DrrRenderer(torch.as_tensor(hu), affine, physics, "cuda")
    np.testing.assert_allclose(cuda.render(POSES, geometry, "joseph"), cpu, rtol=1e-4, atol=1e-5)
    cpu_tri = on_cpu.render(POSES, geometry, "trilinear")
    np.testing.assert_allclose(
        cuda.render(POSES, geometry, "trilinear"), cpu_tri, rtol=1e-4, atol=1e-5
    )
    from gensyn.drr import fused

    if not fused.available():
        pytest.skip("Triton not importable: fused kernel not checked")
    got = cuda.render(POSES, geometry, "fused")  # float16 densities, float32 sums
    np.testing.assert_allclose(got, cpu, rtol=2e-3, atol=1e-4)
    assert cuda.render(POSES, geometry, "auto").shape == cpu.shape


#: Poses whose rays miss the volume in part (isocentre beside it, oblique) or entirely.
PARTLY_MISSING = [CarmPose(0, 0, (130.0, 0.0, 100.0)), CarmPose(-25, 20), CarmPose(5, 95)]
ALL_MISSING = CarmPose(0, 0, (0.0, 0.0, 900.0))
DEVICE = "cuda"  # the kernel's logic also runs on CPU under TRITON_INTERPRET=1


def _fused_or_skip():
    from gensyn.drr import fused

    if DEVICE == "cuda" and not fused.available():
        pytest.skip("Triton or CUDA missing: fused kernel not checked")
    return fused


@pytest.mark.parametrize("fast", ["auto", "rows", "cols"])
def test_fused_rays_missing_the_volume(fast):
    """Slice clipping and the zero border: rays that leave the volume's footprint, enter
    it through its sides or miss it, on a detector larger than the volume's shadow."""
    import torch

    fused = _fused_or_skip()
    hu, affine = _phantom()
    geometry = CarmGeometry(1020.0, 530.0, 70, 52, 13.0)  # 910 x 676 mm: past every edge
    poses = [*PARTLY_MISSING, ALL_MISSING]
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(), DEVICE)
    ref = renderer.render(poses, geometry, "joseph")  # -ln(I/I0)
    rays = make_rays(poses, geometry, hu.shape, affine)
    got = fused.render(renderer.volume, affine, rays, renderer.table, fast=fast)
    got = -torch.log(got).cpu().numpy()
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-4)
    seen = ref > 1e-6
    assert 0.05 < seen[:3].mean() < 0.95  # the partly missing poses do miss in part
    assert not seen[3].any() and np.abs(got[3]).max() < 1e-6  # I/I0 = 1 where all rays miss


def test_fused_one_pose_wholly_outside():
    """A batch of one pose that misses the volume: every tile loops over no slice."""
    import torch

    _fused_or_skip()
    hu, affine = _phantom()
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(output="intensity"), DEVICE)
    got = renderer.render([ALL_MISSING], CarmGeometry(1020.0, 530.0, 40, 33, 6.0), "fused")
    np.testing.assert_allclose(got, 1.0, atol=1e-6)


@pytest.mark.parametrize("pairs", [False, True], ids=["voxels", "pairs"])
@pytest.mark.parametrize("widen", ["cvt", "bits", "f16"])
def test_fused_ways_of_widening_agree(widen, pairs):
    """The kernel's three ways of turning float16 taps into float32 sums, on either
    layout, give the torch reference's line integrals; ``bits`` (integer unpacking) and
    the paired layout give what ``cvt`` on single voxels gives, to rounding."""
    import torch

    fused = _fused_or_skip()
    hu, affine = _phantom()
    geometry = CarmGeometry(1020.0, 530.0, 64, 56, 6.0)
    poses = [*POSES, *PARTLY_MISSING]
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(), DEVICE)
    ref = renderer.render(poses, geometry, "joseph")  # -ln(I/I0)
    rays = make_rays(poses, geometry, hu.shape, affine)
    got = fused.render(renderer.volume, affine, rays, renderer.table, widen=widen, pairs=pairs)
    np.testing.assert_allclose(-torch.log(got).cpu().numpy(), ref, rtol=2e-3, atol=1e-4)
    if widen != "f16":
        cvt = fused.render(renderer.volume, affine, rays, renderer.table, widen="cvt", pairs=False)
        np.testing.assert_allclose(got.cpu().numpy(), cvt.cpu().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="widen"):
        fused.render(renderer.volume, affine, rays, renderer.table, widen="f8")


@pytest.mark.parametrize("unroll", [2, 4])
def test_fused_unrolled_slice_loop(unroll):
    """Several slices an iteration give the one-slice loop's image, also where a tile's
    slice range is not a multiple of the unrolling (the extra slices weigh zero)."""
    import torch

    fused = _fused_or_skip()
    hu, affine = _phantom()
    geometry = CarmGeometry(1020.0, 530.0, 70, 52, 13.0)
    poses = [*POSES, *PARTLY_MISSING, ALL_MISSING]
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(), DEVICE)
    rays = make_rays(poses, geometry, hu.shape, affine)
    one = fused.render(renderer.volume, affine, rays, renderer.table, unroll=1).cpu().numpy()
    got = fused.render(renderer.volume, affine, rays, renderer.table, unroll=unroll)
    np.testing.assert_allclose(got.cpu().numpy(), one, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unroll"):
        fused.render(renderer.volume, affine, rays, renderer.table, unroll=3)


def _texture_or_skip():
    from gensyn.drr import texture

    if not texture.available():
        pytest.skip("CuPy or CUDA missing: texture kernel not checked")
    return texture


#: Bound on -ln(I/I0) of the texture kernel vs the torch reference: the texture units blend
#: with 8-bit weights (1/256 voxel), so single samples err by up to 1/512 of a voxel step.
TEXTURE_RTOL, TEXTURE_ATOL = 5e-3, 5e-4


@pytest.mark.parametrize("fast", ["auto", "rows", "cols"])
def test_texture_kernel_agrees_with_torch(fast):
    """The texture-unit kernel gives the torch reference's line integrals on poses that see
    the volume, leave its footprint or miss it, on a detector larger than its shadow; the
    median error is far below the bound (the blending errors cancel along a ray)."""
    import torch

    texture = _texture_or_skip()
    hu, affine = _phantom()
    geometry = CarmGeometry(1020.0, 530.0, 70, 52, 13.0)
    poses = [*POSES, *PARTLY_MISSING, ALL_MISSING]
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(), "cuda")
    ref = renderer.render(poses, geometry, "joseph")  # -ln(I/I0)
    rays = make_rays(poses, geometry, hu.shape, affine)
    got = texture.render(renderer.volume, affine, rays, renderer.table, fast=fast)
    got = -torch.log(got).cpu().numpy()
    seen = ref > 1e-3
    rel = np.abs(got[seen] / ref[seen] - 1)
    print(f"texture vs torch: |rel diff| max {rel.max():.2e}, median {np.median(rel):.2e}")
    np.testing.assert_allclose(got, ref, rtol=TEXTURE_RTOL, atol=TEXTURE_ATOL)
    assert np.median(rel) < TEXTURE_RTOL / 5
    assert not (ref[-1] > 1e-6).any() and np.abs(got[-1]).max() < 1e-6  # all rays miss: I = I0


def test_texture_kernel_through_the_renderer():
    """``method='texture'`` through DrrRenderer: prepare builds the layers render then uses,
    float32 texels agree with float16 ones, and noise is refused (the kernel is noise-free)."""
    import torch

    texture = _texture_or_skip()
    hu, affine = _phantom()
    geometry = CarmGeometry(1020.0, 530.0, 64, 56, 6.0)
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(output="intensity"), "cuda")
    renderer.prepare(POSES, geometry, "texture")
    built = [k for k in renderer.volume._cache if isinstance(k, tuple) and k[0] == "texture"]
    assert built
    got = renderer.render(POSES, geometry, "texture")
    assert [k for k in renderer.volume._cache if k[0] == "texture"] == built  # reused
    rays = make_rays(POSES, geometry, hu.shape, affine)
    f32 = texture.render(renderer.volume, affine, rays, renderer.table, half=False)
    np.testing.assert_allclose(got, f32.cpu().numpy(), rtol=2e-3, atol=1e-4)
    fused_ref = renderer.render(POSES, geometry, "joseph")
    np.testing.assert_allclose(got, fused_ref, rtol=TEXTURE_RTOL, atol=TEXTURE_ATOL)
    noisy = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(photon_count=1e4), "cuda")
    with pytest.raises(ValueError, match="noise-free"):
        noisy.render(POSES, geometry, "texture")


def test_auto_takes_the_texture_kernel_only_where_the_volume_fits(monkeypatch):
    """``auto`` is the texture kernel on CUDA with CuPy, and the fused one for a volume the
    GPU's layered textures cannot hold (an axis past their layer count or side)."""
    import torch

    texture = _texture_or_skip()
    hu, affine = _phantom()
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(), "cuda")
    assert renderer.resolve_method("auto") == "texture"
    assert texture.fits((512, 512, 300), 3) and not texture.fits((512, 512, 300), 5)
    side_w, side_h, layers = texture._layer_limits(torch.cuda.current_device())
    assert not texture.fits((512, 512, max(side_w, side_h, layers) + 1), 3)
    monkeypatch.setattr(texture, "fits", lambda *args: False)
    assert renderer.resolve_method("auto") in ("fused", "joseph")


def test_windowing_on_cuda_gives_the_cpu_images():
    """to_images casts to uint8/uint16 on the GPU (only those bytes cross to the host): the
    same images, within one grey level, as the CPU's windowing of the same DRRs."""
    from gensyn.drr.render import to_images

    hu, affine = _phantom()
    geometry = CarmGeometry(1020.0, 530.0, 64, 56, 6.0)
    drrs = DrrRenderer(hu, affine, PhysicsConfig(output="line_integral"), "cpu").render(
        POSES, geometry, "joseph", as_tensor=True
    )
    for bits in (8, 16):
        on_cuda = to_images(drrs.to("cuda"), bits)
        on_cpu = to_images(drrs, bits)
        assert on_cuda.dtype == on_cpu.dtype == (np.uint8 if bits == 8 else np.uint16)
        assert int(on_cpu.max()) == (1 << bits) - 1  # the whole range, the top bit too
        assert np.abs(on_cuda.astype(int) - on_cpu.astype(int)).max() <= 1
        assert int(on_cuda.max()) == (1 << bits) - 1
