"""Reading gzipped NIfTI CTs in loader threads, as ``stage=drr`` does: GENSYN's reader against
nibabel's, alone and beside a busy thread.

Study-sized chest phantoms (512 × 512 × 300 int16, ISA-L level 1, as ``stage=convert`` writes
them; the same generator as ``benchmarks/stages.py``) are read by ``--threads`` threads, each
CT ``--rounds`` times:

* ``gensyn``: ``gensyn.base.io.read_nifti(dtype=None)``: the compressed file read whole, then
  inflated by ISA-L straight into the voxel array (the GIL released throughout);
* ``gensyn_streamed``: the same reader fed from a file stream (``igzip.open``), what GENSYN
  did before 2026-12-03 (and still does where python-isal lacks its C reader): ISA-L refills
  a 128 KiB input buffer and retakes the GIL ~700 times a CT;
* ``nibabel``: ``np.asarray(nibabel.load(path).dataobj)`` (Python's gzip/zlib).

"busy": one more thread runs Python bytecode all along, as a stage's main thread does while
the loaders read (rendering, queueing, progress). Python hands the GIL to a waiting thread
only every 5 ms (``sys.getswitchinterval()``), so a reader that retakes the GIL often waits.

    python benchmarks/nifti_read.py --cts 4 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _streamed(path: Path) -> np.ndarray:
    from isal import igzip

    from gensyn.base.io import _inflate_nifti

    with igzip.open(path, "rb") as gz:
        return _inflate_nifti(gz, None)[0]


def _nibabel(path: Path) -> np.ndarray:
    import nibabel as nib

    img: Any = nib.load(path)
    return np.asarray(img.dataobj)


def _gensyn(path: Path) -> np.ndarray:
    from gensyn.base.io import read_nifti

    return read_nifti(path, dtype=None)[0]


READERS: dict[str, Callable[[Path], np.ndarray]] = {
    "gensyn": _gensyn, "gensyn_streamed": _streamed, "nibabel": _nibabel,
}  # fmt: skip


def rate(read: Callable[[Path], np.ndarray], files: list[Path], threads: int, busy: bool) -> float:
    """CTs per second of ``read`` over ``files`` in ``threads`` threads (optionally beside a
    thread that runs Python all along)."""
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    spinner = threading.Thread(target=spin, daemon=True)
    if busy:
        spinner.start()
    try:
        with ThreadPoolExecutor(threads) as pool:
            t0 = time.perf_counter()
            list(pool.map(read, files))
            return len(files) / (time.perf_counter() - t0)
    finally:
        stop.set()
        if busy:
            spinner.join()


def main() -> None:
    from stages import write_cts  # benchmarks/stages.py: the same phantoms

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--cts", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="reads of each CT per measurement")
    p.add_argument("--root", type=Path, default=Path("/tmp/gensyn-nifti-read"))
    a = p.parse_args()
    folder = a.root / "cts"
    if len(list(folder.glob("*.nii.gz"))) < a.cts:
        write_cts(folder, a.cts, (512, 512, 300), (0.7, 0.7, 1.0), a.threads)
    files = sorted(folder.glob("*.nii.gz"))[: a.cts]
    ref = _nibabel(files[0])
    for name, read in READERS.items():  # same voxels from every reader
        assert np.array_equal(read(files[0]), ref), name
    mb = files[0].stat().st_size / 1e6
    print(f"{len(files)} CTs of 512×512×300 int16, {mb:.0f} MB gzipped each; {a.threads} threads")
    print(f"{'reader':<16} {'alone CTs/s':>12} {'busy CTs/s':>11}")
    for name, read in READERS.items():
        alone = rate(read, files * a.rounds, a.threads, busy=False)
        busy = rate(read, files * a.rounds, a.threads, busy=True)
        print(f"{name:<16} {alone:>12.2f} {busy:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
