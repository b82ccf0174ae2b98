"""Benchmark: the study's classifier recipe trained from PNG files on disk.

DenseNet121 at 512², batch 128, all but the last 9 layers frozen, Adam, BCE (docs/study.md),
fed by GENSYN's streaming pipeline (gensyn.classify.data: PNG decode in worker processes
or threads, bounded prefetch). Reports, in one run:

1. decode-only throughput of the input pipeline (images/s, no model), with threads and
   with worker processes;
2. training images/s with batches already in host RAM (the original study's loader, which
   held every image in memory) -- the compute ceiling;
3. training images/s streaming the PNGs from disk -- ours; ``stream / in-RAM`` near 1 means
   the accelerator is not starved by input;
4. prediction images/s streaming from disk;
5. the decode-once cache (gensyn.classify.cache): the time to write it for all ``--n-images``
   files, then decode-only, training and prediction images/s streaming from its memory map
   (``cache / in-RAM`` near 1: the cache removes the decoding bottleneck);
6. peak host RSS while streaming a whole epoch over all ``--n-images`` files (sampled every
   0.5 s; the training process and, summed with it, its decode workers, which counts the
   shared batch ring more than once), next to what an all-in-RAM loader would hold; from
   the PNGs, and again from the cache (its pages are file-backed and reclaimable).

It writes a synthetic PNG set first (8-bit grey, chest-like, per-image random shift and
noise; existing files are reused). Examples:

    python benchmarks/classify.py --device cpu                     # tiny smoke run (CPU)
    python benchmarks/classify.py --device cuda --n-images 50000   # the H100 figures

``--cache-dir`` (default /tmp/gensyn_bench_cache) should be on local disk with room for
``n-images × image-size²`` bytes (50,000 × 512²: 13.1 GB); a cache found there is reused
(``cache_written no``), so delete it to time the writing again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _base_images(size_px: int, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size_px, 0:size_px] / size_px
    out = []
    for _ in range(n):
        img = 0.35 + 0.1 * np.sin(6 * xx + rng.uniform(0, 3))
        for cx in (0.3, 0.7):
            img -= 0.12 * (((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
        r = rng.uniform(0.1, 0.2)
        img += 0.25 * (((xx - 0.52) / r) ** 2 + ((yy - 0.6) / (r * 0.8)) ** 2 < 1)
        out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return np.stack(out)


def _write_chunk(args: tuple[str, int, int, int]) -> int:
    from PIL import Image

    folder, start, stop, size_px = args
    bases = _base_images(size_px)
    written = 0
    for i in range(start, stop):
        path = Path(folder) / f"{i // 1000:03d}" / f"img_{i:06d}.png"
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        img = np.roll(bases[i % len(bases)], tuple(rng.integers(-20, 20, 2)), axis=(0, 1))
        img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        Image.fromarray(img.astype(np.uint8)).save(tmp, format="PNG", compress_level=1)
        tmp.replace(path)
        written += 1
    return written


def make_pngs(folder: Path, n: int, size_px: int, workers: int) -> list[str]:
    """Write (or reuse) ``n`` PNGs of ``size_px``² under ``folder``; return their paths."""
    chunk = 500
    jobs = [(str(folder), s, min(s + chunk, n), size_px) for s in range(0, n, chunk)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        written = sum(pool.map(_write_chunk, jobs))
    print(
        f"PNG set: {n} images of {size_px}² in {folder} ({written} written in "
        f"{time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    return [str(folder / f"{i // 1000:03d}" / f"img_{i:06d}.png") for i in range(n)]


class RssSampler:
    """Peak resident set size of this process (``peak``), of it plus its child processes
    (``peak_tree``, which counts shared pages once per process), and the peak of their
    summed proportional set sizes (``peak_pss``: shared pages split between the processes
    that map them, i.e. the memory the whole tree really holds), sampled in a thread."""

    def __init__(self, every_s: float = 0.5) -> None:
        import psutil

        self.proc = psutil.Process()
        self.every_s = every_s
        self.peak = 0
        self.peak_tree = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> tuple[int, int]:
        """(summed RSS, summed PSS) of this process's children."""
        import psutil

        rss = pss = 0
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                info = child.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
        return rss, pss

    def _run(self) -> None:
        while not self._stop.is_set():
            own = self.proc.memory_full_info()
            self.peak = max(self.peak, own.rss)
            rss, pss = self._tree()
            self.peak_tree = max(self.peak_tree, own.rss + rss)
            self.peak_pss = max(self.peak_pss, getattr(own, "pss", own.rss) + pss)
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--n-images", type=int, default=None, help="PNG set size (cuda: 50000)")
    ap.add_argument("--image-size", type=int, default=None, help="cuda: 512, cpu: 64")
    ap.add_argument("--batch", type=int, default=None, help="cuda: 128, cpu: 8")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (cuda: 60)")
    ap.add_argument("--predict-images", type=int, default=None, help="cuda: 12800")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: cores)")
    ap.add_argument("--prefetch", type=int, default=6, help="batches decoded ahead")
    ap.add_argument(
        "--decode",
        choices=["auto", "threads", "processes"],
        default="auto",
        help="decoding for training and prediction (auto: processes from 4 workers on)",
    )
    ap.add_argument(
        "--no-full-epoch", action="store_true", help="skip the RSS epoch over all files"
    )
    ap.add_argument("--png-dir", type=Path, default=Path("/tmp/gensyn_bench_pngs"))
    ap.add_argument(
        "--cache-dir", type=Path, default=Path("/tmp/gensyn_bench_cache"), help="image cache"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    gpu = args.device == "cuda"
    n = args.n_images or (50000 if gpu else 96)
    size = args.image_size or (512 if gpu else 64)
    batch = args.batch or (128 if gpu else 8)
    steps = args.steps or (60 if gpu else 4)
    n_pred = min(n, args.predict_images or (12800 if gpu else 32))
    cores = os.cpu_count() or 2
    workers = args.workers or cores

    os.environ.setdefault("KERAS_BACKEND", "jax")
    if not gpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
    paths = make_pngs(args.png_dir / f"{size}px", n, size, workers=min(cores, 32))

    import jax

    from gensyn.classify.cache import ImageCache, open_or_build
    from gensyn.classify.data import BatchStream
    from gensyn.classify.keras_env import keras
    from gensyn.classify.models import ModelSpec, build_model
    from gensyn.classify.predict import predict_paths
    from gensyn.classify.train import configure_devices, resolve_precision

    if gpu and jax.default_backend() == "cpu":
        raise SystemExit(
            "--device cuda but JAX sees no GPU (install jax[cuda12] / jax-cuda*-plugin)"
        )
    policy = resolve_precision("auto")
    keras.config.set_dtype_policy(policy)
    n_dev = configure_devices(batch)
    print(
        f"JAX {jax.__version__} on {jax.devices()}; keras {keras.__version__}; policy {policy}; "
        f"{cores} cores, {workers} decode workers",
        flush=True,
    )
    labels = (np.random.default_rng(0).random((n, 5)) < 0.3).astype(np.float32)
    results: dict[str, float | int | str] = {
        "device": str(jax.devices()[0].device_kind),
        "n_devices": n_dev,
        "image_size_px": size,
        "batch": batch,
        "policy": policy,
        "n_images": n,
    }

    def stream(
        count: int,
        shuffle: bool = True,
        decode: str = args.decode,
        cache: list[ImageCache] | None = None,
    ) -> BatchStream:
        return BatchStream(
            paths[:count],
            labels[:count],
            batch,
            size,
            shuffle=shuffle,
            seed=0,
            drop_remainder=True,
            num_workers=workers,
            prefetch_batches=args.prefetch,
            decode=decode,
            cache=cache or [],
        )

    # 1. input pipeline alone, both ways of decoding (worker start-up included)
    for mode in ("threads", "processes"):
        s = stream(min(n, batch * steps), decode=mode)
        t = time.perf_counter()
        n_dec = sum(b[0].shape[0] for b in s)
        results[f"decode_{mode}_images_per_s"] = n_dec / (time.perf_counter() - t)
    results["decode_mode"] = "processes" if stream(batch).uses_processes else "threads"

    model = build_model(ModelSpec("densenet121", image_size_px=size, trainable_tail_layers=9))
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=keras.losses.BinaryCrossentropy())
    n_trainable = sum(layer.trainable for layer in model.get_layer("densenet121").layers)
    results["trainable_base_layers"] = n_trainable

    # 2. compute ceiling: batches already in RAM (as the original all-in-RAM loader)
    ram_x = np.stack([b[0] for b, _ in zip(stream(batch * 4), range(4), strict=False)])
    ram_y = labels[: batch * 4].reshape(4, batch, 5)

    def ram_batches(k: int):  # type: ignore[no-untyped-def]
        for i in range(k):
            yield ram_x[i % 4], ram_y[i % 4]

    t = time.perf_counter()
    model.fit(ram_batches(3), steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # compile
    results["compile_and_3_steps_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model.fit(ram_batches(steps), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    results["train_in_ram_images_per_s"] = steps * batch / (time.perf_counter() - t)

    # 3. streaming from disk, same model and compiled step
    s = stream(batch * steps)
    t = time.perf_counter()
    model.fit(iter(s), steps_per_epoch=len(s), epochs=1, verbose=0, shuffle=False)
    results["train_stream_images_per_s"] = len(s) * batch / (time.perf_counter() - t)
    results["stream_over_in_ram"] = (
        results["train_stream_images_per_s"] / results["train_in_ram_images_per_s"]
    )

    # 4. prediction from disk
    predict_paths(model, paths[:batch], size, batch, workers, args.prefetch, args.decode)
    t = time.perf_counter()
    predict_paths(model, paths[:n_pred], size, batch, workers, args.prefetch, args.decode)
    results["predict_images_per_s"] = n_pred / (time.perf_counter() - t)

    # 5. decode-once cache: write it (or find it), then stream from its memory map
    t = time.perf_counter()
    caches = [open_or_build(args.cache_dir, paths, size, workers, args.decode)]
    results["cache_written"] = "yes" if caches[0].written else "no (found)"
    results["cache_build_s"] = time.perf_counter() - t
    results["cache_gb"] = caches[0].nbytes / 1e9
    for mode in ("threads", "processes"):
        s = stream(min(n, batch * steps), decode=mode, cache=caches)
        t = time.perf_counter()
        n_dec = sum(b[0].shape[0] for b in s)
        results[f"cache_read_{mode}_images_per_s"] = n_dec / (time.perf_counter() - t)
    s = stream(batch * steps, cache=caches)
    t = time.perf_counter()
    model.fit(iter(s), steps_per_epoch=len(s), epochs=1, verbose=0, shuffle=False)
    results["train_cache_images_per_s"] = len(s) * batch / (time.perf_counter() - t)
    results["cache_over_in_ram"] = (
        results["train_cache_images_per_s"] / results["train_in_ram_images_per_s"]
    )
    t = time.perf_counter()
    predict_paths(model, paths[:n_pred], size, batch, workers, args.prefetch, args.decode, caches)
    results["predict_cache_images_per_s"] = n_pred / (time.perf_counter() - t)

    # 6. a whole epoch over every file, RSS sampled throughout: from the PNGs, from the cache
    if not args.no_full_epoch:
        for name, cache in (("full_epoch", None), ("full_epoch_cache", caches)):
            s = stream(n, cache=cache)
            with RssSampler() as rss:
                t = time.perf_counter()
                model.fit(iter(s), steps_per_epoch=len(s), epochs=1, verbose=0, shuffle=False)
                results[f"{name}_images_per_s"] = len(s) * batch / (time.perf_counter() - t)
            results[f"{name}_peak_rss_gb"] = rss.peak / 1e9
            results[f"{name}_peak_rss_with_workers_gb"] = rss.peak_tree / 1e9
            results[f"{name}_peak_pss_with_workers_gb"] = rss.peak_pss / 1e9
        results["all_in_ram_uint8_gb"] = n * size * size / 1e9
        results["all_in_ram_float32_rgb_gb"] = n * size * size * 3 * 4 / 1e9

    width = max(len(k) for k in results)
    print("\nclassify benchmark (DenseNet121, last 9 layers trainable, PNGs and cache on disk)")
    for key, value in results.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
