"""Shared helpers of the SLURM tests: the cluster check and running sweeps on it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("GENSYN_SLURM_DIR", "/tmp/gensyn-slurm"))
START_HINT = "start it with `sudo scripts/slurm/start.sh` (see docs/cluster.md)"


def cluster_problem() -> str | None:
    """Why the test cluster cannot be used (None: it is up and answers sinfo and sacct)."""
    conf = STATE_DIR / "etc" / "slurm.conf"
    if "SLURM_CONF" not in os.environ and conf.is_file():
        os.environ["SLURM_CONF"] = str(conf)
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client commands (sinfo, sbatch) are not installed"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
        acct = subprocess.run(
            ["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo/sacct did not answer within 20 s"
    if states.returncode != 0:
        return f"sinfo failed: {states.stderr.strip()[:300]}"
    if not re.search(r"^(idle|mixed|allocated)", states.stdout, re.MULTILINE):
        return f"no usable SLURM node (sinfo states: {states.stdout.split()})"
    if acct.returncode != 0:
        return f"sacct failed (slurmdbd down?): {acct.stderr.strip()[:300]}"
    return None


def require_cluster(in_ci: bool) -> None:
    """Skip (outside CI) or fail (in CI) when the test cluster is not up."""
    problem = cluster_problem()
    if problem is None:
        return
    message = f"no SLURM test cluster: {problem}; {START_HINT}"
    if in_ci:
        pytest.fail(message)
    pytest.skip(message)


def run_app(
    root: Path,
    *args: str,
    script: str = "tests/slurm_app.py",
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a GENSYN entry point (the probe app or launch.py) with GENSYN_ROOT=root, cwd=root."""
    env = {**os.environ, "GENSYN_ROOT": str(root), **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def start_app(root: Path, *args: str, script: str = "tests/slurm_app.py") -> subprocess.Popen[str]:
    """Like :func:`run_app`, in the background (stdout and stderr to root/launch.out)."""
    env = {**os.environ, "GENSYN_ROOT": str(root)}
    out = open(root / "launch.out", "w")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=root,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )


def submitted_arrays(output: str) -> list[tuple[str, int]]:
    """(array id, number of tasks) of every array the launcher reported submitting."""
    return [
        (m[0], int(m[1]))
        for m in re.findall(r"submitted SLURM job array (\d+) \((\d+) tasks\)", output)
    ]


def sacct_states(job: str) -> dict[str, str]:
    """SLURM job id -> state for a job or array (allocations only, no steps)."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


def running_job_ids() -> list[str]:
    """Ids of this user's running SLURM jobs (array tasks as ARRAY_TASK)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def wait_for(predicate: object, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    """Poll ``predicate()`` until it is true; fail the test naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
