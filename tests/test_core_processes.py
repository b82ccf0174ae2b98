"""Processes, interrupts and folders (issue 36): one Hydra folder per launch, no orphan
workers after a SIGKILL, Ctrl-C in one line with exit status 130."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ("profile=tiny", "logger=none", "logger.carbontracker=false")


def _popen(gensyn_root: Path, *args: str) -> subprocess.Popen[str]:
    """``python launch.py ARGS`` in its own process group (as a terminal's foreground job)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=gensyn_root,
        env={**os.environ, "GENSYN_ROOT": str(gensyn_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_launches_started_together_get_one_hydra_folder_each(gensyn_root: Path) -> None:
    procs = [_popen(gensyn_root, "stage=carbon_summary", f"seed={i}", *TINY) for i in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    folders = sorted((gensyn_root / "workdir" / "hydra").iterdir())
    assert len(folders) == 3, folders
    seeds = set()
    for folder in folders:
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        (seed,) = [line for line in overrides.splitlines() if "seed=" in line]
        seeds.add(seed)
        assert (folder / "launch.log").read_text().count("stage carbon_summary: running") == 1
    assert len(seeds) == 3


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


#: CTs the interrupted conversions get (random HU: slow to compress)
N_CTS = 16


@pytest.fixture(autouse=True)
def _ctrl_c_reaches_launches():
    """Launches get Ctrl-C as a terminal's foreground job does, also when the test session
    itself ignores SIGINT (a shell starts background jobs so, and children inherit it)."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:  # a Python handler becomes the default in a child
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _npz_cts(gensyn_root: Path, n: int = N_CTS) -> Path:
    """``n`` random-HU NPZ CTs (slow to compress: a signal lands mid-conversion)."""
    import numpy as np

    raw = gensyn_root / "cts"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        volume = rng.integers(-1000, 2000, (128, 128, 96), dtype=np.int16)
        np.savez(raw / f"ct{i:02d}.npz", ct=volume, spacing=np.array([1.0, 1.0, 2.0]))
    return raw


def _convert_args(raw: Path) -> tuple[str, ...]:
    return (
        "stage=convert",
        "experiment=thesis",
        "ct_dataset=folder",
        f"ct_dataset.raw_dir={raw}",
        "ct_dataset.convert.ct_format=npz",
        "num_workers=2",
        *TINY,
    )


def _wait_for_workers(proc: subprocess.Popen[str], gensyn_root: Path, n_volumes: int) -> list[int]:
    """The pool's worker ids, once ``n_volumes`` volumes are written."""
    import time

    volumes = gensyn_root / "workdir" / "runs" / "convert"
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _descendants(proc.pid)
        if len(workers) >= 2 and len(list(volumes.glob("*/volumes/*.nii.gz"))) >= n_volumes:
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(workers) >= 2, proc.communicate()
    return workers


def test_sigkill_of_convert_leaves_no_worker_running(gensyn_root: Path) -> None:
    import signal
    import time

    proc = _popen(gensyn_root, *_convert_args(_npz_cts(gensyn_root)))
    workers = _wait_for_workers(proc, gensyn_root, 1)
    volumes = gensyn_root / "workdir" / "runs" / "convert"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(5)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # leave nothing behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    written = len(list(volumes.glob("*/volumes/*.nii.gz")))
    assert written < N_CTS  # the kill came before the end: the workers did not finish the data set


def _ctrl_c(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGINT to the whole process group, as Ctrl-C in a terminal; (stdout, stderr)."""
    import signal

    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=120)


def test_ctrl_c_is_one_line_and_exit_130_and_the_same_command_resumes(
    gensyn_root: Path,
) -> None:
    raw = _npz_cts(gensyn_root)
    proc = _popen(gensyn_root, *_convert_args(raw))
    _wait_for_workers(proc, gensyn_root, 1)
    out, err = _ctrl_c(proc)
    assert proc.returncode == 130, out + err
    text = out + err
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert err.strip().splitlines()[-1] == "interrupted; the same command resumes"
    (run,) = (gensyn_root / "workdir" / "runs" / "convert").iterdir()
    assert not (run / "DONE").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in (run / "volumes").glob("*.nii.gz")}
    assert 0 < len(kept) < N_CTS
    again = _popen(gensyn_root, *_convert_args(raw))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    assert "resuming unfinished run" in out + err
    assert len(list((run / "volumes").glob("*.nii.gz"))) == N_CTS
    for name, mtime in kept.items():  # volumes written before Ctrl-C are kept, not redone
        assert (run / "volumes" / name).stat().st_mtime_ns == mtime


def test_ctrl_c_in_a_local_sweep_prints_the_table(gensyn_root: Path) -> None:
    raw = _npz_cts(gensyn_root)
    args = (*_convert_args(raw), "ct_dataset.convert.npz_axis_codes=IPL,IPR,IAL", "-m")
    proc = _popen(gensyn_root, *args)
    _wait_for_workers(proc, gensyn_root, 1)
    out, err = _ctrl_c(proc)
    text = out + err
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert err.strip().splitlines()[-1] == "interrupted; the same command resumes"
    assert "local sweep interrupted" in text and "2 of 3 jobs did not start" in text, text
    (row,) = [line for line in text.splitlines() if line.strip().startswith("#0 ")]
    assert "npz_axis_codes=IPL" in row and "interrupted (Ctrl-C)" in row
    assert Path(row.split()[-1]).name == "launch.log"


def test_a_file_where_the_cache_folder_goes_is_one_line(launch, gensyn_root: Path) -> None:
    (gensyn_root / "workdir").mkdir()
    (gensyn_root / "workdir" / "cache").write_text("not a folder")
    proc = launch("stage=classify", *TINY, check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    (line,) = [s for s in out.splitlines() if "classifier.cache=auto" in s]
    assert f"{gensyn_root / 'workdir' / 'cache'} is a file, not a folder" in line
    assert "Point paths.work_dir to a folder you can write, or set classifier.cache=off" in line
