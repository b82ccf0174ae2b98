"""Where the frozen-prefix features live and how they are computed (:mod:`gensyn.classify.features`).

Features of a set of images are one *block*: a JAX array on the accelerator filled in place,
a NumPy array in host memory, or a memory-mapped ``.npy`` written under a lock and renamed
when complete (bfloat16 stored as its 16-bit pattern: ``.npy`` has no bfloat16). Blocks in
memory stay for the rest of the process (``RESIDENT``) and are dropped, least recently used
first, when a new block needs their room and the current run does not use them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gensyn.base import io
from gensyn.classify.cache import DISK_MARGIN_BYTES, cache_key, cache_lock
from gensyn.classify.data import BatchStream
from gensyn.classify.predict import padded_batches
from gensyn.classify.prefix import PrefixSplit, numpy_dtype
from gensyn.classify.settings import ClassifierSettings

if TYPE_CHECKING:
    from gensyn.classify.cache import ImageCache

log = logging.getLogger(__name__)

#: accelerator memory left free beside features (training's activations, compiled programs)
DEVICE_HEADROOM_BYTES = 6 << 30
#: host memory left free beside features in RAM
HOST_HEADROOM_BYTES = 8 << 30
WHERE = ("device", "host", "file")
_SETTINGS = ClassifierSettings()  # the defaults


@dataclass(frozen=True)
class FeatureCacheSettings:
    """Where features may go and how images are read for the feature pass.

    ``folder``: where a memory-mapped features file may be written and found (None: never
    on disk). ``max_device_bytes`` / ``max_host_bytes``: caps on the features kept in
    accelerator / host memory (None: what is free there minus the headroom; 0: never there).
    """

    folder: Path | None = None
    batch_size: int = _SETTINGS.predict_batch_size
    num_workers: int = 4
    prefetch_batches: int = _SETTINGS.prefetch
    decode: str = _SETTINGS.decode.value
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
RESIDENT: list[FeatureBlock] = []
USE_ORDER = itertools.count(1)


def forget_resident() -> None:
    """Drop every feature block this process keeps in memory (tests; memory pressure)."""
    RESIDENT.clear()


def take_rows(data: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of a block's ``data`` (a JAX array stays on its device)."""
    if isinstance(data, np.ndarray):  # host or memory map: read rows in file order
        order = np.argsort(rows, kind="stable")
        out = np.empty((rows.size, *data.shape[1:]), data.dtype)
        out[order] = data[rows[order]]
        return out
    import jax.numpy as jnp

    return jnp.take(data, jnp.asarray(rows, dtype=np.int32), axis=0)


def file_stamps(paths: Sequence[str]) -> list[tuple[int, int]]:
    """(size, modification time in ns) of each file: what makes a held feature row valid."""
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
    return sum(b.nbytes for b in RESIDENT if b.where == where)


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

    for block in sorted(RESIDENT, key=lambda b: b.last_used):
        if fits():
            return True
        if block.where == where and id(block) not in keep:
            RESIDENT.remove(block)
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
            self.data = np.empty(shape, numpy_dtype(dtype))
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
    return data.view(numpy_dtype(split.feature_dtype))


def block_of(
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
    with cache_lock(folder / f".{key}.lock"):
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
