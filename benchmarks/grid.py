"""The whole ``experiment=thesis_grid`` classifier grid through ``launch.py`` on simulated data.

9 sampling arms × 5 folds × 30 epochs (batch 128, 512², ``schedule`` as the experiment sets it)
on data of the study's size: 44,500 real training X-rays (every fold's train + validation),
a held-out test set of PadChest's size (27,471), and 3,630 CTs × 10 views of DRRs and as many
SyntheX images. Then ``stage=predict`` for every run and ``stage=report``. Each phase is one
``python launch.py -m`` sweep (one process: the frozen DenseNet121 prefix's features are
computed once per image and shared by every arm, fold and prediction, see
docs/classification.md); the script prints each phase's wall time and images/s, and compares
a sample of runs with ``classifier.feature_cache=off`` (the full model every batch) at
``--compare-epochs`` epochs, in the same run: test AUCs must agree to ``--tolerance``.

Simulated data, made fast: the real X-rays are a ``dataset=folder`` of ``--distinct``
chest-like 512² PNGs hard-linked to N files (benchmarks/classify_launch.py), through the real
``prepare_xrays`` stage. The CT labels (``convert``), DRRs (``drr``) and SyntheX images
(``gan_translate``) are written straight into those stages' run folders, at the hashes the
grid's config gives them and marked DONE, as the tests do: the classifier grid is what is
measured. No internet on the GPU machine: DenseNet121 starts from a saved random no-top
weights file with the study's 9 trainable layers (the same frozen layers, the same cost).

Resumable: run folders are hashed and DONE-marked, so the same command again skips finished
runs (a run killed mid-way resumes at its last epoch); each call appends its phases' times to
``<root>/grid_log.jsonl`` and the report sums them over calls. Tiny, on a CPU:

    python benchmarks/grid.py --device cpu --root /tmp/grid --n-real 64 --n-test 32 \\
        --n-cts 8 --image-size 32 --epochs 1 --batch 8 --arms none,synthex_2 --folds 0,1 \\
        --compare none:0 --workers 2

On one lent H100 (no internet; GENSYN's dependencies carried as wheels made here with
``bash scripts/gpu_carry.sh fetch .whl``; carry ``.whl``), calls of at most 10 minutes on the
same warm machine, each the same command until the sweeps report ``finished=True`` (data is
made once, finished runs are skipped), then one call with ``--phases compare``::

    bash scripts/gpu_carry.sh install .whl >/dev/null && . /tmp/gensyn_env.sh && \
    export PYTHONUNBUFFERED=1 && python3 benchmarks/grid.py --device cuda --root /tmp/grid \
        --workers 16 --phases data,classify,predict,report --deadline-s 540 \
        --out $OUT/grid.json 2>&1 | tee $OUT/grid.log; tail -c 8000 /tmp/grid/launch.log
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from classify_launch import FINDINGS, make_folder, random_weights_file
from launching import ROOT, launch

ARMS = ("none", "drr_1", "drr_2", "drr_5", "drr_10", "synthex_1", "synthex_2", "synthex_5",
        "synthex_10")  # fmt: skip
PHASES = ("data", "classify", "predict", "report", "compare")
#: PadChest's held-out test set (the study's; ChestX-ray14's 45,518 PA images are not simulated)
STUDY_TEST = 27_471


def common_overrides(a: argparse.Namespace, root: Path) -> list[str]:
    """The overrides every launch.py call of the grid shares (data, model, device)."""
    test_fraction = a.n_test / (a.n_real + a.n_test)
    return [
        "experiment=thesis_grid",
        "dataset=folder",
        f"dataset.raw_dir={root / 'xrays'}",
        f"dataset.xray.size_px={a.image_size}",
        f"dataset.xray.test_fraction={test_fraction:.6f}",
        f"classifier.image_size_px={a.image_size}",
        f"classifier.weights={random_weights_file(root)}",
        f"classifier.batch_size={a.batch}",
        f"classifier.predict_batch_size={a.batch}",
        "report.test_datasets=[]",
        f"device={a.device}",
        f"num_workers={a.workers}",
        "logger=none",
    ]


def compose(root: Path, overrides: list[str]) -> Any:
    """The config launch.py composes for ``overrides`` (to find the stages' run folders)."""
    os.environ["GENSYN_ROOT"] = str(root)
    sys.path.insert(0, str(ROOT))
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gensyn.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def _done(folder: Path) -> None:
    (folder / "DONE").write_text(json.dumps({"simulated_by": "benchmarks/grid.py"}))


def fake_synthetic(a: argparse.Namespace, root: Path) -> int:
    """CT labels (convert), DRRs (drr) and SyntheX images (gan_translate) of ``--n-cts`` CTs ×
    ``--views`` views, PNGs hard-linked to the distinct real-like images; returns how many
    synthetic images each source has."""
    import pandas as pd

    from gensyn.core.runs import run_dir

    cfg = compose(root, [*common_overrides(a, root), "sampling=synthex_10"])
    distinct = sorted((root / "xrays").glob("d*.png"))
    rng = np.random.default_rng(1)
    labels = (rng.random((a.n_cts, len(FINDINGS))) < 0.3).astype(int)
    conv = run_dir(cfg, "convert")
    conv.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "image_id": [f"ct{c:05d}" for c in range(a.n_cts)],
            "patient_id": [f"ctp{c:05d}" for c in range(a.n_cts)],
            **{f: labels[:, k] for k, f in enumerate(FINDINGS)},
        }
    ).to_csv(conv / "labels.csv", index=False)
    _done(conv)
    for stage in ("drr", "gan_translate"):
        folder = run_dir(cfg, stage)
        rows = []
        for c in range(a.n_cts):
            for v in range(a.views):
                name = f"images/ct{c:05d}/v{v:02d}.png"
                target = folder / name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(distinct[(c * a.views + v) % len(distinct)], target)
                rows.append(
                    {
                        "path": name,
                        "ct_id": f"ct{c:05d}",
                        "patient_id": f"ctp{c:05d}",
                        "view_index": v,
                        "is_center": v == 0,
                        "alpha_deg": 2.0 * v,
                        "beta_deg": 0.0,
                    }
                )
        pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
        _done(folder)
    return a.n_cts * a.views


def gpu_processes() -> list[str]:
    """The processes that hold memory on the GPUs now (``nvidia-smi``; none without it)."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"]  # fmt: skip
    got = subprocess.run(query, capture_output=True, text=True, check=False)
    return [line.strip() for line in got.stdout.splitlines() if line.strip()]


def summaries(runs_dir: Path, stage: str) -> list[dict[str, Any]]:
    """Every finished run's summary of ``stage`` under ``runs_dir``."""
    return [
        json.loads(p.read_text())
        for p in sorted((runs_dir / stage).glob("*/summary.json"))
        if (p.parent / "DONE").is_file()
    ]


def sweep(a: argparse.Namespace, stage: str, arms: list[str], folds: list[str], extra: list[str]) -> list[str]:  # fmt: skip
    """A launch.py multirun of ``stage`` over ``arms`` × ``folds``."""
    return [
        "-m", f"stage={stage}", f"sampling={','.join(arms)}", f"split_idx={','.join(folds)}",
        *extra,
    ]  # fmt: skip


class Deadline:
    """The end of this call's time (``--deadline-s`` from the start; None: no end)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()


def launch_until(args: list[str], env: dict[str, str], log: Path, deadline: Deadline, profile: Path | None = None) -> tuple[float, bool]:  # fmt: skip
    """``launch.py ARGS`` (output appended to ``log``) until it ends or the deadline passes;
    (wall seconds, finished). A sweep stopped at the deadline is killed: its finished runs are
    DONE, the run in progress resumes at its last epoch when the command is run again.
    ``profile``: run it under cProfile, the statistics written there (``.prof``) and, as the
    40 functions of most own time and of most cumulative time, beside it (``.txt``); a sweep
    killed at the deadline writes none."""
    left = deadline.left()
    if profile is not None:
        left = 1e9 if left is None else left
    if left is None:
        return launch(args, env, log), True
    if left < 30:
        print(f"  launch.py {args[:3]}: skipped, {left:.0f} s left", flush=True)
        return 0.0, False
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ launch.py {' '.join(args)}\n")
        fh.flush()
        python = [sys.executable] if profile is None else [sys.executable, "-m", "cProfile", "-o", str(profile)]  # fmt: skip
        proc = subprocess.Popen(
            [*python, str(ROOT / "launch.py"), *args], cwd=env["GENSYN_ROOT"], env=env,
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            wall = time.perf_counter() - start
            print(f"  launch.py {args[:3]}: stopped at the deadline after {wall:.1f} s", flush=True)
            return wall, False
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"launch.py {' '.join(args)} failed ({code}):\n{log.read_text()[-4000:]}")
    print(f"  launch.py {args[:3]}: {wall:.1f} s", flush=True)
    if profile is not None:
        write_profile(profile)
    return wall, True


def write_profile(profile: Path) -> None:
    """The 40 functions of most own time and of most cumulative time in ``profile`` (a
    cProfile file), to ``profile.with_suffix('.txt')``."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(profile), stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    profile.with_suffix(".txt").write_text(text.getvalue())
    print(f"  profile: {profile.with_suffix('.txt')}", flush=True)


def record(root: Path, phase: str, wall_s: float, **fields: Any) -> dict[str, Any]:
    """Append a phase's figures to ``<root>/grid_log.jsonl`` and print them."""
    row = {"phase": phase, "wall_s": round(wall_s, 2), "time": time.time(), **fields}
    with open(root / "grid_log.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"[{phase}] " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "phase"), flush=True)
    return row


def link_upstreams(runs: Path, other: Path) -> None:
    """``other`` (a second runs folder) sees the upstream stages of ``runs`` (not classify or
    predict), so the uncached comparison runs train on the same data."""
    other.mkdir(parents=True, exist_ok=True)
    for stage in ("prepare_xrays", "convert", "drr", "gan_translate", "splits"):
        if (runs / stage).exists() and not (other / stage).exists():
            (other / stage).symlink_to(runs / stage)


def compare(a: argparse.Namespace, root: Path, env: dict[str, str], log: Path, common: list[str]) -> dict[str, Any]:  # fmt: skip
    """The sample runs with and without the feature cache at ``--compare-epochs``: test AUCs."""
    runs, off_runs = root / "workdir" / "runs", root / "workdir" / "runs_off"
    link_upstreams(runs, off_runs)
    out: dict[str, Any] = {"runs": []}
    for item in a.compare.split(","):
        arm, fold = item.split(":")
        args = [*common, f"sampling={arm}", f"split_idx={fold}", f"classifier.epochs={a.compare_epochs}"]  # fmt: skip
        got: dict[str, Any] = {"arm": arm, "fold": int(fold)}
        for mode, where in (("auto", runs), ("off", off_runs)):
            extra = [f"classifier.feature_cache={mode}", f"paths.runs_dir={where}"]
            wall = launch(["stage=predict", *args, *extra], env, log)
            cfg = compose(root, [*args, *extra, "stage=predict"])
            from gensyn.core.runs import run_dir

            pred = json.loads((run_dir(cfg, "predict") / "summary.json").read_text())
            cls = json.loads((run_dir(cfg, "classify") / "summary.json").read_text())
            got[mode] = {
                "wall_s": round(wall, 2),
                "test_macro_auc": pred["test_macro_auc"],
                "test_auc": {f: pred.get(f"test_auc_{f}") for f in FINDINGS},
                "best_val_macro_auc": cls["best_val_macro_auc"],
                "feature_cache": cls.get("feature_cache"),
            }
        diffs = [
            abs(got["auto"]["test_auc"][f] - got["off"]["test_auc"][f])
            for f in FINDINGS
            if got["off"]["test_auc"][f] is not None and np.isfinite(got["off"]["test_auc"][f])
        ]
        got["max_abs_auc_difference"] = max(diffs) if diffs else float("nan")
        got["identical_to_tolerance"] = bool(diffs) and max(diffs) <= a.tolerance
        out["runs"].append(got)
    out["all_identical_to_tolerance"] = all(r["identical_to_tolerance"] for r in out["runs"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--root", type=Path, default=Path("/tmp/gensyn-grid"))
    p.add_argument("--n-real", type=int, default=44_500, help="real training X-rays (all folds)")
    p.add_argument("--n-test", type=int, default=STUDY_TEST, help="held-out test X-rays")
    p.add_argument("--n-cts", type=int, default=3_630, help="CTs of the synthetic sources")
    p.add_argument("--views", type=int, default=10, help="views per CT (DRR and SyntheX)")
    p.add_argument("--distinct", type=int, default=500, help="distinct PNGs behind the links")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--compare", default="none:0,synthex_10:0", help="arm:fold,... run both ways")
    p.add_argument("--compare-epochs", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest test AUC difference")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--mem-fraction", default="0.9", help="XLA_PYTHON_CLIENT_MEM_FRACTION (GPU)")
    p.add_argument("--out", type=Path, default=None, help="JSON of this call's figures")
    p.add_argument(
        "--shared-gpu", action="store_true", help="run although other processes hold GPU memory"
    )
    p.add_argument(
        "--profile",
        default="",
        help="stages to run under cProfile: classify,predict "
        "(<root>/<stage>.prof and .txt; a sweep stopped at the deadline writes none)",
    )
    p.add_argument(
        "--deadline-s", type=float, default=None,
        help="stop the sweep in progress this many seconds after the start (a device call's "
        "limit); the same command again resumes",
    )  # fmt: skip
    a = p.parse_args()
    busy = gpu_processes() if a.device == "cuda" else []
    if busy and not a.shared_gpu:
        # timings would be shared, and two allocators on one GPU leave XLA's autotuner
        # without memory: every classify job then fails (benchmarks/LOG.md, fifteenth lease)
        raise SystemExit(
            "other processes hold GPU memory:\n  " + "\n  ".join(busy) + "\nstop them, or "
            "pass --shared-gpu to run beside them anyway; and start nothing else on the GPU "
            "while the grid runs"
        )
    deadline = Deadline(a.deadline_s)
    root = a.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    phases = a.phases.split(",")
    arms, folds = a.arms.split(","), a.folds.split(",")
    env = {**os.environ, "GENSYN_ROOT": str(root), "MPLBACKEND": "Agg", "KERAS_BACKEND": "jax",
           "XLA_PYTHON_CLIENT_MEM_FRACTION": a.mem_fraction}  # fmt: skip
    env.setdefault("XDG_CACHE_HOME", str(root / "cache"))
    log = root / "launch.log"
    common = common_overrides(a, root)
    runs = root / "workdir" / "runs"
    figures: dict[str, Any] = {"device": a.device, "args": vars(a) | {"root": str(root)}}
    if "data" in phases and (root / "DATA_DONE").is_file():
        print(f"data: made by an earlier call ({root / 'DATA_DONE'})", flush=True)
    elif "data" in phases:
        start = time.perf_counter()
        make_folder(root / "xrays", a.n_real + a.n_test, a.distinct, a.image_size, 0)
        wall = launch(["stage=prepare_xrays", *common], env, log)
        n_syn = fake_synthetic(a, root)
        figures["data"] = record(root, "data", time.perf_counter() - start, prepare_xrays_s=round(wall, 2),
                                 n_real_and_test=a.n_real + a.n_test, n_synthetic_per_source=n_syn)  # fmt: skip
        (root / "DATA_DONE").write_text(json.dumps(figures["data"]))
    profile = {stage: root / f"{stage}.prof" if stage in a.profile.split(",") else None for stage in ("classify", "predict")}  # fmt: skip
    if "classify" in phases:
        wall, finished = launch_until(sweep(a, "classify", arms, folds, [*common, f"classifier.epochs={a.epochs}"]), env, log, deadline, profile["classify"])  # fmt: skip
        done = [s for s in summaries(runs, "classify") if s.get("arm") in {_arm(x) for x in arms}]
        steps = sum(int(s.get("optimizer_steps", 0)) for s in done)
        figures["classify"] = record(
            root, "classify", wall, finished=finished, runs_done=len(done), optimizer_steps=steps,
            feature_cache=sorted({str(s.get("feature_cache")) for s in done}),
            feature_pass_s=round(sum(float(s.get("time_feature_pass_s", 0)) for s in done), 2),
            feature_bytes_max=max((int(s.get("feature_cache_bytes", 0)) for s in done), default=0),
            feature_where=sorted({str(s.get("feature_cache_where")) for s in done}),
            run_s={k: round(sum(float(s.get(f"time_{k}_s", 0)) for s in done), 1)
                   for k in ("setup", "fit", "validate", "checkpoint", "save")},
            run_duration_s=round(sum(float(s.get("duration_s", 0)) for s in done), 1),
        )  # fmt: skip
    if "predict" in phases:
        wall, finished = launch_until(sweep(a, "predict", arms, folds, [*common, f"classifier.epochs={a.epochs}"]), env, log, deadline, profile["predict"])  # fmt: skip
        done = summaries(runs, "predict")
        images = sum(int(s.get("n_folder_images", 0)) for s in done)
        figures["predict"] = record(
            root, "predict", wall, finished=finished, runs_done=len(done), images=images,
            feature_pass_s=round(sum(float(s.get("time_feature_pass_s", 0)) for s in done), 2),
            macro_auc_mean=round(float(np.mean([s["test_macro_auc"] for s in done])), 4) if done else None,
        )  # fmt: skip
    if "report" in phases:
        wall, finished = launch_until(["stage=report", *common, f"classifier.epochs={a.epochs}"], env, log, deadline)  # fmt: skip
        figures["report"] = record(root, "report", wall, finished=finished)
    if "compare" in phases:
        start = time.perf_counter()
        figures["compare"] = compare(a, root, env, log, common)
        record(root, "compare", time.perf_counter() - start,
               all_identical=figures["compare"]["all_identical_to_tolerance"])  # fmt: skip
    rows = [json.loads(line) for line in (root / "grid_log.jsonl").read_text().splitlines()]
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["phase"]] = totals.get(row["phase"], 0.0) + float(row["wall_s"])
    figures["wall_s_over_all_calls"] = {k: round(v, 1) for k, v in totals.items()}
    grid = totals.get("classify", 0.0) + totals.get("predict", 0.0) + totals.get("report", 0.0)
    figures["grid_wall_s_over_all_calls"] = round(grid, 1)
    # rates over every call's wall time (a sweep stopped at a deadline and resumed included)
    last = {row["phase"]: row for row in rows}
    if totals.get("classify"):
        steps = int(last["classify"]["optimizer_steps"])
        figures["classify_train_images_per_s_over_all_calls"] = round(steps * a.batch / totals["classify"], 1)  # fmt: skip
    if totals.get("predict"):
        figures["predict_images_per_s_over_all_calls"] = round(last["predict"]["images"] / totals["predict"], 1)  # fmt: skip
    print(json.dumps(figures, indent=1, default=str))
    if a.out:
        a.out.write_text(json.dumps(figures, indent=1, default=str))


def _arm(option: str) -> str:
    """The arm name a sampling option's summary carries (``none`` is the baseline)."""
    return "baseline" if option == "none" else option


if __name__ == "__main__":
    main()
