"""PNG encoding (gensyn.base.io.encode_png / write_image): checked against Pillow's decoder."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gensyn.base.io import encode_png, png_complete, read_image, write_image


def _smooth(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """A DRR-like image: a smooth field plus a little noise, over the dtype's full range."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    field = np.sin(x / 37.0) * np.cos(y / 23.0) + 0.02 * rng.standard_normal((h, w))
    top = np.iinfo(dtype).max
    img = ((field - field.min()) / (np.ptp(field) or 1.0) * top).astype(dtype)
    return np.repeat(img[..., None], shape[2], axis=2) if len(shape) == 3 else img


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as pil:
        pil.load()
        mode, arr = pil.mode, np.array(pil)
    return arr.astype(np.uint16) if mode.startswith("I") else arr


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1, 1), np.uint8), ((1, 7), np.uint16), ((9, 1), np.uint8), ((33, 65), np.uint16),
     ((40, 31, 3), np.uint8)],
)  # fmt: skip
def test_png_decodes_to_the_same_pixels_in_pillow(
    shape: tuple[int, ...], dtype: type, level: int
) -> None:
    rng = np.random.default_rng(level)
    img = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)  # every byte value
    data = encode_png(img, level)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = _pillow_decode(data)
    assert back.dtype == img.dtype and back.shape == img.shape
    np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_is_as_small_as_pillows_and_level_0_stores(dtype: type) -> None:
    img = _smooth((256, 256), dtype)
    ours = {lv: len(encode_png(img, lv)) for lv in (0, 1, 6)}
    pil = {}
    for lv in (1, 6):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=lv)
        pil[lv] = len(buf.getvalue())
    # Pillow picks a filter per row; Up on every row costs up to ~15 % here
    assert ours[1] <= 1.1 * pil[1] and ours[6] <= 1.2 * pil[6], (ours, pil)
    raw = img.nbytes + img.shape[0]  # samples plus one filter byte a row
    assert raw < ours[0] < raw + 200  # stored blocks: only headers added
    assert ours[1] < 0.9 * raw


def test_write_image_png_is_deterministic_and_read_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    img = _smooth((64, 48), np.uint16, seed=3)
    a = write_image(tmp_path / "a.png", img, 1)
    b = write_image(tmp_path / "b.png", img.copy(), 1)
    assert a.read_bytes() == b.read_bytes()
    np.testing.assert_array_equal(read_image(a), img)
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize(
    ("image", "level", "match"),
    [
        (np.zeros((4, 4), np.float32), 1, "uint8 or uint16"),
        (np.zeros((4, 4, 4), np.uint8), 1, "H×W or H×W×3"),
        (np.zeros((4, 4, 3), np.uint16), 1, "H×W or H×W×3"),
        (np.zeros((0, 4), np.uint8), 1, "empty"),
        (np.zeros((4, 4), np.uint8), 10, "0 .. 9"),
    ],
)
def test_bad_png_input_is_refused_with_the_reason(tmp_path, image, level, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        encode_png(image, level)
    with pytest.raises(ValueError, match=r"bad\.png"):
        write_image(tmp_path / "bad.png", image, level)
    assert not (tmp_path / "bad.png").exists()


def test_png_complete_tells_whole_pngs_from_cut_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What a resumed stage checks before skipping an output written without fsync: whole
    PNGs (ours and Pillow's) pass; cut, empty, missing and non-PNG files do not."""
    ours = write_image(tmp_path / "a.png", np.arange(64 * 48, dtype=np.uint16).reshape(64, 48), 1)
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(tmp_path / "pil.png")
    whole = ours.read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:-1])
    (tmp_path / "half.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"not a png" + whole[-12:] * 4)
    assert png_complete(ours) and png_complete(tmp_path / "pil.png")
    for name in ("cut", "half", "empty", "text", "missing"):
        assert not png_complete(tmp_path / f"{name}.png"), name


def test_writer_threads_keep_the_umask_and_file_modes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Many threads writing at once (durable or not): the process's umask is unchanged and
    every file has the usual mode (0666 minus the umask); no temporary file is left."""
    import os
    import stat
    from concurrent.futures import ThreadPoolExecutor

    before = os.umask(0o022)
    os.umask(before)
    image = np.zeros((16, 16), np.uint8)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda i: write_image(tmp_path / f"{i}.png", image, 1, i % 2 == 0), range(200))
        )
    after = os.umask(0o022)
    os.umask(after)
    assert after == before
    from gensyn.base.io import _UMASK

    modes = {stat.S_IMODE((tmp_path / f"{i}.png").stat().st_mode) for i in range(200)}
    assert modes == {0o666 & ~_UMASK}
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def _png_with_filters(pixels: np.ndarray, filters: np.ndarray, colour: int) -> bytes:
    """A PNG whose row ``r`` is stored with PNG filter ``filters[r]`` (0 None, 1 Sub, 2 Up,
    3 Average, 4 Paeth), filtered byte by byte in plain Python as the PNG specification
    states: the reference the vectorised decoder is checked against (with Pillow's)."""
    h = pixels.shape[0]
    data = np.ascontiguousarray(pixels, pixels.dtype.newbyteorder(">")).view(np.uint8)
    data = data.reshape(h, -1).astype(int)
    bpp = pixels.itemsize * (3 if colour == 2 else 1)
    out = bytearray()
    for r in range(h):
        out.append(int(filters[r]))
        for x in range(data.shape[1]):
            a = data[r, x - bpp] if x >= bpp else 0
            b = data[r - 1, x] if r else 0
            c = data[r - 1, x - bpp] if r and x >= bpp else 0
            p = a + b - c
            paeth = min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]
            pred = [0, a, b, (a + b) // 2, paeth][int(filters[r])]
            out.append((data[r, x] - pred) % 256)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    head = struct.pack(">IIBBBBB", pixels.shape[1], h, 8 * pixels.itemsize, colour, 0, 0, 0)
    ihdr, idat, iend = chunk(b"IHDR", head), chunk(b"IDAT", zlib.compress(bytes(out))), chunk(b"IEND", b"")  # fmt: skip
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + iend


@pytest.mark.parametrize(
    ("shape", "dtype", "colour"),
    [((23, 17), np.uint8, 0), ((19, 21), np.uint16, 0), ((15, 13, 3), np.uint8, 2), ((1, 1), np.uint16, 0)],
)  # fmt: skip
def test_fast_png_decoder_undoes_none_sub_and_up_as_pillow_does(
    shape: tuple[int, ...], dtype: type, colour: int
) -> None:
    from gensyn.base.io import decode_png

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    mixed = rng.integers(0, 3, shape[0])
    mixed[0] = 2  # a first row filtered "Up": encode_png's mark, the files the fast path takes
    for filters in (mixed, np.full(shape[0], 2)):  # runs of None, Sub, Up; Up alone as we write
        data = _png_with_filters(pixels, filters, colour)
        np.testing.assert_array_equal(_pillow_decode(data), pixels)  # the reference is right
        fast = decode_png(data)
        assert fast is not None and fast.dtype == pixels.dtype
        np.testing.assert_array_equal(fast, pixels)
    # other writers' files go to Pillow: a first row None or Sub (as libpng and Pillow write
    # it), Average or Paeth rows further down; read_image still gives the pixels
    others = [np.full(shape[0], 1), np.resize([0, 2, 1], shape[0]), np.resize([2, 3, 4], shape[0])]
    for filters in others[: 3 if shape[0] > 1 else 2]:
        data = _png_with_filters(pixels, filters, colour)
        assert decode_png(data) is None
        np.testing.assert_array_equal(_pillow_decode(data), pixels)


def test_read_image_decodes_every_png_it_wrote_and_others_pillow_wrote(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gensyn.base.io import decode_png

    for i, (shape, dtype) in enumerate([((64, 48), np.uint8), ((64, 48), np.uint16), ((30, 20, 3), np.uint8)]):  # fmt: skip
        pixels = _smooth(shape, dtype, seed=i)
        ours = write_image(tmp_path / f"ours{i}.png", pixels, 1)
        assert decode_png(ours.read_bytes()) is not None  # the fast path
        np.testing.assert_array_equal(read_image(ours), pixels)
        theirs = tmp_path / f"theirs{i}.png"  # Pillow's adaptive filters (Paeth among them)
        Image.fromarray(pixels).save(theirs, optimize=True)
        np.testing.assert_array_equal(read_image(theirs), pixels)
    palette = tmp_path / "palette.png"
    Image.fromarray(_smooth((16, 16), np.uint8)).convert("P").save(palette)
    assert decode_png(palette.read_bytes()) is None
    np.testing.assert_array_equal(read_image(palette), _pillow_decode(palette.read_bytes()))


def test_damaged_pngs_are_refused_by_the_fast_decoder_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = encode_png(_smooth((40, 40), np.uint16), 1)
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 10] ^= 0xFF  # a byte of the compressed data: the chunk's CRC no longer holds
    body = b"\x78\x01" + bytes(range(7, 250))  # a zlib header, then no valid deflate stream
    garbage = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))  # fmt: skip
    short = zlib.compress(b"\x02" + bytes(80))  # one row of 40 16-bit pixels, not 40 rows
    short_idat = struct.pack(">I", len(short)) + b"IDAT" + short + struct.pack(">I", zlib.crc32(b"IDAT" + short))  # fmt: skip
    (length,) = struct.unpack(">I", good[idat - 4 : idat])
    cases = {
        "garbage": (good[: idat - 4] + garbage + good[idat + 8 + length :], "do not inflate"),
        "short": (good[: idat - 4] + short_idat + good[idat + 8 + length :], "not 40 rows of 81"),
        "cut": (good[: len(good) // 2], "cut or damaged"),
        "cut_in_crc": (good[: idat + 4 + length + 2], "cut or damaged"),
        "empty": (good[:16] + bytes(4) + good[20:], "empty image"),
        "flipped": (bytes(flipped), "cut or damaged"),
        "no_end": (good[: -12], "ends before its IEND"),
    }  # fmt: skip
    for name, (data, match) in cases.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=match):
            read_image(path)
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "missing.png")
