"""Where one thread of a stage spends its time: a summary of ``stages.py --profile`` samples.

py-spy's raw format has one line per distinct stack: ``thread (TID): NAME;frame;frame;... COUNT``
(outermost frame first; ``--idle`` samples included). This script keeps the samples of the
threads whose name contains ``--thread`` and whose stack passes through a frame containing
``--within`` (e.g. ``translate_files``), then prints, as shares of those samples:

* the line of ``--within`` they were at (the loop's statements: which one holds the thread),
* the innermost frames (what it was doing there: a torch call, a lock, a queue, ...).

    python benchmarks/pyspy_top.py prof/gan_translate.txt --within translate_files
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^thread \((\d+)\)(?::\s*([^;]*))?;(.*) (\d+)$")


def summarise(
    text: str, thread: str, within: str, top: int
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples kept, [(line of ``within``, samples)], [(innermost frame, samples)])."""
    at_line: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    kept = 0
    for raw in text.splitlines():
        match = LINE.match(raw.strip())
        if match is None:
            continue
        name, stack, count = match.group(2) or "", match.group(3), int(match.group(4))
        if thread not in name:
            continue
        frames = stack.split(";")
        hits = [i for i, f in enumerate(frames) if within in f]
        if not hits:
            continue
        kept += count
        at_line[frames[hits[-1]]] += count
        leaves[frames[-1]] += count
    return kept, at_line.most_common(top), leaves.most_common(top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path, help="py-spy record --format raw output")
    p.add_argument("--thread", default="MainThread", help="part of the thread's name")
    p.add_argument("--within", default="translate_files", help="part of a frame's text")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    kept, lines, leaves = summarise(a.profile.read_text(), a.thread, a.within, a.top)
    if not kept:
        raise SystemExit(f"no samples of a thread named like {a.thread!r} inside {a.within!r}")
    print(f"{kept} samples of {a.thread} inside {a.within}")
    for title, rows in ((f"at the line of {a.within}", lines), ("innermost frame", leaves)):
        print(f"\n{title}:")
        for frame, n in rows:
            print(f"  {100 * n / kept:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
