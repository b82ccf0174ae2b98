"""Start-up checks of values (one line: key, value, what is allowed) and folder errors."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from gensyn.errors import GensynError
from gensyn.startup import check_config

BAD_VALUES = [
    ("projector.image_size_px=0", "projector.image_size_px=0; allowed: 1 or more"),
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
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_is_refused_at_start_up(compose, overrides: str, message: str) -> None:
    with pytest.raises(GensynError) as err:
        check_config(compose(*overrides.split()))
    text = str(err.value)
    assert message in text and "\n" not in text


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
    ],
    ids=["crop", "angle", "shard"],
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
    from gensyn.main import run
    from gensyn.registry import _REGISTRY, stage
    from gensyn.runs import is_done, run_dir

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
