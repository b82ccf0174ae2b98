"""SyntheX CycleGAN speed: GENSYN vs the reference pytorch-CycleGAN-and-pix2pix, same run.

Both train on the same synthetic 1-channel PNG domains with the same options (the SyntheX
recipe: resnet_9blocks, basic PatchGAN, instance norm, LSGAN, pool 50, batch 1, load 552 →
crop 512, flips, 4 loader workers). Each configuration runs in its own process; the first
epoch is warm-up (cuDNN autotuning, compilation), the following epochs are timed.

    python benchmarks/gan.py --device cuda --ref-dir .peers/pytorch-CycleGAN-and-pix2pix \\
        --json gan.json
    python benchmarks/gan.py --device cpu     # the demo's CycleGAN training time on this CPU

Reported: training iterations/s (ours: fp32, bf16, bf16 + channels-last, each eager and as
CUDA graphs, and + torch.compile; the reference as it ships), translation images/s at 512² (batched bf16 vs the reference's
batch-1 fp32 generator forward, and ours end to end PNG → PNG), peak GPU memory.
The reference checkout (a git-ignored folder, never committed) is imported, not copied;
without torchvision its own data loader is replaced by GENSYN's (same augmentation).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _light_gensyn_config() -> None:
    """Import gensyn.config.generator without gensyn/config/__init__ (which needs Hydra):
    the GPU machine has torch but not the Hydra stack."""
    if "gensyn.config" not in sys.modules:
        pkg = types.ModuleType("gensyn.config")
        pkg.__path__ = [str(ROOT / "gensyn" / "config")]
        sys.modules["gensyn.config"] = pkg


def make_domains(root: Path, n: int, size: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """``n`` smooth DRR-like PNGs in trainA and ``n`` noisy radiograph-like PNGs in trainB."""
    from gensyn.base.io import to_uint, write_image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out: dict[str, list[Path]] = {"trainA": [], "trainB": []}
    for name in out:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cx, cy = rng.uniform(0.3, 0.7, 2)
            img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.03, 0.1))
            if name == "trainB":
                img = 0.2 + 0.7 * img + rng.normal(0, 0.05, img.shape)
            path = root / name / f"{i:04d}.png"
            if not path.exists():
                write_image(path, to_uint(img, 8, 0.0, 1.0))
            out[name].append(path)
    return out["trainA"], out["trainB"]


def _peak_gpu_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


# ----------------------------------------------------------------------------- workers
def _bench_options(a: argparse.Namespace, **overrides: Any) -> Any:
    """The CycleGANSettings of a benchmark run: the worker's flags plus ``overrides``."""
    _light_gensyn_config()
    from gensyn.gan.settings import CycleGANSettings

    flags = dict(arch=a.arch, ngf=a.ngf, ndf=a.ngf, load_size=a.load, crop_size=a.crop)
    flags.update(precision=a.precision, channels_last=a.channels_last, compile=a.compile)
    return CycleGANSettings(**{**flags, "cuda_graphs": a.graphs, **overrides})


def worker_ours(a: argparse.Namespace) -> dict[str, Any]:
    """Train with GENSYN's trainer for a.epochs epochs; epochs after the first are timed."""
    import torch

    opts = _bench_options(a, n_epochs=a.epochs, n_epochs_decay=0, max_dataset_size=a.images)
    from gensyn.gan.trainer import CycleGANTrainer

    paths_a, paths_b = make_domains(Path(a.data), a.images, a.size)
    with tempfile.TemporaryDirectory() as out:
        trainer = CycleGANTrainer(
            opts, paths_a, paths_b, out, device=a.device, num_workers=a.workers
        )
        start, cpu0 = time.perf_counter(), time.process_time()
        history = trainer.fit()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        t0 = time.perf_counter()
        trainer.save_checkpoint()
        ckpt_s = time.perf_counter() - t0
    timed = history[1:] or history
    its = sum(len(paths_a) for _ in timed) / sum(h["epoch_time_s"] for h in timed)
    return {
        "it_per_s": its,
        "cpu_s_per_it": cpu / (len(history) * trainer.dataset.epoch_length),
        "wall_s": wall,
        "checkpoint_s": ckpt_s,
        "warmup_epoch_s": history[0]["epoch_time_s"],
        "peak_gpu_mb": _peak_gpu_mb(),
        "torch": torch.__version__,
    }


#: kernel-name fragments -> the part of a CycleGAN step they belong to (first match wins)
KERNEL_KINDS = (
    ("triton_red", "Inductor fused reductions (norm statistics, losses)"),
    ("triton_per", "Inductor fused reductions (norm statistics, losses)"),
    ("triton_poi", "Inductor fused element-wise (padding, norm, activations)"),
    ("triton", "Inductor other"),
    ("wgrad", "convolution, weight gradient"),
    ("dgrad", "convolution, data gradient"),
    ("conv", "convolution / GEMM"),
    ("gemm", "convolution / GEMM"),
    ("xmma", "convolution / GEMM"),
    ("cutlass", "convolution / GEMM"),
    ("norm", "instance norm (forward and backward)"),
    ("welford", "instance norm (forward and backward)"),
    ("reduce", "reductions (norm statistics, losses)"),
    ("adam", "optimiser (Adam)"),
    ("foreach", "optimiser (Adam)"),
    ("pad", "reflection padding"),
    ("copy", "copies / layout changes"),
    ("transpose", "copies / layout changes"),
    ("nchw", "copies / layout changes"),
    ("elementwise", "element-wise (activations, losses, casts)"),
    ("vectorized", "element-wise (activations, losses, casts)"),
)


def kernel_kind(name: str) -> str:
    """The part of a training step a CUDA kernel belongs to, from its name."""
    low = name.lower()
    for fragment, kind in KERNEL_KINDS:
        if fragment in low:
            return kind
    return "other"


def worker_profile(a: argparse.Namespace) -> dict[str, Any]:
    """Where a 512² batch-1 training step spends its time, by torch.profiler.

    Profiles the step as the trainer runs it on a GPU (``--graphs 1``: bf16, channels-last,
    two CUDA graphs) or eagerly (``--graphs 0``), after 20 warm-up steps (cuDNN autotuning and
    graph capture; ``--compile 1``: the networks compiled by torch.compile first, as the
    trainer does on a GPU by default). Reports wall ms per step, GPU busy ms per step (sum of kernel times: the
    rest is launch latency and host work between kernels), the GPU time by kind of kernel and
    the 25 most expensive kernels.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    opts = _bench_options(a)
    from gensyn.gan.model import CycleGAN

    torch.backends.cudnn.benchmark = True
    model = CycleGAN(opts, torch.device("cuda"))
    if opts.compile:
        model.compile()
    x = torch.rand(1, 1, a.crop, a.crop, device="cuda") * 2 - 1
    for _ in range(20):
        model.train_step(x, x)
    torch.cuda.synchronize()
    steps = 30
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_step(x, x)
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1000 / steps
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            model.train_step(x, x)
        torch.cuda.synchronize()
    events = prof.key_averages()
    table = events.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
    by_kind: dict[str, float] = {}
    n_kernels = 0
    for e in events:
        if e.self_device_time_total <= 0:
            continue
        kind = kernel_kind(e.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total / 1000 / steps
        n_kernels += e.count
    busy_ms = sum(by_kind.values())
    lines = ["| kind of kernel | GPU ms / step | share |", "| --- | --- | --- |"]
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {ms:.2f} | {ms / busy_ms:.0%} |")
    summary = (
        f"wall {wall_ms:.2f} ms/step ({1000 / wall_ms:.1f} it/s), GPU busy {busy_ms:.2f} ms/step "
        f"({busy_ms / wall_ms:.0%} of wall), {n_kernels / steps:.0f} kernels/step, "
        f"graphs={bool(opts.cuda_graphs)}, precision={opts.precision}, "
        f"channels_last={bool(opts.channels_last)}, compiled={bool(opts.compile)}"
    )
    return {
        "wall_ms_per_step": wall_ms,
        "gpu_ms_per_step": busy_ms,
        "kernels_per_step": n_kernels / steps,
        "by_kind_ms": by_kind,
        "summary": summary,
        "table": summary + "\n" + "\n".join(lines) + "\n" + table,
    }


def _ref_options(a: argparse.Namespace, checkpoints: str) -> list[str]:
    gpu = "0" if a.device == "cuda" else "-1"
    return [
        "--dataroot",
        a.data,
        "--name",
        "bench",
        "--model",
        "cycle_gan",
        "--input_nc",
        "1",
        "--output_nc",
        "1",
        "--netG",
        a.arch,
        "--ngf",
        str(a.ngf),
        "--ndf",
        str(a.ngf),
        "--load_size",
        str(a.load),
        "--crop_size",
        str(a.crop),
        "--batch_size",
        "1",
        "--pool_size",
        "50",
        "--gpu_ids",
        gpu,
        "--checkpoints_dir",
        checkpoints,
        "--display_id",
        "-1",
        "--no_html",
        "--num_threads",
        str(a.workers),
        "--max_dataset_size",
        str(a.images),
        "--n_epochs",
        str(a.epochs),
        "--n_epochs_decay",
        "0",
    ]


def worker_ref(a: argparse.Namespace) -> dict[str, Any]:
    """The reference's own train.py loop (options, data set, model), without its visualiser."""
    import torch

    make_domains(Path(a.data), a.images, a.size)
    sys.path.insert(0, str(Path(a.ref_dir).resolve()))
    loader_kind = "reference (torchvision)"
    try:
        import torchvision  # noqa: F401
    except ImportError:  # options/data modules import it; only GENSYN's loader is used then
        stub = types.ModuleType("torchvision")
        stub.transforms = types.SimpleNamespace(  # type: ignore[attr-defined]
            InterpolationMode=types.SimpleNamespace(BICUBIC=3, BILINEAR=2, NEAREST=0, LANCZOS=1)
        )
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.transforms"] = stub.transforms  # type: ignore[assignment]
        loader_kind = "GENSYN (torchvision missing)"
    from models import create_model
    from options.train_options import TrainOptions

    with tempfile.TemporaryDirectory() as ckpt:
        sys.argv = ["train.py", *_ref_options(a, ckpt)]
        opt = TrainOptions().parse()
        if loader_kind.startswith("reference"):
            from data import create_dataset

            dataset: Any = create_dataset(opt)
        else:
            dataset = _gensyn_loader_for_ref(a)
        model = create_model(opt)
        model.setup(opt)
        times, iters = [], []
        cpu0 = time.process_time()
        for _ in range(a.epochs):
            _sync()
            t0 = time.perf_counter()
            model.update_learning_rate()
            n = 0
            for data in dataset:
                model.set_input(data)
                model.optimize_parameters()
                n += 1
            _sync()
            times.append(time.perf_counter() - t0)
            iters.append(n)
        cpu = time.process_time() - cpu0
    timed = slice(1, None) if len(times) > 1 else slice(None)
    return {
        "it_per_s": sum(iters[timed]) / sum(times[timed]),
        "cpu_s_per_it": cpu / sum(iters),
        "warmup_epoch_s": times[0],
        "peak_gpu_mb": _peak_gpu_mb(),
        "data_loader": loader_kind,
        "torch": torch.__version__,
    }


def _gensyn_loader_for_ref(a: argparse.Namespace) -> Any:
    import random

    from torch.utils.data import DataLoader

    from gensyn.gan.data import UnpairedDataset

    paths_a, paths_b = make_domains(Path(a.data), a.images, a.size)
    ds = UnpairedDataset(paths_a, paths_b, load_size=a.load, crop_size=a.crop)

    class Epochs:
        def __iter__(self) -> Any:
            keys = ds.keys(random.randint(1, 10**6))
            for x, y in DataLoader(ds, sampler=keys, num_workers=a.workers):  # type: ignore[arg-type]
                yield {"A": x, "B": y, "A_paths": [], "B_paths": []}

    return Epochs()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _images_per_s(
    net: Any, batch: int, size: int, precision: str, channels_last: bool, min_images: int = 256
) -> float:
    import torch

    from gensyn.gan.translate import translate_batch

    x = torch.rand(batch, 1, size, size, device="cuda") * 2 - 1
    for _ in range(3):
        translate_batch(net, x, precision, channels_last)
    _sync()
    reps = max(2, min_images // batch)
    t0 = time.perf_counter()
    for _ in range(reps):
        translate_batch(net, x, precision, channels_last)
    _sync()
    return reps * batch / (time.perf_counter() - t0)


def worker_translate(a: argparse.Namespace) -> dict[str, Any]:
    """Ours: generator forward (bf16, batched, NCHW as gan_translate runs it, and
    channels-last) and PNG→PNG; the reference's generator at batch 1 in fp32 as its test.py
    runs it."""
    import torch

    from gensyn.gan.networks import build_generator
    from gensyn.gan.translate import translate_files

    res: dict[str, Any] = {}
    net = build_generator(1, 1, a.ngf, a.arch).cuda().eval()
    for bs in (1, 8, 32, 64):
        res[f"ours_bf16_nchw_b{bs}"] = _images_per_s(net, bs, a.size, "bf16", False)
    res["ours_fp32_b1"] = _images_per_s(net, 1, a.size, "fp32", False, 64)
    if (
        a.compile
    ):  # what gan_translate runs (generator.compile=true): InferenceGenerator + CUDA graphs
        try:
            from gensyn.gan.translate import compiled_generator

            cnet = compiled_generator(net)
            for bs in (32, 64):
                res[f"ours_compiled_inference_generator_graphs_b{bs}"] = _images_per_s(
                    cnet, bs, a.size, "bf16", False
                )
        except Exception as exc:  # keep the other figures if compilation fails
            res["ours_bf16_compiled_b32_error"] = repr(exc)[:300]
    cl_net = build_generator(1, 1, a.ngf, a.arch).cuda().eval()
    cl_net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    res["ours_bf16_cl_b32"] = _images_per_s(cl_net, 32, a.size, "bf16", True)
    paths_a, _ = make_domains(Path(a.data), a.images, a.size)
    with tempfile.TemporaryDirectory() as out:
        # 5 passes over the PNGs (1,000 images by default) so loader start-up is amortised
        sources = [p for _ in range(5) for p in paths_a]
        outputs = [Path(out) / f"{i:05d}.png" for i in range(len(sources))]
        t0 = time.perf_counter()
        n = translate_files(
            net,
            sources,
            outputs,
            batch_size=32,
            channels_last=False,
            num_workers=a.workers * 2,
            write_threads=8,
            compile=bool(a.compile),
        )
        key = "ours_png_to_png_compiled_b32" if a.compile else "ours_png_to_png_b32"
        res[key] = n / (time.perf_counter() - t0)  # compilation included when compiled
    if a.ref_dir:
        sys.path.insert(0, str(Path(a.ref_dir).resolve()))
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "ref_networks", Path(a.ref_dir) / "models" / "networks.py"
        )
        ref = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(ref)  # type: ignore[union-attr]
        g = ref.define_G(1, 1, a.ngf, a.arch, "instance", False, "normal", 0.02, [0]).eval()
        res["reference_fp32_b1"] = _images_per_s(g, 1, a.size, "fp32", False, 64)
    res["peak_gpu_mb"] = _peak_gpu_mb()
    return res


# ----------------------------------------------------------------------------- driver
def _run_worker(args: argparse.Namespace, kind: str, extra: list[str]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--device",
        args.device,
        "--data",
        args.data,
        "--images",
        str(args.images),
        "--size",
        str(args.size),
        "--load",
        str(args.load),
        "--crop",
        str(args.crop),
        "--epochs",
        str(args.epochs),
        "--arch",
        args.arch,
        "--ngf",
        str(args.ngf),
        "--workers",
        str(args.workers),
        *extra,
    ]
    if args.ref_dir:
        cmd += ["--ref-dir", args.ref_dir]
    print("$", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-3000:]
        print(f"  FAILED ({proc.returncode}):\n{tail}", flush=True)
        return {"error": tail[-500:]}
    result = json.loads(lines[-1][len("RESULT ") :])
    print("  ", json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--ref-dir", default="", help="checkout of junyanz/pytorch-CycleGAN-and-pix2pix")
    p.add_argument("--json", default="", help="write all results to this JSON file")
    p.add_argument("--data", default="", help="folder for the synthetic domains (default: temp)")
    p.add_argument("--images", type=int, default=0, help="images per domain = iterations per epoch")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--load", type=int, default=0)
    p.add_argument("--crop", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2, help="first one is warm-up")
    p.add_argument("--arch", default="")
    p.add_argument("--ngf", type=int, default=0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0: default)")
    p.add_argument(
        "--only",
        default="",
        help="comma list of what to run (default all): reference, ours_fp32, ours_bf16, ours_bf16_cl, "
        "each also as <name>_graphs (CUDA graphs, the GPU default), ours_bf16_cl_compile[_graphs], "
        "translate, translate_compile, profile (all four profiles) or one of "
        "profile_bf16_compile_graphs, profile_bf16_cl_compile_graphs, profile_bf16_cl_graphs, "
        "profile_bf16_cl_eager (GPU); "
        "reference, ours_cpu_fp32 (CPU)",
    )
    p.add_argument("--timeout", type=int, default=1200)
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    p.add_argument(
        "--channels-last", dest="channels_last", type=int, default=1, help=argparse.SUPPRESS
    )
    p.add_argument("--compile", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--graphs", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    gpu = a.device == "cuda"
    # the SyntheX recipe on GPU; the demo's CPU-sized options on CPU (conf/experiment/demo.yaml)
    defaults = (
        dict(images=200, size=512, load=552, crop=512, arch="resnet_9blocks", ngf=64)
        if gpu
        else dict(images=64, size=256, load=276, crop=64, arch="resnet_6blocks", ngf=8)
    )
    for k, v in defaults.items():
        if not getattr(a, k):
            setattr(a, k, v)
    if a.worker:
        workers = {
            "ours": worker_ours,
            "ref": worker_ref,
            "translate": worker_translate,
            "profile": worker_profile,
        }
        fn = workers[a.worker]
        if a.device == "cpu" and a.threads:
            import torch

            torch.set_num_threads(a.threads)
        print("RESULT " + json.dumps(fn(a)), flush=True)
        return
    a.data = a.data or tempfile.mkdtemp(prefix="gan-bench-")
    only = set(filter(None, a.only.split(",")))

    def wanted(name: str) -> bool:
        return not only or name in only

    results: dict[str, Any] = {
        "device": a.device,
        "options": {
            k: getattr(a, k)
            for k in ("images", "size", "load", "crop", "epochs", "arch", "ngf", "workers")
        },
    }
    if gpu:
        import torch

        results["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        fp32, bf16 = ["--precision", "fp32"], ["--precision", "bf16"]
        nchw, cl = ["--channels-last", "0"], ["--channels-last", "1"]
        graphs, comp = ["--graphs", "1"], ["--compile", "1"]
        configs = {  # eager variants first, then CUDA graphs (the default on GPU)
            "ours_fp32": fp32 + nchw,
            "ours_bf16": bf16 + nchw,
            "ours_bf16_cl": bf16 + cl,
            "ours_fp32_graphs": fp32 + nchw + graphs,
            "ours_bf16_graphs": bf16 + nchw + graphs,
            "ours_bf16_cl_graphs": bf16 + cl + graphs,
            "ours_bf16_compile": bf16 + nchw + comp,
            "ours_bf16_compile_graphs": bf16 + nchw + comp + graphs,
            "ours_bf16_cl_compile_graphs": bf16 + cl + comp + graphs,
        }
    else:
        configs = {"ours_cpu_fp32": ["--precision", "fp32", "--channels-last", "0"]}
    train: dict[str, Any] = {}
    if a.ref_dir and wanted("reference"):
        train["reference"] = _run_worker(a, "ref", [])
    for name, extra in configs.items():
        if wanted(name):
            train[name] = _run_worker(a, "ours", extra)
    results["train"] = train
    if gpu:  # --only profile: all four; --only <label>: that one (printed in full by the worker)
        for label, extra in (
            (  # the trainer's GPU default
                "profile_bf16_compile_graphs",
                ["--precision", "bf16", "--channels-last", "0", "--graphs", "1", "--compile", "1"],
            ),
            (  # the candidate past 30 it/s: no cuDNN layout conversions, Inductor's NHWC fusions
                "profile_bf16_cl_compile_graphs",
                ["--precision", "bf16", "--channels-last", "1", "--graphs", "1", "--compile", "1"],
            ),
            (
                "profile_bf16_cl_graphs",
                ["--precision", "bf16", "--channels-last", "1", "--graphs", "1"],
            ),
            (
                "profile_bf16_cl_eager",
                ["--precision", "bf16", "--channels-last", "1", "--graphs", "0"],
            ),
        ):
            if not (wanted("profile") or label in only):
                continue
            results[label] = _run_worker(a, "profile", extra)
            print(f"\n### {label}\n" + results[label].get("table", ""), flush=True)
    if gpu and (wanted("translate") or wanted("translate_compile")):
        results["translate"] = _run_worker(
            a, "translate", ["--compile", "1" if wanted("translate_compile") else "0"]
        )
    ref_its = train.get("reference", {}).get("it_per_s")
    print("\n| configuration | it/s | vs reference | peak GPU MiB | warm-up epoch s | CPU s/it |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in train.items():
        if "it_per_s" in r:
            ratio = f"{r['it_per_s'] / ref_its:.2f}x" if ref_its else "-"
            print(
                f"| {name} | {r['it_per_s']:.2f} | {ratio} | {r['peak_gpu_mb']:.0f} | "
                f"{r['warmup_epoch_s']:.1f} | {r.get('cpu_s_per_it', 0):.3f} |"
            )
    if "translate" in results:
        print("\n| translation | images/s |\n| --- | --- |")
        for k, v in results["translate"].items():
            if isinstance(v, float):
                print(f"| {k} | {v:.1f} |")
    if not gpu and "ours_cpu_fp32" in train and "wall_s" in train["ours_cpu_fp32"]:
        r = train["ours_cpu_fp32"]
        print(
            f"\ndemo-sized CycleGAN on CPU: {a.epochs} epochs x {a.images} iterations in "
            f"{r['wall_s']:.1f} s ({r['it_per_s']:.1f} it/s after warm-up)"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
