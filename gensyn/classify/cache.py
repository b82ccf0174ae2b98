"""Decode-once image cache: an image set's preprocessed images in one memory-mapped ``.npy``.

Training reads every image once per epoch; decoding and resizing PNGs each time can leave an
accelerator waiting for input. :func:`open_or_build` decodes a set of image files once through
the one preprocessing (:func:`gensyn.classify.data.load_image`) into ``<folder>/<key>.npy``,
``uint8`` of shape (n, S, S, 1), rows in sorted path order, and later opens it by memory map:
host memory holds only the pages being read, whatever the set's size. :func:`writing` lets a
caller that decodes the files anyway fill the rows itself (the first prediction of a test set,
:func:`gensyn.classify.predict.predict_and_cache`: one pass over the files, not two).
:class:`gensyn.classify.data.BatchStream` takes the cached image instead of decoding the file and
applies the same augmentation, so batches (and so training) are identical with or without it.

The key is a hash of the sorted file paths, each file's size and modification time, the image
size S and the preprocessing (the source of ``load_image`` and ``decode_png``, the Pillow and
NumPy versions): a changed, added, removed or rewritten image, another size or a changed
preprocessing gives another file, and a stale cache is never read. The file is written under
a temporary name and renamed when complete, so a killed writer leaves no file under a key's name; the next writer of
that key removes its leftover. A lock file serialises writers of one key on one host (parallel
jobs of a sweep wait for the first instead of decoding the same set again). A cache file can be
deleted at any time; it is written again when next needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL

from gensyn.base import io
from gensyn.base.io import decode_png
from gensyn.base.processes import init_worker
from gensyn.classify.data import AUTO_PROCESS_WORKERS, load_image

log = logging.getLogger(__name__)

#: images decoded per task while a cache is written
CHUNK_IMAGES = 64
#: free disk space left beyond a new cache file, or it is not written
DISK_MARGIN_BYTES = 1 << 30


def preprocessing_id() -> str:
    """A hash of what turns a file into a cached image: the source of ``load_image`` and of
    GENSYN's PNG decoder, Pillow's and NumPy's versions."""
    code = [inspect.getsource(f) for f in (load_image, decode_png)]
    text = "\n".join([*code, PIL.__version__, np.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(paths: Sequence[str], image_size_px: int) -> str:
    """The key of the cache of ``paths`` (sorted, unique) at ``image_size_px``².

    Covers each path with its file's size and modification time (ns), the size and
    :func:`preprocessing_id`. Raises FileNotFoundError naming a missing file.
    """
    digest = hashlib.sha256(f"{preprocessing_id()}|{image_size_px}\n".encode())
    for path in paths:
        st = os.stat(path)
        digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


@dataclass
class ImageCache:
    """The cached images of a set of files: ``images[row(path)]`` is ``load_image(path, S)``.

    ``images`` is a read-only memory map (n, S, S, 1) ``uint8``; ``written`` says whether this
    call wrote the file (else an earlier one did).
    """

    file: Path
    paths: tuple[str, ...]
    images: np.ndarray
    written: bool
    _rows: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rows = {p: i for i, p in enumerate(self.paths)}

    @property
    def image_size_px(self) -> int:
        """S: the side of the cached images in pixels."""
        return int(self.images.shape[1])

    @property
    def nbytes(self) -> int:
        """Size of the cache file in bytes."""
        return self.file.stat().st_size

    def row(self, path: str) -> int | None:
        """Row of ``path`` in ``images``, or None if the file is not in this cache."""
        return self._rows.get(path)


def _open(file: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The memory-mapped cache ``file`` if it holds ``shape`` uint8, else None."""
    try:
        images = np.load(file, mmap_mode="r")
    except (OSError, ValueError):
        return None  # absent, or not a complete .npy (e.g. truncated): write it again
    if images.shape != shape or images.dtype != np.uint8:
        return None
    return images


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (other processes writing the same cache wait)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fill(file: str, start: int, paths: Sequence[str], image_size_px: int) -> None:
    """Decode ``paths`` into rows ``start ..`` of the .npy ``file`` (opened read-write)."""
    images = np.load(file, mmap_mode="r+")
    for k, path in enumerate(paths):
        images[start + k] = load_image(path, image_size_px)
    images.flush()
    del images


def _write(
    tmp: Path, paths: Sequence[str], image_size_px: int, num_workers: int, processes: bool
) -> None:
    """Decode ``paths`` into the rows of the new cache file ``tmp`` (header written)."""
    jobs = [
        (str(tmp), s, list(paths[s : s + CHUNK_IMAGES]), image_size_px)
        for s in range(0, len(paths), CHUNK_IMAGES)
    ]
    pool: ProcessPoolExecutor | ThreadPoolExecutor
    if processes:
        ctx = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=init_worker)
    else:
        pool = ThreadPoolExecutor(num_workers, thread_name_prefix="cache")
    with pool:
        # list() re-raises the first error (an unreadable file, a full disk)
        list(pool.map(_fill, *zip(*jobs, strict=True)))


@dataclass
class PendingCache:
    """The cache of a set of files while :func:`writing` it: ``result`` is the finished cache
    (set at once where another writer had already written it, else when the block ends),
    ``images`` the writable memory map of the new file's rows while it is written."""

    tmp: Path | None = None
    paths: tuple[str, ...] = ()
    images: np.ndarray | None = None
    result: ImageCache | None = None

    def rows(self, paths: Sequence[str]) -> list[int]:
        """The rows of ``paths`` in the new file (rows are in sorted path order)."""
        where = {p: i for i, p in enumerate(self.paths)}
        return [where[os.fspath(p)] for p in paths]


@contextlib.contextmanager
def writing(
    folder: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], image_size_px: int
) -> Iterator[PendingCache]:
    """Open the cache of ``paths`` at ``image_size_px``² in ``folder``, or write it in the block.

    If the cache exists (or another process finishes it while this one waits for the key's
    lock), ``result`` is set and the block writes nothing. Else the block fills every row of
    ``images`` (each path's ``load_image``); the file is complete under a temporary name and
    renamed when the block ends without an error, then ``result`` is set. Raises OSError if the
    folder cannot hold the file (not writable, or less free space than the file plus 1 GiB) and
    FileNotFoundError naming a missing file; an error in the block leaves no cache file behind.
    """
    unique = tuple(sorted({os.fspath(p) for p in paths}))
    if not unique:
        raise ValueError("no images to cache")
    folder = Path(folder)
    key = cache_key(unique, image_size_px)
    file = folder / f"{key}.npy"
    shape = (len(unique), image_size_px, image_size_px, 1)
    images = _open(file, shape)
    if images is not None:
        yield PendingCache(result=ImageCache(file, unique, images, written=False))
        return
    folder.mkdir(parents=True, exist_ok=True)
    with cache_lock(folder / f".{key}.lock"):
        images = _open(file, shape)  # another process may have written it meanwhile
        if images is not None:
            yield PendingCache(result=ImageCache(file, unique, images, written=False))
            return
        for stale in folder.glob(f".{file.name}.*{io.PARTIAL_SUFFIX}.npy"):
            stale.unlink(missing_ok=True)  # left by a killed writer of this key
        needed = int(np.prod(shape)) + 128
        free = shutil.disk_usage(folder).free
        if free < needed + DISK_MARGIN_BYTES:
            raise OSError(
                f"{folder} has {free / 1e9:.1f} GB free; the image cache needs "
                f"{needed / 1e9:.1f} GB plus {DISK_MARGIN_BYTES / 1e9:.1f} GB to spare"
            )
        with io.atomic_write(file) as tmp:
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            rows.flush()  # the header is on disk: other processes may open the file by name
            pending = PendingCache(tmp, unique, rows)
            yield pending
            rows.flush()
            pending.images = None
            del rows
        io.write_json(
            folder / f"{key}.json",
            {
                "n_images": len(unique),
                "image_size_px": image_size_px,
                "preprocessing_id": preprocessing_id(),
                "first_path": unique[0],
                "last_path": unique[-1],
            },
        )
    images = _open(file, shape)
    if images is None:
        raise OSError(f"image cache {file} was written but cannot be read back")
    pending.result = ImageCache(file, unique, images, written=True)


def open_existing(
    folder: str | os.PathLike[str], paths: Sequence[str | os.PathLike[str]], image_size_px: int
) -> ImageCache | None:
    """The cache of ``paths`` at ``image_size_px``² in ``folder`` if one was written, else None.

    Every file of a cache decoded when it was written and is unchanged since (its size and
    modification time are in the key), so a caller may skip checking the files again. A
    missing file gives None (no cache can hold it).
    """
    unique = sorted({os.fspath(p) for p in paths})
    if not unique:
        return None
    try:
        key = cache_key(unique, image_size_px)
    except FileNotFoundError:
        return None
    file = Path(folder) / f"{key}.npy"
    images = _open(file, (len(unique), image_size_px, image_size_px, 1))
    return None if images is None else ImageCache(file, tuple(unique), images, written=False)


def open_or_build(
    folder: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    image_size_px: int,
    num_workers: int = 4,
    decode: str = "auto",
) -> ImageCache:
    """The cache of ``paths`` at ``image_size_px``² in ``folder``: opened, or written first.

    ``decode`` (``auto`` | ``threads`` | ``processes``, as for BatchStream) and ``num_workers``
    set how a new cache is decoded. Raises OSError if the folder cannot hold the file (not
    writable, or less free space than the file plus 1 GiB) and ValueError naming an unreadable
    image; either way no cache file is left behind.
    """
    workers = max(1, num_workers)
    processes = decode == "processes" or (decode == "auto" and workers >= AUTO_PROCESS_WORKERS)
    with writing(folder, paths, image_size_px) as pending:
        if pending.result is None:  # not written yet: decode every file into it
            assert pending.tmp is not None
            _write(pending.tmp, pending.paths, image_size_px, workers, processes)
    assert pending.result is not None
    return pending.result


def describe(caches: Sequence[ImageCache]) -> dict[str, object]:
    """Summary fields of the caches a run used: state (written / used), files, images, MB."""
    return {
        "image_cache": "written" if any(c.written for c in caches) else "used",
        "image_cache_files": [str(c.file) for c in caches],
        "image_cache_images": sum(len(c.paths) for c in caches),
        "image_cache_mb": round(sum(c.nbytes for c in caches) / 1e6, 3),
    }


def cache_report(caches: Sequence[ImageCache]) -> str:
    """One log line: which caches were written or reused, their images, size and location."""
    return "; ".join(
        f"{'wrote' if c.written else 'reused'} {len(c.paths)} images "
        f"({c.nbytes / 1e6:.1f} MB) at {c.file}"
        for c in caches
    )
