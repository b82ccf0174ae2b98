"""Wall time and peak memory of the demo pipeline (`python launch.py`) from a clean root.

Goal (issue 3): the full demo in <= 5 minutes with <= 4 GB peak RSS on a 2-core CPU.
Peak RSS is sampled every 0.1 s over the whole process tree (launch.py and any workers).

    python benchmarks/demo.py [--keep DIR] [extra launch.py overrides...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def tree_rss_bytes(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, default=None, help="root folder to keep outputs in")
    parser.add_argument("overrides", nargs="*", help="extra launch.py overrides")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="gensyn-demo-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GENSYN_ROOT": str(root),
        "MPLBACKEND": "Agg",
        "WANDB_DIR": str(root / "wandb-home"),
        "WANDB_CACHE_DIR": str(root / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(root / "wandb-config"),
        "KERAS_HOME": str(root / "keras"),
        "MPLCONFIGDIR": str(root / "mpl"),
        "XDG_CACHE_HOME": str(root / "cache"),
    }
    cmd = [sys.executable, str(ROOT / "launch.py"), *args.overrides]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watcher = psutil.Process(proc.pid)
    peak = 0
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(watcher))
        time.sleep(0.1)
    reader.join(timeout=10)
    wall = time.perf_counter() - start
    output = "".join(lines)
    print(output[-3000:])
    print("=" * 60)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"command: {' '.join(cmd)}  (exit code {proc.returncode})")
    print(f"demo wall time: {wall:.1f} s   (goal <= 300 s)")
    print(f"demo peak RSS (process tree): {peak / 2**30:.2f} GiB   (goal <= 4 GiB)")
    print(f"outputs in {root}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
