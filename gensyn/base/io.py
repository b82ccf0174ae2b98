"""The one place for writing and reading files: atomic writes, images, tables, JSON.

Every file a stage produces goes through :func:`atomic_write`, so a killed process never
leaves a file that looks complete: data is written to a temporary file in the same folder
and renamed into place (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PARTIAL_SUFFIX = ".partial"


def _read_umask() -> int:
    """The process's umask (reading it means setting it: done once, at import, before any
    writer thread runs; setting and restoring it per file raced between threads)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    Temporary files carry the suffix ``.partial`` (``*.partial`` files are never outputs).
    ``durable``: the file's data reaches the disk (fsync) before the rename, so it survives
    a crash of the machine too. Writers of many files pass False and make them durable
    together once (``os.sync()``): a disk commits only some hundred fsyncs a second (~370 on
    an H200 host), which set the pace of a stage writing thousands of images; a killed
    process loses nothing either way (the page cache outlives it).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX + final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give outputs the usual permissions (0666 minus umask) so
    # results on shared cluster storage are readable by the group as any other file.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: The first 8 bytes of every PNG.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The last 12 bytes of every PNG: the empty IEND chunk (length, type, CRC).
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def png_complete(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PNG file that ends as PNGs end (its IEND chunk): what a resumed
    stage checks before skipping an output that was written without fsync, since a machine
    that crashed before the data reached the disk can leave a renamed file empty or cut."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(0, os.SEEK_END)
            if fh.tell() < 8 + 25 + 12 or head != PNG_SIGNATURE:
                return False
            fh.seek(-12, os.SEEK_END)
            return fh.read(12) == PNG_END
    except OSError:
        return False


def unwritable_reason(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` cannot be created or written into, or None if it can.

    Looks at the nearest existing folder on the way up and creates nothing.
    """
    path = Path(folder).absolute()
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                return f"{existing} is a file, not a folder"
            if not os.access(existing, os.W_OK | os.X_OK):
                return f"{existing} is not writable"
            return None
    return None


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically (UTF-8) and return the path."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; numpy scalars and paths are converted."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        raise TypeError(f"cannot serialise {type(o).__name__} to JSON")

    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 hex digest of a file's bytes, or None when there is no such file.

    Kept per (path, size, modification time) for the process: config hashes ask often.
    """
    import hashlib

    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(path: str | os.PathLike[str], table: Any) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def read_table(path: str | os.PathLike[str]) -> Any:
    """Read a CSV table written by :func:`write_table` into a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(path)


def to_uint(
    image: np.ndarray, bit_depth: int = 8, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Scale a float image linearly from [vmin, vmax] (default: its min/max) to uint8/uint16.

    Values outside the window are clipped. A constant image maps to 0.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    img = np.asarray(image, dtype=np.float64)
    lo = float(np.min(img)) if vmin is None else float(vmin)
    hi = float(np.max(img)) if vmax is None else float(vmax)
    top = 255 if bit_depth == 8 else 65535
    scaled = np.zeros_like(img) if hi <= lo else (np.clip(img, lo, hi) - lo) / (hi - lo)
    return np.round(scaled * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def _is_rgb(arr: np.ndarray, who: str) -> bool:
    """True for an H×W×3 uint8 array, False for an H×W uint8/uint16 one; else ValueError."""
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{who} expects uint8 or uint16 pixels, got {arr.dtype}; use to_uint()")
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return True
    if arr.ndim == 2:
        return False
    raise ValueError(f"{who} expects H×W or H×W×3 uint8 arrays, got shape {arr.shape}")


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """A grey-scale (H×W uint8 or uint16) or RGB (H×W×3 uint8) array as PNG file bytes.

    Every row is stored with PNG's "Up" filter (each byte minus the byte above it, computed
    by numpy), then deflated. ``compress_level`` is zlib's scale: 0 stores the rows
    uncompressed; 1-3 deflate with ISA-L (level 1), about 10x faster than Pillow's level 1
    and as small (a 512² 16-bit DRR: ~1.5 ms instead of ~17 ms, both ~395 kB;
    benchmarks/stages.py measures both); 4-9 deflate with zlib at that level, for smaller
    files at Pillow's speed. Only the IHDR, IDAT and IEND chunks are written, so identical
    pixels give identical bytes; any PNG reader decodes them (tests compare with Pillow's).
    """
    import struct
    import zlib

    from isal import isal_zlib

    arr = np.asarray(image)
    colour = 2 if _is_rgb(arr, "encode_png") else 0  # PNG colour types: truecolour, grey
    if not 0 <= int(compress_level) <= 9:
        raise ValueError(f"compress_level must be 0 .. 9, got {compress_level}")
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"encode_png got an empty image of shape {arr.shape}")
    # PNG stores samples big-endian, rows as bytes: (H, W·channels·bytes per sample)
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).view(np.uint8)
    data = data.reshape(h, -1)
    rows = np.empty((h, data.shape[1] + 1), np.uint8)
    rows[:, 0] = 2  # filter type "Up"
    rows[0, 1:] = data[0]  # the first row's "above" is zero
    np.subtract(data[1:], data[:-1], out=rows[1:, 1:])  # mod 256, as PNG's filter is
    level = int(compress_level)
    flat = rows.reshape(-1).data  # the bytes, no copy
    idat = isal_zlib.compress(flat, 1) if 1 <= level <= 3 else zlib.compress(flat, level)

    def chunk(kind: bytes, body: bytes) -> bytes:
        # ISA-L's CRC-32 (the same checksum): ~0.006 ms a 400 kB chunk, zlib's ~0.1 ms
        crc = isal_zlib.crc32(body, isal_zlib.crc32(kind))
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8 * arr.itemsize, colour, 0, 0, 0)
    return b"".join(
        (PNG_SIGNATURE, chunk(b"IHDR", header), chunk(b"IDAT", idat), chunk(b"IEND", b""))
    )


def write_image(
    path: str | os.PathLike[str], image: np.ndarray, compress_level: int = 6, durable: bool = True
) -> Path:
    """Write a 2-D uint8 or uint16 array as a grey-scale PNG (or an RGB uint8 H×W×3) atomically.

    PNGs are encoded by :func:`encode_png` (``compress_level`` 0-9 as zlib's); ``.jpg`` and
    ``.tif`` by Pillow. No metadata (text chunks, timestamps) is written, so identical pixels
    give identical files. ``durable``: as for :func:`atomic_write`.
    """
    arr = np.asarray(image)
    suffix = Path(path).suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        suffix
    )
    if fmt is None:
        raise ValueError(f"unsupported image suffix {suffix!r} for {path}; use .png, .jpg or .tif")
    if fmt == "PNG":
        try:
            encoded = encode_png(arr, compress_level)
        except ValueError as exc:
            raise ValueError(f"write_image {path}: {exc}") from exc
        with atomic_write(path, durable) as tmp:
            tmp.write_bytes(encoded)
        return Path(path)
    from PIL import Image

    pil = Image.fromarray(arr, mode="RGB") if _is_rgb(arr, "write_image") else Image.fromarray(arr)
    with atomic_write(path, durable) as tmp:
        pil.save(tmp, format=fmt)
    return Path(path)


#: PNG colour types the fast reader decodes, with their samples per pixel: grey, RGB
_FAST_COLOURS = {0: 1, 2: 3}
#: Rows the fast reader inflates before it looks at their filters (a file it must hand to
#: Pillow costs it this much, not a whole inflate)
_PEEK_ROWS = 8


def decode_png(data: bytes) -> np.ndarray | None:
    """The pixels of a PNG file's bytes by numpy, or None where Pillow must decode it.

    The fast path takes the files this project writes (:func:`encode_png`: every row
    "Up"-filtered): 8- or 16-bit grey or 8-bit RGB, not interlaced, the first row
    "Up"-filtered and the others None, Sub or Up. ISA-L checks and inflates the image data,
    numpy undoes the filters (Sub: a cumulative sum along the row; Up: each row plus the one
    above): ~1.3x faster than Pillow on a 512² 16-bit DRR, ~1.4x on an 8-bit image
    (``benchmarks/png_read.py``). Other files give None, cheaply: their header or first rows
    show it (other writers filter the first row with None or Sub); one whose first row is
    "Up" but a later one Average or Paeth costs a wasted inflate. A damaged file (a bad chunk
    checksum, a cut or corrupt data stream, a size that does not add up) raises ValueError.
    """
    import struct

    from isal import isal_zlib

    if data[:8] != PNG_SIGNATURE or len(data) < 8 + 25 or data[12:16] != b"IHDR":
        return None
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if w == 0 or h == 0:
        raise ValueError(f"PNG header gives an empty image ({w}×{h})")
    samples = _FAST_COLOURS.get(colour)
    if samples is None or interlace or depth not in (8, 16) or (depth == 16 and colour != 0):
        return None
    idat, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(crc) != 4 or isal_zlib.crc32(body, isal_zlib.crc32(kind)) != int.from_bytes(crc):
            raise ValueError(f"PNG chunk {kind!r} at byte {pos} is cut or damaged")
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind == b"PLTE" or kind == b"tRNS":  # a palette or transparency: Pillow's job
            return None
        pos += 12 + length
    else:
        raise ValueError("PNG file ends before its IEND chunk")
    bpp = samples * depth // 8  # bytes a pixel: how far back "Sub" looks
    stride = w * bpp
    inflater = isal_zlib.decompressobj()
    inflate_error: Any = isal_zlib.error  # typed as an instance in isal's stubs
    # the first rows alone decide: a first row filtered "Up" (the same as None there) is
    # encode_png's mark, other writers (libpng, Pillow) pick None or Sub for it and Average or
    # Paeth further down, which would cost a wasted inflate before Pillow decodes again
    try:
        head = inflater.decompress(b"".join(idat), _PEEK_ROWS * (stride + 1))
        if head[:1] != b"\x02" or any(f > 2 for f in head[:: stride + 1]):
            return None
        raw = head + inflater.decompress(inflater.unconsumed_tail) + inflater.flush()
    except inflate_error as exc:
        raise ValueError(f"PNG image data do not inflate: {exc}") from exc
    if len(raw) != h * (stride + 1) or not inflater.eof:
        raise ValueError(f"PNG image data hold {len(raw)} bytes, not {h} rows of {stride + 1}")
    rows = np.frombuffer(raw, np.uint8).reshape(h, stride + 1)
    filters = rows[:, 0]
    if int(filters.max(initial=0)) > 2:  # Average or Paeth further down
        return None
    pixels = rows[:, 1:].copy()
    sub = filters == 1
    if sub.any():  # each byte plus the reconstructed byte one pixel to its left
        lanes = pixels[sub].reshape(-1, w, bpp)
        pixels[sub] = np.cumsum(lanes, axis=1, dtype=np.uint8).reshape(-1, stride)
    for r in np.flatnonzero(filters[1:] == 2) + 1:  # row 0 ("Up" on zeros) is as stored
        np.add(pixels[r - 1], pixels[r], out=pixels[r])  # row by row: 4x a cumsum down rows
    if depth == 16:
        return pixels.view(">u2").astype(np.uint16).reshape(h, w)
    return pixels.reshape(h, w, 3) if colour == 2 else pixels


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into a numpy array, keeping its bit depth (8 or 16 bit grey, or RGB).

    PNGs that :func:`decode_png` covers (every PNG this project writes) are decoded by
    numpy; every other file and format by Pillow.
    """
    import io as _io

    from PIL import Image

    try:
        data = Path(path).read_bytes()
        fast = decode_png(data)
        if fast is not None:
            return fast
        with Image.open(_io.BytesIO(data)) as pil:
            arr = np.array(pil)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if arr.dtype == np.int32:  # PIL mode "I" for 16-bit PNGs
        arr = arr.astype(np.uint16)
    return arr


def read_nifti(
    path: str | os.PathLike[str], dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume (HU for CTs) and its 4×4 voxel-to-world affine (RAS, mm).

    ``dtype``: the voxels' type (default float32); ``None`` keeps the type stored in the file
    when its values need no scaling (e.g. int16 HU, half of float32's bytes to move to a GPU
    and no cast on the CPU), and gives float32 for a scaled file.
    A missing, truncated or corrupt file raises ``ValueError`` naming the file and the cause.
    """
    import zlib

    import nibabel as nib
    from isal import igzip, isal_zlib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError
    from nibabel.wrapstruct import WrapStructError

    isal_error: Any = isal_zlib.error  # typed as an instance in isal's stubs
    try:
        if not str(path).endswith(".gz"):
            img: Any = nib.load(path)
            plain = img.dataobj
            if dtype is None and (float(plain.slope), float(plain.inter)) == (1.0, 0.0):
                return np.asarray(plain), np.asarray(img.affine)
            return np.asarray(plain, dtype=dtype or np.float32), np.asarray(img.affine)
        # ISA-L inflates ~2x faster than Python's gzip and releases the GIL, so loader threads
        # read CTs in parallel (through Python's gzip module 16 threads were no faster than
        # one on an H200 host); the voxels are inflated straight into their array (no copy
        # of a 150 MB buffer: ~20 % less time a CT than reading the bytes, then copying).
        # The compressed file is read whole first and inflated from memory: a file stream
        # refills ISA-L's 128 KiB input buffer ~700 times a CT, retaking the GIL each time,
        # and beside a busy thread (a stage's main thread) each retake can wait for Python's
        # 5 ms switch interval: 3.6x slower reading (benchmarks/nifti_read.py)
        whole = getattr(isal_zlib, "_GzipReader", None)  # python-isal's C reader
        if whole is None:
            with igzip.open(path, "rb") as gz:
                return _inflate_nifti(gz, dtype)
        with open(path, "rb") as fh:
            packed = fh.read()
        return _inflate_nifti(whole(packed), dtype)
    except (
        OSError, EOFError, ValueError, TypeError, zlib.error, isal_error, ImageFileError,
        HeaderDataError, WrapStructError,
    ) as exc:  # fmt: skip
        raise ValueError(f"cannot read NIfTI {path}: {type(exc).__name__}: {exc}") from exc


def _inflate_nifti(gz: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine of the NIfTI-1 stream ``gz`` (an open gzip reader), read into place.

    The header (and any extensions up to ``vox_offset``) is parsed by nibabel; the voxels
    are read straight into a Fortran-ordered array of the stored type, then scaled as
    nibabel scales them (``scl_slope``/``scl_inter``; a slope of 0 or NaN means unscaled).
    """
    import io as _io

    import nibabel as nib

    head = gz.read(352)
    if len(head) < 348:
        raise EOFError(f"header truncated ({len(head)} of 348 bytes)")
    offset = int(nib.Nifti1Header(binaryblock=head[:348], check=True)["vox_offset"])
    if offset > len(head):  # extensions lie between the header and the voxels
        head += gz.read(offset - len(head))
    header = nib.Nifti1Header.from_fileobj(_io.BytesIO(head), check=True)
    shape, stored = header.get_data_shape(), header.get_data_dtype()
    voxels = np.empty(shape, dtype=stored, order="F")
    flat = voxels.ravel(order="K").view(np.uint8)  # the array's own bytes, in file order
    got = 0
    while got < flat.size:
        n = gz.readinto(flat[got:])
        if not n:
            raise EOFError(f"voxel data truncated: {got} of {flat.size} bytes")
        got += n
    if not stored.isnative:
        voxels = voxels.astype(stored.newbyteorder("="))
    slope, inter = header.get_slope_inter()
    affine = np.asarray(header.get_best_affine())
    if slope is not None and (float(slope), float(inter or 0.0)) != (1.0, 0.0):  # scaled
        out = voxels.astype(dtype or np.float32)
        out *= out.dtype.type(slope)
        out += out.dtype.type(inter or 0.0)
        return out, affine
    return (voxels if dtype is None else voxels.astype(dtype)), affine


def write_nifti(path: str | os.PathLike[str], volume: np.ndarray, affine: np.ndarray) -> Path:
    """Write a volume with its 4×4 voxel-to-world (RAS, mm) affine as NIfTI atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    name = Path(path).name
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path must end in .nii or .nii.gz: {path}")
    with atomic_write(path) as tmp:
        if name.endswith(".gz"):
            # ISA-L's gzip (level 1) writes the same format ~3x faster than zlib. The gzip
            # header gets no file name and time stamp 0 (by default it holds the temporary
            # file's name and the time): the same volume gives the same bytes.
            from isal import igzip

            with (
                open(tmp, "wb") as raw,
                igzip.IGzipFile(
                    filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0
                ) as gz,
            ):
                img.to_file_map({"image": nib.FileHolder(fileobj=gz)})
        else:
            nib.save(img, tmp.with_name(tmp.name + ".nii"))
            os.replace(tmp.with_name(tmp.name + ".nii"), tmp)
    return Path(path)


def with_column_titles(grid: np.ndarray, titles: Sequence[str], font_px: int = 0) -> np.ndarray:
    """``grid`` (uint8, H x W) under a white header row with ``titles`` centred over equal columns.

    The header is ``font_px + 8`` pixels tall (``font_px`` 0: about a twentieth of the width,
    12 to 24 px), black text; the result is that much taller than ``grid``.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not titles:
        return grid
    width = grid.shape[1]
    size = font_px or int(np.clip(width // 20, 12, 24))
    font = ImageFont.load_default(size=size)
    header = Image.new("L", (width, size + 8), 255)
    draw = ImageDraw.Draw(header)
    column = width / len(titles)
    for j, title in enumerate(titles):
        draw.text(((j + 0.5) * column, 4), str(title), fill=0, font=font, anchor="ma")
    return np.concatenate([np.asarray(header, np.uint8), grid.astype(np.uint8)], axis=0)
