"""The translation generator compiled in a fresh process, twice: with a cold and a warm
``paths.compile_cache_dir``, as the first and a later SLURM job of a sweep on two nodes.

Each process gets its own ``TMPDIR`` (the compilers' default caches live in ``/tmp``, which
a job on another node does not share) and calls :func:`gensyn.base.devices.use_compile_caches`
on one shared folder, then compiles the study's ResNet-9 generator as ``gan_translate`` does
(:func:`gensyn.gan.translate.compiled_generator`, CUDA graphs at batch 32, 512²) and
translates one batch. Without the shared folder every job pays the cold figure.

    python benchmarks/compile_cache.py --device cuda
    python benchmarks/compile_cache.py --device cpu --size 64 --batch 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_ONE_JOB = """
import json, sys, time
start = time.perf_counter()
from gensyn.base.devices import use_compile_caches
use_compile_caches(sys.argv[1])
import torch
from torch._dynamo.utils import counters
from gensyn.gan.networks import build_generator
from gensyn.gan.translate import compiled_generator, translate_batch
device, size, batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
net = build_generator(1, 1, 64, "resnet_9blocks", "instance", False).to(device).eval()
x = torch.rand(batch, 1, size, size, device=device) * 2 - 1
imported = time.perf_counter()
translate_batch(compiled_generator(net), x)
if device == "cuda":
    torch.cuda.synchronize()
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "compile_s": done - imported,
                  "fxgraph_cache_hit": counters["inductor"]["fxgraph_cache_hit"],
                  "fxgraph_cache_miss": counters["inductor"]["fxgraph_cache_miss"]}))
"""


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    from gensyn.base.devices import COMPILE_CACHES

    env = {k: v for k, v in os.environ.items() if k not in COMPILE_CACHES}
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "compile"
        print(
            f"{'job':<6} {'imports s':>10} {'compile + first batch s':>24} {'FX graph cache':>15}"
        )
        for job in ("first", "later"):
            own_tmp = Path(tmp) / job
            own_tmp.mkdir()
            proc = subprocess.run(
                [sys.executable, "-c", _ONE_JOB, str(shared), a.device, str(a.size), str(a.batch)],
                env={**env, "TMPDIR": str(own_tmp)},
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            cache = "hit" if r["fxgraph_cache_hit"] and not r["fxgraph_cache_miss"] else "miss"
            print(f"{job:<6} {r['import_s']:>10.1f} {r['compile_s']:>24.1f} {cache:>15}")


if __name__ == "__main__":
    main()
