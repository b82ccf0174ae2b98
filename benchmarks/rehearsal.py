"""GPU rehearsal of the thesis grid at the study's model sizes, through ``launch.py``.

Runs each stage of ``experiment=thesis_grid`` once on simulated data (``dataset=demo
ct_dataset=demo`` scaled up: e.g. 200 phantom CTs of 256³, 5,000 simulated X-rays of 512²)
with the study's models (DRRs at 512², CycleGAN ResNet-9 at 512², DenseNet121 at 512²,
batch 128) on the GPU, with shortened schedules (a few GAN iterations and classifier
epochs), then extrapolates each stage's time to the study's data and the whole grid and
compares it with the original study's logs (CycleGAN ~159 s per 1,024-image epoch and
DenseNet121 ~70 s per 44.5k-image epoch on one H100 PCIe).

    python benchmarks/rehearsal.py --root /tmp/rehearsal --out rehearsal.json --device cuda
    python benchmarks/rehearsal.py --stages drr,gan_train ...      # a subset (resumes)

Each stage is one ``python launch.py`` subprocess; its wall time includes start-up,
upstream checks and (for the GAN and the classifier) compilation, as a user sees it. The
per-item rates used for the extrapolation come from the stages' own summaries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from launching import launch  # benchmarks/launching.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent

#: The original study (its logs; one H100 PCIe): seconds per unit of work.
ORIGINAL = {
    "gan_epoch_s": 159.0,  # CycleGAN, one epoch of 1,024 images per domain, batch 1
    "classify_epoch_s": 70.0,  # DenseNet121 512², one epoch of 44.5k images, batch 128
    "classify_epoch_images": 44_500,
}
#: The study's data sizes used in the extrapolation.
STUDY = {
    "n_cts": 3_630,  # RAD-ChestCT
    "views_per_ct": 10,
    "gan_epochs": 200,
    "gan_images": 1_024,
    "classify_epochs": 30,
    "real_train_images": 44_500,  # PadChest training images per fold (the original's)
    "folds": 5,
    "test_images": 27_471 + 45_518,  # PadChest held-out + ChestX-ray14 PA
    # synthetic images per arm: views × CTs (0 for the baseline)
    "arms": {
        "none": 0,
        "drr_1": 1,
        "drr_2": 2,
        "drr_5": 5,
        "drr_10": 10,
        "synthex_1": 1,
        "synthex_2": 2,
        "synthex_5": 5,
        "synthex_10": 10,
    },
}


def _real_epochs_images(study: dict[str, Any], batch: int = 128, cap: float = 0.5) -> float:
    """Images one fold's nine arms train on under ``classifier.schedule=real_epochs``."""
    from gensyn.classify.train import steps_per_epoch, synthetic_per_batch

    n_real, total = int(study["real_train_images"]), 0.0
    for views in study["arms"].values():
        n_syn = int(views) * int(study["n_cts"])
        s = synthetic_per_batch(n_real, n_syn, batch, cap)
        steps = steps_per_epoch("real_epochs", n_real + n_syn, n_real, batch, s)
        total += steps * batch * int(study["classify_epochs"])
    return total


def summary(root: Path, stage: str) -> dict[str, Any]:
    """The newest finished run's summary.json of ``stage``."""
    done = sorted(
        (root / "workdir" / "runs" / stage).glob("*/DONE"), key=lambda p: p.stat().st_mtime
    )
    if not done:
        return {}
    return json.loads((done[-1].parent / "summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", type=Path, required=True, help="GENSYN_ROOT of the rehearsal")
    p.add_argument("--out", type=Path, required=True, help="JSON with every figure")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n-cts", type=int, default=200)
    p.add_argument("--ct-shape", default="256,256,256")
    p.add_argument("--ct-spacing", default="1.4,1.4,1.3")
    p.add_argument("--n-xrays", type=int, default=5000)
    p.add_argument("--gan-images", type=int, default=256, help="images per domain in the GAN epoch")
    p.add_argument("--classify-epochs", type=int, default=2)
    p.add_argument("--arm", default="synthex_10", help="the arm trained (the largest by default)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument(
        "--stages", default="convert,prepare_xrays,drr,gan_train,gan_translate,classify,predict"
    )
    p.add_argument("overrides", nargs="*", help="extra launch.py overrides")
    a = p.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GENSYN_ROOT": str(a.root),
        "MPLBACKEND": "Agg",
        "KERAS_BACKEND": "jax",
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(a.root / "cache")),
    }
    common = [
        "experiment=thesis_grid",
        "dataset=demo",
        "ct_dataset=demo",
        f"device={a.device}",
        "logger=none",
        f"num_workers={a.workers}",
        f"ct_dataset.demo.num_ct_patients={a.n_cts}",
        f"ct_dataset.demo.volume_shape_vox=[{a.ct_shape}]",
        f"ct_dataset.demo.voxel_spacing_mm=[{a.ct_spacing}]",
        f"ct_dataset.demo.num_workers={a.workers}",
        f"dataset.demo.num_xray_patients={a.n_xrays}",
        "dataset.demo.xray_size_px=512",
        f"dataset.demo.num_workers={a.workers}",
        # no internet on the GPU machine: DenseNet121 from random weights, all layers trained
        "classifier.weights=null",
        "classifier.trainable_tail_layers=-1",
        f"classifier.epochs={a.classify_epochs}",
        "generator.n_epochs=1",
        "generator.n_epochs_decay=0",
        f"generator.max_dataset_size={a.gan_images}",
        "report.test_datasets=[]",  # the simulated data has no external test set
        f"sampling={a.arm}",
        "split_idx=0",
        *a.overrides,
    ]
    log = a.out.with_suffix(".log")
    walls: dict[str, float] = {}
    for stage in a.stages.split(","):
        walls[stage] = round(launch([f"stage={stage}", *common], env, log), 1)
        print(f"{stage:<15} {walls[stage]:8.1f} s wall", flush=True)
        a.out.write_text(json.dumps({"wall_s": walls}, indent=2))  # partial, if killed later
    s = {
        st: summary(a.root, st)
        for st in (
            "convert",
            "prepare_xrays",
            "drr",
            "gan_train",
            "gan_translate",
            "classify",
            "predict",
        )
    }
    figures = extrapolate(s, walls, a)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "args": vars(a) | {"root": str(a.root), "out": str(a.out)},
        "wall_s": walls,
        "summaries": s,
        "extrapolation": figures,
    }
    a.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(figures, indent=2))


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
    except ImportError:
        pass
    return info


def extrapolate(
    s: dict[str, dict[str, Any]], walls: dict[str, float], a: argparse.Namespace
) -> dict[str, Any]:
    """Per-stage rates measured here, scaled to the study's data and the 9 × 5 grid (GPU hours)."""
    out: dict[str, Any] = {}
    views = STUDY["views_per_ct"]
    if s["drr"] and walls.get("drr"):
        n = int(s["drr"].get("n_images", a.n_cts * views))
        per_image = walls["drr"] / max(n, 1)
        out["drr"] = {
            "images": n,
            "wall_s": walls["drr"],
            "images_per_s_stage": round(n / walls["drr"], 1),
            "study_h": round(per_image * STUDY["n_cts"] * views / 3600, 3),
        }
    if s["gan_train"]:
        its = float(s["gan_train"].get("iterations_per_s", 0)) or float("nan")
        epoch_s = STUDY["gan_images"] / its
        out["gan_train"] = {
            "iterations_per_s": its,
            "epoch_s_1024": round(epoch_s, 1),
            "original_epoch_s": ORIGINAL["gan_epoch_s"],
            "speedup": round(ORIGINAL["gan_epoch_s"] / epoch_s, 2),
            "study_h": round(epoch_s * STUDY["gan_epochs"] / 3600, 2),
            "original_study_h": round(ORIGINAL["gan_epoch_s"] * STUDY["gan_epochs"] / 3600, 2),
            "cuda_graphs": s["gan_train"].get("cuda_graphs"),
            "cuda_graphs_failed": s["gan_train"].get("cuda_graphs_failed"),
        }
    if s["gan_translate"] and walls.get("gan_translate"):
        n = int(
            s["gan_translate"].get("n_images", 0)
            or s["gan_translate"].get("n_translated", 0)
            or a.n_cts * views
        )
        rate = n / walls["gan_translate"]
        out["gan_translate"] = {
            "images": n,
            "images_per_s_stage": round(rate, 1),
            "study_h": round(STUDY["n_cts"] * views / rate / 3600, 3),
        }
    if s["classify"]:
        c = s["classify"]
        ips = float(c.get("train_images_per_s") or 0)
        if not ips and c.get("train_time_s"):
            ips = float(c.get("n_train_images", 0)) * a.classify_epochs / float(c["train_time_s"])
        out["classify"] = {
            "train_images_per_s": round(ips, 1),
            "summary": {
                k: c.get(k)
                for k in (
                    "schedule",
                    "optimizer_steps",
                    "n_train_images",
                    "train_time_s",
                    "jax_backend",
                )
            },
        }
        if ips:
            epoch_s = ORIGINAL["classify_epoch_images"] / ips
            # equal optimiser steps (schedule=steps): every arm trains as many images as the baseline
            run_h = epoch_s * STUDY["classify_epochs"] / 3600
            out["classify"].update(
                {
                    "epoch_s_44k": round(epoch_s, 1),
                    "original_epoch_s": ORIGINAL["classify_epoch_s"],
                    "speedup": round(ORIGINAL["classify_epoch_s"] / epoch_s, 2),
                    "grid_h_steps": round(run_h * 9 * STUDY["folds"], 2),
                }
            )
            # the original's epochs schedule: arms with n views train on 44.5k + n × 3,630 images
            orig = sum(
                (STUDY["real_train_images"] + v * STUDY["n_cts"])
                / ORIGINAL["classify_epoch_images"]
                * ORIGINAL["classify_epoch_s"]
                * STUDY["classify_epochs"]
                for v in STUDY["arms"].values()
            )
            out["classify"]["original_grid_h"] = round(orig * STUDY["folds"] / 3600, 2)
            # thesis_grid's real_epochs: every real image 30 times, synthetic images on top
            out["classify"]["grid_h_real_epochs"] = round(
                _real_epochs_images(STUDY) / ips * STUDY["folds"] / 3600, 2
            )
    if s["predict"] and walls.get("predict"):
        n = sum(
            int(v) for k, v in s["predict"].items() if k.startswith("n_") and k.endswith("_images")
        )
        rate = n / walls["predict"] if n else float("nan")
        out["predict"] = {
            "images": n,
            "images_per_s_stage": round(rate, 1),
            "grid_h": round(STUDY["test_images"] / rate * 9 * STUDY["folds"] / 3600, 3)
            if n
            else None,
        }
    ours = sum(
        v.get(k, 0) or 0 for v in out.values() for k in ("study_h", "grid_h_steps", "grid_h")
    )
    theirs = out.get("gan_train", {}).get("original_study_h", 0) + out.get("classify", {}).get(
        "original_grid_h", 0
    )
    out["total"] = {
        "ours_gpu_h": round(ours, 2),
        "original_gpu_h_gan_plus_classify": round(theirs, 2),
        "fraction": round(ours / theirs, 3) if theirs else None,
        "goal_fraction": 0.40,
        "note": "original DRR (DeepDRR) and prediction hours are not in its logs: left out of its total",
    }
    return out


if __name__ == "__main__":
    main()
