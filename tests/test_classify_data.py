"""The one preprocessing function and the streaming batches."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gensyn.classify import data


def test_load_image_8bit_matches_hand_computed_stretch(tmp_path):
    img = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16) // 4 + 10  # values 10..73
    Image.fromarray(img).save(tmp_path / "a.png")
    out = data.load_image(tmp_path / "a.png", 16)
    expected = np.round((img.astype(float) - 10) * 255 / 63).astype(np.uint8)
    assert out.shape == (16, 16, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], expected)


def test_load_image_16bit_keeps_precision_and_resizes(tmp_path):
    # a 16-bit ramp whose whole range is 1000..1255: an early cast to 8 bit would flatten it
    ramp = (1000 + np.tile(np.arange(256), (64, 1))).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "b.png")
    out = data.load_image(tmp_path / "b.png", 32)[..., 0]
    assert out.shape == (32, 32)
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out[0].astype(int)) >= 0).all() and len(np.unique(out[0])) == 32
    # same as PIL's float resize followed by the stretch
    ref = np.asarray(Image.fromarray(ramp.astype(np.float32)).resize((32, 32), Image.BILINEAR))
    ref = np.floor((ref - ref.min()) * 255 / (ref.max() - ref.min()) + 0.5)
    np.testing.assert_array_equal(out, ref.astype(np.uint8))


def test_load_image_rgb_constant_and_broken(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = data.load_image(tmp_path / "c.png", 8)[..., 0]
    assert set(np.unique(out)) == {0, 255}
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "d.png")
    assert not data.load_image(tmp_path / "d.png", 8).any()
    (tmp_path / "e.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"e\.png"):
        data.load_image(tmp_path / "e.png", 8)


def _through_pillow(path, size):  # type: ignore[no-untyped-def]
    """load_image as Pillow alone computes it (what it did before GENSYN decoded its own PNGs)."""
    with Image.open(path) as pil:
        pil = pil.convert("F") if pil.mode.startswith(("I", "F")) else pil.convert("L")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(pil)
    lo, hi = arr.min(), arr.max()
    scaled = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (float(hi) - float(lo)))
    return (scaled + 0.5).astype(np.uint8)[..., None]


@pytest.mark.parametrize(
    ("shape", "dtype", "size"),
    [((48, 48), np.uint8, 48), ((48, 40), np.uint8, 32), ((48, 48), np.uint16, 48),
     ((40, 48), np.uint16, 64), ((24, 24, 3), np.uint8, 24), ((24, 24, 3), np.uint8, 16)],
)  # fmt: skip
def test_load_image_of_pngs_gensyn_wrote_equals_pillows(tmp_path, shape, dtype, size):  # type: ignore[no-untyped-def]
    from gensyn.base.io import decode_png, write_image

    rng = np.random.default_rng(sum(shape) + size)
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    path = write_image(tmp_path / "x.png", pixels, 1)
    assert decode_png(path.read_bytes()) is not None  # decoded by numpy in load_image
    np.testing.assert_array_equal(data.load_image(path, size), _through_pillow(path, size))


def _pngs(tmp_path, n):
    paths = []
    for i in range(n):
        arr = np.zeros((8, 8), np.uint8)
        arr[0, 0], arr[1, 1] = 255, i  # pixel (1,1) identifies the image after stretching
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    return paths


def _ids(batch_images):
    return [int(v) for v in batch_images[:, 1, 1, 0]]


def test_batch_stream_order_shuffle_and_remainder(tmp_path):
    paths = _pngs(tmp_path, 23)
    labels = np.arange(23, dtype=float)[:, None].repeat(5, axis=1)
    plain = data.BatchStream(paths, labels, 5, 8, shuffle=False, num_workers=2)
    batches = list(plain)
    assert len(plain) == 5 and [b[0].shape[0] for b in batches] == [5, 5, 5, 5, 3]
    assert np.concatenate([b[1][:, 0] for b in batches]).tolist() == list(range(23))
    assert [i for b in batches for i in _ids(b[0])] == list(range(23))

    shuffled = data.BatchStream(paths, labels, 5, 8, shuffle=True, seed=3, drop_remainder=True)
    e0 = np.concatenate([b[1][:, 0] for b in shuffled])
    assert len(e0) == 20 and len(set(e0)) == 20
    np.testing.assert_array_equal(e0, np.concatenate([b[1][:, 0] for b in shuffled]))
    shuffled.set_epoch(1)
    e1 = np.concatenate([b[1][:, 0] for b in shuffled])
    assert not np.array_equal(e0, e1)
    # images stay with their labels through the shuffle
    for images, lab in shuffled:
        assert _ids(images) == lab[:, 0].astype(int).tolist()


def test_batch_stream_bounds_batches_in_flight(tmp_path):
    paths = _pngs(tmp_path, 40)
    stream = data.BatchStream(paths, None, 2, 8, num_workers=2, prefetch_batches=3)
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    original = stream._load_batch

    def counting(*args):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            return original(*args)
        finally:
            with lock:
                state["now"] -= 1

    stream._load_batch = counting  # type: ignore[method-assign]
    consumed = 0
    for _ in stream:
        consumed += 1
        threading.Event().wait(0.005)  # a slow consumer: the producer must not run ahead
    assert consumed == 20 and state["max"] <= 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="label rows"):
        data.BatchStream(["a", "b"], np.zeros((3, 5)), 1, 8)
    with pytest.raises(ValueError, match="batch_size"):
        data.BatchStream(["a"], None, 0, 8)


def test_augmentation_is_seeded_training_only_and_keeps_content():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 16, 16, 1)).astype(np.uint8)
    a = data.augment_batch(images, np.random.default_rng(1))
    b = data.augment_batch(images, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == images.shape and a.dtype == np.uint8 and not np.array_equal(a, images)
    # no shift and no contrast change is the identity
    same = data.augment_batch(images, np.random.default_rng(1), max_shift=0.0, contrast=0.0)
    np.testing.assert_array_equal(same, images)
    # a pure shift moves pixels: some row or column of the output equals a shifted input row
    shifted = data.augment_batch(images, np.random.default_rng(2), max_shift=0.25, contrast=0.0)
    for img, out in zip(images[..., 0], shifted[..., 0], strict=True):
        found = any(
            np.array_equal(
                out[max(0, dy) : 16 + min(0, dy), max(0, dx) : 16 + min(0, dx)],
                img[max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)],
            )
            for dy in range(-4, 5)
            for dx in range(-4, 5)
        )
        assert found


def test_stream_augments_only_when_asked(tmp_path):
    paths = _pngs(tmp_path, 8)
    plain = np.concatenate(list(data.BatchStream(paths, None, 4, 8)))
    aug = data.BatchStream(paths, None, 4, 8, augment=True, seed=0)
    first, again = np.concatenate(list(aug)), np.concatenate(list(aug))
    np.testing.assert_array_equal(first, again)  # same epoch, same augmentation
    assert not np.array_equal(first, plain)
    aug.set_epoch(1)
    assert not np.array_equal(np.concatenate(list(aug)), first)


def _shm_blocks() -> set[str]:
    from pathlib import Path

    return {p.name for p in Path("/dev/shm").glob("psm_*")}


def test_process_decoding_gives_the_thread_batches_and_frees_memory(tmp_path):
    paths = _pngs(tmp_path, 23)
    labels = np.arange(23, dtype=float)[:, None].repeat(5, axis=1)
    before = _shm_blocks()
    for augment, drop in ((False, False), (True, True)):
        kw = dict(shuffle=True, seed=4, num_workers=2, prefetch_batches=2, augment=augment)
        threads = data.BatchStream(paths, labels, 4, 8, drop_remainder=drop, decode="threads", **kw)
        procs = data.BatchStream(paths, labels, 4, 8, drop_remainder=drop, decode="processes", **kw)
        assert procs.uses_processes and not threads.uses_processes
        got_t, got_p = list(threads), list(procs)
        assert len(got_p) == len(got_t) == (5 if drop else 6)
        for (ti, tl), (pi, pl) in zip(got_t, got_p, strict=True):
            np.testing.assert_array_equal(ti, pi)
            np.testing.assert_array_equal(tl, pl)
            assert _ids(pi) == pl[:, 0].astype(int).tolist() or augment
    assert _shm_blocks() <= before  # the shared ring is unlinked after each epoch


def test_process_decoding_names_an_unreadable_file_and_frees_memory(tmp_path):
    paths = _pngs(tmp_path, 9)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    before = _shm_blocks()
    stream = data.BatchStream(
        [*paths, str(tmp_path / "broken.png")], None, 3, 8, num_workers=2, decode="processes"
    )
    with pytest.raises(ValueError, match=r"broken\.png"):
        list(stream)
    assert _shm_blocks() <= before


def test_decode_mode_auto_and_bad_mode():
    assert not data.BatchStream(["a"], None, 1, 8, num_workers=2).uses_processes
    assert data.BatchStream(["a"], None, 1, 8, num_workers=data.AUTO_PROCESS_WORKERS).uses_processes
    with pytest.raises(ValueError, match="decode"):
        data.BatchStream(["a"], None, 1, 8, decode="gpu")


@pytest.mark.parametrize("decode", ["threads", "processes"])
def test_window_continues_through_the_epochs(tmp_path, decode):
    """Global batch g is batch g % 4 of epoch g // 4 (23 images, batch 5, remainder dropped)."""
    paths = _pngs(tmp_path, 23)
    labels = np.arange(23, dtype=float)[:, None].repeat(5, axis=1)
    kw = dict(shuffle=True, seed=2, drop_remainder=True, augment=True, num_workers=2)
    stream = data.BatchStream(paths, labels, 5, 8, decode=decode, **kw)
    epochs = []
    for epoch in range(3):
        stream.set_epoch(epoch)
        epochs.extend(list(stream))
    assert len(epochs) == 12
    window = list(stream.window(3, 6))  # epoch 0's last batch, all of epoch 1, epoch 2's first
    assert len(window) == 6
    for (wi, wl), (ei, el) in zip(window, epochs[3:9], strict=True):
        np.testing.assert_array_equal(wi, ei)
        np.testing.assert_array_equal(wl, el)


def test_unreadable_images_are_checked_once_per_unchanged_file(tmp_path, monkeypatch):
    """A sweep's later runs do not read the same files again; a file that changes is."""
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths.append(str(tmp_path / "bad.png"))
    paths.append(str(tmp_path / "missing.png"))
    reads: list[str] = []
    real = data.image_problem
    monkeypatch.setattr(data, "image_problem", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(data, "_CHECKED", {})

    first = data.unreadable_images(paths, workers=2)
    assert sorted(first) == sorted(paths[-2:])
    assert first[paths[-2]].startswith(("UnidentifiedImageError", "OSError", "SyntaxError"))
    assert first[paths[-1]].startswith("FileNotFoundError")
    assert sorted(reads) == sorted(paths[:-1])  # a missing file is found by its stat
    reads.clear()
    assert data.unreadable_images(paths, workers=2) == first
    assert reads == []  # nothing read again
    # a good file truncated (another size and time) is read again and found unreadable
    good = Path(paths[0])
    good.write_bytes(good.read_bytes()[:20])
    os.utime(good, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = data.unreadable_images(paths, workers=2)
    assert reads == [paths[0]] and paths[0] in again


def test_a_readability_record_spares_other_processes_the_reads(tmp_path, monkeypatch):
    """What one process checked (a record beside the cache) another does not read again,
    unless the file changed; a damaged record is ignored, never trusted."""
    paths = []
    for i in range(5):
        path = tmp_path / f"{i},odd name.png"  # a comma: the record is a quoted CSV
        Image.fromarray(np.full((8, 8), i * 50, dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths.append(str(tmp_path / "bad.png"))
    record = tmp_path / "cache" / "readable.csv"
    reads: list[str] = []
    real = data.image_problem
    monkeypatch.setattr(data, "image_problem", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(data, "_CHECKED", {})
    monkeypatch.setattr(data, "_RECORDS_READ", {})

    first = data.unreadable_images(paths, workers=2, record=record)
    assert sorted(reads) == sorted(paths) and list(first) == [paths[-1]]
    assert record.is_file()

    def new_process() -> None:
        monkeypatch.setattr(data, "_CHECKED", {})
        monkeypatch.setattr(data, "_RECORDS_READ", {})
        reads.clear()

    new_process()
    assert data.unreadable_images(paths, workers=2, record=record) == first
    assert reads == []  # every answer, the bad file's reason included, came from the record
    # a changed file is read again, and the record learns its new state
    changed = Path(paths[1])
    changed.write_bytes(changed.read_bytes()[:20])
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    new_process()
    again = data.unreadable_images(paths, workers=2, record=record)
    assert reads == [paths[1]] and sorted(again) == sorted([paths[1], paths[-1]])
    new_process()
    assert data.unreadable_images(paths, workers=2, record=record) == again and reads == []
    # a damaged record: everything is checked again, the same answer
    record.write_text("path,size\n1,2,3,4\n")
    new_process()
    assert data.unreadable_images(paths, workers=2, record=record) == again
    assert sorted(reads) == sorted(paths)
