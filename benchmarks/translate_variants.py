"""SyntheX translation at 512² on one GPU: what `gan_translate` runs beside the variants that
could make it faster, in one process, each compiled with Inductor + CUDA graphs.

Variants (the generator is the SyntheX recipe's ResNet-9 with 64 filters, random weights):

* ``inference``: what ``gan_translate`` runs (``compiled_generator``): the network as an
  ``InferenceGenerator`` (bf16, channels-last, its one-channel first and last 7×7
  convolutions widened to 8 channels with zero weights, so tensor cores take them);
* ``inference_nchw``: the same in NCHW layout;
* ``inference_pixel_maps``: ``InferenceGenerator(planes=False)``: the last convolution's 49
  per-offset maps as channels of each pixel (channels-last), padded before the product
  (``gan_translate`` before 2026-12-03, afternoon);
* ``autocast``: bf16 autocast around the fp32 network (``gan_translate`` until 2026-12-03);
* ``autocast_cudnn_benchmark``: the same with cuDNN's algorithm search on;
* ``bf16``: weights and activations in bf16 (no autocast), cuDNN search on;
* ``bf16_channels_last``: the same in channels-last memory format;
* ``max_autotune``: ``bf16`` compiled with ``mode="max-autotune"`` (Inductor also tries its
  own Triton convolutions; slow to compile, last).

For each: images/s at batch 32 (in-RAM tensors, GPU synchronised), the compile time,
and the largest difference from the eager fp32 network on smooth test images, in 8-bit grey
levels. Then torch.profiler's top CUDA kernels of the fastest variant (compiled without
CUDA graphs, so kernels are attributed): where the time goes. Prints one JSON line a
variant as it goes, so a run cut short keeps what it measured.

    python benchmarks/translate_variants.py --size 512 --variants all
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = (
    "inference", "inference_nchw", "inference_pixel_maps", "autocast", "autocast_cudnn_benchmark", "bf16",
    "bf16_channels_last", "max_autotune",
)  # fmt: skip


def _smooth_inputs(batch: int, size: int) -> Any:
    """Smooth DRR-like images in [-1, 1] (random low-frequency fields), on the GPU."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    low = torch.rand(batch, 1, size // 32, size // 32, device="cuda", generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")
    return (x.clamp(0, 1) * 2 - 1).contiguous()


def _forward(name: str, net: Any, mode: str = "reduce-overhead") -> Any:
    """The compiled callable of variant ``name`` (fp32 NCHW in [-1, 1] in, fp32 out);
    ``mode="default"`` compiles without CUDA graphs, so a profile attributes the kernels."""
    import torch

    from gensyn.gan.networks import InferenceGenerator
    from gensyn.gan.translate import compiled_generator, translate_batch

    torch.backends.cudnn.benchmark = name not in ("autocast", "inference")
    if name == "inference" and mode == "reduce-overhead":  # exactly what gan_translate compiles
        cnet = compiled_generator(net)
        return lambda x: translate_batch(cnet, x, "bf16", False)
    if name.startswith("inference"):
        fast = InferenceGenerator(
            net, torch.bfloat16, channels_last=name != "inference_nchw",
            planes=name != "inference_pixel_maps",
        ).eval()  # fmt: skip
        cnet = torch.compile(fast, mode=mode, dynamic=False)
        return lambda x: translate_batch(cnet, x, "bf16", False)
    if name.startswith("autocast"):
        cnet = torch.compile(net, mode=mode, dynamic=False)
        return lambda x: translate_batch(cnet, x, "bf16", False)
    fmt = torch.channels_last if name == "bf16_channels_last" else torch.contiguous_format
    net16 = copy.deepcopy(net).to(dtype=torch.bfloat16, memory_format=fmt)
    if name == "max_autotune" and mode == "reduce-overhead":
        mode = "max-autotune"
    cnet16 = torch.compile(net16, mode=mode, dynamic=False)

    @torch.no_grad()
    def run(x: Any) -> Any:
        return cnet16(x.to(torch.bfloat16).contiguous(memory_format=fmt)).float()

    return run


def _rate(fn: Any, x: Any, seconds: float = 3.0) -> float:
    import torch

    for _ in range(3):
        fn(x)
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += 1
    torch.cuda.synchronize()
    return n * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from gensyn.gan.networks import build_generator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--arch", default="resnet_9blocks")
    p.add_argument("--variants", default="all", help="comma-separated, or all")
    p.add_argument("--batches", default="32", help="each batch size compiles again")
    p.add_argument("--profile", type=int, default=1, help="profile the fastest variant")
    a = p.parse_args()
    names = VARIANTS if a.variants == "all" else tuple(a.variants.split(","))
    batches = [int(b) for b in a.batches.split(",")]
    torch.manual_seed(0)
    net = build_generator(1, 1, a.ngf, a.arch).cuda().eval()
    x_check = _smooth_inputs(batches[0], a.size)
    with torch.no_grad():
        ref = net(x_check).float()  # eager fp32
    results: dict[str, dict[str, float]] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            fn = _forward(name, net)
            out = fn(x_check)  # compiles
            torch.cuda.synchronize()
            res: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 1)}
            res["max_diff_grey_levels"] = round(float((out - ref).abs().max()) * 127.5, 2)
            for b in batches:
                res[f"images_per_s_b{b}"] = round(_rate(fn, _smooth_inputs(b, a.size)), 1)
        except Exception as exc:  # keep the other variants
            res = {"error": repr(exc)[:400]}
        results[name] = res
        print("VARIANT " + json.dumps({"variant": name, **res}), flush=True)
    rated = {k: max(v for key, v in r.items() if key.startswith("images_per_s")) for k, r in results.items() if "error" not in r}  # fmt: skip
    if a.profile and rated:
        best = max(rated, key=lambda k: rated[k])
        fn = _forward(best, net, mode="default")  # no CUDA graphs: kernels attributed
        x = _smooth_inputs(batches[0], a.size)
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
        reps = 5
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn(x)
            torch.cuda.synchronize()
        events = prof.key_averages()
        total_ms = sum(e.self_device_time_total for e in events) / 1000 / reps
        print(f"PROFILE {best} batch {batches[0]}: {total_ms:.1f} ms of GPU time a batch")
        print(events.table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=80))


if __name__ == "__main__":
    main()
