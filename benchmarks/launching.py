"""Running ``launch.py`` from a benchmark script: one helper for every script that times stages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def launch(args: list[str], env: dict[str, str], log: Path, wrap: list[str] | None = None) -> float:
    """Run ``launch.py ARGS`` in ``env["GENSYN_ROOT"]``, output appended to ``log``; returns
    wall seconds; exits with the log's tail on failure. ``wrap``: a command line that runs
    it (e.g. a profiler's, ending in ``--``)."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ launch.py {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run(
            [*(wrap or []), sys.executable, str(ROOT / "launch.py"), *args],
            cwd=env["GENSYN_ROOT"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise SystemExit(f"launch.py {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    stage = next((a for a in args if a.startswith("stage=")), "stage=?")
    print(f"  launch.py {stage}: {wall:.1f} s", flush=True)
    return wall


def newest_run(root: Path, stage: str) -> Path:
    """The newest finished run folder of ``stage`` under ``root`` (its GENSYN_ROOT)."""
    done = sorted((root / "workdir" / "runs" / stage).glob("*/DONE"), key=os.path.getmtime)
    if not done:
        raise SystemExit(f"no finished {stage} run under {root}")
    return done[-1].parent
