"""hydra/launcher=slurm on a real single-node SLURM cluster (scripts/slurm/start.sh).

The workload is the ``slurm_probe`` stage of tests/slurm_app.py: a real GENSYN stage
(hashed run folder, DONE marker, checkpoint/resume) whose deterministic optimisation takes
a known time, so a job can be pre-empted at a known point and its final weights compared
bit for bit with an uninterrupted run of the local launcher. The dry-run tests need no
cluster; the others are ``slow`` and skip outside CI when no cluster is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_helpers import (
    require_cluster,
    run_app,
    running_job_ids,
    sacct_states,
    start_app,
    submitted_arrays,
    wait_for,
)

PROBE = ["stage=list", "stage.name=slurm_probe", "logger=none"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="session")
def slurm_cluster(in_ci: bool) -> None:
    """The test cluster is up (sinfo shows an idle node, sacct answers); else skip/fail."""
    require_cluster(in_ci)


def probe_dir(root: Path, seed: int) -> Path:
    """The run folder of the probe for ``seed`` (found by its identity, not recomputed)."""
    for ident in (root / "workdir" / "runs" / "slurm_probe").glob("*/identity.json"):
        if json.loads(ident.read_text())["config"]["seed"] == seed:
            return ident.parent
    raise AssertionError(f"no slurm_probe run folder for seed {seed} under {root}")


def weights(root: Path, seed: int) -> list[float]:
    return json.loads((probe_dir(root, seed) / "result.json").read_text())["w"]


def starts(root: Path, seed: int) -> list[dict[str, object]]:
    lines = (probe_dir(root, seed) / "starts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ---- no cluster needed -------------------------------------------------------------------
def test_dry_run_lists_jobs_resources_and_done_runs(tmp_path: Path) -> None:
    run_app(tmp_path, *PROBE, "+extras.steps=2", "+extras.step_s=0", "seed=0")  # local, DONE
    proc = run_app(
        tmp_path,
        "-m",
        *PROBE,
        "+extras.steps=2",
        "+extras.step_s=0",
        "seed=0,1,2",
        *SLURM,
        "hydra.launcher.dry_run=true",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.cpus_per_task=8",
        "hydra.launcher.mem_gb=64",
        "hydra.launcher.account=lab",
        "hydra.launcher.qos=high",
        "+hydra.launcher.additional_parameters.constraint=h100",
    )
    out = proc.stdout
    assert "DRY RUN: 2 of 3 jobs would be submitted as one SLURM job array" in out
    assert out.count("[DONE, skipped]") == 1 and out.count("[submit]") == 2
    assert str(probe_dir(tmp_path, 0)) in out
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=h100",
        "#SBATCH --time=10",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in out, f"{line!r} missing from the dry run:\n{out}"
    assert f"{sys.executable} -u -m submitit.core._submit" in out  # jobs use this interpreter
    # nothing was submitted: no job pickles, no submission scripts
    assert not list(tmp_path.rglob("*_submitted.pkl")) and not list(tmp_path.rglob("*.sh"))


@pytest.mark.slow  # no cluster needed, but composing 45 configs twice takes about a minute
def test_thesis_grid_dry_run_lists_45_gpu_jobs_in_one_array(tmp_path: Path) -> None:
    proc = run_app(
        tmp_path,
        "-m",
        "experiment=thesis_grid",
        "stage=classify",
        "logger=none",
        "hydra/launcher=slurm_gpu",
        "hydra.launcher.dry_run=true",
        script="launch.py",
    )
    out = proc.stdout
    assert "DRY RUN: 45 of 45 jobs would be submitted as one SLURM job array" in out
    for arm in ("none", "drr_1", "drr_10", "synthex_2", "synthex_10"):
        for fold in range(5):
            assert f"sampling={arm} split_idx={fold}" in out
    folders = [ln.split("run folder: ")[1] for ln in out.splitlines() if "run folder: " in ln]
    assert len(folders) == len(set(folders)) == 45  # 45 distinct runs
    assert all("/runs/classify/" in f for f in folders)
    for line in (
        "#SBATCH --array=0-44%45",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=240",
    ):
        assert line in out, f"{line!r} missing from the dry run:\n{out[-3000:]}"


def test_without_slurm_a_dry_run_works_and_a_submission_says_why_not(tmp_path: Path) -> None:
    dirs = os.environ["PATH"].split(os.pathsep)
    no_slurm = os.pathsep.join(d for d in dirs if not (Path(d) / "srun").exists())
    args = ["-m", *PROBE, "seed=0,1", *SLURM]
    dry = run_app(tmp_path, *args, "hydra.launcher.dry_run=true", env={"PATH": no_slurm})
    assert "DRY RUN: 2 of 2 jobs" in dry.stdout and "#SBATCH --array=0-1%2" in dry.stdout
    proc = run_app(tmp_path, *args, env={"PATH": no_slurm}, check=False)
    assert proc.returncode != 0
    assert "needs SLURM's sbatch and srun on PATH" in proc.stderr, proc.stderr


def test_misspelt_launcher_key_is_an_error(tmp_path: Path) -> None:
    proc = run_app(
        tmp_path,
        "-m",
        *PROBE,
        "seed=0",
        *SLURM,
        "hydra.launcher.partiton=gpu",
        "hydra.launcher.dry_run=true",
        check=False,
    )
    assert proc.returncode != 0
    assert "partiton" in proc.stderr


# ---- on the cluster ------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_is_one_array_with_the_local_results(tmp_path: Path, slurm_cluster: None) -> None:
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    remote.mkdir()
    sweep = [*PROBE, "+extras.steps=6", "+extras.step_s=0", "seed=0,1,2"]
    run_app(local, "-m", *sweep)
    proc = run_app(remote, "-m", *sweep, *SLURM, "hydra.launcher.account=gensyn")
    arrays = submitted_arrays(proc.stdout + proc.stderr)
    assert [n for _, n in arrays] == [3], proc.stdout + proc.stderr
    array = arrays[0][0]
    assert sorted(sacct_states(array)) == [f"{array}_{i}" for i in range(3)]
    # results come back before SLURM has finished tidying up the jobs
    wait_for(
        lambda: set(sacct_states(array).values()) == {"COMPLETED"},
        60,
        f"every task of array {array} to be COMPLETED in sacct",
    )
    accounts = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", array, "-o", "Account"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert accounts == ["gensyn"] * 3  # hydra.launcher.account reached SLURM
    for seed in range(3):
        assert (probe_dir(remote, seed) / "DONE").is_file()
        assert weights(remote, seed) == weights(local, seed)
        assert starts(remote, seed)[0]["slurm_job"] is not None


def _preempt(how: str, job: str) -> None:
    if how == "usr2":  # what SLURM sends signal_delay_s before the time limit
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
    elif how == "requeue":  # SIGTERM, then SIGKILL after KillWait; SLURM requeues the job
        subprocess.run(["scontrol", "requeue", job], check=True)
    elif how == "preempt":  # a job in the high-priority partition needs every CPU of the node
        cpus = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        subprocess.run(
            ["sbatch", "-p", "urgent", "-c", cpus, "-o", "/dev/null", "--wrap", "sleep 1"],
            check=True,
            capture_output=True,
        )
    else:
        raise ValueError(how)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["usr2", "requeue", "preempt"])
def test_preempted_job_resumes_with_the_same_result(
    tmp_path: Path, slurm_cluster: None, how: str
) -> None:
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    remote.mkdir()
    job = [*PROBE, "+extras.steps=24", "+extras.step_s=0.5", "seed=3"]
    proc = start_app(remote, "-m", *job, *SLURM)
    try:

        def checkpointed() -> bool:
            try:
                return (probe_dir(remote, 3) / "checkpoint.npz").is_file() and bool(
                    running_job_ids()
                )
            except AssertionError:
                return False

        wait_for(checkpointed, 120, "the probe job to run and write its first checkpoint")
        _preempt(how, running_job_ids()[0])
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (remote / "launch.out").read_text()
    assert proc.returncode == 0, log
    run_app(local, *job)  # the uninterrupted run
    history = starts(remote, 3)
    assert len(history) == 2, history  # started, pre-empted, started again ...
    assert 0 < int(history[1]["start_step"]) < 24  # ... from its checkpoint, not from scratch
    assert history[1]["slurm_job"] == history[0]["slurm_job"]  # the same job, requeued
    assert weights(remote, 3) == weights(local, 3)


@pytest.mark.slow
def test_failed_job_is_reported_and_only_it_reruns(tmp_path: Path, slurm_cluster: None) -> None:
    flag = tmp_path / "fail-1"
    flag.touch()
    sweep = [
        "-m",
        *PROBE,
        "+extras.steps=3",
        "+extras.step_s=0",
        "seed=0,1,2",
        f"+extras.fail_flag={tmp_path}/fail-SEED",
        *SLURM,
    ]
    first = run_app(tmp_path, *sweep, check=False)
    report = first.stderr
    assert first.returncode != 0
    ((array, n),) = submitted_arrays(first.stdout + first.stderr)
    assert n == 3
    assert f"1 of 3 SLURM jobs of array {array} failed" in report, report
    assert f"SLURM job {array}_1 (#1 " in report
    assert "ValueError: slurm_probe: deliberate failure after step 0" in report
    err_log = Path(report.split("error log: ")[1].split()[0])
    assert err_log.is_file() and err_log.name == f"{array}_1_0_log.err"
    hydra_log = Path(report.split("hydra log: ")[1].split()[0])
    assert hydra_log.is_file() and "deliberate failure" in hydra_log.read_text()
    assert (probe_dir(tmp_path, 0) / "DONE").is_file() and (
        probe_dir(tmp_path, 2) / "DONE"
    ).is_file()
    assert not (probe_dir(tmp_path, 1) / "DONE").exists()
    # one summary line per array, and what to run next
    (summary,) = [ln for ln in report.splitlines() if ln.startswith("SLURM array")]
    assert summary.startswith(
        f"SLURM array {array}: 2 done, 0 skipped (already DONE), 1 failed. Next: the same "
        "command again"
    ), report
    assert summary.endswith("stage=report") and "python launch.py logger=none" in summary

    flag.unlink()  # the cause is fixed: the same command again
    second = run_app(tmp_path, *sweep)
    ((array2, n2),) = submitted_arrays(second.stdout + second.stderr)
    assert n2 == 1 and len(sacct_states(array2)) == 1  # one job (submitit: no array of 1)
    assert (
        f"SLURM array {array2}: 1 done, 2 skipped (already DONE), 0 failed. "
        "Next: python launch.py logger=none +extras.steps=3"
    ) in second.stdout + second.stderr
    assert (probe_dir(tmp_path, 1) / "DONE").is_file()
    assert [s["start_step"] for s in starts(tmp_path, 1)] == [0, 1]  # resumed from its checkpoint
    assert len(starts(tmp_path, 0)) == 1 and len(starts(tmp_path, 2)) == 1  # not run again


@pytest.mark.slow
def test_time_limit_requeues_and_resumes_until_done(tmp_path: Path, slurm_cluster: None) -> None:
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    remote.mkdir()
    # 40 s of work under a 1 min limit with the warning 30 s before it: USR2 comes every
    # ~20-30 s (SLURM may signal up to 60 s early), each time the job checkpoints and requeues
    work = [*PROBE, "+extras.steps=40", "seed=4"]
    run_app(
        remote,
        "-m",
        *work,
        "+extras.step_s=1",
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=30",
        "hydra.launcher.max_num_timeout=5",
    )
    run_app(local, *work, "+extras.step_s=0")
    history = starts(remote, 4)
    steps = [int(s["start_step"]) for s in history]
    assert len(steps) >= 2 and steps == sorted(steps) and steps[0] == 0, history
    assert len({s["slurm_job"] for s in history}) == 1  # one job, requeued each time
    assert weights(remote, 4) == weights(local, 4)
