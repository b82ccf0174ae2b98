"""Train the tail on stored features with many optimiser steps in one compiled call.

On stored features an optimiser step of DenseNet121's 9-layer tail is a fraction of a
millisecond of GPU work, while Keras' ``fit`` loop spends about 2 ms of Python on each step
(iterator, state packing, callbacks) and the eager gather of the batch's features from the
store. :class:`ScannedFit` runs the same steps as ``fit`` (Keras' own ``train_step``, the
same batches in the same order, the same optimiser and loss metric) but ``chunk`` steps at a
time in one jitted ``jax.lax.scan`` that also gathers each batch's features from the stored
blocks on the device. A chunk's steps past the epoch's end are skipped (``lax.cond``), so one
compiled program serves every epoch, fold and arm of the same batch shape and block count.

It applies when the features of a run are JAX arrays (on the accelerator, or on the CPU
backend) and training runs on one device; otherwise (features in host memory or in a
memory-mapped file, or data parallel over several devices) training uses Keras' ``fit``
(:func:`scan_fit_for` says why). Results agree with ``fit`` to floating-point tolerance
(``tests/test_classify_features.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from gensyn.classify.keras_env import keras

if TYPE_CHECKING:
    from gensyn.classify.features import Features, FeatureStream

__all__ = ["DEFAULT_CHUNK", "ScannedFit", "scan_fit_for"]

log = logging.getLogger(__name__)

#: optimiser steps per compiled call (an epoch of the study is 279 steps: 9 calls)
DEFAULT_CHUNK = 32


def scan_fit_for(features: Features, n_devices: int) -> str | None:
    """Why the scanned loop cannot train on ``features`` (None: it can)."""
    import jax

    if n_devices > 1:
        return f"data parallel over {n_devices} devices"
    on_cpu = jax.default_backend() == "cpu"
    for block in features.blocks:
        if isinstance(block.data, jax.Array):
            continue
        if on_cpu and type(block.data) is np.ndarray:  # host memory is the CPU's device memory
            continue
        return f"features in {block.where} memory"
    return None


class ScannedFit:
    """``chunk`` optimiser steps of ``tail`` per compiled call, features gathered on the device.

    ``tail`` is compiled (optimizer and loss); ``features`` holds the stored features of
    every image the batches name. :meth:`epoch` takes the same arguments as the window of
    global batches that ``fit`` would be given.
    """

    def __init__(self, tail: keras.Model, features: Features, chunk: int = DEFAULT_CHUNK) -> None:
        import jax
        import jax.numpy as jnp

        self.tail = tail
        self.chunk = int(chunk)
        self.blocks = tuple(
            b.data if isinstance(b.data, jax.Array) else jnp.asarray(b.data)
            for b in features.blocks
        )
        self._step = jax.jit(self._chunk_fn, donate_argnums=(0,))
        if not tail.optimizer.built:
            tail.optimizer.build(tail.trainable_variables)

    def _chunk_fn(self, state: Any, blocks: Any, which: Any, rows: Any, labels: Any, n_valid: Any) -> Any:  # fmt: skip
        """``state`` after the first ``n_valid`` of the chunk's steps (the rest skipped)."""
        import jax
        import jax.numpy as jnp

        def gather(b: Any, r: Any) -> Any:
            if len(blocks) == 1:
                return jnp.take(blocks[0], r, axis=0)
            out = jnp.take(blocks[0], r, axis=0)
            for k in range(1, len(blocks)):
                rows_k = jnp.clip(r, 0, blocks[k].shape[0] - 1)
                pick = (b == k)[:, None, None, None]
                out = jnp.where(pick, jnp.take(blocks[k], rows_k, axis=0), out)
            return out

        def body(state: Any, xs: Any) -> Any:
            i, b, r, y = xs

            def step(state: Any) -> Any:
                _, new = self.tail.train_step(state, (gather(b, r), y))
                return new

            return jax.lax.cond(i < n_valid, step, lambda s: s, state), None

        steps = jnp.arange(which.shape[0])
        state, _ = jax.lax.scan(body, state, (steps, which, rows, labels))
        return state

    def epoch(self, stream: FeatureStream, first_batch: int, n_steps: int) -> float:
        """Train on global batches ``first_batch`` .. ``+ n_steps - 1``; the epoch's mean loss.

        Counts the images fed (the stream's ``times_seen``) as ``fit`` on the stream does.
        """
        tail = self.tail
        tail.reset_metrics()
        state = (
            [v.value for v in tail.trainable_variables],
            [v.value for v in tail.non_trainable_variables],
            [v.value for v in tail.optimizer.variables],
            [v.value for v in tail.metrics_variables],
        )
        plan = stream.index_plan(first_batch, n_steps)
        for start in range(0, n_steps, self.chunk):
            part = plan[start : start + self.chunk]
            n_valid = len(part)
            pad = [part[-1]] * (self.chunk - n_valid)  # skipped steps: any valid indices
            which = np.stack([p[0] for p in part + pad]).astype(np.int32)
            rows = np.stack([p[1] for p in part + pad]).astype(np.int32)
            labels = np.stack([p[2] for p in part + pad])
            state = self._step(state, self.blocks, which, rows, labels, np.int32(n_valid))
        for group, values in zip(
            (
                tail.trainable_variables,
                tail.non_trainable_variables,
                tail.optimizer.variables,
                tail.metrics_variables,
            ),
            state,
            strict=True,
        ):
            for var, value in zip(group, values, strict=True):
                var.assign(value)
        return float(tail.get_metrics_result()["loss"])
