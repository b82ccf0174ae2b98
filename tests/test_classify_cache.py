"""The decode-once image cache: same images as decoding, keyed against staleness, atomic."""

from __future__ import annotations

import os

import numpy as np
import pytest
from classify_fakes import FINDINGS, make_xray_set
from PIL import Image

from gensyn.base import io
from gensyn.classify import cache as image_cache
from gensyn.classify.data import BatchStream, load_image
from gensyn.classify.models import ModelSpec
from gensyn.classify.train import TrainSettings, train_classifier


def _pngs(folder, n, size_px=40, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (size_px, size_px), dtype=np.uint8)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("decode", ["threads", "processes"])
def test_cache_holds_load_image_and_is_reused(tmp_path, decode):
    paths = _pngs(tmp_path / "png", 70)  # more than one writing chunk (64)
    first = image_cache.open_or_build(tmp_path / "c", paths[::-1], 24, 2, decode)
    assert first.written and first.paths == tuple(sorted(paths))
    assert first.images.shape == (70, 24, 24, 1) and isinstance(first.images, np.memmap)
    for path in paths:
        np.testing.assert_array_equal(first.images[first.row(path)], load_image(path, 24))
    again = image_cache.open_or_build(tmp_path / "c", paths, 24)
    assert not again.written and again.file == first.file
    assert image_cache.describe([again])["image_cache"] == "used"
    assert first.nbytes == again.nbytes > 70 * 24 * 24
    # nothing but the cache, its note and the lock: no temporary file left behind
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == sorted([first.file.name, first.file.stem + ".json", f".{first.file.stem}.lock"])


def test_changed_set_size_or_file_gives_a_new_cache(tmp_path):
    paths = _pngs(tmp_path / "png", 6)
    base = image_cache.open_or_build(tmp_path / "c", paths, 16)
    assert image_cache.open_or_build(tmp_path / "c", paths[:5], 16).file != base.file
    assert image_cache.open_or_build(tmp_path / "c", paths, 20).file != base.file
    # an image rewritten in place (same name): a new key, and the new content is cached
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(paths[2])
    os.utime(paths[2], ns=(1, 1))  # a different modification time even on a coarse clock
    fresh = image_cache.open_or_build(tmp_path / "c", paths, 16)
    assert fresh.written and fresh.file != base.file
    assert not fresh.images[fresh.row(paths[2])].any()  # constant image -> zeros
    with pytest.raises(FileNotFoundError):
        image_cache.cache_key([str(tmp_path / "missing.png")], 16)


def test_killed_or_failed_writer_leaves_nothing_that_is_trusted(tmp_path):
    paths = _pngs(tmp_path / "png", 5)
    folder = tmp_path / "c"
    key = image_cache.cache_key(sorted(paths), 16)
    final = folder / f"{key}.npy"
    folder.mkdir()
    # what a writer killed mid-way leaves: a temporary file with a header and zero rows
    leftover = folder / f".{final.name}.abc123.partial.npy"
    np.lib.format.open_memmap(leftover, mode="w+", dtype=np.uint8, shape=(5, 16, 16, 1)).flush()
    # and a cache file cut short (e.g. copied in part): not a complete .npy
    final.write_bytes(b"\x93NUMPY truncated")
    built = image_cache.open_or_build(folder, paths, 16)
    assert built.written and built.file == final and not leftover.exists()
    np.testing.assert_array_equal(built.images[0], load_image(sorted(paths)[0], 16))

    # an unreadable image fails the build and leaves no cache and no temporary file
    (tmp_path / "png" / "bad.png").write_bytes(b"not a png")
    bad_set = [*paths, str(tmp_path / "png" / "bad.png")]
    with pytest.raises(ValueError, match=r"bad\.png"):
        image_cache.open_or_build(tmp_path / "d", bad_set, 16)
    assert not [p for p in (tmp_path / "d").iterdir() if p.suffix == ".npy"]


@pytest.mark.parametrize("decode", ["threads", "processes"])
def test_stream_from_cache_gives_the_decoded_batches(tmp_path, decode):
    paths = _pngs(tmp_path / "png", 30)
    labels = np.random.default_rng(0).random((30, 3)).astype(np.float32)
    # the cache holds some of the stream's files (and others): the rest are decoded
    cached = image_cache.open_or_build(tmp_path / "c", [*paths[:20], *_pngs(tmp_path / "o", 3)], 24)
    kw = dict(shuffle=True, seed=3, drop_remainder=True, num_workers=2, augment=True)
    plain = BatchStream(paths, labels, 8, 24, decode=decode, **kw)
    fast = BatchStream(paths, labels, 8, 24, decode=decode, cache=[cached], **kw)
    assert fast.n_cached == 20 and plain.n_cached == 0
    got = list(fast.window(0, 7))  # across epoch boundaries: new orders and augmentations
    want = list(plain.window(0, 7))
    for (xa, ya), (xb, yb) in zip(got, want, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="24 px"):
        BatchStream(paths, labels, 8, 32, cache=[cached])


def test_training_from_cache_gives_the_same_metrics(tmp_path):
    table = make_xray_set(tmp_path / "xr", n_patients=40, size_px=32, seed=2)
    tr, va = table[table.split == "train"], table[table.split == "test"]
    spec = ModelSpec("small_cnn", image_size_px=24, widths=(8, 16))
    settings = TrainSettings(
        epochs=2, batch_size=8, learning_rate=3e-3, num_workers=2, seed=4, augment=True
    )
    caches = [image_cache.open_or_build(tmp_path / "c", [*tr.path, *va.path], 24)]

    def run(out, cache):
        return train_classifier(
            spec, list(tr.path), tr[FINDINGS].to_numpy(), list(va.path),
            va[FINDINGS].to_numpy(), out, settings, FINDINGS, cache=cache,
        ).history  # fmt: skip

    for a, b in zip(run(tmp_path / "a", ()), run(tmp_path / "b", caches), strict=True):
        assert a["loss"] == b["loss"] and a["val_macro_auc"] == b["val_macro_auc"]


def test_stage_writes_then_reuses_the_cache_under_the_work_dir(compose, gensyn_root):
    from test_classify_stages import _fake_upstreams

    from gensyn.core.runs import execute, run_dir

    _fake_upstreams(compose, gensyn_root)
    first = io.read_json(execute(compose("profile=tiny"), "classify") / "summary.json")
    assert first["image_cache"] == "written"
    assert first["image_cache_images"] == first["n_train_real"] + first["n_val"]
    (real_file,) = first["image_cache_files"]
    assert real_file.startswith(str(gensyn_root / "workdir" / "cache" / "classify" / "images"))
    assert any((gensyn_root / "workdir" / "cache" / "classify" / "jax").iterdir())
    # another arm: the real images' cache is found, the synthetic images get their own
    drr = io.read_json(
        execute(compose("profile=tiny", "sampling=drr_2"), "classify") / "summary.json"
    )
    assert drr["image_cache"] == "written" and drr["image_cache_files"][0] == real_file
    assert drr["image_cache_images"] == first["image_cache_images"] + drr["n_train_synthetic"]
    other_fold = compose("profile=tiny", "split_idx=1")
    assert io.read_json(execute(other_fold, "classify") / "summary.json")["image_cache"] == "used"

    # off: the same run folder (the cache changes no result), decoding every epoch
    off = compose("profile=tiny", "split_idx=2", "classifier.cache=off")
    assert run_dir(off, "classify") == run_dir(compose("profile=tiny", "split_idx=2"), "classify")
    assert io.read_json(execute(off, "classify") / "summary.json")["image_cache"] == "off"


def test_auto_copies_a_wholly_cached_unaugmented_stream_with_threads(tmp_path):
    """Prediction of a cached test set: ``decode=auto`` starts no worker processes for what
    is only copying rows, and the batches are the decoded ones; anything left to decode or
    augment keeps the processes."""
    from gensyn.classify.data import AUTO_PROCESS_WORKERS

    paths = _pngs(tmp_path / "png", 11)
    cached = image_cache.open_or_build(tmp_path / "c", paths, 24)
    kw = dict(num_workers=AUTO_PROCESS_WORKERS, decode="auto")
    copies = BatchStream(paths, None, 4, 24, cache=[cached], **kw)
    assert copies.n_cached == 11 and not copies.uses_processes
    plain = BatchStream(paths, None, 4, 24, **kw)
    assert plain.uses_processes
    for a, b in zip(list(copies), list(plain), strict=True):
        np.testing.assert_array_equal(a, b)
    assert BatchStream(paths, None, 4, 24, cache=[cached], augment=True, **kw).uses_processes
    part = image_cache.open_or_build(tmp_path / "c", paths[:5], 24)
    assert BatchStream(paths, None, 4, 24, cache=[part], **kw).uses_processes
    forced = BatchStream(paths, None, 4, 24, cache=[cached], num_workers=2, decode="processes")
    assert forced.uses_processes


@pytest.mark.parametrize("decode", ["threads", "processes"])
def test_prediction_writes_the_cache_as_it_decodes(tmp_path, decode):
    """The first prediction of a set decodes each file once, for the model and into the cache:
    the same probabilities as from the files, the same cache as ``open_or_build`` writes (a
    path twice, in any order), and a later prediction reads it."""
    from gensyn.classify.models import build_model
    from gensyn.classify.predict import predict_and_cache, predict_paths

    paths = _pngs(tmp_path / "png", 23)
    order = [*paths[::-1], paths[3]]  # not sorted, one path twice, a short last batch
    model = build_model(ModelSpec("small_cnn", image_size_px=24, widths=(4, 8), n_classes=3))
    want = predict_paths(model, order, 24, batch_size=8, num_workers=2, decode=decode)
    probs, cache = predict_and_cache(model, order, 24, tmp_path / "c", 8, 2, 2, decode)
    np.testing.assert_allclose(probs, want, rtol=1e-6, atol=1e-7)
    assert cache.written and cache.paths == tuple(sorted(paths))
    built = image_cache.open_or_build(tmp_path / "ref", paths, 24)
    np.testing.assert_array_equal(np.asarray(cache.images), np.asarray(built.images))
    assert (tmp_path / "c" / f"{cache.file.stem}.json").is_file()
    again, reused = predict_and_cache(model, paths, 24, tmp_path / "c", 8, 2, 2, decode)
    assert not reused.written and reused.file == cache.file
    np.testing.assert_allclose(again, want[:-1][::-1], rtol=1e-6, atol=1e-7)


def test_prediction_that_fails_leaves_no_cache(tmp_path):
    from gensyn.classify.models import build_model
    from gensyn.classify.predict import predict_and_cache

    paths = _pngs(tmp_path / "png", 12)
    bad = tmp_path / "png" / "img005.png"
    bad.write_bytes(bad.read_bytes()[:200])  # cut short: fails mid-way through the set
    model = build_model(ModelSpec("small_cnn", image_size_px=24, widths=(4, 8), n_classes=3))
    with pytest.raises(ValueError, match=r"img005\.png"):
        predict_and_cache(model, paths, 24, tmp_path / "c", 4, 2, 2, "threads")
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix == ".npy"]
    with pytest.raises(FileNotFoundError):  # a missing file: no key, nothing written
        predict_and_cache(model, [*paths, str(tmp_path / "gone.png")], 24, tmp_path / "c")


def test_a_failed_write_into_the_new_cache_fails_the_prediction(tmp_path, monkeypatch):
    """The copies into a new cache run on writer threads: one that fails stops the prediction
    with its error, leaves no cache file and no writer thread behind."""
    import contextlib
    import threading

    from gensyn.classify.models import build_model
    from gensyn.classify.predict import predict_and_cache

    real_writing = image_cache.writing

    @contextlib.contextmanager
    def read_only_rows(folder, paths, size_px):
        with real_writing(folder, paths, size_px) as pending:
            view = pending.images.view()
            view.flags.writeable = False  # every copy into it raises on the writer thread
            pending.images = view
            yield pending

    monkeypatch.setattr(image_cache, "writing", read_only_rows)
    paths = _pngs(tmp_path / "png", 20)
    model = build_model(ModelSpec("small_cnn", image_size_px=24, widths=(4, 8), n_classes=3))
    with pytest.raises(ValueError, match="read-only"):
        predict_and_cache(model, paths, 24, tmp_path / "c", 4, 2, 2, "threads")
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix == ".npy"]
    assert not [t for t in threading.enumerate() if t.name.startswith("cache-write")]
