"""`stage=classify` and `stage=predict` through `launch.py` at the study's model size.

A `dataset=folder` of N chest-X-ray-like 512² PNGs (K distinct images, hard-linked to reach N
files; labels drawn at random, patients of 2 images each), then the README's commands:
`prepare_xrays`, `classify` (DenseNet121 512², batch 128, `schedule=epochs`) and `predict`
twice (the second as another arm or fold of a grid would: caches warm),
all with `experiment=thesis device=<device>`. Prints training images/s per epoch (from the
run's metrics.jsonl; epoch 1 includes JAX compilation), the classify cache report, and
predict's images/s and time breakdown (its summary). The study's recipe trains the last 9
layers of DenseNet121 on top of ImageNet weights; a machine without internet cannot fetch
them, so this script saves a randomly initialised DenseNet121 no-top weights file and passes
it as `classifier.weights=<file>`: the same layers frozen, the same cost
(`--tail -1` trains every layer instead, about 3x the compute).

With ``--alone N``, after the stages and in the same run, on up to N test and N training
images: the model alone on images decoded in RAM (the original study's way) and the peer a
researcher writes with stock Keras (``keras.utils.PyDataset`` + Pillow, ``--workers``
threads), for prediction and for training.

    python benchmarks/classify_launch.py --device cuda --images 20000 --epochs 2
    python benchmarks/classify_launch.py --device cuda --images 30000 --epochs 1 --alone 6400
    python benchmarks/classify_launch.py --device cpu --images 64 --epochs 1 --size 64  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from launching import launch, newest_run  # benchmarks/launching.py (scripts run from benchmarks/)

FINDINGS = ("Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia")


def make_folder(raw: Path, n_images: int, n_distinct: int, size: int, seed: int) -> None:
    """PNG files + labels.csv of a `dataset=folder` (distinct images hard-linked)."""
    from PIL import Image

    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    distinct = []
    for i in range(min(n_distinct, n_images)):
        lungs = np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
        lungs += np.exp(-(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
        img = 200 - 120 * lungs + rng.normal(0, 12, (size, size))
        path = raw / f"d{i:05d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, compress_level=1)
        distinct.append(path)
    rows = ["path,patient_id,view," + ",".join(FINDINGS)]
    for i in range(n_images):
        name = f"img{i:06d}.png"
        target = raw / name
        if not target.exists():
            os.link(distinct[i % len(distinct)], target)
        labels = ",".join(str(int(v)) for v in rng.random(len(FINDINGS)) < 0.3)
        rows.append(f"{name},p{i // 2:06d},PA,{labels}")
    (raw / "labels.csv").write_text("\n".join(rows) + "\n")


def random_weights_file(root: Path) -> Path:
    """A DenseNet121 no-top weights file with Keras' random initialisation (made once, on the
    CPU in a subprocess so that this process holds no GPU memory)."""
    import subprocess
    import sys

    path = root / "densenet121_random_notop.weights.h5"
    if not path.is_file():
        code = (
            "import sys, keras; keras.utils.set_random_seed(0); "
            "keras.applications.DenseNet121(include_top=False, weights=None, "
            "input_shape=(64, 64, 3)).save_weights(sys.argv[1])"
        )
        env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)
    return path


def alone_and_peer(
    root: Path, batch: int, workers: int, n_max: int, weights: Path, tail: int
) -> dict[str, Any]:
    """In the same run as the stages, on (at most ``n_max`` of) their images: the model alone
    on images already decoded in RAM (the original study held every image in RAM) and the
    peer a researcher writes with stock Keras: a ``keras.utils.PyDataset`` decoding each PNG
    with Pillow in ``workers`` threads. For prediction: ``best.keras`` of ``classify`` on the
    test images. For training: the study's recipe built afresh (DenseNet121 on ``weights``,
    ``tail`` trainable layers, Adam, GENSYN's masked BCE, mixed bf16 on a GPU) on the training
    images and their labels, one epoch each way. Each way runs one batch first, untimed:
    compiling its step (Keras compiles again for a PyDataset after arrays). Whole batches
    only (one compiled shape)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    from PIL import Image

    from gensyn.base.io import read_table
    from gensyn.classify.models import ModelSpec, build_model
    from gensyn.classify.predict import load_classifier
    from gensyn.classify.sampling import resolve_paths
    from gensyn.classify.train import MaskedBinaryCrossentropy, resolve_precision

    prep = newest_run(root, "prepare_xrays")
    xrays = resolve_paths(read_table(prep / "xrays.csv"), prep)
    model = load_classifier(newest_run(root, "classify") / "best.keras")
    size = int(model.input_shape[1])

    def rows(split: str) -> tuple[list[str], np.ndarray, int]:
        part = xrays[xrays["split"] == split]
        b = min(batch, n_max, len(part))
        part = part.iloc[: min(n_max, len(part)) // b * b]
        return list(part["path"]), part[list(FINDINGS)].to_numpy(np.float32), b

    def decode(path: str) -> np.ndarray:
        img = Image.open(path).convert("L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img)[..., None]

    class PngBatches(keras.utils.PyDataset):
        def __init__(self, paths: list[str], labels: np.ndarray | None, b: int) -> None:
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
            self.paths, self.labels, self.b = paths, labels, b

        def __len__(self) -> int:
            return len(self.paths) // self.b

        def __getitem__(self, i: int) -> Any:
            sl = slice(i * self.b, (i + 1) * self.b)
            x = np.stack([decode(q) for q in self.paths[sl]])
            return x if self.labels is None else (x, self.labels[sl])

    def timed(fn: Any, n: int) -> float:
        start = time.perf_counter()
        fn()
        return n / (time.perf_counter() - start)

    # each way is compiled on one batch before it is timed: Keras compiles the step again for
    # a PyDataset after arrays (6.2 s against 0.35 s for the same three batches, small CNN, CPU)
    paths, _, b = rows("test")
    model.predict(PngBatches(paths[:b], None, b), verbose=0)
    model.predict(np.zeros((b, size, size, 1), np.uint8), batch_size=b, verbose=0)
    out: dict[str, Any] = {"predict_images": len(paths)}
    out["predict_keras_pydataset_pillow_per_s"] = timed(
        lambda: model.predict(PngBatches(paths, None, b), verbose=0), len(paths)
    )
    images = np.stack([decode(q) for q in paths])
    out["predict_model_in_ram_per_s"] = timed(
        lambda: model.predict(images, batch_size=b, verbose=0), len(paths)
    )
    del images
    paths, labels, b = rows("train")
    keras.config.set_dtype_policy(resolve_precision("auto"))
    spec = ModelSpec("densenet121", size, len(FINDINGS), str(weights), tail)
    net = build_model(spec)
    net.compile(optimizer=keras.optimizers.Adam(1e-5), loss=MaskedBinaryCrossentropy())
    images = np.stack([decode(q) for q in paths])
    net.fit(PngBatches(paths[:b], labels[:b], b), epochs=1, verbose=0)
    net.fit(images[:b], labels[:b], batch_size=b, epochs=1, verbose=0)
    out["train_images"] = len(paths)
    out["train_model_in_ram_per_s"] = timed(
        lambda: net.fit(images, labels, batch_size=b, epochs=1, verbose=0), len(paths)
    )
    out["train_keras_pydataset_pillow_per_s"] = timed(
        lambda: net.fit(PngBatches(paths, labels, b), epochs=1, verbose=0), len(paths)
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--distinct", type=int, default=500)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--root", type=Path, default=Path("/tmp/gensyn-classify-launch"))
    p.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    p.add_argument("--tail", type=int, default=9, help="trainable tail layers (-1: all)")
    p.add_argument(
        "--alone",
        type=int,
        default=0,
        help="after the stages: the model alone on up to N test (and N training) images in "
        "RAM, and the stock Keras peer (PyDataset + Pillow) streaming the same files, for "
        "prediction and training, in the same run",
    )
    a = p.parse_args()
    root = a.root.resolve()
    raw = root / "xrays"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_folder(raw, a.images, a.distinct, a.size, 0)
    print(f"{a.images} PNGs ({a.distinct} distinct, {a.size}²) in {time.perf_counter() - t0:.0f} s")
    env = {**os.environ, "GENSYN_ROOT": str(root), "MPLBACKEND": "Agg", "KERAS_BACKEND": "jax"}
    env.setdefault("XDG_CACHE_HOME", str(root / "cache"))
    common = [
        "experiment=thesis",
        "dataset=folder",
        f"dataset.raw_dir={raw}",
        f"dataset.xray.size_px={a.size}",
        f"classifier.image_size_px={a.size}",
        f"classifier.weights={random_weights_file(root)}",
        f"classifier.trainable_tail_layers={a.tail}",
        f"classifier.epochs={a.epochs}",
        f"classifier.batch_size={a.batch}",
        "classifier.schedule=epochs",
        "sampling=none",
        "report.test_datasets=[]",
        "split_idx=0",
        f"device={a.device}",
        f"num_workers={a.workers}",
        "logger=none",
    ]
    log = root / "launch.log"
    walls = {s: launch([f"stage={s}", *common], env, log) for s in ("prepare_xrays", "classify")}
    cls = newest_run(root, "classify")
    epochs = [json.loads(line) for line in (cls / "metrics.jsonl").read_text().splitlines() if line]
    rates = [e.get("train_images_per_s") for e in epochs if "train_images_per_s" in e]
    summary_c = json.loads((cls / "summary.json").read_text())
    walls["predict"] = launch(["stage=predict", *common], env, log)
    summary_p = json.loads((newest_run(root, "predict") / "summary.json").read_text())
    # again, as the other arms and folds of a grid predict the same test set: the prediction
    # step and the test images now come from the caches the first run wrote
    walls["predict_again"] = launch(["stage=predict", "force=true", *common], env, log)
    summary_again = json.loads((newest_run(root, "predict") / "summary.json").read_text())
    figures = {
        "device": a.device,
        "images": a.images,
        "size": a.size,
        "trainable_tail_layers": a.tail,
        "wall_s": walls,
        "train_images_per_s_by_epoch": rates,
        "image_cache": summary_c.get("image_cache"),
        "n_train": summary_c.get("n_train_real"),
        "predict_images_per_s": summary_p.get("images_per_s"),
        "predict_images_per_s_after_compile": summary_p.get("images_per_s_after_compile"),
        "predict_breakdown": {k: v for k, v in summary_p.items() if str(k).startswith("time_")},
        "predict_image_cache": summary_p.get("image_cache"),
        "predict_again_images_per_s": summary_again.get("images_per_s"),
        "predict_again_images_per_s_after_compile": summary_again.get("images_per_s_after_compile"),
        "predict_again_breakdown": {
            k: v for k, v in summary_again.items() if str(k).startswith("time_")
        },
        "predict_again_image_cache": summary_again.get("image_cache"),
    }
    if a.alone:
        weights = random_weights_file(root)
        figures["alone_and_peer"] = alone_and_peer(
            root, a.batch, a.workers, a.alone, weights, a.tail
        )
    print(json.dumps(figures, indent=1, default=str))
    if a.out:
        a.out.write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
