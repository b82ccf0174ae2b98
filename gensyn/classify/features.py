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
helpers of :mod:`gensyn.classify.cache`). In memory, features are kept for the whole process,
so a local sweep's arms, folds and predictions compute each image's features once (keyed by
the prefix's weights, so every seed shares them with ImageNet weights); an image already held
is never computed again, whatever set it came with. A file is found again by any process: its
key is the image set's decode-once cache key (paths, sizes, modification times, preprocessing,
image size) with the prefix's id (:func:`gensyn.classify.prefix.prefix_id`: weights, cut
layer, dtypes, versions).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gensyn import io
from gensyn.classify.cache import DISK_MARGIN_BYTES, _lock, cache_key
from gensyn.classify.data import BatchStream
from gensyn.classify.keras_env import keras
from gensyn.classify.predict import padded_batches
from gensyn.classify.prefix import PrefixSplit, _numpy_dtype, prefix_id

if TYPE_CHECKING:
    from gensyn.classify.cache import ImageCache

log = logging.getLogger(__name__)

#: accelerator memory left free beside features (training's activations, compiled programs)
DEVICE_HEADROOM_BYTES = 6 << 30
#: host memory left free beside features in RAM
HOST_HEADROOM_BYTES = 8 << 30
WHERE = ("device", "host", "file")


@dataclass(frozen=True)
class FeatureCacheSettings:
    """Where features may go and how images are read for the feature pass.

    ``folder``: where a memory-mapped features file may be written and found (None: never
    on disk). ``max_device_bytes`` / ``max_host_bytes``: caps on the features kept in
    accelerator / host memory (None: what is free there minus the headroom; 0: never there).
    """

    folder: Path | None = None
    batch_size: int = 128
    num_workers: int = 4
    prefetch_batches: int = 4
    decode: str = "auto"
    max_device_bytes: int | None = None
    max_host_bytes: int | None = None


@dataclass
class FeatureBlock:
    """Features of one set of images: ``data[row]`` is the prefix's output for ``paths[row]``."""

    key: str
    prefix_id: str
    paths: tuple[str, ...]
    stamps: tuple[tuple[int, int], ...]  # (size, mtime_ns) of each file when computed
    data: Any  # jax.Array (device) | np.ndarray (host) | np.memmap (file)
    where: str
    file: Path | None
    nbytes: int
    last_used: int = 0


#: features kept in memory for the rest of the process (a sweep's later runs reuse them)
_RESIDENT: list[FeatureBlock] = []
_USE = itertools.count(1)


@dataclass
class Features:
    """The features of a run's images: where each path's row is, and how they were got."""

    split: PrefixSplit
    blocks: list[FeatureBlock]
    where_of: dict[str, tuple[int, int]]  # path -> (block index, row)
    compute_s: float = 0.0
    n_computed: int = 0
    n_reused: int = 0
    _gather: Any = field(default=None, repr=False)

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
            parts.append(_take(self.blocks[int(b)].data, rows[take]))
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


def _take(data: Any, rows: np.ndarray) -> Any:
    if isinstance(data, np.ndarray):  # host or memory map: read rows in file order
        order = np.argsort(rows, kind="stable")
        out = np.empty((rows.size, *data.shape[1:]), data.dtype)
        out[order] = data[rows[order]]
        return out
    import jax.numpy as jnp

    return jnp.take(data, jnp.asarray(rows, dtype=np.int32), axis=0)


def _stamps(paths: Sequence[str]) -> list[tuple[int, int]]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((st.st_size, st.st_mtime_ns))
    return out


def _on_accelerator() -> bool:
    import jax

    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def _device_free() -> int:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return 0
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)) - DEVICE_HEADROOM_BYTES


def _host_free() -> int:
    import psutil

    return int(psutil.virtual_memory().available) - HOST_HEADROOM_BYTES


def _resident_bytes(where: str) -> int:
    return sum(b.nbytes for b in _RESIDENT if b.where == where)


def _room(where: str, nbytes: int, settings: FeatureCacheSettings, keep: set[int]) -> bool:
    """Whether ``nbytes`` of features fit in ``where`` (device | host), evicting blocks the
    current run does not use (least recently used first) to make room."""
    cap = settings.max_device_bytes if where == "device" else settings.max_host_bytes
    # on a CPU backend, "device" memory is host memory: used only under an explicit cap (tests)
    on_cpu = where == "device" and not _on_accelerator()
    if on_cpu and cap is None:
        return False

    def fits() -> bool:
        if cap is not None and _resident_bytes(where) + nbytes > cap:
            return False
        if on_cpu:
            return True
        free = _device_free() if where == "device" else _host_free()
        return nbytes <= free

    for block in sorted(_RESIDENT, key=lambda b: b.last_used):
        if fits():
            return True
        if block.where == where and id(block) not in keep:
            _RESIDENT.remove(block)
            log.info("feature cache: dropped %s features (%d images) from %s", block.key,
                     len(block.paths), where)  # fmt: skip
            del block
    return fits()


class _Sink:
    """Where a feature pass writes: a device buffer updated in place, or a NumPy array."""

    def __init__(
        self, where: str, shape: tuple[int, ...], dtype: str, batch: int, tmp: Path | None
    ):
        self.where = where
        n_pad = -(-shape[0] // batch) * batch
        if where == "device":
            import jax
            import jax.numpy as jnp

            self.data: Any = jnp.zeros((n_pad, *shape[1:]), dtype)
            self._put = jax.jit(
                lambda buf, x, start: jax.lax.dynamic_update_slice_in_dim(buf, x, start, 0),
                donate_argnums=0,
            )
        elif where == "host":
            self.data = np.empty(shape, _numpy_dtype(dtype))
        else:
            assert tmp is not None
            self.data = np.lib.format.open_memmap(tmp, "w+", _file_dtype(dtype), shape)
        self.n = shape[0]

    def put(self, start: int, out: Any) -> None:
        if self.where == "device":
            self.data = self._put(self.data, out, start)
            return
        k = min(out.shape[0], self.n - start)
        host = np.asarray(out[:k])
        self.data[start : start + k] = host.view(self.data.dtype) if self.where == "file" else host

    def result(self) -> Any:
        if self.where == "device":
            return self.data  # rows past n are padding, never read
        if self.where == "file":
            self.data.flush()
        return self.data


def _file_dtype(dtype: str) -> Any:
    """How a features file stores ``dtype``: bfloat16 as its 16-bit pattern (.npy has no bf16)."""
    return np.uint16 if dtype == "bfloat16" else np.dtype(dtype)


def _prefix_fn(split: PrefixSplit) -> Any:
    import jax

    prefix = split.prefix
    state = [v.value for v in prefix.non_trainable_variables]
    trainable = [v.value for v in prefix.trainable_variables]
    step = jax.jit(lambda tv, ntv, x: prefix.stateless_call(tv, ntv, x, training=False)[0])
    return lambda images: step(trainable, state, images)


def _feature_pass(
    split: PrefixSplit,
    paths: Sequence[str],
    image_size_px: int,
    settings: FeatureCacheSettings,
    caches: Sequence[ImageCache],
    sink: _Sink,
) -> None:
    """Run the prefix over ``paths`` (in order) into ``sink``, one batch ahead of the copy."""
    stream = BatchStream(
        list(paths),
        None,
        settings.batch_size,
        image_size_px,
        shuffle=False,
        num_workers=settings.num_workers,
        prefetch_batches=settings.prefetch_batches,
        decode=settings.decode,
        cache=caches,
    )
    run = _prefix_fn(split)
    pending: tuple[int, Any] | None = None
    start = 0
    for (images,) in padded_batches(stream):
        out = run(images)  # dispatched: the device works while the last batch is copied
        if pending is not None:
            sink.put(*pending)
        pending = (start, out)
        start += images.shape[0]
    if pending is not None:
        sink.put(*pending)


def _open_file(file: Path, n: int, split: PrefixSplit) -> np.ndarray | None:
    shape = (n, *split.feature_shape)
    try:
        data = np.load(file, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if data.shape != shape or data.dtype != _file_dtype(split.feature_dtype):
        return None
    return data.view(_numpy_dtype(split.feature_dtype))


def _block(
    split: PrefixSplit,
    pid: str,
    paths: tuple[str, ...],
    stamps: list[tuple[int, int]],
    image_size_px: int,
    settings: FeatureCacheSettings,
    caches: Sequence[ImageCache],
    keep: set[int],
) -> tuple[FeatureBlock, bool]:
    """The features of ``paths``: read from an existing file or computed; (block, computed)."""
    key = hashlib.sha256(f"{pid}|{cache_key(paths, image_size_px)}".encode()).hexdigest()[:24]
    nbytes = len(paths) * split.bytes_per_image
    folder = settings.folder
    file = None if folder is None else folder / f"{key}.npy"
    where = next((w for w in ("device", "host") if _room(w, nbytes, settings, keep)), "file")
    on_disk = None if file is None else _open_file(file, len(paths), split)
    if on_disk is not None:  # another process computed them: load them where they fit
        data = on_disk if where == "file" else _load(on_disk, where)
        return FeatureBlock(key, pid, paths, tuple(stamps), data, where, file, nbytes), False
    if where != "file":
        sink = _Sink(where, (len(paths), *split.feature_shape), split.feature_dtype,
                     settings.batch_size, None)  # fmt: skip
        _feature_pass(split, paths, image_size_px, settings, caches, sink)
        return FeatureBlock(
            key, pid, paths, tuple(stamps), sink.result(), where, None, nbytes
        ), True
    if folder is None or file is None:
        raise OSError(
            f"{nbytes / 1e9:.1f} GB of features fit neither accelerator nor host memory, and "
            "no cache folder is set (classifier.cache=off)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder / f".{key}.lock"):
        on_disk = _open_file(file, len(paths), split)
        if on_disk is None:
            for stale in folder.glob(f".{file.name}.*{io.PARTIAL_SUFFIX}.npy"):
                stale.unlink(missing_ok=True)  # left by a killed writer of this key
            free = shutil.disk_usage(folder).free
            if free < nbytes + DISK_MARGIN_BYTES:
                raise OSError(
                    f"{folder} has {free / 1e9:.1f} GB free; the features need "
                    f"{nbytes / 1e9:.1f} GB plus {DISK_MARGIN_BYTES / 1e9:.1f} GB to spare"
                )
            with io.atomic_write(file) as tmp:
                sink = _Sink("file", (len(paths), *split.feature_shape), split.feature_dtype,
                             settings.batch_size, tmp)  # fmt: skip
                _feature_pass(split, paths, image_size_px, settings, caches, sink)
                sink.result()
                del sink
            computed = True
        else:
            computed = False
        on_disk = _open_file(file, len(paths), split)
    if on_disk is None:
        raise OSError(f"features file {file} was written but cannot be read back")
    return FeatureBlock(key, pid, paths, tuple(stamps), on_disk, "file", file, nbytes), computed


def _load(data: np.ndarray, where: str) -> Any:
    if where == "host":
        return np.array(data)
    import jax

    return jax.device_put(np.asarray(data))


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
    for block in _RESIDENT:
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
        block.last_used = next(_USE)
        return len(blocks) - 1

    for paths in path_sets:
        unique = sorted({os.fspath(p) for p in paths} - set(where_of))
        if not unique:
            continue
        stamps = _stamps(unique)
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
        block, computed = _block(
            split, pid, tuple(missing), missing_stamps, image_size_px, settings, caches, keep
        )
        if block.where != "file":
            _RESIDENT.append(block)
        i = index_of(block)
        for row, path in enumerate(block.paths):
            where_of[path] = (i, row)
        if computed:
            n_computed += len(missing)
        else:
            n_reused += len(missing)
    return Features(split, blocks, where_of, time.perf_counter() - start, n_computed, n_reused)


def forget_resident() -> None:
    """Drop every feature block this process keeps in memory (tests; memory pressure)."""
    _RESIDENT.clear()


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

    def window(self, first_batch: int, n_batches: int) -> Iterator[tuple[Any, np.ndarray]]:
        """Global batches ``first_batch`` .. ``+ n_batches - 1``, as ``BatchStream.window``."""
        labels = self.stream.labels
        assert labels is not None
        seen = getattr(self.stream, "times_seen", None)
        for idx, _ in self.stream._plan(first_batch, n_batches):  # the stream's own schedule
            if seen is not None:
                np.add.at(seen, idx[idx < seen.size], 1)
            yield self.features.gather(self._blocks[idx], self._rows[idx]), labels[idx]


def predict_features(
    tail: keras.Model, features: Features, paths: Sequence[str], batch_size: int
) -> np.ndarray:
    """Probabilities (n, n_classes) of ``tail`` on the stored features of ``paths``, in order.

    Batches are padded to ``batch_size`` (one compiled prediction step), as for images.
    """
    if len(paths) == 0:
        return np.zeros((0, int(tail.output_shape[-1])), dtype=np.float32)
    blocks, rows = features.locate(paths)
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
    zeros = np.zeros((batch_size, *split.feature_shape), _numpy_dtype(split.feature_dtype))
    split.tail.predict(((zeros,) for _ in range(1)), steps=1, verbose=0)
