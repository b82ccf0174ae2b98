"""Batched DRR → X-ray translation with a trained generator, at full resolution, no flips.

Images whose size is not a multiple of 4 are reflect-padded for the generator and cropped
back, so outputs always have the size of their inputs. Outputs are 8-bit PNGs written by
a small thread pool while the GPU works on the next batch; files that already exist are
skipped, so an interrupted translation resumes where it stopped (writes are atomic).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gensyn.gan.data import ImageListDataset, collate_same_size, tensor_to_uint8
from gensyn.gan.networks import ResnetGenerator, build_generator
from gensyn.io import write_image


def load_generator(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[ResnetGenerator, dict[str, Any]]:
    """Load a generator saved by :meth:`CycleGANTrainer.save_generator`; returns (net, options)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"generator checkpoint {path} does not exist; run stage=gan_train first"
        )
    payload = torch.load(path, map_location="cpu", weights_only=False)
    opts = payload["options"]
    a2b = payload.get("direction", "a2b") == "a2b"
    in_nc, out_nc = (
        (opts["input_nc"], opts["output_nc"]) if a2b else (opts["output_nc"], opts["input_nc"])
    )
    net = build_generator(
        in_nc, out_nc, opts["ngf"], opts["arch"], opts["norm"], opts["use_dropout"]
    )
    net.load_state_dict(payload["state_dict"])
    net.to(device).eval()
    return net, opts


def pad_to_multiple(images: torch.Tensor, multiple: int = 4) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad (N, C, H, W) on the bottom/right to multiples of ``multiple``; returns (padded, H, W)."""
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect")
    return images, h, w


@torch.no_grad()
def translate_batch(
    net: torch.nn.Module,
    images: torch.Tensor,
    precision: str = "bf16",
    channels_last: bool = False,
) -> torch.Tensor:
    """Translate (N, C, H, W) in [-1, 1] on the network's device; returns float32 in [-1, 1].

    bf16 autocast and channels-last apply on CUDA only.
    """
    device = next(net.parameters()).device
    cuda = device.type == "cuda"
    fmt = torch.channels_last if (cuda and channels_last) else torch.contiguous_format
    x = images.to(device, non_blocking=True)
    x, h, w = pad_to_multiple(x)
    x = x.contiguous(memory_format=fmt)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and precision == "bf16"):
        out = net(x)
    return out[..., :h, :w].float()


def translate_files(
    net: torch.nn.Module,
    sources: Sequence[str | os.PathLike[str]],
    outputs: Sequence[str | os.PathLike[str]],
    channels: int = 1,
    batch_size: int = 32,
    precision: str = "bf16",
    channels_last: bool = False,
    num_workers: int = 0,
    write_threads: int = 4,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Translate each ``sources[i]`` to the 8-bit PNG ``outputs[i]``; returns how many were written.

    Existing outputs are skipped. ``progress(n)`` is called with the number of images of
    each finished batch.
    """
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    todo = [i for i, out in enumerate(outputs) if not Path(out).is_file()]
    if not todo:
        return 0
    net.eval()
    cuda = next(net.parameters()).device.type == "cuda"
    if cuda:  # weights in the inputs' memory format (NCHW is faster for inference on an H100)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net.to(memory_format=fmt)  # type: ignore[call-overload]
    dataset = ImageListDataset([sources[i] for i in todo], channels)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=cuda,
        collate_fn=collate_same_size,
    )
    written = 0
    pending: list[Future[Path]] = []
    with ThreadPoolExecutor(max_workers=max(1, write_threads)) as pool:
        for idx, images in loader:
            pixels = tensor_to_uint8(translate_batch(net, images, precision, channels_last))
            for j, k in enumerate(idx.tolist()):
                pending.append(pool.submit(write_image, outputs[todo[k]], pixels[j]))
            written += len(idx)
            # Bound the queue and surface write errors early.
            while len(pending) > 4 * batch_size:
                pending.pop(0).result()
            if progress is not None:
                progress(len(idx))
        for fut in pending:
            fut.result()
    return written
