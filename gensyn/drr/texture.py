"""Optional texture-unit DRR kernel (CUDA C through CuPy): Joseph projection + polychromatic
detector model, with the bilinear taps done by the GPU's texture filtering hardware.

Same algorithm, volume model and output as :mod:`gensyn.drr.fused` and the torch ``joseph``
path of :mod:`gensyn.drr.projector` (the reference it is tested against, tests marked
``gpu``). The material densities are copied once per volume into a 2-D *layered* CUDA array
(one layer per slice along the dominant axis, 4 channels of float16 = 8 bytes per texel), and
every step of a ray is one ``tex2DLayered`` fetch: the texture unit reads the 4 neighbouring
texels of the slice and blends them, so the loop body is the fetch, 4 additions and the
in-plane position. Outside a slice the texture's border colour (0) stands in for the fused
kernel's zero border, so the volume model (the field falls linearly to zero one voxel past
the edge) is the same.

The price is the texture unit's arithmetic: it blends with weights held to 8 fractional
bits (1/256 of a voxel), so a sample can differ from the exact bilinear value by up to
1/512 of the step between neighbouring voxels. Over a ray those errors mostly cancel: the
line integrals agree with the torch reference to a few parts in 10,000 (tests/test_drr_gpu.py
states the bound it holds), as the ``fused`` kernel's do (float16 storage). ``auto`` takes
this kernel on CUDA (1.5-1.8x ``fused`` on an H200: 4,120 vs 2,343 DRRs/s at 512² from a
512×512×300 CT, same run); ``method: fused`` keeps the kernel whose only rounding is float16.

CuPy is imported lazily; :func:`available` is False without it or without CUDA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BLOCK", "available", "fits", "prepare", "render"]

#: Default thread block (threads along the detector's fast direction, along the other):
#: the fastest of 6 on an H200 (3,877 DRRs/s vs 3,694 for 32 × 4; benchmarks/drr.py).
BLOCK = (16, 8)

_SOURCE = r"""
__device__ __forceinline__ void clip_axis(float base, float slope, float n, float& lo, float& hi)
{
    // slices s where base + s * slope lies in [-1, n)
    if (fabsf(slope) < 1e-12f) {
        if (!(base >= -1.0f && base < n)) { lo = 1e30f; hi = -1e30f; }
        return;
    }
    const float inv = 1.0f / slope;
    const float t0 = (-1.0f - base) * inv, t1 = (n - base) * inv;
    lo = fmaxf(lo, fminf(t0, t1));
    hi = fminf(hi, fmaxf(t0, t1));
}

extern "C" __global__ void drr_texture(
    cudaTextureObject_t tex, const float* __restrict__ par, const float* __restrict__ mu,
    const float* __restrict__ weight, float* __restrict__ out,
    int S, int P, int Q, int n_fast, int n_slow, int stride_fast, int stride_slow, int n_energy)
{
    const int u = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    if (u >= n_fast || v >= n_slow) return;
    const float* pp = par + b * 24;
    const float uf = (float)u, vf = (float)v;
    const float src_a = pp[0], src_p = pp[1], src_q = pp[2];
    float d_a = pp[3] + uf * pp[6] + vf * pp[9] - src_a;
    const float d_p = pp[4] + uf * pp[7] + vf * pp[10] - src_p;
    const float d_q = pp[5] + uf * pp[8] + vf * pp[11] - src_q;
    const float w_x = pp[15] + uf * pp[18] + vf * pp[21] - pp[12];
    const float w_y = pp[16] + uf * pp[19] + vf * pp[22] - pp[13];
    const float w_z = pp[17] + uf * pp[20] + vf * pp[23] - pp[14];
    if (fabsf(d_a) < 1e-12f) d_a = 1e-12f;
    const float slope_p = d_p / d_a, slope_q = d_q / d_a;
    const float base_p = src_p - src_a * slope_p;  // in-plane position at slice s: base + s slope
    const float base_q = src_q - src_a * slope_q;
    const float step_mm = sqrtf(w_x * w_x + w_y * w_y + w_z * w_z) / fabsf(d_a);
    // slices where this ray is inside the footprint, one of margin each side (exact zeros)
    float lo = -1e30f, hi = 1e30f;
    clip_axis(base_p, slope_p, (float)P, lo, hi);
    clip_axis(base_q, slope_q, (float)Q, lo, hi);
    int s0 = 0, s1 = 0;
    if (lo < hi + 1.0f) {
        s0 = (int)fminf(fmaxf(floorf(lo) - 1.0f, 0.0f), (float)S);
        s1 = (int)fminf(fmaxf(floorf(hi) + 2.0f, 0.0f), (float)S);
    }
    const float p_max = (float)P, q_max = (float)Q;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s = s0; s < s1; ++s) {
        const float sf = (float)s;
        // clamped to [-1, P] x [-1, Q]; +0.5: texel centres; the border reads 0
        const float p = fminf(fmaxf(fmaf(sf, slope_p, base_p), -1.0f), p_max) + 0.5f;
        const float q = fminf(fmaxf(fmaf(sf, slope_q, base_q), -1.0f), q_max) + 0.5f;
        const float4 t = tex2DLayered<float4>(tex, q, p, s);
        acc.x += t.x; acc.y += t.y; acc.z += t.z; acc.w += t.w;
    }
    const float scale = step_mm * 0.1f;  // g/cm^3 * mm -> g/cm^2
    float intensity = 0.0f;
    for (int e = 0; e < n_energy; ++e) {
        const float* m = mu + 4 * e;
        const float att = acc.x * m[0] + acc.y * m[1] + acc.z * m[2] + acc.w * m[3];
        intensity += weight[e] * expf(-att * scale);
    }
    out[(long long)b * n_fast * n_slow + (long long)u * stride_fast + (long long)v * stride_slow] =
        intensity;
}
"""

_KERNEL: Any = None


def available() -> bool:
    """True when CuPy can be imported and CUDA is present."""
    try:
        import cupy  # noqa: F401
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def fits(shape: tuple[int, ...], channels: int, device_index: int = 0) -> bool:
    """Whether a volume of ``shape`` voxels and ``channels`` materials fits the layered
    texture of GPU ``device_index`` whatever the dominant axis (every axis within the layer
    count and the layer sides, at most 4 channels); ``auto`` falls back to ``fused`` if not."""
    side_w, side_h, layers = _layer_limits(device_index)
    return channels <= 4 and max(shape) <= min(side_w, side_h, layers)


@functools.cache
def _layer_limits(device_index: int) -> tuple[int, int, int]:
    """(width, height, layers) of the largest layered 2-D texture of GPU ``device_index``."""
    from cupy.cuda import runtime

    w, h, n = runtime.getDeviceProperties(device_index)["maxTexture2DLayered"]
    return int(w), int(h), int(n)


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is None:
        import cupy

        _KERNEL = cupy.RawKernel(_SOURCE, "drr_texture", options=("--std=c++14",))
    return _KERNEL


@dataclass
class _Layers:
    """The slice layers of one dominant axis on the GPU: the CUDA array, its texture."""

    array: Any
    texture: Any
    shape: tuple[int, int, int]  # (S, P, Q)
    device: Any  # the torch device the volume lives on


def _cupy_stream(torch_device: Any) -> Any:
    """Torch's current stream on ``torch_device`` as a CuPy stream (work stays ordered)."""
    import cupy
    import torch

    return cupy.cuda.ExternalStream(torch.cuda.current_stream(torch_device).cuda_stream)


def _layers(volume: Any, axis: int, p_ax: int, q_ax: int, half: bool) -> _Layers:
    """The layered texture of the slices along ``axis``, built once per volume."""
    return volume.cached(("texture", axis, half), lambda: _build(volume, (axis, p_ax, q_ax), half))


def _build(volume: Any, perm: tuple[int, int, int], half: bool) -> _Layers:
    import cupy
    import torch
    from cupy.cuda import runtime, texture

    planar = volume.layout(perm)  # (S, C, P, Q)
    n_s, n_c, n_p, n_q = planar.shape
    if n_c > 4:
        raise ValueError(
            f"texture projector: {n_c} materials; it holds 4 channels (use method='fused')"
        )
    limit = _layer_limits(planar.device.index)
    if n_q > limit[0] or n_p > limit[1] or n_s > limit[2]:
        raise ValueError(
            f"texture projector: slices {n_p}x{n_q}, {n_s} of them, exceed this GPU's layered "
            f"texture ({limit[1]}x{limit[0]}, {limit[2]} layers); use method='fused'"
        )
    dtype = torch.float16 if half else torch.float32
    texels = torch.zeros(n_s, n_p, n_q, 4, dtype=dtype, device=planar.device)
    texels[..., :n_c] = planar.permute(0, 2, 3, 1)
    bits = 16 if half else 32
    kind = runtime.cudaChannelFormatKindFloat
    desc = texture.ChannelFormatDescriptor(bits, bits, bits, bits, kind)
    layered = getattr(runtime, "cudaArrayLayered", 1)
    array = texture.CUDAarray(desc, n_q, n_p, n_s, layered)
    with _cupy_stream(planar.device):
        array.copy_from(cupy.from_dlpack(texels.view(n_s, n_p, 4 * n_q)))
    border = runtime.cudaAddressModeBorder
    tex_desc = texture.TextureDescriptor(
        (border, border, border),
        runtime.cudaFilterModeLinear,
        runtime.cudaReadModeElementType,
        borderColors=(0.0, 0.0, 0.0, 0.0),
        normalizedCoords=0,
    )
    res = texture.ResourceDescriptor(runtime.cudaResourceTypeArray, cuArr=array)
    tex = texture.TextureObject(res, tex_desc)
    # texels is freed on return: the caching allocator reuses its memory in stream order
    return _Layers(array, tex, (n_s, n_p, n_q), planar.device)


def prepare(volume: Any, affine: np.ndarray, rays: Any, half: bool = True) -> None:
    """Build the layered textures :func:`render` of ``rays`` reads (cached in ``volume``)."""
    from gensyn.drr.projector import poses_by_axis, rays_in_voxels

    for axis, p_ax, q_ax, _ in poses_by_axis(rays, *rays_in_voxels(rays, affine)):
        _layers(volume, axis, p_ax, q_ax, half)


def render(
    volume: Any,
    affine: np.ndarray,
    rays: Any,
    table: Any,
    half: bool = True,
    block: tuple[int, int] = BLOCK,
    fast: str = "auto",
) -> Any:
    """I/I0 of shape (B, H, W) on the volume's CUDA device (noise-free).

    Arguments as for :func:`gensyn.drr.fused.render`: ``volume`` the renderer's
    :class:`~gensyn.drr.projector.ChannelVolume` of material densities (g/cm^3, at most 4
    materials), ``table`` the spectrum, ``half`` float16 texels (else float32, twice the
    memory), ``fast`` one of :data:`gensyn.drr.fused.FAST_AXES`; ``block`` the CUDA thread
    block (threads along the fast direction, along the other).
    """
    import cupy
    import torch

    from gensyn.drr.fused import FAST_AXES, axis_launch
    from gensyn.drr.projector import poses_by_axis, rays_in_voxels

    if fast not in FAST_AXES:
        raise ValueError(f"texture projector: fast={fast!r}; allowed: {FAST_AXES}")
    voxel = rays_in_voxels(rays, affine)
    out = None
    for axis, p_ax, q_ax, poses in poses_by_axis(rays, *voxel):
        layers = _layers(volume, axis, p_ax, q_ax, half)  # refuses > 4 materials
        dev = layers.device
        if out is None:
            out = torch.empty(len(rays), rays.rows, rays.cols, device=dev)
        plan = axis_launch(rays, affine, table, voxel, (axis, p_ax, q_ax), poses, fast, 4, out)
        bx, by = block
        grid = (-(-plan.n_fast // bx), -(-plan.n_slow // by), len(poses))
        ints = (
            *layers.shape, plan.n_fast, plan.n_slow, plan.stride_fast, plan.stride_slow,
            plan.mu.shape[0],
        )  # fmt: skip
        with _cupy_stream(dev):
            tensors = (plan.params, plan.mu, plan.w, plan.res)
            arrays = [cupy.from_dlpack(t) for t in tensors]  # no copies
            _kernel()(grid, (bx, by, 1), (layers.texture, *arrays, *map(np.int32, ints)))
        plan.finish(out, poses)
    assert out is not None
    return out
