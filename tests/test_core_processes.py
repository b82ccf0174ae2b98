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
