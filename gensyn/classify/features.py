"""Frozen-prefix feature cache: each image through the frozen part once, the tail on stored features.

With ``classifier.feature_cache=auto`` and a deterministic frozen prefix
(:func:`gensyn.classify.prefix.split_frozen_prefix`), training and prediction compute the
prefix's output (the *features*, DenseNet121's 16 × 16 × 992 at 512²) once per image and run
only the trainable tail on them: the same computation as the full model's, since the frozen
layers compute the same thing for an image every time. Features are stored in the prefix's
compute dtype (bfloat16 on a GPU under mixed_bfloat16, float32 on CPU), exactly what the tail
receives in the full model.

Where they live, in this order: the accelerator's memory when they fit beside what training
needs; else host memory (a NumPy array; not page-locked: JAX gives NumPy no pinned
allocation); else a memory-mapped ``.npy`` beside the decode-once image cache
(``<classifier.cache>/features/``), written under a lock and renamed when complete (the
helpers of :mod:`gensyn.classify.cache`; storage in :mod:`gensyn.classify.feature_store`).
In memory, features are kept for the whole process,
so a local sweep's arms, folds and predictions compute each image's features once (keyed by
the prefix's weights, so every seed shares them with ImageNet weights); an image already held
is never computed again, whatever set it came with. A file is found again by any process: its
key is the image set's decode-once cache key (paths, sizes, modification times, preprocessing,
image size) with the prefix's id (:func:`gensyn.classify.prefix.prefix_id`: weights, cut
layer, dtypes, versions).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gensyn.classify.data import BatchStream
from gensyn.classify.feature_store import (
    RESIDENT,
    USE_ORDER,
    FeatureBlock,
    FeatureCacheSettings,
    block_of,
    file_stamps,
    forget_resident,
    take_rows,
)
from gensyn.classify.keras_env import keras
from gensyn.classify.prefix import PrefixSplit, numpy_dtype, prefix_id

if TYPE_CHECKING:
    from gensyn.classify.cache import ImageCache

__all__ = [
    "CachedTail",
    "FeatureCacheSettings",
    "FeatureStream",
    "Features",
    "features_for",
    "forget_resident",
    "predict_features",
    "use_feature_cache",
    "warm_up_tail",
]

log = logging.getLogger(__name__)

#: images per prediction step on stored features (at least the training batch)
PREDICT_BATCH = 256


@dataclass
class Features:
    """The features of a run's images: where each path's row is, and how they were got."""

    split: PrefixSplit
    blocks: list[FeatureBlock]
    where_of: dict[str, tuple[int, int]]  # path -> (block index, row)
    compute_s: float = 0.0
    n_computed: int = 0
    n_reused: int = 0
    #: compiled predictors of this run's features, by (id of the tail, batch size)
    _predictors: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of the features this run reads (its blocks, whole)."""
        return sum(b.nbytes for b in self.blocks)

    def locate(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(block index, row) arrays of ``paths``; KeyError naming a path without features."""
        pairs = np.array([self.where_of[os.fspath(p)] for p in paths], dtype=np.int64)
        return pairs[:, 0], pairs[:, 1]

    def gather(self, blocks: np.ndarray, rows: np.ndarray) -> Any:
        """The features of the given (block, row) pairs, stacked in that order."""
        parts, order = [], []
        for b in np.unique(blocks):
            take = np.nonzero(blocks == b)[0]
            parts.append(take_rows(self.blocks[int(b)].data, rows[take]))
            order.append(take)
        if len(parts) == 1:
            return parts[0]
        position = np.argsort(np.concatenate(order))
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)[position]
        import jax.numpy as jnp

        return jnp.concatenate(parts)[jnp.asarray(position)]

    def describe(self) -> dict[str, object]:
        """Summary fields: used, bytes, where, dtype, cut, images computed / reused, seconds."""
        return {
            "feature_cache": "used",
            "feature_cache_bytes": self.nbytes,
            "feature_cache_where": ",".join(sorted({b.where for b in self.blocks})),
            "feature_cache_dtype": self.split.feature_dtype,
            "feature_cache_cut_layer": self.split.cut_layer,
            "feature_cache_shape": list(self.split.feature_shape),
            "feature_cache_images_computed": self.n_computed,
            "feature_cache_images_reused": self.n_reused,
            "time_feature_pass_s": round(self.compute_s, 3),
        }


def features_for(
    split: PrefixSplit,
    path_sets: Sequence[Sequence[str]],
    image_size_px: int,
    settings: FeatureCacheSettings,
    caches: Sequence[ImageCache] = (),
) -> Features:
    """The features of every path of ``path_sets`` (e.g. a run's real and synthetic images).

    Paths whose features this process already holds (same prefix, file unchanged) are reused;
    the others of each set are read from its features file if one exists, else computed in
    one pass (decoded images are read from ``caches`` where they hold them). Raises OSError
    when features fit nowhere (then train the full model instead).
    """
    start = time.perf_counter()
    pid = prefix_id(split)
    held: dict[str, tuple[FeatureBlock, int]] = {}
    for block in RESIDENT:
        if block.prefix_id == pid:
            for row, path in enumerate(block.paths):
                held.setdefault(path, (block, row))
    blocks: list[FeatureBlock] = []
    where_of: dict[str, tuple[int, int]] = {}
    n_computed = n_reused = 0

    def index_of(block: FeatureBlock) -> int:
        for i, b in enumerate(blocks):
            if b is block:
                return i
        blocks.append(block)
        block.last_used = next(USE_ORDER)
        return len(blocks) - 1

    for paths in path_sets:
        unique = sorted({os.fspath(p) for p in paths} - set(where_of))
        if not unique:
            continue
        stamps = file_stamps(unique)
        missing, missing_stamps = [], []
        for path, stamp in zip(unique, stamps, strict=True):
            got = held.get(path)
            if got is not None and got[0].stamps[got[1]] == stamp:
                where_of[path] = (index_of(got[0]), got[1])
                n_reused += 1
            else:
                missing.append(path)
                missing_stamps.append(stamp)
        if not missing:
            continue
        keep = {id(b) for b in blocks}
        block, computed = block_of(
            split, pid, tuple(missing), missing_stamps, image_size_px, settings, caches, keep
        )
        if block.where != "file":
            RESIDENT.append(block)
        i = index_of(block)
        for row, path in enumerate(block.paths):
            where_of[path] = (i, row)
        if computed:
            n_computed += len(missing)
        else:
            n_reused += len(missing)
    return Features(split, blocks, where_of, time.perf_counter() - start, n_computed, n_reused)


class FeatureStream:
    """Training batches of features in place of images: the same batches as ``stream``.

    ``stream`` is the run's :class:`gensyn.classify.data.BatchStream` (or a subclass); its plan
    of global batches (which images, in which order, for every schedule) is used as is, and
    each image is replaced by its stored features. Yields ``(features, labels)``.
    """

    def __init__(self, stream: BatchStream, features: Features) -> None:
        if stream.augment:
            raise ValueError("augmented batches cannot use stored features")
        self.stream = stream
        self.features = features
        self.batch_size = stream.batch_size
        self._blocks, self._rows = features.locate(stream.paths)

    def __len__(self) -> int:
        return len(self.stream)

    def index_plan(
        self, first_batch: int, n_batches: int, count: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(block index, row, labels) of each image of global batches ``first_batch`` ..
        ``+ n_batches - 1`` (the stream's own schedule); counts the images as fed, unless
        ``count`` is false."""
        labels = self.stream.labels
        assert labels is not None
        seen = getattr(self.stream, "times_seen", None) if count else None
        plan = []
        for idx, _ in self.stream._plan(first_batch, n_batches):
            if seen is not None:
                np.add.at(seen, idx[idx < seen.size], 1)
            plan.append((self._blocks[idx], self._rows[idx], labels[idx]))
        return plan

    def window(self, first_batch: int, n_batches: int) -> Iterator[tuple[Any, np.ndarray]]:
        """Global batches ``first_batch`` .. ``+ n_batches - 1``, as ``BatchStream.window``."""
        for blocks, rows, labels in self.index_plan(first_batch, n_batches):
            yield self.features.gather(blocks, rows), labels


def predict_features(
    tail: keras.Model, features: Features, paths: Sequence[str], batch_size: int
) -> np.ndarray:
    """Probabilities (n, n_classes) of ``tail`` on the stored features of ``paths``, in order.

    Batches of up to :data:`PREDICT_BATCH` images (at least ``batch_size``; the prediction of
    an image does not depend on its batch) are padded to one size (one compiled step). Where
    the features are on the device (:func:`gensyn.classify.scan_fit.scan_fit_for`), several
    batches go through the tail per compiled call (:class:`~gensyn.classify.scan_fit.
    ScannedPredict`); else through Keras' ``predict``, a batch a step.
    """
    if len(paths) == 0:
        return np.zeros((0, int(tail.output_shape[-1])), dtype=np.float32)
    # the tail in inference mode treats each image alone: bigger batches, fewer Python steps
    batch_size = max(batch_size, min(PREDICT_BATCH, -(-len(paths) // batch_size) * batch_size))
    blocks, rows = features.locate(paths)
    from gensyn.classify.scan_fit import ScannedPredict, scan_fit_for

    if scan_fit_for(features, 1) is None:  # features on the device: many batches a call
        key = (id(tail), batch_size)
        predictor = features._predictors.get(key)
        if predictor is None or predictor.tail is not tail:
            predictor = features._predictors[key] = ScannedPredict(tail, features, batch_size)
        return predictor(blocks, rows)
    n_batches = -(-len(paths) // batch_size)

    def batches() -> Iterator[tuple[Any]]:
        for b in range(n_batches):
            sel = np.arange(b * batch_size, min((b + 1) * batch_size, len(paths)))
            if sel.size < batch_size:
                sel = np.concatenate([sel, np.full(batch_size - sel.size, sel[-1])])
            yield (features.gather(blocks[sel], rows[sel]),)

    probs = tail.predict(batches(), steps=n_batches, verbose=0)
    return np.asarray(probs, dtype=np.float32)[: len(paths)]


@dataclass
class CachedTail:
    """A model split at its frozen prefix, with the features of a run's images."""

    split: PrefixSplit
    features: Features

    @property
    def tail(self) -> keras.Model:
        """The trainable tail (shares the full model's layers and variables)."""
        return self.split.tail

    def stream(self, images: BatchStream) -> FeatureStream:
        """``images``' batches with stored features in place of the images."""
        return FeatureStream(images, self.features)

    def predict(self, paths: Sequence[str], batch_size: int) -> np.ndarray:
        """The full model's probabilities for ``paths``, from their stored features."""
        return predict_features(self.tail, self.features, paths, batch_size)


def use_feature_cache(
    model: keras.Model,
    augment: bool,
    path_sets: Sequence[Sequence[str]],
    image_size_px: int,
    settings: FeatureCacheSettings,
    caches: Sequence[ImageCache] = (),
) -> CachedTail | str:
    """``model`` split at its frozen prefix with the features of ``path_sets``, or why not.

    The reason (one line) is returned, and logged, where the prefix is not deterministic in
    training (:func:`gensyn.classify.prefix.split_frozen_prefix`), the model is data
    parallel over several devices, or the features fit nowhere.
    """
    from gensyn.classify.prefix import split_frozen_prefix

    def unused(why: str) -> str:
        log.info("feature cache not used: %s; running the full model on every batch", why)
        return why

    if keras.distribution.distribution() is not None:
        return unused("data parallel over several devices: the feature cache runs on one device")
    split = split_frozen_prefix(model, augment)
    if isinstance(split, str):
        return unused(split)
    try:
        features = features_for(split, path_sets, image_size_px, settings, caches)
    except OSError as exc:
        return unused(f"features not stored ({exc})")
    log.info(
        "feature cache: %s at %s, %s %s, %.2f GB in %s; %d images computed, %d reused, %.1f s",
        "x".join(map(str, split.feature_shape)), split.cut_layer, split.feature_dtype,
        "features", features.nbytes / 1e9, ",".join(sorted({b.where for b in features.blocks})),
        features.n_computed, features.n_reused, features.compute_s,
    )  # fmt: skip
    return CachedTail(split, features)


def warm_up_tail(split: PrefixSplit, batch_size: int) -> None:
    """Compile (or load from JAX's compilation cache) the tail's prediction step for batches
    of ``batch_size`` features, so its cost is timed apart from the images'."""
    zeros = np.zeros((batch_size, *split.feature_shape), numpy_dtype(split.feature_dtype))
    split.tail.predict(((zeros,) for _ in range(1)), steps=1, verbose=0)
