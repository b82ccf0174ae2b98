"""Start-up checks of values (one line: key, value, what is allowed) and folder errors."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from gensyn.app.startup import check_config
from gensyn.base.errors import GensynError

BAD_VALUES = [
    ("projector.image_size_px=0", "projector.image_size_px=0; allowed: 16 or more"),
    ("classifier.image_size_px=-32", "classifier.image_size_px=-32; allowed: 1 or more"),
    ("classifier.batch_size=0", "classifier.batch_size=0; allowed: 1 or more"),
    ("classifier.predict_batch_size=0", "classifier.predict_batch_size=0; allowed: 1 or more"),
    ("generator.batch_size=0", "generator.batch_size=0; allowed: 1 or more"),
    ("projector.batch_poses=0", "projector.batch_poses=0; allowed: 1 or more"),
    ("generator.crop_size=600", "generator.crop_size=600; allowed: 1 .. generator.load_size="),
    ("carm_pose.alpha_deg=[95]", "carm_pose.alpha_deg=[95.0]; allowed: angles from -90 to 90"),
    ("carm_pose.beta_deg=[-120]", "carm_pose.beta_deg=[-120.0]; allowed: angles from -90 to 90"),
    ("carm_pose.beta_range_deg=[10,-10]", "allowed: [low, high] with low <= high"),
    ("carm_pose.alpha_range_deg=[-100,0]", "carm_pose.alpha_range_deg=[-100.0, 0.0]; allowed"),
    ("carm_pose.alpha_deg=[0,5]", "allowed with carm_pose.mode=center: one angle each"),
    ("dataset.xray.test_fraction=1.0", "dataset.xray.test_fraction=1.0; allowed: 0 <= "),
    ("dataset.demo.test_fraction=-0.1", "dataset.demo.test_fraction=-0.1; allowed"),
    ("dataset.demo.finding_prevalence=1.5", "dataset.demo.finding_prevalence=1.5; allowed"),
    ("ct_dataset.demo.finding_prevalence=-1", "ct_dataset.demo.finding_prevalence=-1.0; allowed"),
    ("report.ci_level=95", "report.ci_level=95.0; allowed: 0 <= report.ci_level < 1"),
    ("projector.bit_depth=12", "projector.bit_depth=12; allowed: 8 or 16"),
    ("projector.png_compress_level=10", "projector.png_compress_level=10; allowed: 0 .. 9"),
    ("num_shards=0", "num_shards=0; allowed: 1 or more"),
    ("shard=3 num_shards=3", "shard=3; allowed: 0 .. 2 (num_shards=3)"),
    ("shard=-1", "shard=-1; allowed: 0 .. 0 (num_shards=1)"),
    # issue 36: NaN, order, physics and workers
    ("carm_pose.alpha_deg=[nan]", "carm_pose.alpha_deg=[nan]; allowed: angles from -90 to 90"),
    ("carm_pose.alpha_range_deg=[nan,5]", "carm_pose.alpha_range_deg=[nan, 5.0]; allowed"),
    (
        "projector.window_percentiles=[99.5,0.5]",
        "projector.window_percentiles=[99.5, 0.5]; allowed: 2 values; 0 <= each value <= 100 "
        "(finite); [low, high] with low < high",
    ),
    ("projector.window_percentiles=[1]", "projector.window_percentiles=[1.0]; allowed: 2 values"),
    ("projector.kvp=0", "projector.kvp=0.0; allowed: 20 <= projector.kvp <= 300 (finite)"),
    ("projector.kvp=-90", "projector.kvp=-90.0; allowed: 20 <= projector.kvp <= 300"),
    ("projector.kvp=nan", "projector.kvp=nan; allowed: 20 <= projector.kvp <= 300"),
    ("projector.air_max_hu=inf", "projector.air_max_hu=inf; allowed: a finite number"),
    ("projector.bone_min_hu=-900", "bone_min_hu=-900.0; allowed: more than projector.air_max_hu="),
    ("num_workers=-2", "num_workers=-2; allowed: 0 or more"),
    ("ct_dataset.convert.num_workers=-1", "ct_dataset.convert.num_workers=-1; allowed: 0 or more"),
    ("generator.lr=nan", "generator.lr=nan; allowed: 0 < generator.lr (finite)"),
    ("classifier.learning_rate=-1e-3", "classifier.learning_rate=-0.001; allowed: 0 < "),
    ("classifier.n_folds=1", "classifier.n_folds=1; allowed: 2 or more"),
    ("dataset.xray.window_pct=[50,50]", "dataset.xray.window_pct=[50.0, 50.0]; allowed"),
    ("reader_study.blinding.window_high_percentile=0.1", "more than reader_study.blinding."),
    # issue 38: unhashed settings keep their bounds; the small CNN takes no weights; null, not
    # "none", is random init
    ("classifier.prefetch=0", "classifier.prefetch=0; allowed: 1 or more"),
    ("generator.num_samples=0", "generator.num_samples=0; allowed: 1 or more"),
    ("classifier.weights=imagenet", "classifier.weights=imagenet with classifier.name=small_cnn"),
    ("classifier.weights=none", "classifier.weights=none with classifier.name=small_cnn; allowed"),
    ("classifier=densenet121 classifier.weights=none", "classifier.weights=none: no such file"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_is_refused_at_start_up(compose, overrides: str, message: str) -> None:
    with pytest.raises(GensynError) as err:
        check_config(compose(*overrides.split()))
    text = str(err.value)
    assert message in text and "\n" not in text


def _float_fields() -> list[str]:
    """Every float setting of the schema (scalars and lists), as a dotted key."""
    import dataclasses
    import typing

    from gensyn.app.startup import _number_kind
    from gensyn.config import Config

    keys: list[str] = []

    def walk(schema: type, prefix: str) -> None:
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            elif _number_kind(kind)[0] is float:
                keys.append(f"{prefix}{f.name}")

    walk(Config, "")
    return keys


def test_every_float_setting_must_be_finite(compose) -> None:
    """NaN and infinities are refused for every float key, declared bounds or not."""
    from omegaconf import OmegaConf

    from gensyn.app.startup import check_bounds

    keys = _float_fields()
    assert {"projector.kvp", "carm_pose.alpha_deg", "generator.lr", "report.ci_level"} <= set(keys)
    assert len(keys) > 40
    cfg = compose()
    check_bounds(cfg)
    for key in keys:
        good = OmegaConf.select(cfg, key)
        for bad in (float("nan"), float("inf"), -float("inf")):
            if OmegaConf.is_list(good):  # the first element bad, the list otherwise as it was
                value: object = [bad, *list(good)[1:]]
            elif good is None:  # optional (null = a preset's value): a list of 3 or a number
                value = [bad] * 3 if key.endswith("spacing_mm") else bad
            else:
                value = bad
            broken = cfg.copy()
            OmegaConf.update(broken, key, value, merge=False)
            with pytest.raises(GensynError) as err:
                check_bounds(broken)
            text = str(err.value)
            assert text.startswith(f"{key}=") and "allowed: " in text and "\n" not in text, key


def test_good_values_pass(compose) -> None:
    check_config(compose("profile=tiny", "carm_pose=grid", "shard=1", "num_shards=2"))
    check_config(compose("carm_pose=random", "carm_pose.beta_range_deg=[-90,90]"))
    check_config(compose("dataset.xray.test_fraction=0", "dataset.demo.finding_prevalence=1"))


def test_misspelt_pose_mode_fails_when_composed(launch) -> None:
    proc = launch("stage=drr", "carm_pose.mode=cener", check=False, timeout=120)
    assert proc.returncode == 1
    assert "Invalid value 'cener', expected one of [center, grid, random]" in proc.stderr
    assert "carm_pose.mode" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("generator.crop_size=600",), "generator.crop_size=600; allowed"),
        (("stage=drr", "carm_pose.alpha_deg=[91]"), "carm_pose.alpha_deg=[91.0]; allowed"),
        (("stage=download", "shard=2", "num_shards=2"), "shard=2; allowed: 0 .. 1"),
        (("stage=drr", "carm_pose.alpha_deg=[nan]"), "carm_pose.alpha_deg=[nan]; allowed"),
        (("stage=drr", "projector.kvp=nan"), "projector.kvp=nan; allowed"),
        (("stage=drr", "projector.window_percentiles=[99.5,0.5]"), "low < high"),
        (("stage=convert", "num_workers=-2"), "num_workers=-2; allowed: 0 or more"),
    ],
    ids=["crop", "angle", "shard", "nan-angle", "nan-kvp", "percentile-order", "workers"],
)
def test_start_up_error_exits_1_before_anything_is_made(
    launch, gensyn_root: Path, overrides: tuple[str, ...], message: str
) -> None:
    proc = launch(*overrides, "profile=tiny", "logger=none", check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and message in out and "Traceback" not in out
    assert list(gensyn_root.iterdir()) == []  # no run folder, no Hydra folder


def test_run_folder_below_a_file_is_one_clear_error(launch, gensyn_root: Path) -> None:
    blocker = gensyn_root / "not_a_folder"
    blocker.write_text("x")
    proc = launch(
        "stage=convert",
        "profile=tiny",
        "logger=none",
        f"paths.runs_dir={blocker}/runs",
        check=False,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out
    assert f"cannot create or write the run folder {blocker}/runs/convert/" in out
    assert f"{blocker} is a file, not a folder" in out and "paths.runs_dir" in out
    assert blocker.read_text() == "x"


def test_full_disk_names_the_folder(compose, caplog: pytest.LogCaptureFixture) -> None:
    from gensyn.app.main import run
    from gensyn.core.registry import _REGISTRY, stage
    from gensyn.core.runs import is_done, run_dir

    @stage("_test_disk_full", summary="writes to a full device", config_keys=("seed",))
    def _fill(cfg, ctx) -> None:  # type: ignore[no-untyped-def]
        (ctx.out_dir / "part.txt").write_text("started")
        with open("/dev/full", "w") as fh:  # every write: ENOSPC, as on a full disk
            fh.write("x" * 10_000)
            fh.flush()

    try:
        cfg = compose("stage=list", "stage.name=_test_disk_full")
        with pytest.raises(SystemExit) as exit_info:
            run(cfg)
        assert exit_info.value.code == 1
        cause = exit_info.value.__cause__
        assert isinstance(cause, GensynError) and isinstance(cause.__cause__, OSError)
        assert cause.__cause__.errno == errno.ENOSPC
        out = run_dir(cfg, "_test_disk_full")
        assert f"no space left on the device holding {out}" in str(cause)
        assert "MiB free there" in str(cause) and "paths.runs_dir" in str(cause)
        assert any(
            r.levelno == logging.ERROR and "no space left" in r.getMessage() for r in caplog.records
        )
        assert not is_done(out)
    finally:
        _REGISTRY.pop("_test_disk_full", None)


def test_jax_gpu_probe_runs_once_per_process_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each job of a sweep checks ``device=cuda`` at start; the child process that asks JAX
    for GPUs (1-2 s on a GPU machine) runs once per process and environment, not per job."""
    from gensyn.base import devices

    real_probe = devices._probe_jax_gpus
    probes: list[str] = []

    def counted() -> list[str]:
        probes.append(devices.os.environ.get("JAX_PLATFORMS", ""))
        return real_probe()

    monkeypatch.setattr(devices, "_probe_jax_gpus", counted)
    monkeypatch.setattr(devices, "_JAX_GPUS", {})
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    first = devices.jax_gpu_devices()
    assert devices.jax_gpu_devices() == first and devices.jax_gpu_devices() == first
    assert probes == [""]
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # another environment: asked again
    assert devices.jax_gpu_devices() == []
    assert probes == ["", "cpu"]
