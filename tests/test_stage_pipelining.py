"""Pipelined stages: loaders ahead, writers behind, same output; time breakdown in the summary.

The ordered pipeline helpers of gensyn.base.pipeline_io; stage=drr with loader/writer threads gives
the same bytes as the sequential path and still lists an unreadable CT; stage=predict lists an
unreadable test image and predicts the others.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gensyn.base import io
from gensyn.base.pipeline_io import (
    TIME_PARTS,
    BackgroundWriter,
    InOrderSlots,
    SlotsClosed,
    StageTimer,
    frozen_heap,
    ordered_map,
)

# ---------------------------------------------------------------- pipeline_io


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_ordered_map_keeps_input_order_and_bounds_the_work_ahead(workers: int) -> None:
    started: list[int] = []
    lock = threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.02 * ((7 * i) % 5))  # later items often finish first
        return i * i

    consumed = 0
    for got in ordered_map(slow_square, range(20), workers, max_ahead=3):
        assert got == consumed * consumed
        consumed += 1
        with lock:  # never more than max_ahead items beyond the one being consumed
            assert len(started) <= consumed + (3 if workers else 0)
    assert consumed == 20 and sorted(started) == list(range(20))


@pytest.mark.parametrize("workers", [0, 3])
def test_ordered_map_raises_a_worker_error_at_its_turn(workers: int) -> None:
    def fail_on_three(i: int) -> int:
        if i == 3:
            raise KeyError(f"item {i}")
        return i

    got: list[int] = []
    with pytest.raises(KeyError, match="item 3"):
        for value in ordered_map(fail_on_three, range(10), workers):
            got.append(value)
    assert got == [0, 1, 2]


def test_ordered_map_closed_early_stops_its_threads() -> None:
    before = threading.active_count()
    results = ordered_map(lambda i: time.sleep(0.01) or i, range(100), 4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    results.close()
    assert threading.active_count() == before


def test_in_order_slots_admit_items_by_position_and_close_wakes_waiters() -> None:
    slots = InOrderSlots(2)
    slots.acquire(0)
    slots.acquire(1)
    admitted = threading.Event()
    waiter = threading.Thread(target=lambda: (slots.acquire(2), admitted.set()))
    waiter.start()
    assert not admitted.wait(0.1)  # item 2 waits for item 0 to be released
    slots.release()
    assert admitted.wait(2)
    waiter.join()
    errors: list[BaseException] = []

    def wait_for_5() -> None:
        try:
            slots.acquire(5)
        except SlotsClosed as exc:
            errors.append(exc)

    late = threading.Thread(target=wait_for_5)
    late.start()
    slots.close()
    late.join(2)
    assert not late.is_alive() and len(errors) == 1


def test_background_writer_runs_every_job_and_reraises_a_write_error(tmp_path: Path) -> None:
    timer = StageTimer()
    with BackgroundWriter(3, max_pending=2, timer=timer) as writer:
        for i in range(10):
            writer.submit(io.write_text, tmp_path / f"{i}.txt", str(i))
    assert sorted(int(p.stem) for p in tmp_path.glob("*.txt")) == list(range(10))

    def broken(_: int) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), BackgroundWriter(2) as writer:
        for i in range(10):
            writer.submit(broken, i)
    with pytest.raises(OSError, match="disk full"):  # inline (no threads): at once
        BackgroundWriter(0).submit(broken, 0)


class _Cycle:
    """An object that only the cyclic garbage collector frees (it refers to itself)."""

    def __init__(self, freed: list[str], name: str) -> None:
        self.me, self.freed, self.name = self, freed, name

    def __del__(self) -> None:
        self.freed.append(self.name)


def test_stage_timer_times_garbage_collections_from_any_thread() -> None:
    import gc

    timer, callbacks = StageTimer(), list(gc.callbacks)
    with timer.garbage_collections():
        gc.collect()
        worker = threading.Thread(target=gc.collect)
        worker.start()
        worker.join()
        inside = timer.seconds("gc")
        assert inside > 0
    gc.collect()  # after the block: not timed, and the callback is gone
    assert timer.seconds("gc") == inside and gc.callbacks == callbacks
    assert timer.summary(1, "images")["time_gc_s"] == round(inside, 3)


def test_frozen_heap_spares_older_objects_until_it_ends() -> None:
    import gc

    assert gc.get_freeze_count() == 0
    freed: list[str] = []
    _Cycle(freed, "old")  # garbage before the block: frozen with the rest
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        _Cycle(freed, "new")
        gc.collect()
        assert freed == ["new"]  # a new cycle is collected, the frozen one is not
        with frozen_heap():  # nested (someone else's freeze): left frozen at its end
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert freed == ["new", "old"]


def test_stage_timer_adds_parts_from_threads_and_reports_rates() -> None:
    timer = StageTimer()
    threads = [threading.Thread(target=timer.add, args=("read", 0.25)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with timer.time("compute"):
        time.sleep(0.05)
    assert list(timer.timed("wait_input", iter([1, 2]))) == [1, 2]
    keys = timer.summary(10, "images")
    assert keys["time_read_s"] == 1.0 and 0.05 <= keys["time_compute_s"] < 1.0
    assert keys["time_prepare_s"] == 0.0 and keys["time_write_s"] == 0.0
    assert "time_wait_input_s" in keys
    assert keys["images_per_s"] == pytest.approx(10 / keys["time_wall_s"], rel=0.05)
    assert "images_per_s_after_compile" not in keys  # nothing compiled
    with timer.time("compile"):
        time.sleep(0.05)
    keys = timer.summary(10, "images")
    steady = keys["time_wall_s"] - keys["time_compile_s"]
    assert keys["time_compile_s"] >= 0.05 and steady > 0
    assert keys["images_per_s_after_compile"] == pytest.approx(10 / steady, rel=0.05)
    assert keys["images_per_s_after_compile"] > keys["images_per_s"]
    assert "gpu_busy_fraction" not in keys  # no GPU time was timed
    timer.add("gpu", steady / 4)
    keys = timer.summary(10, "images")
    steady = keys["time_wall_s"] - keys["time_compile_s"]  # a little longer now
    assert keys["gpu_busy_fraction"] == pytest.approx(keys["time_gpu_s"] / steady, abs=0.01)
    assert 0 < keys["gpu_busy_fraction"] < 0.3  # a quarter at most (figures rounded to ms)
    timer.add("gpu", 10 * steady)  # more GPU seconds than wall seconds: capped at 1
    assert timer.summary(10, "images")["gpu_busy_fraction"] == 1.0
    timer.mark("first_batch")
    time.sleep(0.02)
    timer.mark("first_batch")  # only the first call counts
    keys = timer.summary(10, "images")
    assert 0 < keys["time_to_first_batch_s"] <= keys["time_wall_s"] - 0.02


# ---------------------------------------------------------------- stage=drr


def _phantom_ct(seed: int, shape=(36, 32, 28), spacing=(6.0, 6.0, 7.0)):
    """Water ellipsoid with a bone rod placed by ``seed`` (HU, int16) and its affine."""
    rng = np.random.default_rng(seed)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    xyz = (ijk - (np.asarray(shape) - 1) / 2) * np.asarray(spacing)
    hu = np.full(shape, -1000.0, np.float32)
    hu[((xyz / [100.0, 75.0, 90.0]) ** 2).sum(-1) < 1] = 40.0
    x0 = rng.uniform(-60, 60)
    hu[(xyz[..., 0] - x0) ** 2 + xyz[..., 1] ** 2 < 12**2] = 900.0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return hu.astype(np.int16), affine


def _convert_dir(folder: Path, n_cts: int, broken: int | None = None) -> Path:
    """A convert run folder with ``n_cts`` gzipped NIfTI CTs; CT ``broken`` truncated."""
    rows = []
    for i in range(n_cts):
        path = folder / "volumes" / f"ct{i}.nii.gz"
        io.write_nifti(path, *_phantom_ct(i))
        if i == broken:
            path.write_bytes(path.read_bytes()[:300])
        rows.append({"ct_id": f"ct{i}", "patient_id": f"p{i}", "path": f"volumes/ct{i}.nii.gz"})
    io.write_table(folder / "volumes.csv", pd.DataFrame(rows))
    return folder


def _run_drr(cfg, out_dir: Path, convert_dir: Path):  # type: ignore[no-untyped-def]
    from gensyn.core.run_context import RunContext
    from gensyn.stages import drr

    ctx = RunContext(
        name="drr", out_dir=out_dir, stage_hash="t", cfg=cfg, upstream_dirs={"convert": convert_dir}
    )
    drr.run(cfg, ctx)
    return ctx


DRR_SMALL = (
    "carm_pose=random",
    "carm_pose.num_random=3",
    "projector.image_size_px=40",
    "projector.bit_depth=16",
    "projector.save_float=true",
    "projector.batch_poses=2",  # views of one CT in two render calls
    "projector.method=joseph",
    "projector.photon_count=20000",  # Poisson noise: seeded per (seed, CT, view)
    "device=cpu",
)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted((folder / "images").rglob("*"))
        if p.is_file()
    }


def test_pipelined_drr_writes_the_same_bytes_as_the_sequential_path(compose, tmp_path):
    convert = _convert_dir(tmp_path / "convert", 4)
    seq = _run_drr(compose(*DRR_SMALL, "num_workers=0"), tmp_path / "seq", convert)
    par = _run_drr(compose(*DRR_SMALL, "num_workers=3"), tmp_path / "par", convert)
    # loaders but one writer (projector.write_threads caps the writers, not the loaders)
    one = _run_drr(
        compose(*DRR_SMALL, "num_workers=3", "projector.write_threads=1"), tmp_path / "one", convert
    )
    seq_files, par_files = _files(tmp_path / "seq"), _files(tmp_path / "par")
    assert len(seq_files) == 4 * (4 * 2 + 1)  # 4 views as .png + .npy, and views.json
    assert seq_files == par_files == _files(tmp_path / "one")
    assert [c.summary["write_threads"] for c in (seq, par, one)] == [0, 3, 1]
    assert (tmp_path / "seq" / "manifest.csv").read_bytes() == (
        tmp_path / "par" / "manifest.csv"
    ).read_bytes()
    for ctx in (seq, par):
        summary = ctx.summary
        for part in (*TIME_PARTS, "wall"):
            assert summary[f"time_{part}_s"] >= 0.0
        assert summary["time_read_s"] > 0 and summary["time_compute_s"] > 0
        assert summary["time_write_s"] > 0 and summary["drrs_rendered"] == 16
        assert summary["drrs_per_s"] > 0 and summary["cts_per_s"] > 0
        # the pipeline's fill (first CT) and the rate after it, which a long run approaches
        assert 0 < summary["time_to_first_ct_s"] < summary["time_wall_s"]
        rest = summary["time_wall_s"] - summary["time_to_first_ct_s"]
        assert summary["cts_per_s_after_first"] == pytest.approx(3 / rest, rel=0.01)
    # resume: everything is complete, nothing is rendered again
    again = _run_drr(compose(*DRR_SMALL, "num_workers=3"), tmp_path / "par", convert)
    assert again.summary["drrs_rendered"] == 0 and again.summary["n_images"] == 16


def test_pipelined_drr_lists_a_ct_its_loader_cannot_read_and_renders_the_others(compose, tmp_path):
    from gensyn.base.errors import GensynError

    convert = _convert_dir(tmp_path / "convert", 4, broken=1)
    out = tmp_path / "drr"
    with pytest.raises(GensynError, match="1 of 4 converted CT"):
        _run_drr(compose(*DRR_SMALL, "num_workers=2"), out, convert)
    failures = io.read_table(out / "failures.csv")
    assert list(failures["ct_id"]) == ["ct1"] and "ct1.nii.gz" in failures.loc[0, "file"]
    done = sorted(p.parent.name for p in (out / "images").glob("*/views.json"))
    assert done == ["ct0", "ct2", "ct3"]
    assert not (out / "manifest.csv").exists()


# ---------------------------------------------------------------- stage=predict


def _predict_inputs(compose, tmp_path, n_patients):
    """The config, a ``prepare_xrays`` folder of small PNGs with a test split, and a
    ``classify`` folder with an untrained small CNN: what ``stage=predict`` reads."""
    from classify_fakes import make_xray_set

    from gensyn.classify.models import ModelSpec, build_model

    cfg = compose("num_workers=2", "classifier.predict_batch_size=4")
    prepare = tmp_path / "prepare_xrays"
    table = make_xray_set(prepare / "images", n_patients=n_patients, size_px=24, test_fraction=0.5)
    io.write_table(prepare / "xrays.csv", table)
    classify = tmp_path / "classify"
    classify.mkdir()
    n_findings = len(cfg.dataset.findings)
    spec = ModelSpec("small_cnn", image_size_px=24, widths=(4, 8), n_classes=n_findings)
    build_model(spec).save(classify / "best.keras")
    return cfg, table


def _predict(cfg, tmp_path, name):
    """``stage=predict`` into ``tmp_path/name`` on the inputs of :func:`_predict_inputs`."""
    from gensyn.core.run_context import RunContext
    from gensyn.stages import predict

    ctx = RunContext(
        name="predict",
        out_dir=tmp_path / name,
        stage_hash=name,
        cfg=cfg,
        upstream_dirs={
            "classify": tmp_path / "classify",
            "prepare_xrays": tmp_path / "prepare_xrays",
        },
    )
    predict.run(cfg, ctx)
    return ctx, io.read_table(tmp_path / name / "predictions.csv")


def test_predict_without_room_for_the_cache_predicts_from_the_files(
    compose, tmp_path, monkeypatch, caplog
):
    from gensyn.classify import cache as image_cache

    cfg, table = _predict_inputs(compose, tmp_path, 8)
    monkeypatch.setattr(image_cache, "DISK_MARGIN_BYTES", 1 << 60)  # no disk has that much
    ctx, preds = _predict(cfg, tmp_path, "predict")
    assert ctx.summary["image_cache"] == "off" and ctx.summary["n_unreadable_images"] == 0
    assert len(preds) == (table["split"] == "test").sum()
    assert "image cache not written" in caplog.text and "GB free" in caplog.text


def test_predict_lists_an_unreadable_test_image_and_predicts_the_others(
    compose, tmp_path, monkeypatch
):
    from gensyn.classify import data as classify_data

    cfg, table = _predict_inputs(compose, tmp_path, 16)
    prepare = tmp_path / "prepare_xrays"
    test_rows = table[table["split"] == "test"]
    assert len(test_rows) >= 3
    garbage = Path(test_rows["path"].iloc[1])
    garbage.write_bytes(b"not a png at all" * 10)
    ctx, preds = _predict(cfg, tmp_path, "predict")
    assert len(preds) == len(test_rows) - 1
    assert garbage.stem not in set(preds["image_id"].astype(str))
    listed = io.read_table(tmp_path / "predict" / "unreadable_images.csv")
    assert list(listed["path"]) == [str(garbage)] and listed.loc[0, "reason"]
    assert ctx.summary["n_unreadable_images"] == 1
    assert ctx.summary["images_per_s"] > 0
    # the prediction step's compilation is timed apart, and the rate after it is reported
    assert ctx.summary["time_compile_s"] > 0
    assert ctx.summary["images_per_s_after_compile"] > ctx.summary["images_per_s"]
    # the readable test images went into the decode-once cache; a second prediction of the
    # same test set (another arm or fold) streams them from it, checking only the file that an
    # earlier prediction found unreadable (recorded beside the cache)
    assert ctx.summary["image_cache"] == "written" and ctx.summary["image_cache_images"] == len(
        preds
    )
    images = Path(ctx.summary["image_cache_files"][0]).parent
    (record,) = images.glob("unreadable-*.json")
    assert list(io.read_json(record)) == [str(garbage)]
    checked: list[list[str]] = []
    real_check = classify_data.unreadable_images

    def spy(paths, workers=4):
        checked.append(list(paths))
        return real_check(paths, workers)

    monkeypatch.setattr(classify_data, "unreadable_images", spy)
    again, again_preds = _predict(cfg, tmp_path, "predict_again")
    assert again.summary["image_cache"] == "used"
    assert again.summary["n_unreadable_images"] == 1  # the bad file is still checked, left out
    assert checked == [[str(garbage)]]
    np.testing.assert_array_equal(
        again_preds.filter(like="p_").to_numpy(), preds.filter(like="p_").to_numpy()
    )
    # a test set whose files are all in the cache is not checked again
    io.write_table(prepare / "xrays.csv", table[table["path"] != str(garbage)])
    clean, _ = _predict(cfg, tmp_path, "predict_clean")
    assert clean.summary["image_cache"] == "used" and clean.summary["time_read_s"] == 0.0
    assert clean.summary["n_unreadable_images"] == 0
    # the first prediction of a clean test set checks nothing and decodes each file once, for
    # the model and the cache together
    for cached in images.glob("*.npy"):
        cached.unlink()
    checked.clear()
    from gensyn.classify import cache as cache_module

    def separate_pass(*args, **kwargs):  # open_or_build's decode of every file into the cache
        raise AssertionError("a separate pass over the files to fill the cache")

    monkeypatch.setattr(cache_module, "_write", separate_pass)
    first, first_preds = _predict(cfg, tmp_path, "predict_first")
    assert first.summary["image_cache"] == "written" and not checked
    assert first.summary["time_read_s"] == 0.0
    # prepare: reading the test table and opening the cache, a small part of the stage
    assert 0.0 < first.summary["time_prepare_s"] < first.summary["time_wall_s"]
    np.testing.assert_allclose(
        first_preds.filter(like="p_").to_numpy(), preds.filter(like="p_").to_numpy(), rtol=1e-5
    )
    for part in (*TIME_PARTS, "wall"):
        assert f"time_{part}_s" in ctx.summary
