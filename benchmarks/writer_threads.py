"""How many writer threads a GPU stage can afford: the GIL cost to the thread that drives the GPU.

Every PyTorch call releases the GIL while it runs and takes it back afterwards. While other
threads want the GIL, taking it back can wait for a switch interval (5 ms by default), so a
main thread that issues many small calls (a translation batch: copies, padding, the graph's
replay, the uint8 conversion, events) slows down with the number of busy Python threads
beside it, even though those threads spend most of their time outside the GIL.

This script starts N threads that encode and write 512² 8-bit PNGs the way ``gan_translate``
does (:func:`gensyn.base.io.write_image`, ISA-L, no fsync) and times, on the main thread, batches
of 20 tiny torch operations (on ``--device``), for each N of ``--threads``. It prints the
milliseconds per 20 operations and the images written per second.

    python benchmarks/writer_threads.py --threads 0 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(n_threads: int, device: str, seconds: float, folder: Path) -> tuple[float, float]:
    """(ms per 20 torch operations on the main thread, images written per second)."""
    import torch

    from gensyn.base.io import write_image

    image = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    stop = threading.Event()

    def writer(k: int) -> int:
        n = 0
        while not stop.is_set():
            write_image(folder / f"w{k}_{n % 4}.png", image, 1, durable=False)
            n += 1
        return n

    x = torch.zeros(4, 4, device=device)
    with ThreadPoolExecutor(max(n_threads, 1)) as pool:
        jobs = [pool.submit(writer, k) for k in range(n_threads)]
        time.sleep(0.2)  # the writers are running
        start, rounds = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for _ in range(20):
                x = x + 1
            if device == "cuda":
                torch.cuda.synchronize()
            rounds += 1
        elapsed = time.perf_counter() - start
        stop.set()
        written = sum(j.result() for j in jobs)
    return 1000 * elapsed / rounds, written / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--seconds", type=float, default=4.0, help="per thread count")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"{'writer threads':>14} {'ms / 20 torch ops':>18} {'images written/s':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.threads:
            ms, rate = measure(n, a.device, a.seconds, Path(tmp))
            print(f"{n:>14} {ms:>18.2f} {rate:>17.0f}", flush=True)


if __name__ == "__main__":
    main()
