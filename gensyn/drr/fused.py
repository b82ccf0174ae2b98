"""Optional fused Triton kernel (CUDA): Joseph projection + polychromatic detector model.

Same algorithm and volume model as the torch ``joseph`` path in
:mod:`gensyn.drr.projector` (which is the reference it is tested against, tests marked
``gpu``), fused into one kernel: each program takes a 2-D tile of detector pixels of one
pose, walks the slices along the dominant axis accumulating bilinear samples of the
material densities (stored channels-last, 4 half-precision channels = 8 bytes per
voxel, one vector load per tap), then applies Beer-Lambert over the energy bins and
writes I/I0. Nothing but the image leaves the chip.

What makes it fast, all exact (no sample that can be non-zero is dropped):

* the volume is packed with a zero border (1 voxel before, 2 after, in-plane), so an
  in-plane position clamped to [-1, n] reads zeros wherever the trilinear field is zero:
  no masks and no bounds tests inside the slice loop;
* each tile walks only the slices where one of its rays is inside the volume's
  footprint (p in [-1, P), q in [-1, Q); p and q are linear in the slice index, so the
  range is solved per ray before the loop); a tile that misses the volume writes 1;
* consecutive threads of a warp take consecutive pixels along the detector direction
  that moves the rays along the volume's contiguous in-plane axis, so the 32 taps of a
  warp load fall on 2 or 3 cache lines instead of one line per thread.

There is no empty-space skipping: the air channel holds 0.0012 g/cm^3 wherever the CT
is air, so no voxel inside the box is zero in every channel.

Triton is imported lazily; :func:`available` is False without it or without CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FAST_AXES", "WIDEN", "available", "prepare", "render"]

#: ``fast`` choices of :func:`render`: the detector direction along which consecutive
#: threads take consecutive pixels (``auto``: the one that moves rays along the volume's
#: contiguous in-plane axis).
FAST_AXES = ("auto", "rows", "cols")

#: ``widen`` choices of :func:`render`: how float16 taps become float32 (see there).
WIDEN = ("cvt", "bits", "f16")

_KERNEL: Any = None

#: Zero border of the packed volume in-plane: one voxel before, two after.
_PAD_LO, _PAD_HI = 1, 2


def available() -> bool:
    """True when Triton can be imported and CUDA is present."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def drr_kernel(
        vol_ptr, par_ptr, mu_ptr, w_ptr, out_ptr,
        S, P, Q, N_FAST, N_SLOW, stride_fast, stride_slow, n_energy,
        TILE_F: tl.constexpr, TILE_S: tl.constexpr, NC: tl.constexpr, CONV: tl.constexpr,
        PAIR: tl.constexpr, VW: tl.constexpr, EW: tl.constexpr, UNROLL: tl.constexpr,
    ):  # fmt: skip
        pid_tile = tl.program_id(0)
        b = tl.program_id(1)
        tiles_f = tl.cdiv(N_FAST, TILE_F)
        i = tl.arange(0, TILE_F * TILE_S)
        u = (pid_tile % tiles_f) * TILE_F + i % TILE_F  # lanes step along the fast direction
        v = (pid_tile // tiles_f) * TILE_S + i // TILE_F
        valid = (u < N_FAST) & (v < N_SLOW)
        # lanes past the detector's edge trace the edge pixel's ray and store nothing
        uf = tl.minimum(u, N_FAST - 1).to(tl.float32)
        vf = tl.minimum(v, N_SLOW - 1).to(tl.float32)
        # pose parameters: voxel (a, p, q) source/origin/fast/slow steps, then world ones
        pp = par_ptr + b * 24
        src_a = tl.load(pp + 0)
        src_p = tl.load(pp + 1)
        src_q = tl.load(pp + 2)
        d_a = tl.load(pp + 3) + uf * tl.load(pp + 6) + vf * tl.load(pp + 9) - src_a
        d_p = tl.load(pp + 4) + uf * tl.load(pp + 7) + vf * tl.load(pp + 10) - src_p
        d_q = tl.load(pp + 5) + uf * tl.load(pp + 8) + vf * tl.load(pp + 11) - src_q
        w_x = tl.load(pp + 15) + uf * tl.load(pp + 18) + vf * tl.load(pp + 21) - tl.load(pp + 12)
        w_y = tl.load(pp + 16) + uf * tl.load(pp + 19) + vf * tl.load(pp + 22) - tl.load(pp + 13)
        w_z = tl.load(pp + 17) + uf * tl.load(pp + 20) + vf * tl.load(pp + 23) - tl.load(pp + 14)
        d_a = tl.where(tl.abs(d_a) < 1e-12, 1e-12, d_a)
        slope_p = d_p / d_a
        slope_q = d_q / d_a
        base_p = src_p - src_a * slope_p  # in-plane position at slice s: base + s * slope
        base_q = src_q - src_a * slope_q
        step_mm = tl.sqrt(w_x * w_x + w_y * w_y + w_z * w_z) / tl.abs(d_a)
        # slices where the ray is inside the footprint p in [-1, P), q in [-1, Q)
        big = 1e30
        flat_p = tl.abs(slope_p) < 1e-12
        inv_p = 1.0 / tl.where(flat_p, 1.0, slope_p)
        t0 = (-1.0 - base_p) * inv_p
        t1 = (P - base_p) * inv_p
        in_p = (base_p >= -1.0) & (base_p < P)
        lo = tl.where(flat_p, tl.where(in_p, -big, big), tl.minimum(t0, t1))
        hi = tl.where(flat_p, tl.where(in_p, big, -big), tl.maximum(t0, t1))
        flat_q = tl.abs(slope_q) < 1e-12
        inv_q = 1.0 / tl.where(flat_q, 1.0, slope_q)
        t0 = (-1.0 - base_q) * inv_q
        t1 = (Q - base_q) * inv_q
        in_q = (base_q >= -1.0) & (base_q < Q)
        lo = tl.maximum(lo, tl.where(flat_q, tl.where(in_q, -big, big), tl.minimum(t0, t1)))
        hi = tl.minimum(hi, tl.where(flat_q, tl.where(in_q, big, -big), tl.maximum(t0, t1)))
        # a slice of margin each side covers rounding: extra slices add exact zeros
        hit = lo < hi + 1.0
        s_lo = tl.min(tl.where(hit, lo, big), axis=0)
        s_hi = tl.max(tl.where(hit, hi, -big), axis=0)
        n_s = S * 1.0
        s_start = tl.minimum(tl.maximum(tl.floor(s_lo) - 1.0, 0.0), n_s).to(tl.int32)
        s_end = tl.minimum(tl.maximum(tl.floor(s_hi) + 2.0, 0.0), n_s).to(tl.int32)
        # packed layout (S, P + 3, Q + 3, NC): voxel (s, p, q) at [s, p + 1, q + 1]; with
        # PAIR each entry holds voxels (s, p, q) and (s, p, q + 1): 2 NC values in a row
        row = Q + 3
        slab = (P + 3) * row
        p_max = P * 1.0
        q_max = Q * 1.0
        # VW: elements a voxel takes (float16 channels, or int32 words of two channels for
        # CONV == 1); EW: elements an entry of the layout takes (2 VW with PAIR)
        idx = tl.arange(0, EW)
        vol = vol_ptr + (row + 1) * EW + idx[None, :]
        first = idx[None, :] < VW  # PAIR: the element belongs to the entry's first voxel
        if CONV == 1:
            # float16 pairs read as int32 and widened with integer operations: a half's low
            # 15 bits moved to bits 13..27 are the float32 of (value * 2**-112), exact for
            # every normal half; the 2**112 is folded into the tap weights
            acc_lo = tl.zeros((TILE_F * TILE_S, EW), dtype=tl.float32)  # channels 0, 2
            acc_hi = tl.zeros((TILE_F * TILE_S, EW), dtype=tl.float32)  # channels 1, 3
            scale = 5.192296858534828e33  # 2**112
        else:
            acc = tl.zeros((TILE_F * TILE_S, EW), dtype=tl.float32)
        # UNROLL slices an iteration: their loads are issued together (more in flight);
        # slices past the range re-read the last one with zero weights
        for s0 in range(s_start, s_end, UNROLL):
            for k in tl.static_range(UNROLL):
                if UNROLL == 1:
                    s = s0
                else:
                    s = tl.minimum(s0 + k, s_end - 1)
                    live = (s0 + k < s_end).to(tl.float32)
                sf = s * 1.0
                # clamped to [-1, P] x [-1, Q]: where the field is zero all 4 taps read the border
                p = tl.minimum(tl.maximum(base_p + sf * slope_p, -1.0), p_max)
                q = tl.minimum(tl.maximum(base_q + sf * slope_q, -1.0), q_max)
                p0f = tl.floor(p)
                q0f = tl.floor(q)
                fp = p - p0f
                fq = q - q0f
                w11 = fp * fq
                w10 = fp - w11
                w01 = fq - w11
                w00 = 1.0 - fp - w01
                if UNROLL > 1:
                    w00 = w00 * live
                    w01 = w01 * live
                    w10 = w10 * live
                    w11 = w11 * live
                ptr = vol + (s * slab + p0f.to(tl.int32) * row + q0f.to(tl.int32))[:, None] * EW
                if PAIR:
                    xa = tl.load(ptr)  # [v00 | v01]
                    xb = tl.load(ptr + row * EW)  # [v10 | v11]
                    wa = tl.where(first, w00[:, None], w01[:, None])
                    wb = tl.where(first, w10[:, None], w11[:, None])
                    if CONV == 1:
                        wa = wa * scale
                        wb = wb * scale
                        acc_lo += ((xa << 13) & 0x0FFFE000).to(tl.float32, bitcast=True) * wa + (
                            (xb << 13) & 0x0FFFE000
                        ).to(tl.float32, bitcast=True) * wb
                        acc_hi += ((xa >> 3) & 0x0FFFE000).to(tl.float32, bitcast=True) * wa + (
                            (xb >> 3) & 0x0FFFE000
                        ).to(tl.float32, bitcast=True) * wb
                    elif CONV == 2:
                        # the taps of a slice summed in the volume's float16, widened once
                        acc += (xa * wa.to(tl.float16) + xb * wb.to(tl.float16)).to(tl.float32)
                    else:
                        acc += xa.to(tl.float32) * wa + xb.to(tl.float32) * wb
                else:
                    x00 = tl.load(ptr)
                    x01 = tl.load(ptr + EW)
                    x10 = tl.load(ptr + row * EW)
                    x11 = tl.load(ptr + (row + 1) * EW)
                    if CONV == 1:
                        w00 = (w00 * scale)[:, None]
                        w01 = (w01 * scale)[:, None]
                        w10 = (w10 * scale)[:, None]
                        w11 = (w11 * scale)[:, None]
                        acc_lo += (
                            ((x00 << 13) & 0x0FFFE000).to(tl.float32, bitcast=True) * w00
                            + ((x01 << 13) & 0x0FFFE000).to(tl.float32, bitcast=True) * w01
                            + ((x10 << 13) & 0x0FFFE000).to(tl.float32, bitcast=True) * w10
                            + ((x11 << 13) & 0x0FFFE000).to(tl.float32, bitcast=True) * w11
                        )
                        acc_hi += (
                            ((x00 >> 3) & 0x0FFFE000).to(tl.float32, bitcast=True) * w00
                            + ((x01 >> 3) & 0x0FFFE000).to(tl.float32, bitcast=True) * w01
                            + ((x10 >> 3) & 0x0FFFE000).to(tl.float32, bitcast=True) * w10
                            + ((x11 >> 3) & 0x0FFFE000).to(tl.float32, bitcast=True) * w11
                        )
                    elif CONV == 2:
                        # the taps of a slice summed in the volume's float16, widened once
                        tap = (
                            x00 * w00.to(tl.float16)[:, None]
                            + x01 * w01.to(tl.float16)[:, None]
                            + x10 * w10.to(tl.float16)[:, None]
                            + x11 * w11.to(tl.float16)[:, None]
                        )
                        acc += tap.to(tl.float32)
                    else:
                        acc += (
                            x00.to(tl.float32) * w00[:, None]
                            + x01.to(tl.float32) * w01[:, None]
                            + x10.to(tl.float32) * w10[:, None]
                            + x11.to(tl.float32) * w11[:, None]
                        )
        intensity = tl.zeros((TILE_F * TILE_S,), dtype=tl.float32)
        for e in range(0, n_energy):
            if CONV == 1:
                ch = 2 * (idx % VW)
                att = tl.sum(acc_lo * tl.load(mu_ptr + e * NC + ch)[None, :], axis=1)
                att += tl.sum(acc_hi * tl.load(mu_ptr + e * NC + ch + 1)[None, :], axis=1)
            else:
                att = tl.sum(acc * tl.load(mu_ptr + e * NC + idx % NC)[None, :], axis=1)
            # g/cm^3 * mm -> g/cm^2
            intensity += tl.load(w_ptr + e) * tl.exp(-att * (step_mm * 0.1))
        out = out_ptr + b * N_FAST * N_SLOW + u * stride_fast + v * stride_slow
        tl.store(out, intensity, mask=valid)

    _KERNEL = drr_kernel
    return _KERNEL


def _rows_fast(src, org, d_col, d_row, axis: int, q_ax: int, rows: int, cols: int) -> bool:
    """Whether a detector row step moves the rays along voxel axis ``q_ax`` more than a
    column step does, summed over poses (voxel coordinates, arrays of shape (B, 3)).

    At slice a the ray of pixel x is at ``src + (a - src_a) (x - src) / (x - src)_a``; a
    pixel step ``e`` moves its q-coordinate by ``(a - src_a) (e_q - e_a d_q / d_a) / d_a``
    (d = central ray); the factor before the bracket is common to both steps.
    """
    d = org + (cols - 1) / 2 * d_col + (rows - 1) / 2 * d_row - src
    ratio = d[:, q_ax] / d[:, axis]

    def shift(e: np.ndarray) -> float:
        return float(np.sum(np.abs(e[:, q_ax] - e[:, axis] * ratio) / np.abs(d[:, axis])))

    return shift(d_row) >= shift(d_col)


def _pose_params(
    rays: Any, affine: np.ndarray, axis: int, p_ax: int, q_ax: int, rows_fast: bool
) -> np.ndarray:
    """(B, 24) float32: voxel-space source/origin/d_fast/d_slow in (a, p, q) order + world ones."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    lin, off = inv[:3, :3], inv[:3, 3]
    fast, slow = (rays.d_row, rays.d_col) if rows_fast else (rays.d_col, rays.d_row)
    order = [axis, p_ax, q_ax]
    vox = [
        (rays.source @ lin.T + off)[:, order],
        (rays.origin @ lin.T + off)[:, order],
        (fast @ lin.T)[:, order],
        (slow @ lin.T)[:, order],
    ]
    world = [rays.source, rays.origin, fast, slow]
    return np.concatenate(vox + world, axis=1).astype(np.float32)


def render(
    volume: Any,
    affine: np.ndarray,
    rays: Any,
    table: Any,
    half: bool = True,
    tile: tuple[int, int] = (64, 4),
    num_warps: int = 8,
    fast: str = "auto",
    widen: str = "cvt",
    pairs: bool = False,
    unroll: int = 2,
) -> Any:
    """I/I0 of shape (B, H, W) on the volume's CUDA device (noise-free).

    ``volume`` is the renderer's :class:`~gensyn.drr.projector.ChannelVolume` of
    material densities (g/cm^3); ``table`` the spectrum (materials in channel order).
    ``half`` stores densities as float16 (accumulation is float32); ``tile`` is the
    detector tile of one program, (pixels along the fast direction, along the other);
    ``fast`` one of :data:`FAST_AXES`. The default tile (64 × 4, 8 warps) was the fastest
    of 13 shapes on an H200 (512² from 512×512×300, batch 64: 2,385 DRRs/s; benchmarks/drr.py
    ``--sweep``). ``widen`` (one of :data:`WIDEN`, float16 volumes only) is how taps become
    float32: ``cvt`` converts each half, ``bits`` moves its bits with integer operations
    (exact), ``f16`` sums the 4 taps of a slice in float16 and converts that sum.
    ``pairs`` reads a layout that stores each voxel beside its neighbour along the
    contiguous axis (twice the memory): 2 loads of 16 bytes a slice instead of 4 of 8.
    ``unroll`` slices are stepped through per loop iteration (their loads in flight
    together); 2 was 3.5 % faster than 1 on an H200 (2,540 vs 2,453 DRRs/s, same run), and
    the other options slower (benchmarks/drr.py ``--variants``).
    """
    import torch
    import triton

    from gensyn.drr.projector import poses_by_axis, rays_in_voxels

    if fast not in FAST_AXES:
        raise ValueError(f"fused projector: fast={fast!r}; allowed: {FAST_AXES}")
    if widen not in WIDEN:
        raise ValueError(f"fused projector: widen={widen!r}; allowed: {WIDEN}")
    conv = WIDEN.index(widen) if half else 0
    if unroll not in (1, 2, 4):
        raise ValueError(f"fused projector: unroll={unroll}; allowed: 1, 2, 4")
    nc = _channels(volume.channels)
    voxel = rays_in_voxels(rays, affine)
    out = None
    for axis, p_ax, q_ax, poses in poses_by_axis(rays, *voxel):
        packed = _packed(volume, axis, p_ax, q_ax, half, pairs)
        dev = packed.device
        if packed.numel() >= 2**31:
            raise ValueError(
                "fused projector: volume too large for 32-bit indexing; use method='joseph'"
            )
        if out is None:
            out = torch.empty(len(rays), rays.rows, rays.cols, device=dev)
        n_s = packed.shape[0]
        n_p, n_q = packed.shape[1] - _PAD_LO - _PAD_HI, packed.shape[2] - _PAD_LO - _PAD_HI
        vw = nc // 2 if conv == 1 else nc
        plan = axis_launch(rays, affine, table, voxel, (axis, p_ax, q_ax), poses, fast, nc, out)
        tile_f, tile_s = tile
        grid = (triton.cdiv(plan.n_fast, tile_f) * triton.cdiv(plan.n_slow, tile_s), len(poses))
        _kernel()[grid](
            packed.view(torch.int32) if conv == 1 else packed, plan.params, plan.mu, plan.w,
            plan.res, n_s, n_p, n_q, plan.n_fast, plan.n_slow, plan.stride_fast,
            plan.stride_slow, plan.mu.shape[0],
            TILE_F=tile_f, TILE_S=tile_s, NC=nc, CONV=conv, PAIR=pairs, VW=vw,
            EW=2 * vw if pairs else vw, UNROLL=unroll, num_warps=num_warps,
        )  # fmt: skip
        plan.finish(out, poses)
    assert out is not None
    return out


@dataclass
class AxisLaunch:
    """What a kernel launch over the poses of one dominant axis takes (the fused and the
    texture kernels): pose parameters (:func:`_pose_params`), mass attenuation ``mu`` (E,
    channels, zero past the materials), spectrum weights ``w``, the result tensor ``res`` and
    the detector walk (``n_fast`` pixels along the direction consecutive threads take, their
    strides in ``res``)."""

    params: Any
    mu: Any
    w: Any
    res: Any
    whole: bool
    n_fast: int
    n_slow: int
    stride_fast: int
    stride_slow: int

    def finish(self, out: Any, poses: list[int]) -> None:
        """Scatter ``res`` into ``out`` at ``poses`` (nothing to do when it is ``out``)."""
        import torch

        if not self.whole:
            out[torch.as_tensor(poses, device=out.device)] = self.res


def axis_launch(
    rays: Any, affine: np.ndarray, table: Any, voxel: tuple[np.ndarray, ...],
    axes: tuple[int, int, int], poses: list[int], fast: str, channels: int, out: Any,
) -> AxisLaunch:  # fmt: skip
    """The :class:`AxisLaunch` of ``poses`` (indices into ``rays``) whose dominant voxel axis
    is ``axes[0]`` (in-plane ``axes[1:]``); ``voxel`` is :func:`rays_in_voxels` of the rays,
    ``out`` the (B, H, W) output on the kernel's device."""
    import torch

    axis, p_ax, q_ax = axes
    src_v, org_v, dcol_v, drow_v = voxel
    dev = out.device
    if fast == "auto":
        rows_fast = _rows_fast(
            src_v[poses], org_v[poses], dcol_v[poses], drow_v[poses],
            axis, q_ax, rays.rows, rays.cols,
        )  # fmt: skip
    else:
        rows_fast = fast == "rows"
    sub = _subset(rays, poses)
    params = torch.as_tensor(_pose_params(sub, affine, axis, p_ax, q_ax, rows_fast), device=dev)
    mu_table = torch.as_tensor(table.mu_cm2_per_g.T, dtype=torch.float32, device=dev)  # (E, M)
    mu = torch.zeros(mu_table.shape[0], channels, device=dev)
    mu[:, : mu_table.shape[1]] = mu_table
    w = torch.as_tensor(table.signal_weights, dtype=torch.float32, device=dev)
    whole = poses == list(range(len(rays)))
    res = out if whole else torch.empty(len(poses), rays.rows, rays.cols, device=dev)
    if rows_fast:
        walk = (rays.rows, rays.cols, rays.cols, 1)
    else:
        walk = (rays.cols, rays.rows, 1, rays.cols)
    return AxisLaunch(params, mu, w, res, whole, *walk)


def prepare(
    volume: Any, affine: np.ndarray, rays: Any, half: bool = True, pairs: bool = False
) -> None:
    """Build the packed volume layouts :func:`render` of ``rays`` reads (cached in ``volume``)."""
    from gensyn.drr.projector import poses_by_axis, rays_in_voxels

    for axis, p_ax, q_ax, _ in poses_by_axis(rays, *rays_in_voxels(rays, affine)):
        _packed(volume, axis, p_ax, q_ax, half, pairs)


def _channels(n_mat: int) -> int:
    return 4 if n_mat <= 4 else 8


def _packed(volume: Any, axis: int, p_ax: int, q_ax: int, half: bool, pairs: bool = False) -> Any:
    """The packed layout for slices along ``axis``, built once per volume."""
    nc = _channels(volume.channels)
    if pairs:
        return volume.cached(
            ("fused-pairs", axis, half),
            lambda: _pair(_pack(volume, axis, p_ax, q_ax, nc, half)),
        )
    return volume.cached(("fused", axis, half), lambda: _pack(volume, axis, p_ax, q_ax, nc, half))


def _pair(packed: Any) -> Any:
    """(S, P', Q', 2 nc): entry [s, p, q] holds packed[s, p, q] then packed[s, p, q + 1]
    (zeros past the last column)."""
    import torch

    nc = packed.shape[-1]
    out = torch.zeros(*packed.shape[:-1], 2 * nc, dtype=packed.dtype, device=packed.device)
    out[..., :nc] = packed
    out[:, :, :-1, nc:] = packed[:, :, 1:]
    return out


def _pack(volume: Any, axis: int, p_ax: int, q_ax: int, nc: int, half: bool) -> Any:
    """Channels-last copy (S, P + 3, Q + 3, nc) of the slice layout with a zero border.

    Voxel (s, p, q) sits at [s, p + 1, q + 1]; rows/columns -1, P, P + 1 (and Q, Q + 1)
    and the channels past the volume's are zeros.
    """
    import torch

    planar = volume.layout((axis, p_ax, q_ax))  # (S, C, P, Q)
    n_s, n_c, n_p, n_q = planar.shape
    dtype = torch.float16 if half else torch.float32
    pad = _PAD_LO + _PAD_HI
    packed = torch.zeros(n_s, n_p + pad, n_q + pad, nc, dtype=dtype, device=planar.device)
    packed[:, _PAD_LO : _PAD_LO + n_p, _PAD_LO : _PAD_LO + n_q, :n_c] = planar.permute(0, 2, 3, 1)
    return packed


def _subset(rays: Any, idx: list[int]) -> Any:
    from gensyn.drr.projector import RaySet

    return RaySet(
        rays.source[idx], rays.origin[idx], rays.d_col[idx], rays.d_row[idx], rays.rows, rays.cols
    )
