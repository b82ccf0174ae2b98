"""X-ray preparation: resize/window against numpy, bit depths, inversion, failures, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gensyn.base.io import read_image
from gensyn.data.xray.prep import (
    PrepJob,
    PrepOptions,
    prepare_image,
    prepare_many,
    prepare_table,
    read_journal,
    read_xray,
    stored_bits,
)


def _save16(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr.astype(np.uint16)).save(path)
    return path


def _gradient(h: int, w: int, top: int = 4095, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    return ((x / w * 0.6 + y / h * 0.4) * top * 0.9 + rng.integers(0, 50, (h, w))).astype(np.uint16)


def test_16bit_area_resize_and_percentile_window(tmp_path: Path) -> None:
    raw = _gradient(256, 128)
    src = _save16(tmp_path / "a.png", raw)
    assert read_xray(src).dtype == np.uint16 and stored_bits(raw) == 12
    row = prepare_image(
        PrepJob("a", str(src), str(tmp_path / "o" / "a.png")), PrepOptions(size_px=64)
    )
    out = read_image(tmp_path / "o" / "a.png")
    assert row["status"] == "ok" and out.shape == (64, 64) and out.dtype == np.uint8
    # independent answer: block means (4 x 2 blocks), then the 0.5 / 99.5 percentiles -> 0 / 255
    blocks = raw.astype(np.float64).reshape(64, 4, 64, 2).mean(axis=(1, 3))
    lo, hi = np.percentile(blocks, [0.5, 99.5])
    expected = np.round(np.clip((blocks - lo) / (hi - lo), 0, 1) * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert (row["width_px"], row["height_px"], row["stored_bits"]) == (128, 256, 12)


def test_bits_window_16bit_output_and_inversion(tmp_path: Path) -> None:
    raw = np.full((32, 32), 4095, np.uint16)
    raw[:16] = 1000
    src = _save16(tmp_path / "b.png", raw)
    opts = PrepOptions(size_px=16, window="bits", bit_depth=16)
    prepare_image(PrepJob("b", str(src), str(tmp_path / "b16.png")), opts)
    out = read_image(tmp_path / "b16.png")
    assert out.dtype == np.uint16
    assert out[0, 0] == round(1000 / 4095 * 65535) and out[-1, -1] == 65535
    prepare_image(
        PrepJob("b", str(src), str(tmp_path / "inv.png"), invert=True),
        PrepOptions(size_px=16, window="bits"),
    )
    inv = read_image(tmp_path / "inv.png")
    assert inv[-1, -1] == 0 and inv[0, 0] == 255 - round(1000 / 4095 * 255)


def test_pad_mode_keeps_aspect(tmp_path: Path) -> None:
    src = _save16(tmp_path / "w.png", np.full((50, 100), 3000, np.uint16))
    prepare_image(
        PrepJob("w", str(src), str(tmp_path / "p.png")),
        PrepOptions(size_px=20, mode="pad", window="bits"),
    )
    out = read_image(tmp_path / "p.png")
    assert out.shape == (20, 20)
    assert (out[:5] == 0).all() and (out[15:] == 0).all() and (out[5:15] > 0).all()


def test_8bit_and_rgb_inputs(tmp_path: Path) -> None:
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((40, 30, 3), np.uint8) + 7).convert("RGB").save(tmp_path / "c.jpg")
    assert read_xray(tmp_path / "g.png").dtype == np.uint8
    assert read_xray(tmp_path / "c.jpg").shape == (40, 30)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="allowed: percentile, minmax, bits"):
        PrepOptions(window="auto")
    with pytest.raises(ValueError, match="allowed: squash, pad"):
        PrepOptions(mode="crop")


def _jobs(tmp_path: Path, n: int) -> list[PrepJob]:
    jobs = []
    for i in range(n):
        src = (
            _save16(tmp_path / "in" / f"{i}.png", _gradient(80, 60, seed=i))
            if i != 2
            else tmp_path / "in" / "2.png"
        )
        jobs.append(PrepJob(str(i), str(src), str(tmp_path / "out" / f"{i}.png")))
    return jobs


@pytest.mark.parametrize("workers", [1, 2])
def test_unreadable_images_are_listed_and_skipped(tmp_path: Path, workers: int) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    jobs = _jobs(tmp_path, 5)
    trunc = Path(jobs[4].src)
    trunc.write_bytes(trunc.read_bytes()[:200])  # truncated PNG
    rows = list(
        prepare_many(
            jobs, PrepOptions(size_px=32), tmp_path / "journal.csv", workers=workers, progress=False
        )
    )
    status = {r["image_id"]: r["status"] for r in rows}
    assert status == {"0": "ok", "1": "ok", "2": "failed", "3": "ok", "4": "failed"}
    failed = {r["image_id"]: r["reason"] for r in rows if r["status"] == "failed"}
    assert "2.png" in failed["2"] and "4.png" in failed["4"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "3.png"]


def test_resume_skips_finished_images_and_survives_torn_journal(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    jobs = _jobs(tmp_path, 6)
    _save16(Path(jobs[2].src), _gradient(80, 60, seed=2))
    journal = tmp_path / "journal.csv"
    list(prepare_many(jobs[:4], PrepOptions(size_px=32), journal, progress=False))
    with open(journal, "a") as fh:  # a run killed while writing a line
        fh.write("5,/in/5.png,/out/5.p")
    (tmp_path / "out" / "1.png").unlink()  # lost output: redone
    mtime = (tmp_path / "out" / "0.png").stat().st_mtime_ns
    rows = list(prepare_many(jobs, PrepOptions(size_px=32), journal, progress=False))
    assert sorted(r["image_id"] for r in rows) == [str(i) for i in range(6)]
    assert all(r["status"] == "ok" for r in rows)
    assert (tmp_path / "out" / "0.png").stat().st_mtime_ns == mtime
    assert sorted(read_journal(journal)) == [str(i) for i in range(6)]
    with open(journal) as fh:
        lines = fh.read().splitlines()
    assert len([ln for ln in lines if ln.startswith("1,")]) == 2  # redone once
    assert len([ln for ln in lines if ln.startswith("0,")]) == 1  # not redone


def test_locate_images_direct_and_by_name(tmp_path: Path) -> None:
    from gensyn.data.xray.prep import locate_images

    (tmp_path / "0").mkdir()
    (tmp_path / "images_002" / "images").mkdir(parents=True)
    (tmp_path / "0" / "a.png").write_bytes(b"a")
    (tmp_path / "images_002" / "images" / "00000013_005.png").write_bytes(b"b")
    got = locate_images(["0/a.png", "00000013_005.png", "missing.png"], tmp_path)
    assert got == [
        str(tmp_path / "0" / "a.png"),
        str(tmp_path / "images_002" / "images" / "00000013_005.png"),
        None,
    ]


def test_prepare_table_keeps_the_prepared_rows_with_their_source_size(tmp_path: Path) -> None:
    """A listed image whose file was not found is left out silently (the caller lists it),
    a broken one is returned as failed; MONOCHROME1 rows are inverted; the prepared rows keep
    their order and gain the source's size and bit depth."""
    (tmp_path / "in").mkdir()
    gradient = _gradient(40, 30)
    a = _save16(tmp_path / "in" / "a.png", gradient)
    b = _save16(tmp_path / "in" / "b.png", gradient)
    broken = tmp_path / "in" / "c.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    table = pd.DataFrame(
        {
            "image_id": ["a", "missing", "b", "c"],
            "path": ["images/a.png", "images/missing.png", "images/b.png", "images/c.png"],
            "photometric": ["MONOCHROME2", "", "MONOCHROME1", ""],
        }
    )
    sources = [str(a), None, str(b), str(broken)]
    options = PrepOptions(size_px=16, window="bits")
    done, failed = prepare_table(table, sources, tmp_path, options, tmp_path / "journal.csv")
    assert list(done["image_id"]) == ["a", "b"]
    assert list(done["width_px"]) == [30, 30] and list(done["height_px"]) == [40, 40]
    assert [f["image_id"] for f in failed] == ["c"] and failed[0]["file"] == str(broken)
    out_a, out_b = (read_image(tmp_path / p) for p in done["path"])
    # the same source, once inverted: the two outputs add up to full scale everywhere
    full = np.iinfo(out_a.dtype).max
    np.testing.assert_array_equal(out_a.astype(int) + out_b.astype(int), full)
    assert not (tmp_path / "images" / "missing.png").exists()
