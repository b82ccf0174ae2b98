"""Streaming image batches from PNG files: parallel decode, bounded prefetch, one preprocessing.

:func:`load_image` is the ONLY preprocessing, used by training, validation, prediction and
the benchmark alike: decode (8- or 16-bit grey, or colour converted to grey), resize to
S × S, stretch the image's own min..max to 0..255, return ``uint8`` (S, S, 1). The fixed map
from 0..255 to the network's range is inside the model (:mod:`gensyn.classify.models`).

:class:`BatchStream` yields batches in a fixed order per (seed, epoch); images are decoded by
a thread pool (PIL and zlib release the GIL while decoding) and at most ``prefetch_batches``
batches are in flight, so host memory is bounded by ``batch_size × prefetch_batches × S²``
bytes, whatever the data set size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image


def load_image(path: str | os.PathLike[str], image_size_px: int) -> np.ndarray:
    """Decode, resize and normalise one image file to ``uint8`` of shape (S, S, 1).

    16-bit images are resized in floating point before the intensity stretch, so no precision
    is lost to an early 8-bit cast. A constant image maps to zeros. Raises ValueError naming
    the file if it cannot be decoded.
    """
    size = (image_size_px, image_size_px)
    try:
        with Image.open(path) as opened:
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
    out = np.zeros_like(images)
    size = images.shape[1]
    limit = round(max_shift * size)
    shifts = rng.integers(-limit, limit + 1, size=(images.shape[0], 2))
    factors = np.asarray(rng.uniform(1.0 - contrast, 1.0 + contrast, images.shape[0]), np.float32)
    for i, (dy, dx) in enumerate(shifts):
        src = images[i, max(0, -dy) : size - max(0, dy), max(0, -dx) : size - max(0, dx)]
        dst = out[i, max(0, dy) : size - max(0, -dy), max(0, dx) : size - max(0, -dx)]
        mean = np.float32(src.mean())
        dst[:] = np.clip((src.astype(np.float32) - mean) * factors[i] + mean + 0.5, 0, 255).astype(
            np.uint8
        )
    return out


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
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(labels)} label rows")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle order of ``epoch`` (a resumed run continues the same sequence)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.paths)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def _batch_indices(self) -> list[np.ndarray]:
        order = epoch_order(len(self.paths), self.seed, self.epoch, self.shuffle)
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def _load_batch(self, pool: ThreadPoolExecutor, idx: np.ndarray, number: int) -> np.ndarray:
        out = np.empty((idx.size, self.image_size_px, self.image_size_px, 1), dtype=np.uint8)

        def one(slot: int) -> None:
            out[slot] = load_image(self.paths[idx[slot]], self.image_size_px)

        # decode the batch's images in parallel; list() re-raises the first error
        list(pool.map(one, range(idx.size)))
        if self.augment:  # seeded by (seed, epoch, batch): a resumed run sees the same images
            out = augment_batch(out, np.random.default_rng([self.seed, self.epoch, number, 7]))
        return out

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray] | np.ndarray]:
        batches = self._batch_indices()
        # one coordinator thread per in-flight batch, image decoding in a shared pool
        with (
            ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode") as pool,
            ThreadPoolExecutor(self.prefetch_batches, thread_name_prefix="batch") as coord,
        ):
            pending: deque[tuple[np.ndarray, Future[np.ndarray]]] = deque()
            next_batch = 0
            try:
                while pending or next_batch < len(batches):
                    while next_batch < len(batches) and len(pending) < self.prefetch_batches:
                        idx = batches[next_batch]
                        fut = coord.submit(self._load_batch, pool, idx, next_batch)
                        pending.append((idx, fut))
                        next_batch += 1
                    idx, fut = pending.popleft()
                    images = fut.result()
                    if self.labels is None:
                        yield images
                    else:
                        yield images, self.labels[idx]
            finally:
                for _, fut in pending:
                    fut.cancel()

    def forever(self) -> Iterator[tuple[np.ndarray, np.ndarray] | np.ndarray]:
        """Epoch after epoch (incrementing the epoch), for step-counted training loops."""
        while True:
            yield from self
            self.epoch += 1
