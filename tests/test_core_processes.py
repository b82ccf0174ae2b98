"""Processes, interrupts and folders (issue 36): one Hydra folder per launch, no orphan
workers after a SIGKILL, Ctrl-C in one line with exit status 130."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ("profile=tiny", "logger=none", "logger.carbontracker=false")


def _popen(gensyn_root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=gensyn_root,
        env={**os.environ, "GENSYN_ROOT": str(gensyn_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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


def test_sigkill_of_convert_leaves_no_worker_running(gensyn_root: Path) -> None:
    import signal
    import time

    import numpy as np

    raw = gensyn_root / "cts"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):  # random HU: slow to compress, so the kill lands mid-conversion
        volume = rng.integers(-1000, 2000, (128, 128, 96), dtype=np.int16)
        np.savez(raw / f"ct{i:02d}.npz", ct=volume, spacing=np.array([1.0, 1.0, 2.0]))
    proc = _popen(
        gensyn_root,
        "stage=convert",
        "experiment=thesis",
        "ct_dataset=folder",
        f"ct_dataset.raw_dir={raw}",
        "ct_dataset.convert.ct_format=npz",
        "num_workers=2",
        *TINY,
    )
    volumes = gensyn_root / "workdir" / "runs" / "convert"
    deadline = time.monotonic() + 120
    workers: list[int] = []
    # wait for the pool's workers and their first finished volume
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _descendants(proc.pid)
        if len(workers) >= 2 and any(volumes.glob("*/volumes/*.nii.gz")):
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(workers) >= 2, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(5)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # leave nothing behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    written = len(list(volumes.glob("*/volumes/*.nii.gz")))
    assert written < 16  # the kill came before the end: the workers did not finish the data set
