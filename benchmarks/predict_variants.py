"""Where `stage=predict`'s time goes: the study's DenseNet121 at 512² (mixed bf16, batch 128)
on one GPU, the same images fed four ways in one process.

* ``keras_array``: ``model.predict`` on one uint8 array in RAM (Keras batches it);
* ``keras_generator``: ``model.predict`` on a generator of in-RAM uint8 batches, as
  ``gensyn.classify.predict.predict_paths`` feeds it (images already decoded);
* ``jit_loop``: one ``jax.jit`` of ``model.stateless_call`` (inference mode), batches put on
  the device ahead and results fetched two batches behind, so the host never waits for the
  GPU between batches;
* ``forward_only``: the jitted forward on one batch already on the device, back to back
  (the GPU's own rate: the ceiling for the others).

For each: images/s after a warm-up batch (compilation excluded), and for the loops the
largest difference from ``keras_array``'s probabilities. The model has random weights
(this machine cannot fetch ImageNet's); the cost is the same.

    python benchmarks/predict_variants.py --images 3584 --batches 128,256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


_STEPS: dict[int, Any] = {}


def jit_predict(model: Any, batches: Any) -> Any:
    """Probabilities of ``model`` for an iterable of uint8 batches, through one jitted
    inference step (compiled once per model), with two batches in flight."""
    import jax
    import numpy as np

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    if id(model) not in _STEPS:
        _STEPS[id(model)] = jax.jit(
            lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0]
        )
    step = _STEPS[id(model)]
    pending: deque[Any] = deque()
    out = []
    for x in batches:
        pending.append(step(trainable, frozen, jax.device_put(x)))
        if len(pending) > 2:
            out.append(np.asarray(pending.popleft()))
    out += [np.asarray(p) for p in pending]
    return np.concatenate(out)


def main() -> None:
    import jax
    import numpy as np

    from gensyn.classify.keras_env import keras
    from gensyn.classify.models import ModelSpec, build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--images", type=int, default=3584)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batches", default="128", help="batch sizes, comma-separated")
    a = p.parse_args()
    keras.config.set_dtype_policy("mixed_bfloat16" if jax.default_backend() == "gpu" else "float32")
    model = build_model(ModelSpec(image_size_px=a.size, weights=None))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.images, a.size, a.size, 1), dtype=np.uint8)
    print(f"backend {jax.default_backend()}, {a.images} images of {a.size}², policy "
          f"{keras.config.dtype_policy().name}", flush=True)  # fmt: skip
    for b in (int(s) for s in a.batches.split(",")):
        n = (a.images // b) * b
        x = images[:n]
        split = [x[i : i + b] for i in range(0, n, b)]
        model.predict(x[:b], batch_size=b, verbose=0)  # compile each path once
        model.predict(((s,) for s in split[:1]), steps=1, verbose=0)
        jit_predict(model, split[:1])
        results: dict[str, Any] = {}
        ref = None
        for name in ("keras_array", "keras_generator", "jit_loop"):
            t0 = time.perf_counter()
            if name == "keras_array":
                probs = model.predict(x, batch_size=b, verbose=0)
            elif name == "keras_generator":
                probs = model.predict(((s,) for s in split), steps=len(split), verbose=0)
            else:
                probs = jit_predict(model, split)
            dt = time.perf_counter() - t0
            probs = np.asarray(probs, np.float32)
            ref = probs if ref is None else ref
            results[name] = {
                "images_per_s": round(n / dt, 1),
                "max_diff": float(np.abs(probs - ref).max()),
            }
        # the GPU alone: one batch on the device, the jitted forward back to back
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        fwd = _STEPS[id(model)]
        xd = jax.device_put(split[0])
        fwd(tv, ntv, xd).block_until_ready()
        reps = max(3, len(split))
        t0 = time.perf_counter()
        outs = [fwd(tv, ntv, xd) for _ in range(reps)]
        outs[-1].block_until_ready()
        results["forward_only"] = {"images_per_s": round(reps * b / (time.perf_counter() - t0), 1)}
        for name, r in results.items():
            print("VARIANT " + json.dumps({"batch": b, "variant": name, **r}), flush=True)


if __name__ == "__main__":
    main()
