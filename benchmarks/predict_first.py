"""The first prediction of a test set with the decode-once cache on: one pass against three.

The same PNG test set predicted, in one process, each way after its own untimed warm-up
batch (compilation excluded), each with a fresh cache folder:

* ``three_passes``: what ``stage=predict`` did until 2026-12-04: the structural check of
  every file (``unreadable_images``), decoding them into the cache (``open_or_build``), then
  predicting from the cache;
* ``one_pass``: what it does now (``predict_and_cache``): each file decoded once, for the
  model and into the cache together;
* ``later``: a later prediction of the same set (another arm or fold), from the cache;
* ``files_no_cache``: ``predict_paths`` decoding the files, no cache (``classifier.cache=off``);
* ``peer_keras_pydataset``: what a researcher writes with stock Keras: a
  ``keras.utils.PyDataset`` decoding each PNG with Pillow in ``--workers`` threads.

``--model densenet121`` is the study's network (random weights; a GPU's work); the default
``small_cnn`` with ``--model-size 128`` (512² files resized) keeps the model's share small on a
CPU so that the passes over the files show.

    python benchmarks/predict_first.py --images 2000 --workers 2 --model-size 128
    python benchmarks/predict_first.py --images 9000 --workers 16 --model densenet121 --batch 128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_pngs(folder: Path, n: int, n_distinct: int, size: int) -> list[str]:
    """``n`` chest-X-ray-like 8-bit PNGs written by GENSYN's encoder (distinct ones hard-linked)."""
    from gensyn.base.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    lungs += np.exp(-(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    distinct = []
    for i in range(min(n, n_distinct)):
        img = np.clip(200 - 120 * lungs + rng.normal(0, 12, (size, size)), 0, 255)
        path = folder / f"d{i:05d}.png"
        write_image(path, img.astype(np.uint8))
        distinct.append(path)
    paths = []
    for i in range(n):
        path = folder / f"img{i:06d}.png"
        if not path.exists():
            os.link(distinct[i % len(distinct)], path)
        paths.append(str(path))
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--distinct", type=int, default=200)
    p.add_argument("--size", type=int, default=512, help="side of the PNG files")
    p.add_argument(
        "--model-size", type=int, default=None,
        help="side the model and the cache take (the files are resized to it); default --size",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--model", choices=("small_cnn", "densenet121"), default="small_cnn")
    p.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    a = p.parse_args()
    px = a.model_size or a.size
    import keras
    from PIL import Image

    from gensyn.classify.cache import open_or_build
    from gensyn.classify.data import unreadable_images
    from gensyn.classify.models import ModelSpec, build_model
    from gensyn.classify.predict import predict_and_cache, predict_paths
    from gensyn.classify.train import resolve_precision

    keras.config.set_dtype_policy(resolve_precision("auto"))
    model = build_model(ModelSpec(a.model, image_size_px=px, n_classes=5))
    root = Path(tempfile.mkdtemp(prefix="predict-first-"))
    try:
        paths = make_pngs(root / "png", a.images, a.distinct, a.size)
        feed = (a.batch, a.workers, 4, "auto")
        # warm-up (compilation) on one batch of other files, each way's input kind
        warm = make_pngs(root / "warm", a.batch, 4, a.size)
        predict_paths(model, warm, px, *feed)
        times: dict[str, float] = {}

        def timed(name: str, fn: Any) -> Any:
            start = time.perf_counter()
            out = fn()
            times[name] = time.perf_counter() - start
            return out

        def three_passes() -> np.ndarray:
            bad = unreadable_images(paths, a.workers)
            assert not bad
            cache = open_or_build(root / "c3", paths, px, a.workers)
            return predict_paths(model, paths, px, *feed, [cache])

        probs3 = timed("three_passes", three_passes)
        probs1, cache = timed(
            "one_pass", lambda: predict_and_cache(model, paths, px, root / "c1", *feed)
        )
        timed("later", lambda: predict_paths(model, paths, px, *feed, [cache]))
        timed("files_no_cache", lambda: predict_paths(model, paths, px, *feed))
        np.testing.assert_allclose(probs1, probs3, rtol=1e-4, atol=1e-5)

        class PngBatches(keras.utils.PyDataset):
            def __init__(self, files: list[str]) -> None:
                super().__init__(workers=a.workers, use_multiprocessing=False, max_queue_size=8)
                self.files = files

            def __len__(self) -> int:
                return len(self.files) // a.batch

            def __getitem__(self, i: int) -> np.ndarray:
                part = self.files[i * a.batch : (i + 1) * a.batch]
                images = []
                for f in part:
                    img = Image.open(f).convert("L")
                    if img.size != (px, px):
                        img = img.resize((px, px), Image.Resampling.BILINEAR)
                    images.append(np.asarray(img)[..., None])
                return np.stack(images)

        model.predict(PngBatches(warm), verbose=0)  # Keras compiles again for a PyDataset
        whole = paths[: len(paths) // a.batch * a.batch]
        timed("peer_keras_pydataset", lambda: model.predict(PngBatches(whole), verbose=0))
        counts = {k: (len(whole) if k.startswith("peer") else len(paths)) for k in times}
        rates = {k: counts[k] / t for k, t in times.items()}
        print(
            f"{a.images} PNGs {a.size}², {a.model} at {px}², batch {a.batch}, {a.workers} workers"
        )
        print(f"{'way':<22} {'s':>8} {'images/s':>10}")
        for k, t in times.items():
            print(f"{k:<22} {t:>8.2f} {rates[k]:>10.1f}")
        if a.out:
            a.out.write_text(
                json.dumps(
                    {"args": vars(a) | {"out": str(a.out)}, "s": times, "per_s": rates}, indent=1
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
