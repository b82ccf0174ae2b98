"""Decoding the PNGs the stages write: GENSYN's reader against Pillow's, same files, same run.

``stage=drr`` writes 16-bit grey DRRs and ``gan_translate`` 8-bit grey SyntheX images, both
with :func:`gensyn.base.io.encode_png` (every row "Up"-filtered, ISA-L deflate level 1, as
``projector.png_compress_level=1`` does). ``gan_translate``'s loader processes then decode every
DRR. This script writes ``--images`` DRR-like images of each kind (a smooth field plus noise,
``--size`` pixels square) and times, per image, on one thread:

* ``gensyn``: :func:`gensyn.base.io.read_image` (ISA-L inflate, the filters undone by numpy:
  :func:`gensyn.base.io.decode_png`), pixels as uint8 / uint16;
* ``pillow``: ``np.array(Image.open(path))``, 16-bit cast from Pillow's int32 to uint16 (what
  ``read_image`` did before 2026-12-04);
* ``theirs``: the same pixels saved by Pillow (its own choice of row filters, zlib level 1),
  another writer's files: ``read_image`` hands them to Pillow after inflating their first
  rows (the ``fast`` column counts those it decoded itself); ``pillow`` beside it.

and the classifier's one preprocessing (:func:`gensyn.classify.data.load_image`: decode,
stretch to uint8 at the same size) against the same steps through Pillow alone (``pillow``
column of the second table: what ``load_image`` did before 2026-12-04).

Both readers must give the same pixels (checked). Best of ``--repeats`` passes over the
files, the two readers in turn.

    python benchmarks/png_read.py --images 64 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gensyn.base.io import decode_png, read_image, write_image


def drr_like(size: int, dtype: type, seed: int) -> np.ndarray:
    """A smooth field plus a little noise over most of ``dtype``'s range, as a DRR looks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    field = 0.5 + 0.35 * np.sin(6 * x + seed) * np.cos(5 * y) + 0.01 * rng.standard_normal(x.shape)
    return (np.clip(field, 0, 1) * np.iinfo(dtype).max).astype(dtype)


def pillow_read(path: Path) -> np.ndarray:
    """Pillow's pixels, 16-bit as uint16 (Pillow gives int32 for some 16-bit modes)."""
    with Image.open(path) as pil:
        arr = np.array(pil)
    return arr.astype(np.uint16) if arr.dtype == np.int32 else arr


def pillow_load_image(path: Path) -> np.ndarray:
    """The classifier's preprocessing at the image's own size, through Pillow alone."""
    with Image.open(path) as pil:
        pil = pil.convert("F") if pil.mode.startswith(("I", "F")) else pil.convert("L")
        arr = np.asarray(pil)
    lo, hi = arr.min(), arr.max()
    scaled = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (float(hi) - float(lo)))
    return (scaled + 0.5).astype(np.uint8)[..., None]


def race(readers: dict[str, Callable[[Path], np.ndarray]], paths: list[Path], repeats: int) -> dict[str, float]:  # fmt: skip
    """Milliseconds an image for each reader: the best of ``repeats`` passes over ``paths``,
    the readers' passes taken in turn (so that a busy moment of the machine hits both)."""
    best = dict.fromkeys(readers, float("inf"))
    for _ in range(repeats):
        for name, read in readers.items():
            start = time.perf_counter()
            for p in paths:
                read(p)
            best[name] = min(best[name], (time.perf_counter() - start) / len(paths) * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=64, help="images of each kind")
    p.add_argument("--size", type=int, default=512, help="pixels square")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"{platform.processor() or platform.machine()}, {a.images} images {a.size}² a kind")
    print(
        f"{'kind':<16} {'gensyn ms':>10} {'pillow ms':>10} {'speed-up':>9} {'theirs ms':>10} {'pillow ms':>10} fast"
    )
    from gensyn.classify.data import load_image

    classifier_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, dtype in (("16-bit DRR", np.uint16), ("8-bit SyntheX", np.uint8)):
            ours, theirs = [], []
            for i in range(a.images):
                pixels = drr_like(a.size, dtype, i)
                ours.append(write_image(Path(tmp) / f"{name[:2]}_{i}.png", pixels, 1))
                theirs.append(Path(tmp) / f"{name[:2]}_{i}_pil.png")
                Image.fromarray(pixels).save(theirs[-1], compress_level=1)
                assert decode_png(ours[-1].read_bytes()) is not None  # the fast path
                assert np.array_equal(read_image(ours[-1]), pillow_read(ours[-1]))
                assert np.array_equal(read_image(theirs[-1]), pixels)
            g, pil = race({"gensyn": read_image, "pillow": pillow_read}, ours, a.repeats).values()
            other, other_pil = race({"gensyn": read_image, "pillow": pillow_read}, theirs, a.repeats).values()  # fmt: skip
            fast = sum(decode_png(t.read_bytes()) is not None for t in theirs)
            ours_load = lambda p: load_image(p, a.size)  # noqa: E731
            assert np.array_equal(ours_load(ours[0]), pillow_load_image(ours[0]))
            classifier_rows.append((name, *race({"gensyn": ours_load, "pillow": pillow_load_image}, ours, a.repeats).values()))  # fmt: skip
            print(
                f"{name:<16} {g:>10.3f} {pil:>10.3f} {pil / g:>8.2f}x {other:>10.3f} {other_pil:>10.3f} "
                f"{fast}/{len(theirs)}"
            )

    print(f"\nclassifier preprocessing (load_image at {a.size}²), ms an image")
    print(f"{'kind':<16} {'gensyn ms':>10} {'pillow ms':>10} {'speed-up':>9}")
    for name, g, pil in classifier_rows:
        print(f"{name:<16} {g:>10.3f} {pil:>10.3f} {pil / g:>8.2f}x")


if __name__ == "__main__":
    main()
