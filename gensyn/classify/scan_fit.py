"""Train the tail on stored features with many optimiser steps in one compiled call.

On stored features an optimiser step of DenseNet121's 9-layer tail is a fraction of a
millisecond of GPU work, while Keras' ``fit`` loop spends about 2 ms of Python on each step
(iterator, state packing, callbacks) and the eager gather of the batch's features from the
store. :class:`ScannedFit` runs the same steps as ``fit`` (Keras' own ``train_step``, the
same batches in the same order, the same optimiser and loss metric) but ``chunk`` steps at a
time in one jitted ``jax.lax.scan`` that also gathers each batch's features from the stored
blocks on the device. A chunk's steps past the epoch's end are computed and their results
dropped (a select on the state, not a ``lax.cond``: on a GPU, XLA reads a conditional's
predicate back to the host, a round trip every step: 0.807 against 0.727 ms a step on an
H100), and an epoch's steps are spread evenly over its calls (:func:`balanced_chunk`: at most
one padding step a call), so one compiled program serves every epoch and fold of the same
steps per epoch, batch shape and blocks. The scan runs ``unroll`` steps per loop iteration
(:data:`DEFAULT_UNROLL`, or ``GENSYN_SCAN_UNROLL`` in the environment); on the H100 more
than one gained nothing and lengthened each compile (``benchmarks/scan_fit.py``).

It applies when the features of a run are JAX arrays (on the accelerator, or on the CPU
backend) and training runs on one device; otherwise (features in host memory or in a
memory-mapped file, or data parallel over several devices) training uses Keras' ``fit``
(:func:`scan_fit_for` says why). Results agree with ``fit`` to floating-point tolerance
(``tests/test_classify_features.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gensyn.classify.keras_env import keras

if TYPE_CHECKING:
    from gensyn.classify.feature_store import FeatureBlock


class StoredFeatures(Protocol):
    """What the compiled loops read of a run's features: its blocks
    (:class:`gensyn.classify.features.Features` is one)."""

    @property
    def blocks(self) -> Sequence[FeatureBlock]: ...


class BatchPlan(Protocol):
    """What the scanned loop reads of a stream of feature batches: each batch's (block
    index, row, labels) (:class:`gensyn.classify.features.FeatureStream` is one)."""

    def index_plan(
        self, first_batch: int, n_batches: int, count: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...


__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_UNROLL",
    "PREDICT_CALL",
    "BatchPlan",
    "ScannedFit",
    "ScannedPredict",
    "StoredFeatures",
    "balanced_chunk",
    "device_blocks",
    "gather_rows",
    "scan_fit_for",
    "scan_unroll",
]

log = logging.getLogger(__name__)

#: optimiser steps per compiled call (an epoch of the study is 279 steps: 9 calls)
DEFAULT_CHUNK = 32
#: optimiser steps per iteration of the compiled loop (see the module's docstring)
DEFAULT_UNROLL = 1
#: prediction batches per compiled call of :class:`ScannedPredict`
PREDICT_CALL = 8


def scan_unroll() -> int:
    """Steps per loop iteration: ``GENSYN_SCAN_UNROLL`` if set (1 .. the chunk), else
    :data:`DEFAULT_UNROLL`. Results do not depend on it (the same steps in the same order)."""
    raw = os.environ.get("GENSYN_SCAN_UNROLL", "").strip()
    if not raw:
        return DEFAULT_UNROLL
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"GENSYN_SCAN_UNROLL={raw!r}; allowed: a whole number >= 1")
    return value


def scan_fit_for(features: StoredFeatures, n_devices: int) -> str | None:
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


def balanced_chunk(n_steps: int, most: int) -> int:
    """Steps per compiled call for an epoch of ``n_steps``: as many calls as chunks of
    ``most`` need, the steps spread evenly over them, so that at most calls - 1 padding
    steps are computed and dropped (419 steps: 14 calls of 30, 1 padding step, not 29)."""
    calls = -(-n_steps // most)
    return -(-n_steps // calls)


def gather_rows(blocks: Sequence[Any], which: Any, rows: Any) -> Any:
    """Inside a compiled function: the feature rows ``rows`` of blocks ``which``, stacked.

    Each block is read at every position and the right one kept (a select per extra block):
    cheap next to the tail's step, and it keeps the batch's shape static.
    """
    import jax.numpy as jnp

    out = jnp.take(blocks[0], rows, axis=0)
    for k in range(1, len(blocks)):
        rows_k = jnp.clip(rows, 0, blocks[k].shape[0] - 1)
        pick = (which == k)[:, None, None, None]
        out = jnp.where(pick, jnp.take(blocks[k], rows_k, axis=0), out)
    return out


def device_blocks(features: StoredFeatures) -> tuple[Any, ...]:
    """The feature blocks as JAX arrays (those on the accelerator as they are)."""
    import jax
    import jax.numpy as jnp

    return tuple(
        b.data if isinstance(b.data, jax.Array) else jnp.asarray(b.data) for b in features.blocks
    )


class ScannedFit:
    """``chunk`` optimiser steps of ``tail`` per compiled call, features gathered on the device.

    ``tail`` is compiled (optimizer and loss); ``features`` holds the stored features of
    every image the batches name. :meth:`epoch` takes the same arguments as the window of
    global batches that ``fit`` would be given.
    """

    def __init__(
        self,
        tail: keras.Model,
        features: StoredFeatures,
        chunk: int | None = None,  # the most steps per call (see balanced_chunk)
        unroll: int | None = None,
    ) -> None:
        import jax

        self.tail = tail
        self.chunk = int(DEFAULT_CHUNK if chunk is None else chunk)
        self.unroll = max(1, min(self.chunk, scan_unroll() if unroll is None else int(unroll)))
        self.blocks = device_blocks(features)
        self._step = jax.jit(self._chunk_fn, donate_argnums=(0,))
        if not tail.optimizer.built:
            tail.optimizer.build(tail.trainable_variables)

    def _chunk_fn(self, state: Any, blocks: Any, which: Any, rows: Any, labels: Any, n_valid: Any) -> Any:  # fmt: skip
        """``state`` after the first ``n_valid`` of the chunk's steps (the rest skipped)."""
        import jax
        import jax.numpy as jnp

        def body(state: Any, xs: Any) -> Any:
            i, b, r, y = xs
            _, new = self.tail.train_step(state, (gather_rows(blocks, b, r), y))
            keep = i < n_valid  # a padding step's results are dropped: the state stays
            return jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, state), None

        steps = jnp.arange(which.shape[0])
        state, _ = jax.lax.scan(body, state, (steps, which, rows, labels), unroll=self.unroll)
        return state

    def epoch(self, stream: BatchPlan, first_batch: int, n_steps: int) -> float:
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
        chunk = balanced_chunk(n_steps, self.chunk)
        for start in range(0, n_steps, chunk):
            part = plan[start : start + chunk]
            n_valid = len(part)
            pad = [part[-1]] * (chunk - n_valid)  # dropped steps: any valid indices
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


class ScannedPredict:
    """``tail``'s outputs for the stored features of many images per compiled call.

    Keras' ``predict`` runs one batch per Python step and reads each batch's result back to
    the host: on a GPU, ≈ 1 ms a batch of overhead against a fraction of that of work, 30
    times a run for the validation fold. Here :data:`PREDICT_CALL` batches of ``batch``
    images go through the tail in one jitted ``jax.lax.map`` that gathers their features on
    the device; one result comes back per call. The tail runs in inference mode, where an
    image's output does not depend on its batch, so the outputs are those of ``predict``
    (``tests/test_classify_features.py``). Applies where :func:`scan_fit_for` allows.
    """

    def __init__(self, tail: keras.Model, features: StoredFeatures, batch: int) -> None:
        import jax

        self.tail = tail
        self.batch = int(batch)
        self.blocks = device_blocks(features)
        self._call = jax.jit(self._call_fn)
        self.n_calls = 0  # compiled calls made

    def _call_fn(self, state: Any, blocks: Any, which: Any, rows: Any) -> Any:
        """The tail's outputs (calls, batch, ...) for ``which``/``rows`` of shape (calls, batch)."""
        import jax

        def one(xs: Any) -> Any:
            b, r = xs
            out, _ = self.tail.predict_step(state, (gather_rows(blocks, b, r),))
            return out

        return jax.lax.map(one, (which, rows))

    def __call__(self, which: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Outputs for the (block, row) pairs, in order, as float32 (n, ...)."""
        tail = self.tail
        state = (
            [v.value for v in tail.trainable_variables],
            [v.value for v in tail.non_trainable_variables],
        )
        n = len(rows)
        per_call = self.batch * PREDICT_CALL
        # one call shape for every size: the last call padded with the last image (dropped)
        calls = [(s, min(s + per_call, n)) for s in range(0, n, per_call)]
        if len(calls) == 1:  # a small set: as few batches as it needs, not a whole call
            per_call = -(-n // self.batch) * self.batch
        outs = []
        for start, stop in calls:
            pad = per_call - (stop - start)
            w = np.concatenate([which[start:stop], np.full(pad, which[stop - 1])]).astype(np.int32)
            r = np.concatenate([rows[start:stop], np.full(pad, rows[stop - 1])]).astype(np.int32)
            shape = (per_call // self.batch, self.batch)
            outs.append(self._call(state, self.blocks, w.reshape(shape), r.reshape(shape)))
            self.n_calls += 1
        host = [np.asarray(o, dtype=np.float32) for o in outs]
        return np.concatenate([h.reshape(per_call, *h.shape[2:]) for h in host])[:n]
