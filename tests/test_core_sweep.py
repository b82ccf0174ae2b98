"""Local sweeps run every job; Hydra's folders live below paths.work_dir; lock waits say whom."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ("profile=tiny", "logger=none")


def test_a_failed_job_does_not_stop_a_local_sweep(launch, gensyn_root: Path) -> None:
    proc = launch("stage=carbon_summary", "split_idx=0,9,1", "-m", *TINY, check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    # jobs #0 and #2 ran to the end, around the failed #1
    assert out.count("carbon_summary: /") == 2, out
    assert "#2 : stage=carbon_summary" in out
    # one table: the failed job, its overrides, the first line of its error, its log
    assert "1 of 3 jobs of this sweep failed" in out
    (row,) = [line for line in out.splitlines() if line.strip().startswith("#1 ")]
    assert "split_idx=9" in row and "split_idx=9; allowed: 0 .. 4" in row
    log_file = Path(row.split()[-1])
    assert log_file.is_file() and log_file.name == "launch.log"
    assert log_file.is_relative_to(gensyn_root / "workdir" / "multirun")  # below paths.work_dir
    assert "split_idx=9; allowed" in log_file.read_text()
    assert not (gensyn_root / "multirun").exists()


def test_a_crashed_job_is_listed_with_its_traceback_in_its_log(gensyn_root: Path) -> None:
    (gensyn_root / "fail-1").touch()  # the probe stage of slurm_app.py fails for seed 1
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "slurm_app.py"),
            "-m",
            "stage=list",
            "stage.name=slurm_probe",
            "+extras.steps=2",
            "+extras.step_s=0",
            "seed=0,1,2",
            "logger=none",
            f"+extras.fail_flag={gensyn_root}/fail-SEED",
        ],
        cwd=gensyn_root,
        env={**os.environ, "GENSYN_ROOT": str(gensyn_root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert out.count("slurm_probe: /") == 2, out  # seeds 0 and 2 finished
    (row,) = [line for line in out.splitlines() if line.strip().startswith("#1 ")]
    assert "seed=1" in row and "ValueError: slurm_probe: deliberate failure after step 0" in row
    log_text = Path(row.split()[-1]).read_text()
    assert "Traceback" in log_text and "raise ValueError" in log_text


@pytest.mark.parametrize(
    "args",
    [
        ("stage=list",),
        ("--cfg", "job"),
        ("seed=abc",),
        ("projector.image_size_px=0",),
        ("+use_syntex=true",),
    ],
    ids=["list", "cfg", "type-error", "startup-check", "unknown-key"],
)
def test_no_folder_when_nothing_runs(launch, gensyn_root: Path, args: tuple[str, ...]) -> None:
    proc = launch(*args, check=False, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in gensyn_root.iterdir()) == []  # no workdir, hydra or outputs


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_unwritable_work_dir_is_one_clear_error(launch, gensyn_root: Path, sweep: bool) -> None:
    blocker = gensyn_root / "a_file"
    blocker.write_text("not a folder")
    args = ["stage=convert", *TINY, f"paths.work_dir={blocker}/work"]
    proc = launch(*args, *(["seed=0,1", "-m"] if sweep else []), check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"{blocker} is a file, not a folder" in out and "paths.work_dir" in out
    assert "Traceback" not in out
    assert sorted(p.name for p in gensyn_root.iterdir()) == ["a_file"]


def test_a_process_waiting_for_a_lock_logs_whom_it_waits_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gensyn.core.runs import _locked

    folder = tmp_path / "run"
    got_it = threading.Event()

    def second() -> None:
        with _locked(folder):
            got_it.set()

    caplog.set_level(logging.INFO, logger="gensyn.core.runs")
    with _locked(folder):
        assert f"pid {os.getpid()}" in (folder / ".lock").read_text()
        waiter = threading.Thread(target=second)
        waiter.start()
        deadline = time.monotonic() + 10
        while "waiting for" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not got_it.is_set()
    waiter.join(10)
    assert got_it.is_set()
    (line,) = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert str(folder) in line and f"pid {os.getpid()} on " in line and "since" in line
    assert (folder / ".lock").read_text() == ""  # released: no stale holder


def test_each_job_config_is_composed_once_and_handed_out_as_copies() -> None:
    from omegaconf import OmegaConf

    from gensyn.app.launcher import SweepConfigMemo

    calls: list[list[str]] = []

    def load(master_config, sweep_overrides):  # type: ignore[no-untyped-def]
        calls.append(list(sweep_overrides))
        return OmegaConf.create({"overrides": list(sweep_overrides), "job": {"id": None}})

    memo = SweepConfigMemo(load, size=2)
    master = OmegaConf.create({})
    first, again = memo(master, ["x=1"]), memo(master, ["x=1"])
    assert calls == [["x=1"]]
    assert first == again and first is not again
    first.job.id = 3  # the launcher writes into its copy: later copies do not see it
    assert memo(master, ["x=1"]).job.id is None
    assert memo(master, ["x=2"]).overrides == ["x=2"]
    memo(master, ["x=3"])  # the least recently used (x=1) is dropped
    memo(master, ["x=1"])
    assert calls == [["x=1"], ["x=2"], ["x=3"], ["x=1"]]
    # another master config is another sweep: composed again
    memo(OmegaConf.create({"other": 1}), ["x=1"])
    assert len(calls) == 5


def _probe_sweep(gensyn_root: Path, seeds: str, flag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, str(ROOT / "tests" / "slurm_app.py"), "-m", "stage=list",
            "stage.name=slurm_probe", "+extras.steps=1", "+extras.step_s=0", f"seed={seeds}",
            "logger=none", f"+extras.gpu_fail_flag={gensyn_root}/{flag}-SEED",
        ],
        cwd=gensyn_root, env={**os.environ, "GENSYN_ROOT": str(gensyn_root)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_two_gpu_failures_in_a_row_stop_a_local_sweep(gensyn_root: Path) -> None:
    """A GPU whose runtime failed twice in a row (a broken context) stops the sweep: the
    table lists the failed jobs and how many did not start; the same command resumes."""
    for seed in (1, 2):
        (gensyn_root / f"gpu-{seed}").touch()
    proc = _probe_sweep(gensyn_root, "0,1,2,3,4", "gpu")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert out.count("slurm_probe: /") == 1, out  # seed 0 ran; 3 and 4 never started
    assert "#3 : " not in out and "the sweep stopped: 2 of 5 jobs did not start" in out, out
    rows = [line for line in out.splitlines() if line.strip().startswith(("#1 ", "#2 "))]
    assert len(rows) == 2 and all("JaxRuntimeError: NOT_FOUND: All configs" in r for r in rows)
    assert "run the same command again: a new process starts a new GPU context" in out
    assert "local sweep: 1 done, 0 skipped (already DONE), 2 failed" in out
    for seed in (1, 2):
        (gensyn_root / f"gpu-{seed}").unlink()
    again = _probe_sweep(gensyn_root, "0,1,2,3,4", "gpu")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 done, 1 skipped (already DONE), 0 failed" in again.stdout + again.stderr


def test_one_gpu_failure_does_not_stop_a_local_sweep(gensyn_root: Path) -> None:
    (gensyn_root / "gpu-1").touch()
    (gensyn_root / "gpu-3").touch()  # not in a row: every job runs
    proc = _probe_sweep(gensyn_root, "0,1,2,3,4", "gpu")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert out.count("slurm_probe: /") == 3, out
    assert "2 of 5 jobs of this sweep failed" in out and "did not start" not in out


def test_what_counts_as_a_failure_of_the_gpu() -> None:
    import jax

    from gensyn.app.local_launcher import JobExitedError, accelerator_failure

    assert accelerator_failure(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory"))
    assert accelerator_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert accelerator_failure(RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"))
    assert not accelerator_failure(ValueError("slurm_probe: deliberate failure"))
    assert not accelerator_failure(JobExitedError("split_idx=9; allowed: 0 .. 4"))
    assert not accelerator_failure(None)
