"""Unpaired image domains for CycleGAN training and image lists for translation.

Images are PNG files (8- or 16-bit grey, or 8-bit RGB) read with :func:`gensyn.base.io.read_image`
and turned into float tensors (C, H, W) in [-1, 1] (0 → -1, full scale → +1).

Training augmentation follows the reference recipe: resize to ``load_size``² (bicubic),
random ``crop_size``² crop, random horizontal flip. Unlike the reference, every random
choice of an epoch (the order of domain A, the partner drawn from domain B, crop offsets,
flips) comes from one plan computed from ``(seed, epoch)`` alone. Any number of loader
workers therefore produces the same batches, and a run resumed in the middle of an epoch
sees exactly the batches the killed run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gensyn.base.io import read_image

_PLAN_SALT = 0x5EED_6A11


def image_to_tensor(
    image: np.ndarray, channels: int, path: str | os.PathLike[str] = ""
) -> torch.Tensor:
    """Convert a uint8/uint16 image (H, W) or (H, W, C) to a float tensor (channels, H, W) in [-1, 1].

    Raises ValueError naming ``path`` when the image's channel count differs from ``channels``.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    else:
        raise ValueError(f"{path}: expected 8- or 16-bit pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"{path}: expected a 2-D grey or H×W×C image, got shape {arr.shape}")
    if arr.shape[0] != channels:
        raise ValueError(
            f"{path}: image has {arr.shape[0]} channel(s) but the generator is configured for "
            f"{channels} (generator.input_nc / output_nc); convert the images or change the config"
        )
    tensor = torch.from_numpy(arr.astype(np.float32))
    return tensor.mul_(2.0 / scale).sub_(1.0)


def load_image(path: str | os.PathLike[str], channels: int) -> torch.Tensor:
    """Read ``path`` as a float tensor (channels, H, W) in [-1, 1]."""
    return image_to_tensor(read_image(path), channels, path)


def uint8_images(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1], shape (N, C, H, W), as a contiguous uint8 tensor on the same
    device, laid out as image files are: (N, H, W) for one channel, else (N, H, W, C)."""
    out = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    out = out[:, 0] if out.shape[1] == 1 else out.permute(0, 2, 3, 1)
    return out.contiguous()


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Map float images in [-1, 1], shape (N, C, H, W), to uint8 arrays (N, H, W[, C])."""
    return uint8_images(images).cpu().numpy()


def resize(image: torch.Tensor, size_px: int) -> torch.Tensor:
    """Resize (C, H, W) to (C, size_px, size_px) with bicubic interpolation (antialiased)."""
    if image.shape[-2:] == (size_px, size_px):
        return image
    out = F.interpolate(
        image[None], size=(size_px, size_px), mode="bicubic", align_corners=False, antialias=True
    )[0]
    return out.clamp_(-1.0, 1.0)


def check_domain(paths: Sequence[str | os.PathLike[str]], name: str, channels: int) -> None:
    """Fail early with a clear message for an empty domain or a first image of wrong type."""
    if len(paths) == 0:
        raise ValueError(
            f"domain {name} has no images; check the synthex_prep output (max_dataset_size, "
            "upstream drr / prepare_xrays runs)"
        )
    first = Path(paths[0])
    if not first.is_file():
        raise FileNotFoundError(f"domain {name}: image {first} does not exist")
    load_image(first, channels)


def epoch_plan(
    seed: int, epoch: int, n_a: int, n_b: int, load_size: int, crop_size: int, flip: bool
) -> dict[str, torch.Tensor]:
    """All random choices of one epoch (``epoch`` counts from 1).

    Returns int64 tensors of length ``max(n_a, n_b)``: ``a`` and ``b`` (image indices),
    ``a_y``, ``a_x``, ``b_y``, ``b_x`` (crop offsets in pixels) and ``a_flip``, ``b_flip``.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) ^ _PLAN_SALT)
    length = max(n_a, n_b)
    span = load_size - crop_size + 1
    plan = {
        "a": torch.randperm(length, generator=gen) % n_a,
        "b": torch.randint(n_b, (length,), generator=gen),
    }
    for key in ("a_y", "a_x", "b_y", "b_x"):
        plan[key] = torch.randint(span, (length,), generator=gen)
    for key in ("a_flip", "b_flip"):
        coins = torch.randint(2, (length,), generator=gen)
        plan[key] = coins if flip else torch.zeros_like(coins)
    return plan


class UnpairedDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Pairs (A, B) of independently drawn, augmented images, indexed by ``(epoch, i)``.

    An epoch has max(|A|, |B|) items, as in the reference recipe (:meth:`keys` lists them).
    Items are float tensors (C, crop_size, crop_size) in [-1, 1].
    """

    def __init__(
        self,
        paths_a: Sequence[str | os.PathLike[str]],
        paths_b: Sequence[str | os.PathLike[str]],
        channels_a: int = 1,
        channels_b: int = 1,
        load_size: int = 552,
        crop_size: int = 512,
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        check_domain(paths_a, "A (DRR)", channels_a)
        check_domain(paths_b, "B (real X-ray)", channels_b)
        if crop_size % 4:
            raise ValueError(
                f"crop_size must be divisible by 4 (generator strides), got {crop_size}"
            )
        if crop_size > load_size:
            raise ValueError(f"crop_size ({crop_size}) must not exceed load_size ({load_size})")
        self.paths_a = [str(p) for p in paths_a]
        self.paths_b = [str(p) for p in paths_b]
        self.channels = (channels_a, channels_b)
        self.load_size, self.crop_size, self.flip, self.seed = load_size, crop_size, flip, seed
        self._plan_epoch = -1
        self._plan: dict[str, torch.Tensor] = {}

    @property
    def epoch_length(self) -> int:
        """Items per epoch: max(|A|, |B|)."""
        return max(len(self.paths_a), len(self.paths_b))

    def __len__(self) -> int:
        return self.epoch_length

    def keys(self, epoch: int, start: int = 0) -> list[tuple[int, int]]:
        """The item keys of ``epoch`` from item ``start`` on (use as a DataLoader sampler)."""
        return [(epoch, i) for i in range(start, self.epoch_length)]

    def plan(self, epoch: int) -> dict[str, torch.Tensor]:
        """The random plan of ``epoch`` (cached: computed once per epoch and worker)."""
        if epoch != self._plan_epoch:
            self._plan = epoch_plan(
                self.seed,
                epoch,
                len(self.paths_a),
                len(self.paths_b),
                self.load_size,
                self.crop_size,
                self.flip,
            )
            self._plan_epoch = epoch
        return self._plan

    def _augment(self, path: str, channels: int, y: int, x: int, flip: int) -> torch.Tensor:
        image = resize(load_image(path, channels), self.load_size)
        image = image[:, y : y + self.crop_size, x : x + self.crop_size]
        if flip:
            image = image.flip(-1)
        return image.contiguous()

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        p = {k: int(v[index]) for k, v in self.plan(epoch).items()}
        a = self._augment(self.paths_a[p["a"]], self.channels[0], p["a_y"], p["a_x"], p["a_flip"])
        b = self._augment(self.paths_b[p["b"]], self.channels[1], p["b_y"], p["b_x"], p["b_flip"])
        return a, b


class ImageListDataset(Dataset[tuple[int, torch.Tensor]]):
    """Full-resolution images for translation: items are (index, tensor (C, H, W) in [-1, 1])."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], channels: int = 1) -> None:
        self.paths = [str(p) for p in paths]
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, load_image(self.paths[index], self.channels)


def collate_same_size(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (index, image) items into (indices (N,), images (N, C, H, W)); sizes must match."""
    shapes = {tuple(t.shape) for _, t in items}
    if len(shapes) > 1:
        raise ValueError(
            f"images in one translation batch differ in size {sorted(shapes)}; use "
            "generator.translate_batch_size=1 or give all DRRs the same size"
        )
    return torch.tensor([i for i, _ in items]), torch.stack([t for _, t in items])
