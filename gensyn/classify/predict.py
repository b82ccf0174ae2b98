"""Predicted probabilities for a list of image files, through the one preprocessing function."""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gensyn.classify.data import BatchStream
from gensyn.classify.keras_env import keras

if TYPE_CHECKING:
    from gensyn.classify.cache import ImageCache


def padded_batches(
    stream: BatchStream, on_images: Callable[[int, np.ndarray], None] | None = None
) -> Iterator[tuple[np.ndarray]]:
    """Image batches of ``stream``, the last one padded to full size with zeros.

    Equal shapes mean one compiled prediction function (a DenseNet121 at 512² takes tens of
    seconds to compile); :func:`predict_paths` trims the padding. ``on_images(start,
    images)`` sees each batch's images (unpadded) first; ``start``: the index of its first
    image in the stream.
    """
    start = 0
    for batch in stream:
        images = batch[0] if isinstance(batch, tuple) else batch
        if on_images is not None:
            on_images(start, images)
        start += images.shape[0]
        if images.shape[0] < stream.batch_size:
            pad = np.zeros((stream.batch_size - images.shape[0], *images.shape[1:]), images.dtype)
            images = np.concatenate([images, pad])
        yield (images,)  # Keras wants a tuple from generators


def predict_paths(
    model: keras.Model,
    paths: Sequence[str | os.PathLike[str]],
    image_size_px: int,
    batch_size: int = 64,
    num_workers: int = 4,
    prefetch_batches: int = 4,
    decode: str = "auto",
    cache: Sequence[ImageCache] = (),
    on_images: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Probabilities (n_images, n_classes) of ``model`` for the images at ``paths``, in order.

    ``cache``: decode-once image caches to read files from (same images as decoding them).
    ``on_images(start, images)``: called with each batch of preprocessed images (uint8, (B, S,
    S, 1)) before the model sees it; ``start`` indexes ``paths``.
    """
    if len(paths) == 0:
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    stream = BatchStream(
        [os.fspath(p) for p in paths],
        None,
        batch_size,
        image_size_px,
        shuffle=False,
        num_workers=num_workers,
        prefetch_batches=prefetch_batches,
        decode=decode,
        cache=cache,
    )
    batches = padded_batches(stream, on_images)
    probs = model.predict(batches, steps=len(stream), verbose=0)
    return np.asarray(probs, dtype=np.float32)[: len(paths)]


#: Threads that copy a first prediction's images into the new decode-once cache.
CACHE_WRITERS = 2
#: Batches handed to them at most before the model's feed waits (bounds host memory).
CACHE_WRITES_IN_FLIGHT = 8


def predict_and_cache(
    model: keras.Model,
    paths: Sequence[str | os.PathLike[str]],
    image_size_px: int,
    folder: str | os.PathLike[str],
    batch_size: int = 64,
    num_workers: int = 4,
    prefetch_batches: int = 4,
    decode: str = "auto",
) -> tuple[np.ndarray, ImageCache]:
    """:func:`predict_paths` that leaves the decode-once cache of ``paths`` in ``folder``.

    Where the cache exists, the images are read from it; else each file is decoded once,
    for the model and into a new cache together (one pass over the files, which a later
    prediction of the same images then skips). Raises as :func:`gensyn.classify.cache.writing`
    (a full or unwritable folder, a missing file) and ValueError for an undecodable image;
    either way no cache file is left behind.
    """
    from gensyn.classify.cache import writing

    files = [os.fspath(p) for p in paths]
    with writing(folder, files, image_size_px) as pending:
        if pending.result is not None:
            cache = pending.result
            probs = predict_paths(
                model, files, image_size_px, batch_size, num_workers, prefetch_batches, decode,
                [cache],
            )  # fmt: skip
            return probs, cache
        rows = np.asarray(pending.rows(files))
        images = pending.images
        assert images is not None

        filled = np.zeros(len(pending.paths), bool)

        def store(where: np.ndarray, batch: np.ndarray) -> None:
            images[where] = batch  # numpy copies into the memory map without the GIL
            filled[where] = True

        # the copies into the new file (page faults on fresh pages: ~1 GB/s) run on writer
        # threads, off the thread that feeds the model; at most CACHE_WRITES_IN_FLIGHT
        # batches wait for them
        stored: deque[Future[None]] = deque()

        def keep(start: int, batch: np.ndarray) -> None:
            while len(stored) >= CACHE_WRITES_IN_FLIGHT:
                stored.popleft().result()  # re-raises a failed write (e.g. a full disk)
            stored.append(writers.submit(store, rows[start : start + len(batch)], batch))

        with ThreadPoolExecutor(CACHE_WRITERS, thread_name_prefix="cache-write") as writers:
            try:
                probs = predict_paths(
                    model, files, image_size_px, batch_size, num_workers, prefetch_batches,
                    decode, on_images=keep,
                )  # fmt: skip
                for done in stored:
                    done.result()
            finally:  # stop writing before the block closes the file
                for waiting in stored:
                    waiting.cancel()
        if not filled.all():  # the block's error leaves no cache file behind
            raise RuntimeError(f"{int((~filled).sum())} images did not reach the new cache")
    assert pending.result is not None
    return probs, pending.result


def warm_up(model: keras.Model, batch_size: int, image_size_px: int) -> None:
    """Compile (or load from JAX's compilation cache) the prediction step for batches of
    ``batch_size`` images, feeding one batch of zeros the way :func:`predict_paths` feeds
    files, so that its cost can be timed apart from the images' own."""
    zeros = np.zeros((batch_size, image_size_px, image_size_px, 1), np.uint8)
    model.predict(((zeros,) for _ in range(1)), steps=1, verbose=0)


#: The weights inside a ``.keras`` file (Keras' own layout).
KERAS_WEIGHTS_MEMBER = "model.weights.h5"
#: The model :func:`load_classifier` last built with ``reuse``, under its architecture's key.
_REUSABLE: list[tuple[str, keras.Model]] = []


def architecture_key(path: str | os.PathLike[str]) -> str:
    """What a saved ``.keras`` model is built from: its ``config.json`` less the training's
    compile settings (loss weights differ between folds), as canonical JSON."""
    with zipfile.ZipFile(path) as archive:
        return _architecture_key(archive)


def _architecture_key(archive: zipfile.ZipFile) -> str:
    config = json.loads(archive.read("config.json"))
    config.pop("compile_config", None)
    text = json.dumps(config, sort_keys=True)
    # objects shared within the config (dtype policies) carry Python ids of the saving
    # process: numbered in order of appearance instead
    ids: dict[str, str] = {}
    return re.sub(
        r'"shared_object_id": (\d+)',
        lambda m: f'"shared_object_id": {ids.setdefault(m.group(1), str(len(ids)))}',
        text,
    )


def load_classifier(path: str | os.PathLike[str], reuse: bool = False) -> keras.Model:
    """Load a model saved by training (``best.keras``) for inference; the file must exist.

    ``reuse``: where the model last loaded with ``reuse`` has the same architecture
    (:func:`architecture_key`), read only ``path``'s weights into it and return it; a
    sweep's predictions (other arms and folds, one architecture) then skip rebuilding
    DenseNet121 from its config, about a second each, and keep its compiled prediction
    steps. The model returned earlier then holds the new weights: only for a caller done
    with it (``stage=predict``). Without ``reuse`` every call builds a new model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trained classifier at {path}; run stage=classify first")
    if not reuse:
        # compile=False: the training loss (possibly class-weighted) is not needed to predict
        return keras.saving.load_model(path, compile=False)
    with zipfile.ZipFile(path) as archive:
        key = _architecture_key(archive)
        if _REUSABLE and _REUSABLE[0][0] == key:
            model = _REUSABLE[0][1]
            # h5py reads a weights file inside the zip through Python calls (2.8 s for
            # DenseNet121 on a 2-core VM); taken out to a plain file first: 0.7 s
            with tempfile.TemporaryDirectory() as tmp:
                # every variable, or an error: no stale weight stays
                model.load_weights(archive.extract(KERAS_WEIGHTS_MEMBER, tmp))
            return model
    model = keras.saving.load_model(path, compile=False)
    _REUSABLE[:] = [(key, model)]
    return model
