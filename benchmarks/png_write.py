"""Lossless 16-bit PNG encoders on DRRs: images/s on 1 and 2 threads, MB a file, pixels kept.

The drr stage writes 512² 16-bit PNGs (``gensyn.base.io.encode_png``: PNG's "Up" row filter in
numpy, deflated by ISA-L). This script renders a few such DRRs of the chest phantom of
``benchmarks/stages.py`` (512 × 512 × 300 voxels, 16-bit windowing as the stage does) and
encodes them with GENSYN's encoder at levels 0, 1 and 6 and with the peers that are
importable: Pillow, OpenCV (compression 1 with its default, RLE and Huffman-only
strategies), imagecodecs (libpng, libspng; the "Up" rows deflated by libdeflate and
zlib-ng), pypng. Each encoder's files are decoded back (``gensyn.base.io.decode_png``, else
Pillow) and compared with the pixels. The 2-thread rate against the 1-thread rate shows
whether the encoder releases the GIL (≈ 2 where it does and two cores are free); ``cpu``
is the process's CPU seconds per wall second.

    python benchmarks/png_write.py                 # the peers: requirements/peers.txt
    python benchmarks/png_write.py --views 4 --seconds 1
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Encoder = Callable[[np.ndarray], bytes]


def drrs(n_views: int) -> np.ndarray:
    """``n_views`` 512² 16-bit DRRs of the phantom CT (grid poses -25..25 degrees)."""
    from stages import chest_phantom, grid_angles_deg  # benchmarks/stages.py

    from gensyn.drr import pose_set
    from gensyn.drr.geometry import make_geometry
    from gensyn.drr.render import DrrRenderer, PhysicsConfig, to_images

    hu, affine = chest_phantom((512, 512, 300), (0.7, 0.7, 1.0), 0)
    views = pose_set("grid", grid_angles_deg(11), grid_angles_deg(11))
    poses = [v.pose for v in views][:: max(1, len(views) // n_views)][:n_views]
    geometry = make_geometry("mobile_carm", 512, None, None, None, 1.0)
    renderer = DrrRenderer(hu, affine, PhysicsConfig(output="line_integral"), "cpu")
    return to_images(renderer.render(poses, geometry, as_tensor=True), 16)


def _up_rows(image: np.ndarray) -> np.ndarray:
    """The PNG rows of a 16-bit grey image, each "Up"-filtered (as ``encode_png``)."""
    h = image.shape[0]
    data = np.ascontiguousarray(image, dtype=">u2").view(np.uint8).reshape(h, -1)
    rows = np.empty((h, data.shape[1] + 1), np.uint8)
    rows[:, 0] = 2
    rows[0, 1:] = data[0]
    np.subtract(data[1:], data[:-1], out=rows[1:, 1:])
    return rows


def _png(image: np.ndarray, idat: bytes) -> bytes:
    """A 16-bit grey PNG file around deflated rows ``idat``."""
    from gensyn.base.io import PNG_SIGNATURE

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(body, zlib.crc32(kind))
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    h, w = image.shape
    header = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoders() -> dict[str, Encoder]:
    """Every encoder importable here, by name."""
    from PIL import Image

    from gensyn.base.io import encode_png

    def pillow(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    found: dict[str, Encoder] = {
        "gensyn level 1 (Up + ISA-L, the stage's)": lambda a: encode_png(a, 1),
        "gensyn level 0 (stored)": lambda a: encode_png(a, 0),
        "gensyn level 6 (Up + zlib)": lambda a: encode_png(a, 6),
        "Pillow compress_level 1": pillow,
    }
    try:
        import cv2

        cv2.setNumThreads(1)
        level = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        strategy = cv2.IMWRITE_PNG_STRATEGY
        up = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
        found |= {
            "OpenCV 1": lambda a: cv2.imencode(".png", a, level)[1].tobytes(),
            "OpenCV 1 RLE": lambda a: cv2.imencode(
                ".png", a, [*level, strategy, cv2.IMWRITE_PNG_STRATEGY_RLE]
            )[1].tobytes(),
            "OpenCV 1 Up Huffman-only": lambda a: cv2.imencode(
                ".png", a, [*level, strategy, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY, *up]
            )[1].tobytes(),
        }
    except ImportError:
        pass
    try:
        import imagecodecs

        found |= {
            "imagecodecs libpng 1 RLE Sub": lambda a: imagecodecs.png_encode(
                a, level=1, strategy=3, filter=16
            ),
            "imagecodecs libspng 1": lambda a: imagecodecs.spng_encode(a, level=1),
            "Up + libdeflate 1": lambda a: _png(a, imagecodecs.deflate_encode(_up_rows(a), 1)),
            "Up + zlib-ng 1": lambda a: _png(a, imagecodecs.zlibng_encode(_up_rows(a), 1)),
        }
    except ImportError:
        pass
    try:
        import png

        def pypng(a: np.ndarray) -> bytes:
            buf = io.BytesIO()
            writer = png.Writer(a.shape[1], a.shape[0], greyscale=True, bitdepth=16, compression=1)
            writer.write(buf, a)
            return buf.getvalue()

        found["pypng 1"] = pypng
    except ImportError:
        pass
    return found


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    from gensyn.base.io import decode_png

    fast = decode_png(data)
    return fast if fast is not None else np.asarray(Image.open(io.BytesIO(data))).astype(np.uint16)


def rate(fn: Encoder, images: np.ndarray, threads: int, seconds: float) -> tuple[float, float]:
    """(images/s, CPU s per wall s) of ``threads`` threads encoding for ``seconds``."""

    def work(k: int) -> int:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(images[(k + n) % len(images)])
            n += 1
        return n

    cpu, start = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(work, range(threads)))
    wall = time.perf_counter() - start
    return done / wall, (time.process_time() - cpu) / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=8, help="DRRs to encode (rendered on the CPU)")
    p.add_argument("--seconds", type=float, default=1.5, help="per encoder and thread count")
    a = p.parse_args()
    images = drrs(a.views)
    print(f"{'encoder':<42} {'MB':>6} {'same':>5} {'1 thr/s':>8} {'cpu':>5} {'2 thr/s':>8} "
          f"{'cpu':>5} {'2/1':>5}")  # fmt: skip
    for name, fn in encoders().items():
        files = [fn(image) for image in images]
        same = all(np.array_equal(decode(f), i) for f, i in zip(files, images, strict=True))
        mb = float(np.mean([len(f) for f in files])) / 1e6
        one = max(rate(fn, images, 1, a.seconds) for _ in range(2))
        two = max(rate(fn, images, 2, a.seconds) for _ in range(2))
        print(
            f"{name:<42} {mb:6.3f} {'yes' if same else 'NO':>5} {one[0]:8.0f} {one[1]:5.2f} "
            f"{two[0]:8.0f} {two[1]:5.2f} {two[0] / one[0]:5.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
