"""The scanned training loop on stored features: milliseconds per optimiser step, by loop form.

DenseNet121's trainable tail (the study's 9 layers) at ``--image-size`` (512: 16 × 16 × 992
features per image), batch 128, Adam, on ``--images`` random bfloat16 features held on the
device (mixed_bfloat16 on a GPU, as training there runs). Each variant trains ``--epochs``
epochs of ``--steps`` steps after one warm-up epoch (its compile, timed apart) through
:class:`gensyn.classify.scan_fit.ScannedFit`:

* ``cond``: the loop before this benchmark: every step inside a ``lax.cond`` that skips a
  chunk's padding steps, one step per loop iteration (the peer: what the grid ran);
* ``mask-uN``: the padding steps' results dropped by a select (no conditional), N steps per
  loop iteration (``unroll``).

All variants must end with the same weights (checked to tolerance: the same steps in the
same order). Prints one row per variant: compile + first epoch s, ms a step, steps/s, the
ratio to ``cond``; ``--out`` writes them as JSON.

``--predict N`` then times a validation pass over N stored images (the study's fold: 8,899)
both ways, ``--predict-repeats`` times after a warm-up: :class:`gensyn.classify.scan_fit.
ScannedPredict` (``PREDICT_CALL`` batches of 256 per compiled call) against Keras'
``predict`` fed the same batches gathered on the device (the peer: what validation ran
before); their outputs must agree.

    python benchmarks/scan_fit.py --device cpu --image-size 64 --images 512 --steps 20
    python benchmarks/scan_fit.py --device cuda          # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class CondScannedFit:
    """The scanned loop as it was: each step in a ``lax.cond`` (padding steps skipped)."""

    @staticmethod
    def make(base: type) -> type:
        class Cond(base):  # type: ignore[misc, valid-type]
            def _chunk_fn(self, state, blocks, which, rows, labels, n_valid):  # type: ignore[no-untyped-def]
                import jax
                import jax.numpy as jnp

                def body(state, xs):  # type: ignore[no-untyped-def]
                    i, _, r, y = xs

                    def step(state):  # type: ignore[no-untyped-def]
                        _, new = self.tail.train_step(state, (jnp.take(blocks[0], r, axis=0), y))
                        return new

                    return jax.lax.cond(i < n_valid, step, lambda s: s, state), None

                steps = jnp.arange(which.shape[0])
                state, _ = jax.lax.scan(body, state, (steps, which, rows, labels))
                return state

        return Cond


class Plan:
    """A stand-in for a FeatureStream: a fixed random batch plan (one block)."""

    def __init__(self, n_images: int, batch: int, n_classes: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.n_images, self.batch = n_images, batch
        self.rng = rng
        self.labels = (rng.random((n_images, n_classes)) < 0.3).astype(np.float32)

    def index_plan(self, first_batch: int, n_steps: int) -> list[tuple[Any, Any, Any]]:
        rng = np.random.default_rng(first_batch)
        out = []
        for _ in range(n_steps):
            rows = rng.integers(0, self.n_images, self.batch)
            out.append((np.zeros(self.batch, np.int64), rows, self.labels[rows]))
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--images", type=int, default=8192, help="stored feature rows on the device")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=279, help="steps per epoch (the study's 279)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up one")
    p.add_argument("--unrolls", default="1,4,8,16,32")
    p.add_argument("--predict", type=int, default=0, help="images of a timed validation pass")
    p.add_argument("--predict-repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import jax.numpy as jnp

    from gensyn.classify import scan_fit
    from gensyn.classify.keras_env import keras
    from gensyn.classify.models import ModelSpec, build_model
    from gensyn.classify.prefix import split_frozen_prefix
    from gensyn.classify.train import MaskedBinaryCrossentropy, resolve_precision

    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}", flush=True)
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(resolve_precision("auto"))
    model = build_model(ModelSpec(image_size_px=a.image_size, weights=None, seed=0))
    split = split_frozen_prefix(model)
    assert not isinstance(split, str), split
    start_values = [np.array(v) for v in model.variables]
    rng = np.random.default_rng(0)
    shape = (a.images, *split.feature_shape)
    features = jax.device_put(
        jnp.asarray(rng.standard_normal(shape, np.float32), dtype=split.feature_dtype)
    )
    print(f"features {shape} {split.feature_dtype}: {features.nbytes / 1e9:.2f} GB", flush=True)
    store = SimpleNamespace(blocks=[SimpleNamespace(data=features)])
    plan = Plan(a.images, a.batch, int(model.output_shape[-1]), 0)
    variants = [("cond", CondScannedFit.make(scan_fit.ScannedFit), 1)]
    variants += [(f"mask-u{u}", scan_fit.ScannedFit, int(u)) for u in a.unrolls.split(",") if u]
    if not a.unrolls:
        variants = []
    rows, finals = [], {}
    for name, cls, unroll in variants:
        for var, value in zip(model.variables, start_values, strict=True):
            var.assign(value)
        loss = MaskedBinaryCrossentropy()
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss)
        split.tail.compile(optimizer=model.optimizer, loss=loss)
        first = plan.index_plan(0, 1)[0]
        split.tail._symbolic_build(data_batch=(features[first[1]], first[2]))
        fit = cls(split.tail, store, unroll=unroll)
        clock = time.perf_counter()
        fit.epoch(plan, 0, a.steps)
        warm = time.perf_counter() - clock
        clock = time.perf_counter()
        for e in range(1, a.epochs + 1):
            loss_value = fit.epoch(plan, e * a.steps, a.steps)
        jax.block_until_ready(split.tail.trainable_variables[0].value)
        spent = time.perf_counter() - clock
        ms = 1e3 * spent / (a.epochs * a.steps)
        finals[name] = [np.asarray(v, np.float32) for v in split.tail.trainable_variables]
        rows.append({"variant": name, "unroll": unroll, "compile_and_first_epoch_s": round(warm, 2),
                     "ms_per_step": round(ms, 4), "steps_per_s": round(1e3 / ms, 1),
                     "loss": round(float(loss_value), 6)})  # fmt: skip
        print(f"{name:10s} compile+epoch {warm:7.2f} s  {ms:8.4f} ms/step  "
              f"{1e3 / ms:8.1f} steps/s  loss {loss_value:.6f}", flush=True)  # fmt: skip
    base = rows[0]["ms_per_step"] if rows else 1.0
    for row in rows:
        row["speed_vs_cond"] = round(base / row["ms_per_step"], 3)
        same = all(
            np.allclose(x, y, rtol=2e-2, atol=1e-3)
            for x, y in zip(finals[row["variant"]], finals["cond"], strict=True)
        )
        row["same_weights_as_cond"] = bool(same)
        print(f"{row['variant']:10s} x{row['speed_vs_cond']:.2f} vs cond, weights as cond: {same}")
    predict = time_predict(a, split.tail, store, features) if a.predict else {}
    if a.out is not None:
        a.out.write_text(
            json.dumps(
                {"args": vars(a) | {"out": str(a.out)}, "rows": rows, "predict": predict}, indent=1
            )
        )


def time_predict(a: argparse.Namespace, tail: Any, store: Any, features: Any) -> dict[str, Any]:
    """A validation pass of ``--predict`` stored images, scanned and through Keras' predict."""
    import jax
    import jax.numpy as jnp

    from gensyn.classify import scan_fit
    from gensyn.classify.features import PREDICT_BATCH

    rows = np.random.default_rng(1).integers(0, a.images, a.predict)
    which = np.zeros_like(rows)
    n_batches = -(-a.predict // PREDICT_BATCH)

    def keras_way() -> np.ndarray:
        def batches() -> Any:
            for b in range(n_batches):
                sel = rows[b * PREDICT_BATCH : (b + 1) * PREDICT_BATCH]
                sel = np.concatenate([sel, np.full(PREDICT_BATCH - sel.size, sel[-1])])
                yield (jnp.take(features, jnp.asarray(sel, dtype=np.int32), axis=0),)

        out = tail.predict(batches(), steps=n_batches, verbose=0)
        return np.asarray(out, np.float32)[: a.predict]

    scanned = scan_fit.ScannedPredict(tail, store, PREDICT_BATCH)
    result: dict[str, Any] = {"images": a.predict, "batch": PREDICT_BATCH,
                              "batches_per_call": scan_fit.PREDICT_CALL}  # fmt: skip
    outs = {}
    for name, fn in (("keras_predict", keras_way), ("scanned", lambda: scanned(which, rows))):
        clock = time.perf_counter()
        outs[name] = fn()
        first = time.perf_counter() - clock
        clock = time.perf_counter()
        for _ in range(a.predict_repeats):
            fn()
        ms = 1e3 * (time.perf_counter() - clock) / a.predict_repeats
        result[name] = {"first_s": round(first, 3), "ms_per_pass": round(ms, 2),
                        "images_per_s": round(a.predict / ms * 1e3, 1)}  # fmt: skip
        print(f"predict {name:14s} first {first:6.2f} s  {ms:8.2f} ms a pass of {a.predict} "
              f"images  {a.predict / ms * 1e3:10.1f} images/s", flush=True)  # fmt: skip
    jax.block_until_ready(jnp.zeros(1))
    result["speedup"] = round(result["keras_predict"]["ms_per_pass"] / result["scanned"]["ms_per_pass"], 2)  # fmt: skip
    result["largest_difference"] = float(np.abs(outs["scanned"] - outs["keras_predict"]).max())
    print(f"scanned x{result['speedup']:.2f} vs Keras predict; outputs differ by at most "
          f"{result['largest_difference']:.2e}", flush=True)  # fmt: skip
    return result


if __name__ == "__main__":
    main()
