"""``launch.py`` plus one small stage, ``slurm_probe``, for the SLURM tests.

The probe is a real GENSYN stage (hashed run folder, DONE marker, resume) whose work is a
deterministic optimisation that takes a known time: ``steps`` gradient steps of least
squares, ``step_s`` seconds each, a checkpoint after every step and a
:func:`gensyn.base.preemption.checkpoint_point` after each checkpoint. So a test can pre-empt it
at a known point and compare the final weights, bit for bit, with an uninterrupted run.

    python tests/slurm_app.py -m stage=list stage.name=slurm_probe +extras.steps=20 \
        +extras.step_s=0.5 seed=0,1 hydra/launcher=slurm

``+extras.fail_flag=/some/dir/fail-SEED`` makes the job of a seed fail (after its first
step, with a ValueError) while the file with SEED replaced by the seed exists;
``+extras.gpu_fail_flag=...`` likewise, with the runtime error JAX raises when the GPU fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gensyn.base import io, preemption  # noqa: E402
from gensyn.config import register_configs  # noqa: E402
from gensyn.core.registry import stage  # noqa: E402

register_configs()
NUM_FEATURES = 8


def probe(cfg: DictConfig, ctx: object) -> None:
    """``extras.steps`` SGD steps on a seeded least-squares problem, resumable after any step."""
    out: Path = ctx.out_dir  # type: ignore[attr-defined]
    steps = int(cfg.extras.get("steps", 10))
    step_s = float(cfg.extras.get("step_s", 0.2))
    rng = np.random.default_rng(cfg.seed)
    x = rng.normal(size=(256, NUM_FEATURES))
    y = x @ rng.normal(size=NUM_FEATURES) + 0.1 * rng.normal(size=256)
    ckpt = out / "checkpoint.npz"
    if ckpt.exists():
        with np.load(ckpt) as saved:
            w, start = saved["w"].copy(), int(saved["next_step"])
    else:
        w, start = np.zeros(NUM_FEATURES), 0
    with open(out / "starts.jsonl", "a", encoding="utf-8") as fh:  # one line per (re)start
        fh.write(
            json.dumps(
                {
                    "start_step": start,
                    "slurm_job": os.environ.get("SLURM_JOB_ID"),
                    "restarts": os.environ.get("SLURM_RESTART_COUNT"),
                }
            )
            + "\n"
        )
    for step in range(start, steps):
        batch = np.random.default_rng([cfg.seed, step]).choice(len(x), 32, replace=False)
        grad = 2 * x[batch].T @ (x[batch] @ w - y[batch]) / len(batch)
        w = w - 0.05 * grad
        time.sleep(step_s)
        tmp = out / "checkpoint.tmp.npz"
        np.savez(tmp, w=w, next_step=step + 1)
        tmp.replace(ckpt)
        fail_flag = str(cfg.extras.get("fail_flag", ""))
        if fail_flag and Path(fail_flag.replace("SEED", str(cfg.seed))).exists():
            raise ValueError(f"slurm_probe: deliberate failure after step {step} ({fail_flag})")
        gpu_flag = str(cfg.extras.get("gpu_fail_flag", ""))
        if gpu_flag and Path(gpu_flag.replace("SEED", str(cfg.seed))).exists():
            import jax

            # the error XLA raised in a grid whose GPU another process had filled
            raise jax.errors.JaxRuntimeError(
                "NOT_FOUND: All configs failed during profiling or were excluded from "
                f"selection. (slurm_probe, step {step})"
            )
        preemption.checkpoint_point()
    io.write_json(out / "result.json", {"w": w.tolist(), "loss": float(np.mean((x @ w - y) ** 2))})


def register() -> None:
    """Register the probe stage (in the submitting process and again inside each job)."""
    stage(name="slurm_probe", summary="SLURM test workload", config_keys=("seed", "extras"))(probe)


register()


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    """Like launch.py's main, with the probe stage registered."""
    register()
    from gensyn.app.main import run

    run(cfg)


if __name__ == "__main__":
    main()
