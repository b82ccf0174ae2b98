"""Real chest X-ray preparation: 8/16-bit PNGs, JPEGs, DICOMs of any size -> windowed, resized PNGs.

Per image: decode keeping the stored bit depth (PadChest: 16-bit PNG holding 12-bit
values; a DICOM through its own Modality and VOI LUT to a 16-bit display image,
gensyn.data.xray.dicom), invert ``MONOCHROME1`` images (bright air) so that bone is bright in every output,
resize to ``size_px`` (area averaging when shrinking, bilinear when enlarging; ``mode``
``squash`` stretches to a square like the original study, ``pad`` keeps the aspect ratio
and pads with black), window to the output range (``percentile``: the ``window_pct``
percentiles of the resized image map to 0 and full scale; ``minmax``; ``bits``: the whole
range of the stored bit depth, ``0 .. 2**bits - 1``) and write ``bit_depth`` PNG atomically.

:func:`prepare_many` streams: worker processes take paths, one result row at a time is
appended to a journal CSV, finished outputs are skipped on a re-run, and an unreadable image
becomes a row with ``status = failed`` and its reason instead of stopping the run. Memory
is bounded by ``workers`` images, not by the data set's size.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing import get_context
from pathlib import Path
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import numpy as np

from gensyn.base.bounds import bounded, check_instance
from gensyn.base.processes import init_worker

if TYPE_CHECKING:
    import pandas as pd


class XrayWindow(StrEnum):
    """What maps to black and full scale: the ``window_pct`` percentiles of the resized image,
    its minimum and maximum, or the whole range of the stored bit depth."""

    percentile = "percentile"
    minmax = "minmax"
    bits = "bits"


class ResizeMode(StrEnum):
    """``squash``: stretch to a square (the original study); ``pad``: keep the aspect ratio,
    pad with black."""

    squash = "squash"
    pad = "pad"


JOURNAL_FIELDS = (
    "image_id",
    "src",
    "dst",
    "status",
    "reason",
    "width_px",
    "height_px",
    "stored_bits",
    "window_lo",
    "window_hi",
)


@dataclass
class PrepOptions:
    """How to prepare images (see the module docstring): the ``dataset.xray`` group's image keys."""

    size_px: int = bounded(512, ge=8)  # output side length in pixels
    bit_depth: int = bounded(8, choices=(8, 16))  # of the output PNGs
    window: XrayWindow = XrayWindow.percentile  # percentile | minmax | bits
    window_pct: list[float] = bounded(
        factory=lambda: [0.5, 99.5], ge=0, le=100, length=2, order="<"
    )  # window=percentile: the percentiles mapped to black and full scale
    mode: ResizeMode = ResizeMode.squash  # squash (stretch to square, as the original) | pad

    def __post_init__(self) -> None:
        if self.window not in tuple(XrayWindow):
            raise ValueError(
                f"window={self.window!r}; allowed: {', '.join(str(w) for w in XrayWindow)}"
            )
        if self.mode not in tuple(ResizeMode):
            raise ValueError(
                f"mode={self.mode!r}; allowed: {', '.join(str(m) for m in ResizeMode)}"
            )
        check_instance(self, "dataset.xray.")


@dataclass(frozen=True)
class PrepJob:
    """One image: id, source path, destination path, invert (MONOCHROME1)."""

    image_id: str
    src: str
    dst: str
    invert: bool = False


def open_xray(path: str | os.PathLike[str]) -> Any:
    """Decode a grey-scale image into a PIL image of mode ``I;16`` (16-bit), ``L`` or ``I``.

    RGB(A) images keep their first channel (scanned films are stored as grey RGB). A DICOM
    becomes its displayed image (MONOCHROME1 inverted, VOI window applied) scaled to 16 bits,
    ``info["stored_bits"] = 16``. The pixels stay in PIL: converting a 2048² 16-bit image to
    numpy costs more than resizing it, so only the small resized image is converted. Raises
    ValueError naming the file.
    """
    from PIL import Image

    from gensyn.data.xray.dicom import is_dicom, read_dicom_xray

    if is_dicom(path):
        display = np.rint(read_dicom_xray(path) * 65535).astype(np.uint16)
        im: Any = Image.fromarray(display)
        im.info["stored_bits"] = 16  # the display image fills the 16-bit range
        if min(im.size) < 2:
            raise ValueError(f"cannot read image {path}: size {im.size} is not a 2-D image")
        return im
    try:
        im = Image.open(path)
        im.load()
        if im.mode in ("I;16B", "I;16L"):
            im = im.convert("I;16")
        elif im.mode in ("RGB", "RGBA", "LA"):
            im = im.getchannel(0)
        elif im.mode == "P":
            im = im.convert("L")
        elif im.mode not in ("I;16", "I", "L"):
            raise ValueError(f"unsupported image mode {im.mode}")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if min(im.size) < 2:
        raise ValueError(f"cannot read image {path}: size {im.size} is not a 2-D image")
    return im


def read_xray(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a grey-scale image keeping its bit depth -> 2-D uint8 or uint16 array."""
    im = open_xray(path)
    arr = np.asarray(im)
    return (
        arr.clip(0, 65535).astype(np.uint16)
        if im.mode == "I"
        else arr.astype(np.uint16 if im.mode == "I;16" else np.uint8, copy=False)
    )


def bits_for(max_value: float) -> int:
    """Smallest of 8, 10, 12, 14, 16 bits that holds ``max_value``."""
    return next((b for b in (8, 10, 12, 14) if max_value < 2**b), 16)


def stored_bits(image: np.ndarray) -> int:
    """Smallest of 8, 10, 12, 14, 16 bits that holds the image's maximum value."""
    return bits_for(float(image.max()))


def _target(width: int, height: int, size_px: int, mode: str) -> tuple[int, int]:
    if mode == "squash":
        return size_px, size_px
    scale = size_px / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pad(small: np.ndarray, size_px: int) -> np.ndarray:
    canvas = np.zeros((size_px, size_px), np.float32)
    top, left = (size_px - small.shape[0]) // 2, (size_px - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return canvas


def resize_image(im: Any, size_px: int, mode: str = "squash") -> np.ndarray:
    """Resize a PIL grey image to ``size_px`` square, float32 (area average when shrinking;
    ``pad`` keeps the aspect ratio and pads with 0)."""
    from PIL import Image

    target = _target(im.size[0], im.size[1], size_px, mode)
    shrink = target[0] <= im.size[0] and target[1] <= im.size[1]
    filt = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    if not shrink and im.mode == "I;16":  # PIL interpolates I;16 with nearest only
        im = im.convert("I")
    small = np.asarray(im.resize(target, filt), dtype=np.float32)
    return _pad(small, size_px) if mode == "pad" else small


def resize(image: np.ndarray, size_px: int, mode: str = "squash") -> np.ndarray:
    """Resize a 2-D array to ``size_px`` square, float32 (area average when shrinking)."""
    from PIL import Image

    return resize_image(
        Image.fromarray(np.asarray(image, dtype=np.float32), mode="F"), size_px, mode
    )


def window_limits(
    image: np.ndarray, options: PrepOptions, bits: int, valid: np.ndarray | None = None
) -> tuple[float, float]:
    """The input values that map to black and full white."""
    values = image if valid is None else image[valid]
    if options.window == "bits":
        return 0.0, float(2**bits - 1)
    if options.window == "minmax":
        return float(values.min()), float(values.max())
    lo, hi = np.percentile(values, options.window_pct)
    return float(lo), float(hi)


def prepare_image(job: PrepJob, options: PrepOptions) -> dict[str, Any]:
    """Prepare one image (see module docstring); returns its journal row. Never raises for a
    bad image: the row then has ``status = failed`` and the reason."""
    from gensyn.base.io import to_uint, write_image

    row: dict[str, Any] = {
        "image_id": job.image_id,
        "src": job.src,
        "dst": job.dst,
        "status": "ok",
        "reason": "",
    }
    try:
        im = open_xray(job.src)
        bits = int(im.info.get("stored_bits") or bits_for(float(im.getextrema()[1])))
        row.update(width_px=im.size[0], height_px=im.size[1], stored_bits=bits)
        small = resize_image(im, options.size_px, options.mode)
        valid = None
        if options.mode == "pad":
            w, h = _target(im.size[0], im.size[1], options.size_px, "pad")
            valid = _pad(np.ones((h, w), np.float32), options.size_px) > 0.5
        lo, hi = window_limits(small, options, bits, valid)
        out = to_uint(small, options.bit_depth, lo, hi)
        if job.invert:
            top = 255 if options.bit_depth == 8 else 65535
            out = (top - out).astype(out.dtype)
            if valid is not None:
                out[~valid] = 0
        row.update(window_lo=round(lo, 3), window_hi=round(hi, 3))
        write_image(job.dst, out, compress_level=1)  # 5x faster than level 6
    except (ValueError, OSError, MemoryError) as exc:
        row.update(status="failed", reason=str(exc))
    return row


def _work(args: tuple[PrepJob, PrepOptions]) -> dict[str, Any]:
    return prepare_image(*args)


def read_journal(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Rows of an earlier (possibly killed) run by image id; torn last lines are ignored."""
    rows: dict[str, dict[str, str]] = {}
    p = Path(path)
    if not p.is_file():
        return rows
    with open(p, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            if rec.get("image_id") and rec.get("window_hi") is not None and None not in rec:
                rows[rec["image_id"]] = rec
    return rows


def prepare_many(
    jobs: Iterable[PrepJob],
    options: PrepOptions,
    journal: str | os.PathLike[str],
    *,
    workers: int = 1,
    progress: bool = True,
    total: int | None = None,
    chunksize: int = 8,
) -> Iterator[dict[str, Any]]:
    """Prepare images in ``workers`` processes, appending each result row to ``journal``.

    Jobs whose output exists and whose journal row says ``ok`` are skipped (their old row is
    yielded again); failed images are retried. Yields one row per job as results arrive.
    """
    from tqdm.auto import tqdm

    done = read_journal(journal)
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    new_file = not journal.is_file() or journal.stat().st_size == 0
    if not new_file:  # cut a torn last line so appended rows start on a fresh line
        with open(journal, "rb+") as raw_fh:
            raw_fh.seek(0, os.SEEK_END)
            size = raw_fh.tell()
            raw_fh.seek(max(0, size - 1))
            if raw_fh.read(1) != b"\n":
                raw_fh.write(b"\n")

    # Pool.imap consumes todo() in its own thread: skipped rows travel through a queue.
    skipped: SimpleQueue[dict[str, Any]] = SimpleQueue()

    def todo() -> Iterator[tuple[PrepJob, PrepOptions]]:
        for job in jobs:
            old = done.get(job.image_id)
            if old and old.get("status") == "ok" and Path(job.dst).is_file():
                skipped.put(old)
                continue
            yield job, options

    def drain() -> Iterator[dict[str, Any]]:
        while not skipped.empty():
            bar.update(1)
            yield skipped.get()

    bar = tqdm(total=total, unit="img", disable=not progress, desc="prepare_xrays")
    with open(journal, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=JOURNAL_FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        pool = (
            get_context("spawn").Pool(workers, init_worker, (os.getpid(),)) if workers > 1 else None
        )
        try:
            results = pool.imap(_work, todo(), chunksize=chunksize) if pool else map(_work, todo())
            for row in results:
                writer.writerow(row)
                fh.flush()
                bar.update(1)
                yield from drain()
                yield row
            yield from drain()
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()


def prepare_table(
    table: pd.DataFrame,
    sources: list[str | None],
    out_dir: str | os.PathLike[str],
    options: PrepOptions,
    journal: str | os.PathLike[str],
    workers: int = 1,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Prepare the images of a label table: (the rows prepared, with ``width_px``,
    ``height_px`` and ``stored_bits`` of the source; one ``image_id, file, reason`` row per
    image that failed).

    ``table`` has ``image_id``, ``path`` (the output, relative to ``out_dir``) and optionally
    ``photometric`` (``MONOCHROME1`` images are inverted); ``sources[i]`` is row i's file, or
    None where it was not found (left out, not reported: the caller lists those).
    Streams through :func:`prepare_many` (resumable through ``journal``).
    """
    invert = (
        table["photometric"].astype(str).eq("MONOCHROME1").tolist()
        if "photometric" in table.columns
        else [False] * len(table)
    )
    ids = table["image_id"].astype(str).tolist()
    dsts = [str(Path(out_dir) / p) for p in table["path"].astype(str)]
    jobs = (
        PrepJob(ids[i], src, dsts[i], bool(invert[i]))
        for i, src in enumerate(sources)
        if src is not None
    )
    status: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    total = sum(src is not None for src in sources)
    for row in prepare_many(jobs, options, journal, workers=workers, total=total):
        status[str(row["image_id"])] = row
        if row["status"] != "ok":
            failed.append(
                {"image_id": row["image_id"], "file": row["src"], "reason": row["reason"]}
            )
    ok = table["image_id"].astype(str).map(lambda i: status.get(i, {}).get("status") == "ok")
    table = table[ok].reset_index(drop=True)
    for col in ("width_px", "height_px", "stored_bits"):
        table[col] = [status[str(i)].get(col) for i in table["image_id"]]
    return table, failed


def locate_images(relpaths: Iterable[str], image_root: str | os.PathLike[str]) -> list[str | None]:
    """Absolute paths of images listed relative to ``image_root``; None where absent.

    A relpath that does not exist as given is looked up by file name anywhere below the
    root (ChestX-ray14 lists bare names but ships them in ``images_001/images/`` ...); the
    folder tree is walked once, only if needed.
    """
    root = Path(image_root)
    index: dict[str, str] | None = None
    out: list[str | None] = []
    for rel in relpaths:
        direct = root / rel
        if direct.is_file():
            out.append(str(direct))
            continue
        if index is None:
            index = {}
            for folder, _, names in os.walk(root):
                for name in names:
                    index.setdefault(name, os.path.join(folder, name))
        out.append(index.get(Path(rel).name))
    return out


def contact_sheet(
    paths: list[str], tile_px: int = 128, columns: int = 4, title: str = ""
) -> np.ndarray:
    """A uint8 grid of up to ``columns``² prepared images (for reports), ``title`` above it."""
    from gensyn.base.io import read_image

    paths = paths[: columns * columns]
    rows = max(1, -(-len(paths) // columns))
    sheet = np.zeros((rows * tile_px, columns * tile_px), np.uint8)
    for n, path in enumerate(paths):
        img = resize(read_image(path).astype(np.float32), tile_px)
        top = float(img.max()) or 1.0
        r, c = divmod(n, columns)
        sheet[r * tile_px : (r + 1) * tile_px, c * tile_px : (c + 1) * tile_px] = np.clip(
            img / top * 255, 0, 255
        ).astype(np.uint8)
    from gensyn.base.io import with_column_titles

    return with_column_titles(sheet, [title] if title else [])
