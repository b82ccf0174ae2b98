"""Demo data benchmarks: phantom generation speed on one core, and the simulated X-ray chain.

    python benchmarks/phantom.py                # 10 phantoms at 128^3, comparisons, X-ray chain
    python benchmarks/phantom.py --volumes 30 --shape 128

Target (issue 3): >= 1 phantom volume of 128^3 per second on ONE core. Everything runs with
one BLAS/OpenMP thread (environment variables set before numpy is imported, and
threadpoolctl). Each optimisation is printed next to the straightforward way of doing the
same thing, measured in the same run on the same data:

* tube painting inside each segment's bounding box vs over the full volume (same result);
* smooth random texture by three small matrix products vs scipy.ndimage.gaussian_filter
  of white noise (the usual way; same correlation length order).

CPU only: ``--device`` is accepted for symmetry with the other benchmarks and ignored.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gensyn.data.phantom.shapes import Grid, paint_tube, smooth_noise  # noqa: E402
from gensyn.data.phantom.volume import FINDINGS, generate_phantom  # noqa: E402


def cpu_seconds(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Process CPU seconds of each call (wall time is unreliable on a shared machine)."""
    out = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return out


def describe(times: list[float]) -> str:
    m = statistics.mean(times)
    sd = statistics.stdev(times) if len(times) > 1 else 0.0
    return f"{m * 1e3:8.1f} ms ± {sd * 1e3:5.1f}"


def bench_phantom(n: int, shape: int) -> float:
    shape_vox = (shape, shape, shape)
    spacing = tuple(s * 128 / shape for s in (2.8, 2.8, 2.6))
    generate_phantom(0, None, shape_vox, spacing)  # warm-up (imports, caches)
    seeds = iter(range(1000, 1000 + 10 * n))
    normal = cpu_seconds(
        lambda: generate_phantom(next(seeds), dict.fromkeys(FINDINGS, False), shape_vox, spacing), n
    )
    every = cpu_seconds(
        lambda: generate_phantom(next(seeds), dict.fromkeys(FINDINGS, True), shape_vox, spacing), n
    )
    sampled = cpu_seconds(lambda: generate_phantom(next(seeds), None, shape_vox, spacing), n)
    wall = []
    for _ in range(n):
        t = time.perf_counter()
        generate_phantom(next(seeds), None, shape_vox, spacing)
        wall.append(time.perf_counter() - t)
    print(f"phantom {shape}^3, 1 thread, {n} volumes each (CPU time per volume):")
    print(f"  no findings          {describe(normal)}")
    print(f"  all five findings    {describe(every)}")
    print(
        f"  sampled labels (0.3) {describe(sampled)}   -> {1 / statistics.mean(sampled):.2f} volumes/s/core"
    )
    print(f"  wall time, sampled   {describe(wall)}   (shared machine: includes other load)")
    return 1 / statistics.mean(sampled)


def bench_tubes() -> None:
    """Bounding-box tube painting vs the same tubes evaluated on the full grid."""
    grid = Grid((128, 128, 128), (2.8, 2.8, 2.6))
    rng = np.random.default_rng(0)
    starts = rng.uniform(-120, 120, size=(60, 3))
    ends = starts + rng.normal(0, 20, size=(60, 3))
    radii = rng.uniform(1.0, 6.0, size=60)

    def local() -> np.ndarray:
        f = np.zeros(grid.shape_vox, np.float32)
        for p0, p1, r in zip(starts, ends, radii, strict=True):
            paint_tube(grid, f, p0, p1, r, 0.9 * r)
        return f

    def full() -> np.ndarray:  # same formula, no bounding box
        f = np.zeros(grid.shape_vox, np.float32)
        x, y, z = grid.xyz()
        w = float(min(grid.spacing_mm))
        for p0, p1, r in zip(starts, ends, radii, strict=True):
            p0, p1 = p0.astype(np.float32), p1.astype(np.float32)
            d = p1 - p0
            px, py, pz = x - p0[0], y - p0[1], z - p0[2]
            t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / float(d @ d), 0.0, 1.0)
            dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
            rad = r + t * (0.9 * r - r)
            frac = np.clip((rad - dist) / w + 0.5, 0.0, 1.0) * np.minimum(1.0, 2.0 * rad / w) ** 2
            np.maximum(f, frac, out=f)
        return f

    np.testing.assert_allclose(local(), full(), atol=1e-5)
    t_local, t_full = cpu_seconds(local, 3), cpu_seconds(full, 1)
    print("60 vessel tubes on 128^3 (identical result):")
    print(f"  bounding box (ours)  {describe(t_local)}")
    print(
        f"  full volume (naive)  {describe(t_full)}   x{statistics.mean(t_full) / statistics.mean(t_local):.0f}"
    )


def bench_noise() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    shape = (128, 128, 128)
    ours = cpu_seconds(lambda: smooth_noise(rng, shape, 2.5), 5)
    peer = cpu_seconds(
        lambda: ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 2.5), 3
    )
    print("smooth random texture 128^3, correlation ~2.5 voxels:")
    print(f"  3 matrix products (ours)      {describe(ours)}")
    print(
        f"  scipy gaussian_filter (peer)  {describe(peer)}   x{statistics.mean(peer) / statistics.mean(ours):.1f}"
    )


def bench_xrays(n: int) -> None:
    from gensyn.data.phantom.demo import DemoSpec, _make_xray

    spec = DemoSpec()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"gensyn-phantom-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    _make_xray((tmp / "warm.png", 1, spec, {}))  # imports, spectrum table
    seeds = iter(range(5000, 5000 + n))

    def one() -> None:
        seed = next(seeds)
        _make_xray((tmp / f"{seed}.png", seed, spec, {}))

    times = cpu_seconds(one, n)
    print(
        f"simulated real X-ray (phantom {spec.xray_shape_vox} + PA render "
        f"{spec.xray_render_px} px + chain at {spec.xray_size_px} px + PNG):"
    )
    print(
        f"  per image            {describe(times)}   -> {spec.num_xray_patients} images in "
        f"{spec.num_xray_patients * statistics.mean(times):.0f} CPU s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=10)
    parser.add_argument("--shape", type=int, default=128)
    parser.add_argument("--xrays", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="ignored: the phantom is CPU only")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    with threadpool_limits(limits=1):
        rate = bench_phantom(args.volumes, args.shape)
        bench_tubes()
        bench_noise()
        if args.xrays:
            bench_xrays(args.xrays)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(
        Path(os.environ.get("TMPDIR", "/tmp")) / f"gensyn-phantom-bench-{os.getpid()}",
        ignore_errors=True,
    )
    print(f"peak RSS {peak:.0f} MiB; goal >= 1 volume/s/core: {'met' if rate >= 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
