"""Batched DRR → X-ray translation with a trained generator, at full resolution, no flips.

Images whose size is not a multiple of 4 are reflect-padded for the generator and cropped
back, so outputs always have the size of their inputs. Inputs are decoded by ``num_workers``
loader processes ahead of the GPU; on CUDA each batch is converted to uint8 on the GPU and
copied back asynchronously while the next batch is already queued, so the GPU does not wait
for the host between batches; outputs are 8-bit PNGs encoded and written by a thread pool
(:class:`gensyn.base.pipeline_io.BackgroundWriter`); files that already exist are skipped, so an
interrupted translation resumes where it stopped (writes are atomic). A
:class:`~gensyn.base.pipeline_io.StageTimer` gets the seconds spent decoding (``read``), queueing
or (off CUDA) running the translation (``compute``), the GPU's own time (``gpu``, from CUDA
events), encoding + writing (``write``) and the main thread's waits (``wait_input``,
``wait_gpu``, ``wait_output``) and hand-over to the writers (``hand_over``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gensyn.base.degenerate import DegenerateOutputError
from gensyn.base.io import png_complete, write_image
from gensyn.base.pipeline_io import BackgroundWriter, StageTimer, frozen_heap
from gensyn.gan.data import (
    ImageListDataset,
    collate_same_size,
    tensor_to_uint8,
    uint8_images,
)
from gensyn.gan.networks import InferenceGenerator, ResnetGenerator, build_generator

log = logging.getLogger(__name__)


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


def compiled_generator(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` compiled for translation on CUDA: Inductor fuses padding, instance norm,
    ReLU and casts, and CUDA graphs replay each batch (``mode="reduce-overhead"``).

    A ResNet generator is first turned into an :class:`~gensyn.gan.networks.InferenceGenerator`
    (bf16 weights and activations, channels-last, its one-channel 7×7 ends computed as
    tensor-core matrix products): a copy, so ``net`` itself is unchanged.
    Shapes are static: feed full batches of one image size (:func:`translate_files` pads
    the last batch), or each new shape compiles again. Outputs live in graph memory until
    the next call, so consume them (e.g. copy to the host) before translating the next batch.
    """
    if isinstance(net, ResnetGenerator) and next(net.parameters()).device.type == "cuda":
        net = InferenceGenerator(net, torch.bfloat16, channels_last=True).eval()
    return torch.compile(net, mode="reduce-overhead", dynamic=False)  # type: ignore[return-value]


def compile_unavailable(device_type: str) -> str | None:
    """Why the generator cannot be compiled for ``device_type`` here, or None if it can.

    Compilation is for CUDA only, and Inductor's CUDA kernels need Triton (a CUDA build of
    PyTorch brings it, but a trimmed cluster image may lack it).
    """
    if device_type != "cuda":
        return f"compilation is for CUDA devices, not {device_type}"
    from torch.utils._triton import has_triton  # PyTorch's own check, as Inductor makes it

    if not has_triton():
        return "Triton is not importable (install triton, or set generator.compile=false)"
    return None


class FallbackForward:
    """The compiled generator until it fails once, then the eager one for good.

    A graph Inductor cannot build or run (a missing compiler, an unsupported GPU, a CUDA
    graph capture that fails) costs a warning, not the stage: the batch is translated again
    eagerly, with the same weights. ``failed`` holds why, for the run's summary.
    """

    def __init__(self, compiled: Callable[[torch.Tensor], torch.Tensor], eager: torch.nn.Module):
        self.compiled, self.eager = compiled, eager
        self.failed: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed is None:
            try:
                return self.compiled(x)
            except Exception as exc:  # Inductor and Triton raise many types
                first_line = (str(exc).splitlines() or [""])[0]
                self.failed = f"{type(exc).__name__}: {first_line}"
                log.warning("compiled translation failed (%s); translating eagerly", self.failed)
        return self.eager(x)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The eager network's parameters (both forwards hold the same weights), so that
        :func:`translate_batch` finds the device as it does for a network."""
        return self.eager.parameters()


def _full_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pad a short last batch with copies of its last image (the copies are dropped)."""
    missing = batch_size - images.shape[0]
    if missing <= 0:
        return images
    return torch.cat([images, images[-1:].expand(missing, *images.shape[1:])])


class _TimedImages(Dataset[tuple[int, torch.Tensor, float]]):
    """:class:`ImageListDataset` items with the seconds their decoding took (loader processes
    cannot add to the main process's timer, so the time travels with the batch)."""

    def __init__(self, images: ImageListDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, float]:
        start = time.perf_counter()
        i, image = self.images[index]
        return i, image, time.perf_counter() - start


def _collate_timed(
    items: list[tuple[int, torch.Tensor, float]],
) -> tuple[torch.Tensor, torch.Tensor, float]:
    idx, images = collate_same_size([(i, t) for i, t, _ in items])
    return idx, images, sum(s for _, _, s in items)


def _write_many(paths: Sequence[str | os.PathLike[str]], pixels: Any, timer: StageTimer) -> None:
    """Write ``pixels[j]`` to ``paths[j]``: one writer job for a slice of a batch, so the main
    thread hands a batch over in a few submissions instead of one per image."""
    with timer.time("write"):
        for path, image in zip(paths, pixels, strict=True):
            # ISA-L deflate: ~0.5 ms a 512² image (level 6: ~30 ms); no fsync per image (the
            # disk's fsync rate set the stage's pace: ~370 images/s on an H200 host), one
            # sync at the end instead
            write_image(path, image, 1, durable=False)


class _Batch:
    """A translated batch on its way to the host: the uint8 pixels (N, H, W[, C]) in pinned
    memory, filled by an asynchronous copy that ``done`` marks, and the GPU's seconds for it.

    On CUDA the copy is queued behind the forward pass and the next batch is launched before
    this one is waited for, so the GPU never waits for the host between batches. The pixels
    are a new tensor, not the generator's output: a CUDA graph's outputs are overwritten by
    its next replay, and the conversion is queued before that replay on the same stream.
    """

    def __init__(self, idx: torch.Tensor, out: torch.Tensor, start: Any) -> None:
        self.idx = idx.tolist()
        pixels = uint8_images(out[: len(self.idx)])
        # per image: every value finite (NaN would become a black image), copied back too
        finite = torch.isfinite(out[: len(self.idx)]).flatten(1).all(1)
        self.start, self.done = start, None
        if pixels.device.type == "cuda":
            self.pixels = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            self.pixels.copy_(pixels, non_blocking=True)
            self.finite = torch.empty(finite.shape, dtype=torch.bool, pin_memory=True)
            self.finite.copy_(finite, non_blocking=True)
            self.done = _gpu_event(True)
        else:
            self.pixels, self.finite = pixels, finite

    def wait(self, timer: StageTimer) -> Any:
        """Block until the pixels are on the host; add the GPU's time to ``gpu``; the array."""
        if self.done is not None:
            with timer.time("wait_gpu"):
                self.done.synchronize()
            timer.add("gpu", self.start.elapsed_time(self.done) / 1000.0)
        return self.pixels.numpy()

    def degenerate(self, pixels: Any, sources: Sequence[Any], todo: Sequence[int]) -> str | None:
        """Why an image of this batch is garbage (``pixels``: :meth:`wait`'s array): the
        generator's output was not finite, or the image is one grey level; None if none is."""
        flat = pixels.reshape(len(self.idx), -1)
        constant = flat.min(axis=1) == flat.max(axis=1)  # one pass a batch, on the host
        for k, (i, ok) in enumerate(zip(self.idx, self.finite.tolist(), strict=True)):
            if not ok:
                return f"{sources[todo[i]]}: the generator's output is not finite"
            if constant[k]:
                return f"{sources[todo[i]]}: the translated image is one grey level ({flat[k, 0]})"
        return None


def _gpu_event(cuda: bool) -> Any:
    """A timing event recorded now on the current CUDA stream (None off CUDA)."""
    if not cuda:
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _written(path: str | os.PathLike[str]) -> bool:
    """An output a resumed run may skip: a complete PNG (written without fsync, a file cut by
    a machine crash is translated again), or any other file that exists."""
    if str(path).lower().endswith(".png"):
        return png_complete(path)
    return Path(path).is_file()


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
    timer: StageTimer | None = None,
    compile: bool = False,
    report: dict[str, Any] | None = None,
) -> int:
    """Translate each ``sources[i]`` to the 8-bit PNG ``outputs[i]``; returns how many were written.

    Existing outputs are skipped (PNGs only when complete: outputs are written without an
    fsync each, and synced together at the end). ``num_workers`` processes decode inputs
    ahead of the GPU, ``write_threads`` threads encode and write outputs (0: on this thread);
    on CUDA one batch is in flight (queued on the GPU) while the previous one is handed to
    the writers. ``progress(n)`` is called with the number of images of each finished batch;
    ``timer`` (optional) gets the read / compute / gpu / write seconds and the main thread's
    waits (see the module's docstring). ``compile`` (CUDA only)
    translates through :func:`compiled_generator`, compiled (timed as ``compile``) on a
    batch shaped like the first input while the loader's processes start and decode;
    where it cannot (:func:`compile_unavailable`) or the compiled graph fails, it translates
    eagerly and says why in the log and in ``report`` (``compiled``, ``compile_fallback``).
    """
    if len(sources) != len(outputs):
        raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
    timer = StageTimer() if timer is None else timer
    todo = [i for i, out in enumerate(outputs) if not _written(out)]
    if not todo:
        return 0
    setup_start = time.perf_counter()
    net.eval()
    cuda = next(net.parameters()).device.type == "cuda"
    if cuda:  # weights in the inputs' memory format (NCHW is faster for inference on an H100)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net.to(memory_format=fmt)  # type: ignore[call-overload]
    dataset = _TimedImages(ImageListDataset([sources[i] for i in todo], channels))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=cuda,
        collate_fn=_collate_timed,
    )
    written = 0
    threads = max(write_threads, 1)
    per_job = -(-batch_size // threads)  # a batch goes to the writers in ``threads`` jobs

    def hand_over(batch: _Batch) -> None:
        nonlocal written
        pixels = batch.wait(timer)
        bad = batch.degenerate(pixels, sources, todo)
        if bad is not None:  # garbage is never written, the run never marked DONE
            raise DegenerateOutputError(f"SyntheX image of {bad}")
        with timer.time("hand_over"):
            for lo in range(0, len(batch.idx), per_job):
                paths = [outputs[todo[k]] for k in batch.idx[lo : lo + per_job]]
                writer.submit(_write_many, paths, pixels[lo : lo + per_job], timer)
        written += len(batch.idx)
        if progress is not None:
            progress(len(batch.idx))

    # at most four batches of images wait for the disk: host memory stays bounded
    with BackgroundWriter(write_threads, 4 * threads, timer, "translate-writer") as writer:
        # the loader's processes start (forked before compilation loads Inductor) and decode
        # the first batches while the graph compiles on a batch shaped like theirs
        batches = iter(loader)
        timer.add("setup", time.perf_counter() - setup_start)
        # ``compile`` counts all the one-off work of the compiled path: importing Triton
        # (``compile_unavailable``) and Dynamo (``torch.compile``) took ~9 s of an H200 host's
        # run before the graph itself compiled, time a longer input does not spend again
        compile_start = time.perf_counter()
        why_not = compile_unavailable("cuda" if cuda else "cpu") if compile else None
        if why_not is not None and cuda:
            log.warning("generator.compile=true but %s: translating eagerly", why_not)
        compiled = compile and why_not is None
        forward: Any = FallbackForward(compiled_generator(net), net) if compiled else net
        if compiled:
            _, first = dataset.images[0]  # the shape every batch of this run has
            warm = first[None].expand(batch_size, *first.shape)
            tensor_to_uint8(translate_batch(forward, warm, precision, channels_last)[:1])
            timer.add("compile", time.perf_counter() - compile_start)
        in_flight: _Batch | None = None  # translated, not yet handed to the writers
        # the compiled graph's objects are skipped by the collections the loop triggers
        # (timed as ``gc``, from any thread)
        with frozen_heap() if compiled else nullcontext(), timer.garbage_collections():
            for idx, images, decode_s in timer.timed("wait_input", batches):
                timer.add("read", decode_s)
                with timer.time("compute"):  # on CUDA: queue the forward pass, the copy back
                    start = _gpu_event(cuda)
                    if compiled:  # static shapes: one graph for every batch
                        images = _full_batch(images, batch_size)
                    # the graph's output is not kept: only its uint8 copy outlives the call
                    batch = _Batch(
                        idx, translate_batch(forward, images, precision, channels_last), start
                    )
                if in_flight is not None:  # the previous batch, while the GPU runs this one
                    hand_over(in_flight)
                in_flight = batch
            if in_flight is not None:
                hand_over(in_flight)
    with timer.time("sync"):  # the images were written without fsync: make them durable now
        os.sync()
    if report is not None:
        failed = forward.failed if isinstance(forward, FallbackForward) else None
        report["compiled"] = compiled and failed is None
        report["compile_fallback"] = failed or (why_not if compile and cuda else None)
    return written
