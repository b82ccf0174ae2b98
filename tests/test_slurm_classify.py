"""stage=classify on the real single-node SLURM cluster (scripts/slurm/start.sh).

As in test_classify_stages.py, the upstream ``prepare_xrays`` folder is written by the test
at the hash the config gives it, so these tests run exactly the classification stage: five
folds as one job array with the metrics of the local launcher, and a run pre-empted
mid-training that resumes from its checkpoint and ends with the same metrics.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from classify_fakes import make_xray_set
from slurm_helpers import (
    require_cluster,
    run_app,
    running_job_ids,
    sacct_states,
    start_app,
    submitted_arrays,
    wait_for,
)

from gensyn.base import io
from gensyn.core.runs import DONE, run_dir

pytestmark = pytest.mark.slow
TINY = ["stage=classify", "profile=tiny", "logger=none"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=20"]


@pytest.fixture(scope="module")
def slurm_cluster(in_ci: bool) -> None:
    require_cluster(in_ci)
    from gensyn.core.registry import load_stages

    if "classify" not in load_stages():
        pytest.skip("stage=classify is not registered yet")


def fake_prepare_xrays(compose, root: Path) -> None:  # type: ignore[no-untyped-def]
    """A finished prepare_xrays run folder (60 patients of 32 px X-rays) for ``root``."""
    xray_dir = run_dir(compose("profile=tiny", root=root), "prepare_xrays")
    table = make_xray_set(xray_dir / "images", n_patients=60, size_px=32, seed=0)
    table["path"] = [f"images/{p.split('/')[-1]}" for p in table["path"]]
    io.write_table(xray_dir / "xrays.csv", table)
    io.write_json(xray_dir / DONE, {"fake": True})


def metrics(compose, root: Path, *overrides: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The per-epoch training metrics of a finished classify run, without timings."""
    folder = run_dir(compose("profile=tiny", *overrides, root=root), "classify")
    assert (folder / DONE).is_file(), f"classify {overrides} not finished in {folder}"
    history = io.read_table(folder / "history.csv")
    return history.drop(columns=[c for c in history.columns if c.endswith("_per_s")])  # speed


def test_five_folds_are_one_array_with_the_local_metrics(compose, tmp_path, slurm_cluster):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    for root in (local, remote):
        root.mkdir()
        fake_prepare_xrays(compose, root)
    sweep = ["-m", *TINY, "split_idx=0,1,2,3,4"]
    run_app(local, *sweep, script="launch.py")
    proc = run_app(remote, *sweep, *SLURM, script="launch.py")
    ((array, n),) = submitted_arrays(proc.stdout + proc.stderr)
    assert n == 5 and sorted(sacct_states(array)) == [f"{array}_{i}" for i in range(5)]
    for fold in range(5):
        pd.testing.assert_frame_equal(
            metrics(compose, remote, f"split_idx={fold}"),
            metrics(compose, local, f"split_idx={fold}"),
            check_exact=False,
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.parametrize("how", ["usr2", "requeue"])
def test_preempted_classify_resumes_with_the_same_metrics(compose, tmp_path, slurm_cluster, how):
    import subprocess

    local, remote = tmp_path / "local", tmp_path / "slurm"
    for root in (local, remote):
        root.mkdir()
        fake_prepare_xrays(compose, root)
    job = [*TINY, "split_idx=2", "classifier.epochs=30"]
    folder = run_dir(
        compose("profile=tiny", "split_idx=2", "classifier.epochs=30", root=remote), "classify"
    )
    proc = start_app(remote, "-m", *job, *SLURM, script="launch.py")
    try:
        wait_for(
            lambda: (folder / "checkpoint.npz").is_file() and bool(running_job_ids()),
            300,
            "the classify job to write its first epoch checkpoint",
        )
        job_id = running_job_ids()[0]
        if how == "usr2":  # the time-limit / pre-emption warning
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        else:  # SIGTERM, SIGKILL after KillWait, requeued by SLURM
            subprocess.run(["scontrol", "requeue", job_id], check=True)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (remote / "launch.out").read_text()
    summary = io.read_json(folder / "summary.json")
    assert 0 < summary.get("resumed_from_epoch", 0) < 30, summary  # resumed, not restarted
    run_app(local, *job, script="launch.py")  # the uninterrupted run
    pd.testing.assert_frame_equal(
        metrics(compose, remote, "split_idx=2", "classifier.epochs=30"),
        metrics(compose, local, "split_idx=2", "classifier.epochs=30"),
        check_exact=False,
        rtol=1e-5,
        atol=1e-6,
    )
