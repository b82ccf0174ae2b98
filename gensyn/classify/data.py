"""Streaming image batches from PNG files: parallel decode, bounded prefetch, one preprocessing.

:func:`load_image` is the ONLY preprocessing, used by training, validation, prediction and
the benchmark alike: decode (8- or 16-bit grey, or colour converted to grey), resize to
S × S, stretch the image's own min..max to 0..255, return ``uint8`` (S, S, 1). The fixed map
from 0..255 to the network's range is inside the model (:mod:`gensyn.classify.models`).

:class:`BatchStream` yields batches in a fixed order per (seed, epoch), or any stretch of the
endless sequence of epochs (:meth:`BatchStream.window`, for step-counted training); at most
``prefetch_batches`` batches are in flight, so host memory is bounded by
``batch_size × prefetch_batches × S²`` bytes, whatever the data set size. Images are decoded
either by a thread pool (``decode="threads"``: no start-up cost, right for small images and
few cores) or by worker processes that write straight into a shared-memory ring of batch
slots (``decode="processes"``: PIL holds the GIL for part of each PNG decode, so threads stop
scaling at a few cores; processes scale with the cores, as a 16-core GPU host needs to keep
DenseNet121 fed at 512²). ``"auto"`` picks processes from 4 workers on. Both give identical
batches. Given decode-once caches (:mod:`gensyn.classify.cache`), a stream copies a cached
file's image from the memory map instead of decoding the file, then augments it the same way:
batches are identical with or without a cache.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from gensyn.base.io import atomic_write, decode_png
from gensyn.base.processes import init_worker
from gensyn.classify.settings import DecodeMode, checked


class CachedImages(Protocol):
    """What a :class:`BatchStream` reads of a decode-once cache (satisfied by
    :class:`gensyn.classify.cache.ImageCache`, which imports this module)."""

    @property
    def file(self) -> Path:
        """The cache's .npy file (worker processes open it by name)."""
        ...

    @property
    def images(self) -> np.ndarray:
        """The cached images: ``uint8`` (n, S, S, 1), memory-mapped."""
        ...

    @property
    def image_size_px(self) -> int:
        """S: the side of the cached images in pixels."""
        ...

    def row(self, path: str) -> int | None:
        """Row of ``path`` in ``images``, or None if the file is not in this cache."""
        ...


#: ``decode="auto"`` uses processes from this many workers on.
AUTO_PROCESS_WORKERS = 4


def load_image(path: str | os.PathLike[str], image_size_px: int) -> np.ndarray:
    """Decode, resize and normalise one image file to ``uint8`` of shape (S, S, 1).

    16-bit images are resized in floating point before the intensity stretch, so no precision
    is lost to an early 8-bit cast. A constant image maps to zeros. Raises ValueError naming
    the file if it cannot be decoded.
    """
    size = (image_size_px, image_size_px)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        # the PNGs GENSYN wrote (prepared X-rays, DRRs, SyntheX images): decoded by numpy,
        # ~25 % less time an 8-bit 512² image than through Pillow; the same pixels after
        fast = decode_png(data)
        if fast is not None and fast.ndim == 2 and fast.shape[::-1] == size:
            arr: np.ndarray = fast  # grey at the size wanted: the stretch below, as Pillow's
        else:
            with (
                Image.open(io.BytesIO(data))
                if fast is None
                else Image.fromarray(fast.astype(np.float32) if fast.dtype == np.uint16 else fast)
            ) as opened:
                pil: Image.Image = opened
                if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    pil = pil.convert("F")
                elif pil.mode != "L":
                    pil = pil.convert("L")
                if pil.size != size:
                    pil = pil.resize(size, Image.Resampling.BILINEAR)
                arr = np.asarray(pil)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    lo, hi = arr.min(), arr.max()
    if hi <= lo:
        return np.zeros((*size, 1), dtype=np.uint8)
    scaled = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (float(hi) - float(lo)))
    return (scaled + 0.5).astype(np.uint8)[..., None]


def image_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a readable image (missing, garbage, truncated), or None if it is.

    Cheap: PIL reads the header and checks the file's structure and checksums (a PNG's chunk
    CRCs) without decoding the pixels.
    """
    try:
        with Image.open(path) as opened:
            opened.verify()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


#: (path, size in bytes, modification time in ns) -> its problem or None, for this process: a
#: sweep's later arms, folds and predictions do not check the same unchanged files again
_CHECKED: dict[tuple[str, int, int], str | None] = {}


def _checked_problem(path: str) -> tuple[tuple[str, int, int] | None, str | None]:
    """(the memo key of ``path``, its problem): the problem is looked up in the memo or found."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if key in _CHECKED:
        return key, _CHECKED[key]
    return key, image_problem(path)


def _checked_chunk(paths: Sequence[str]) -> list[tuple[tuple[str, int, int] | None, str | None]]:
    """:func:`_checked_problem` of each of ``paths``, in order (one thread-pool task)."""
    return [_checked_problem(p) for p in paths]


#: readability records already merged into ``_CHECKED`` in this process: path -> mtime_ns
_RECORDS_READ: dict[str, int] = {}
_RECORD_COLUMNS = ("path", "size", "mtime_ns", "problem")


def _merge_record(record: Path) -> None:
    """Merge a readability record another process wrote into this process's memo (once per
    version of the file). An unreadable or malformed record is ignored: its files are
    simply checked again."""
    import pandas as pd

    try:
        stamp = record.stat().st_mtime_ns
    except OSError:
        return
    if _RECORDS_READ.get(str(record)) == stamp:
        return
    try:
        table = pd.read_csv(record, dtype={"path": str, "problem": str}, keep_default_na=False)
        rows = zip(
            table["path"].tolist(),
            table["size"].astype("int64").tolist(),
            table["mtime_ns"].astype("int64").tolist(),
            table["problem"].tolist(),
            strict=True,
        )
        for path, size, mtime_ns, problem in rows:
            _CHECKED.setdefault((path, size, mtime_ns), problem or None)
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return
    _RECORDS_READ[str(record)] = stamp


def _write_record(record: Path) -> None:
    """This process's memo (what other processes recorded included) to ``record``, atomically."""
    import pandas as pd

    table = pd.DataFrame(
        [(p, size, mtime, why or "") for (p, size, mtime), why in _CHECKED.items()],
        columns=list(_RECORD_COLUMNS),
    )
    try:
        with atomic_write(record, durable=False) as tmp:
            table.to_csv(tmp, index=False)
        _RECORDS_READ[str(record)] = record.stat().st_mtime_ns
    except OSError:  # a record is a saving, never a requirement
        return


def unreadable_images(
    paths: Sequence[str], workers: int = 4, record: Path | None = None
) -> dict[str, str]:
    """The files of ``paths`` that are not readable images, each with the reason.

    A file checked before in this process, unchanged since (same size and modification
    time), is not read again. ``record``: a CSV (path, size, mtime_ns, problem) shared by
    processes, e.g. a SLURM sweep's jobs or a grid resumed in a new session: files it lists
    unchanged are not read again either, and what this call checked is added to it.
    """
    if record is not None:
        _merge_record(record)
    before = len(_CHECKED)
    # chunks, not one task per file: a sweep's later runs find ~80,000 files in the memo, and
    # a thread pool's per-task cost (≈ 50 µs) was then 4 s a run against 0.3 s of stats
    size = max(1, min(512, -(-len(paths) // (4 * max(1, workers)))))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = [hit for chunk in pool.map(_checked_chunk, chunks) for hit in chunk]
    for key, problem in found:
        if key is not None:
            _CHECKED[key] = problem
    if record is not None and len(_CHECKED) > before:
        _write_record(record)
    return {p: why for p, (_, why) in zip(paths, found, strict=True) if why is not None}


def augment_params(
    rng: np.random.Generator, n: int, size: int, max_shift: float = 0.06, contrast: float = 0.2
) -> np.ndarray:
    """Per-image augmentation parameters (n, 3): shift dy, shift dx (pixels), contrast factor."""
    limit = round(max_shift * size)
    shifts = rng.integers(-limit, limit + 1, size=(n, 2))
    factors = rng.uniform(1.0 - contrast, 1.0 + contrast, n)
    return np.column_stack([shifts, factors]).astype(np.float64)


def augment_image(image: np.ndarray, dy: int, dx: int, factor: float) -> np.ndarray:
    """Shift a uint8 (S, S, 1) image by (dy, dx) pixels (zeros fill in) and scale its
    contrast about its mean by ``factor``."""
    out = np.zeros_like(image)
    size = image.shape[0]
    src = image[max(0, -dy) : size - max(0, dy), max(0, -dx) : size - max(0, dx)]
    dst = out[max(0, dy) : size - max(0, -dy), max(0, dx) : size - max(0, -dx)]
    mean = np.float32(src.mean())
    scaled = (src.astype(np.float32) - mean) * np.float32(factor) + mean + 0.5
    dst[:] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def augment_batch(
    images: np.ndarray, rng: np.random.Generator, max_shift: float = 0.06, contrast: float = 0.2
) -> np.ndarray:
    """Training-only augmentation of a uint8 (B, S, S, 1) batch: shifts and contrast.

    Each image is shifted by up to ``max_shift`` × S pixels in each direction (zeros fill
    in) and its contrast about its mean scaled by a factor in [1 - contrast, 1 + contrast].
    No flips (the heart is on the left) and no crops that could cut a finding out. Integer
    shifts on the host cost microseconds per image; Keras' random-transform layers doubled
    the CPU time of an epoch of the demo's small CNN.
    """
    params = augment_params(rng, images.shape[0], images.shape[1], max_shift, contrast)
    return np.stack(
        [
            augment_image(img, int(p[0]), int(p[1]), float(p[2]))
            for img, p in zip(images, params, strict=True)
        ]
    )


def _load_augmented(
    path: str, image_size_px: int, params: np.ndarray | None, cached: np.ndarray | None = None
) -> np.ndarray:
    """:func:`load_image` (or its ``cached`` result), then :func:`augment_image` with one row of
    :func:`augment_params`."""
    image = load_image(path, image_size_px) if cached is None else np.asarray(cached)
    if params is None:
        return image
    return augment_image(image, int(params[0]), int(params[1]), float(params[2]))


def epoch_order(n_items: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Index order of one epoch: a permutation fixed by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return np.arange(n_items)
    return np.random.default_rng([seed, epoch]).permutation(n_items)


class BatchStream:
    """An iterable of batches ``(images uint8 (B, S, S, 1), labels float32 (B, C))``.

    ``labels`` None yields images only. With ``drop_remainder`` the last short batch is
    dropped (training: equal batch shapes avoid re-compilation); else it is kept (prediction).
    Iterating twice gives the same batches; call :meth:`set_epoch` to get the next epoch's order.
    Batches are numbered globally: batch g is batch ``g % len(self)`` of epoch ``g // len(self)``.
    ``cache``: decode-once caches (:func:`gensyn.classify.cache.open_or_build`) at
    ``image_size_px``; a file found in one is read from it instead of being decoded.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray | None,
        batch_size: int,
        image_size_px: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        num_workers: int = 4,
        prefetch_batches: int = 4,
        augment: bool = False,
        decode: str = "auto",
        cache: Sequence[CachedImages] = (),
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(labels)} label rows")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        checked(DecodeMode, decode, "classifier.decode")
        self.paths = [os.fspath(p) for p in paths]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.batch_size = batch_size
        self.image_size_px = image_size_px
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.num_workers = max(1, num_workers)
        self.prefetch_batches = max(1, prefetch_batches)
        self.augment = augment
        self.decode = decode
        self.epoch = 0
        #: how many times each image (path i) was yielded in a batch since construction
        self.times_seen = np.zeros(len(self.paths), dtype=np.int64)
        for c in cache:
            if c.image_size_px != image_size_px:
                raise ValueError(
                    f"image cache {c.file} holds {c.image_size_px} px images, the stream "
                    f"needs {image_size_px} px"
                )
        self.cache = tuple(cache)
        # per path: (index into self.cache, row) of its cached image, or None (decode the file)
        self._cached: list[tuple[int, int] | None] = [None] * len(self.paths)
        for k, c in enumerate(self.cache):
            for i, path in enumerate(self.paths):
                if self._cached[i] is None and (row := c.row(path)) is not None:
                    self._cached[i] = (k, row)

    @property
    def n_cached(self) -> int:
        """How many of the stream's files are read from a cache rather than decoded."""
        return sum(s is not None for s in self._cached)

    def _cached_image(self, i: int) -> np.ndarray | None:
        where = self._cached[i]
        return None if where is None else self.cache[where[0]].images[where[1]]

    def _item(self, i: int) -> tuple[str, str, int]:
        """What a decode worker process needs for path i: path, cache file ("" if none), row."""
        where = self._cached[i]
        if where is None:
            return self.paths[i], "", -1
        return self.paths[i], str(self.cache[where[0]].file), where[1]

    @property
    def uses_processes(self) -> bool:
        """Whether images are decoded in worker processes (else threads).

        ``auto`` picks processes from :data:`AUTO_PROCESS_WORKERS` workers on, unless every
        image comes from a cache unaugmented: then a batch is a copy of memory-mapped rows,
        which threads do without the processes' start-up (seconds for 16 workers, as long as
        a whole test set's prediction on a GPU).
        """
        if self.decode == "auto":
            only_copies = not self.augment and self.n_cached == len(self.paths)
            return self.num_workers >= AUTO_PROCESS_WORKERS and not only_copies
        return self.decode == "processes"

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle order of ``epoch`` (a resumed run continues the same sequence)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.paths)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def _plan(self, first_batch: int, n_batches: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(image indices, augmentation parameters) of global batches first .. first + n - 1."""
        per_epoch = len(self)
        if per_epoch == 0:
            return []
        orders: dict[int, np.ndarray] = {}
        plan = []
        for batch in range(first_batch, first_batch + n_batches):
            epoch, number = divmod(batch, per_epoch)
            if epoch not in orders:
                orders[epoch] = epoch_order(len(self.paths), self.seed, epoch, self.shuffle)
            idx = orders[epoch][number * self.batch_size : (number + 1) * self.batch_size]
            plan.append((idx, self._augment_params(idx.size, epoch, number)))
        return plan

    def _augment_params(self, n: int, epoch: int, number: int) -> np.ndarray | None:
        # seeded by (seed, epoch, batch): a resumed run sees the same images
        if not self.augment:
            return None
        rng = np.random.default_rng([self.seed, epoch, number, 7])
        return augment_params(rng, n, self.image_size_px)

    def _load_batch(
        self, pool: ThreadPoolExecutor, idx: np.ndarray, params: np.ndarray | None
    ) -> np.ndarray:
        out = np.empty((idx.size, self.image_size_px, self.image_size_px, 1), dtype=np.uint8)

        def one(slot: int) -> None:
            row = None if params is None else params[slot]
            i = idx[slot]
            out[slot] = _load_augmented(
                self.paths[i], self.image_size_px, row, self._cached_image(i)
            )

        # decode the batch's images in parallel; list() re-raises the first error
        list(pool.map(one, range(idx.size)))
        return out

    def _with_labels(
        self, images: np.ndarray, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        return images if self.labels is None else (images, self.labels[idx])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray] | np.ndarray]:
        return self.window(self.epoch * len(self), len(self))

    def window(
        self, first_batch: int, n_batches: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray] | np.ndarray]:
        """Global batches ``first_batch`` .. ``first_batch + n_batches - 1``, across epochs.

        For training loops that count steps rather than epochs: the stretch continues through
        the shuffled epochs, and equal arguments give equal batches (resume-safe).
        """
        plan = self._plan(first_batch, n_batches)
        batches = self._iter_processes(plan) if self.uses_processes else self._iter_threads(plan)
        for (idx, _), batch in zip(plan, batches, strict=True):
            # counted as handed to the consumer (the optimiser), not as planned
            np.add.at(self.times_seen, idx[idx < self.times_seen.size], 1)
            yield batch

    def _iter_threads(
        self, plan: list[tuple[np.ndarray, np.ndarray | None]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray] | np.ndarray]:
        # one coordinator thread per in-flight batch, image decoding in a shared pool
        with (
            ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode") as pool,
            ThreadPoolExecutor(self.prefetch_batches, thread_name_prefix="batch") as coord,
        ):
            pending: deque[tuple[np.ndarray, Future[np.ndarray]]] = deque()
            next_batch = 0
            try:
                while pending or next_batch < len(plan):
                    while next_batch < len(plan) and len(pending) < self.prefetch_batches:
                        idx, params = plan[next_batch]
                        fut = coord.submit(self._load_batch, pool, idx, params)
                        pending.append((idx, fut))
                        next_batch += 1
                    idx, fut = pending.popleft()
                    yield self._with_labels(fut.result(), idx)
            finally:
                for _, fut in pending:
                    fut.cancel()

    def _iter_processes(
        self, plan: list[tuple[np.ndarray, np.ndarray | None]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray] | np.ndarray]:
        if not plan:
            return
        size = self.image_size_px
        n_slots = min(self.prefetch_batches, len(plan))
        shape = (n_slots, self.batch_size, size, size, 1)
        shm = SharedMemory(create=True, size=max(1, math.prod(shape)))
        ring: np.ndarray = np.ndarray(shape, dtype=np.uint8, buffer=shm.buf)
        # images per task: enough tasks per batch to keep every worker busy
        chunk = max(1, min(16, -(-self.batch_size // self.num_workers)))
        ctx = multiprocessing.get_context("forkserver")
        pending: deque[tuple[int, np.ndarray, list[Future[None]]]] = deque()
        try:
            with ProcessPoolExecutor(
                self.num_workers, mp_context=ctx, initializer=init_worker
            ) as pool:
                next_batch = 0
                try:
                    while pending or next_batch < len(plan):
                        while next_batch < len(plan) and len(pending) < n_slots:
                            idx, params = plan[next_batch]
                            slot = next_batch % n_slots
                            futures = [
                                pool.submit(
                                    _decode_into_shared,
                                    shm.name,
                                    shape,
                                    slot,
                                    start,
                                    [self._item(i) for i in idx[start : start + chunk]],
                                    size,
                                    None if params is None else params[start : start + chunk],
                                )
                                for start in range(0, idx.size, chunk)
                            ]
                            pending.append((slot, idx, futures))
                            next_batch += 1
                        slot, idx, futures = pending.popleft()
                        for fut in futures:
                            fut.result()  # re-raises a worker's error (e.g. an unreadable file)
                        # a copy: the slot is refilled while the consumer may still hold the batch
                        images = ring[slot, : idx.size].copy()
                        yield self._with_labels(images, idx)
                finally:
                    for _, _, futures in pending:
                        for fut in futures:
                            fut.cancel()
        finally:
            del ring
            shm.close()
            shm.unlink()


class RealEpochsStream(BatchStream):
    """Training batches in which every real image appears once per epoch and synthetic
    images fill a fixed share of each batch (``classifier.schedule=real_epochs``).

    ``paths[:n_real]`` are the real images, the rest synthetic. An epoch is one shuffled pass
    over the real images, spread over ``ceil(n_real / (batch_size - synthetic_per_batch))``
    batches as evenly as :func:`numpy.array_split` spreads them (so a batch holds r or r - 1
    real images, r = batch_size - synthetic_per_batch, when n_real >= r²). Every batch is
    then filled up to ``batch_size`` with the next images of an endless sequence of shuffled
    passes over the synthetic images (each pass its own permutation, seeded by seed and pass
    number), so a synthetic image is seen as often as any other, give or take one. An arm
    without synthetic images fills a short batch with label-free copies of its real images
    (all labels NaN: the masked loss gives them no weight and no gradient), so every batch
    has one shape, divisible over data-parallel devices; those copies are not counted in
    :attr:`times_seen`. So does an arm given ``synthetic_per_batch=0``: it trains on its real
    images only. Batches are a function of (seed, epoch): resume-safe.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        batch_size: int,
        image_size_px: int,
        n_real: int,
        synthetic_per_batch: int,
        **kwargs: object,
    ) -> None:
        n_synthetic = len(paths) - n_real
        if not 0 < n_real <= len(paths):
            raise ValueError(f"n_real={n_real} must be in 1..{len(paths)} (the images given)")
        if not 0 <= synthetic_per_batch < batch_size:
            raise ValueError(
                f"synthetic_per_batch={synthetic_per_batch} must be in 0..{batch_size - 1}"
            )
        if synthetic_per_batch and not n_synthetic:
            raise ValueError(f"synthetic_per_batch={synthetic_per_batch} but no synthetic images")
        super().__init__(paths, labels, batch_size, image_size_px, **kwargs)  # type: ignore[arg-type]
        self.n_real = n_real
        self.n_synthetic = n_synthetic
        self.synthetic_per_batch = synthetic_per_batch
        self.n_batches = -(-n_real // (batch_size - synthetic_per_batch))
        #: real images per batch of an epoch (the same every epoch)
        split = np.array_split(np.arange(n_real), self.n_batches)
        self.real_per_batch = np.array([len(a) for a in split])
        self.real_start = np.concatenate([[0], np.cumsum(self.real_per_batch)[:-1]])
        if not synthetic_per_batch:  # label-free copies of the real images, to pad short batches
            assert self.labels is not None
            self.paths = self.paths + self.paths[:n_real]
            self.labels = np.concatenate([self.labels, np.full_like(self.labels[:n_real], np.nan)])
            self._cached = self._cached + self._cached[:n_real]

    @property
    def synthetic_per_epoch(self) -> int:
        """Synthetic images in one epoch's batches (0 for an arm without any)."""
        return self.n_batches * self.batch_size - self.n_real if self.synthetic_per_batch else 0

    def __len__(self) -> int:
        return self.n_batches

    def _synthetic(self, start: int, n: int, cache: dict[int, np.ndarray]) -> np.ndarray:
        """Indices (into paths) of positions start .. start + n - 1 of the synthetic sequence."""
        out = np.empty(n, dtype=np.int64)
        for k, position in enumerate(range(start, start + n)):
            cycle, offset = divmod(position, self.n_synthetic)
            if cycle not in cache:
                # stream 1: independent of the real images' order
                cache[cycle] = np.random.default_rng([self.seed, cycle, 1]).permutation(
                    self.n_synthetic
                )
            out[k] = self.n_real + cache[cycle][offset]
        return out

    def _plan(self, first_batch: int, n_batches: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        orders: dict[int, np.ndarray] = {}
        cycles: dict[int, np.ndarray] = {}
        plan = []
        for batch in range(first_batch, first_batch + n_batches):
            epoch, number = divmod(batch, self.n_batches)
            if epoch not in orders:
                orders[epoch] = epoch_order(self.n_real, self.seed, epoch, True)
            start, n_real = int(self.real_start[number]), int(self.real_per_batch[number])
            real = orders[epoch][start : start + n_real]
            fill = self.batch_size - n_real
            if self.synthetic_per_batch:
                # synthetic images before this batch: the earlier epochs' and this epoch's
                done = epoch * self.synthetic_per_epoch + number * self.batch_size - start
                extra = self._synthetic(done, fill, cycles)
            else:
                extra = len(self.times_seen) + np.resize(real, fill)  # label-free copies
            idx = np.concatenate([real, extra])
            plan.append((idx, self._augment_params(idx.size, epoch, number)))
        return plan


#: Shared-memory blocks a decode worker process has attached to, by name.
_ATTACHED: dict[str, SharedMemory] = {}
#: Image caches a decode worker process has memory-mapped, by file.
_MAPPED: dict[str, np.ndarray] = {}


def _mapped(file: str) -> np.ndarray:
    """Worker process: the memory map of the image cache ``file`` (opened once)."""
    images = _MAPPED.get(file)
    if images is None:
        images = _MAPPED[file] = np.load(file, mmap_mode="r")
    return images


def _decode_into_shared(
    shm_name: str,
    shape: tuple[int, ...],
    slot: int,
    start: int,
    items: list[tuple[str, str, int]],
    image_size_px: int,
    params: np.ndarray | None,
) -> None:
    """Worker process: decode ``items`` (path, cache file or "", cache row) into
    ``ring[slot, start:start + len(items)]``, reading a cached image instead of its file."""
    shm = _ATTACHED.get(shm_name)
    if shm is None:
        for name in list(_ATTACHED):  # a new ring (next epoch): drop the old one
            _ATTACHED.pop(name).close()
        # Workers share the parent's resource tracker (forkserver), so attaching registers
        # nothing new and the parent's unlink leaves no "leaked" block behind.
        shm = SharedMemory(name=shm_name)
        _ATTACHED[shm_name] = shm
    ring: np.ndarray = np.ndarray(shape, dtype=np.uint8, buffer=shm.buf)
    for k, (path, cache_file, cache_row) in enumerate(items):
        row = None if params is None else params[k]
        cached = _mapped(cache_file)[cache_row] if cache_file else None
        ring[slot, start + k] = _load_augmented(path, image_size_px, row, cached)
    del ring
