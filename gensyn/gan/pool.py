"""History buffer of generated images for discriminator updates (Shrivastava et al., 2017).

Like the reference CycleGAN recipe: while the pool holds fewer than ``size`` images each
query stores and returns the new image; once full, with probability 1/2 a query returns a
random stored image and puts the new one in its place, otherwise it returns the new image.

Unlike the reference, the images stay in one preallocated tensor on the images' device and
the coin flips come from a private CPU generator, so a query never waits for the GPU and
the whole pool (images, fill count, generator state) can be checkpointed and restored.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """A pool of at most ``size`` generated images of shape (C, H, W); size 0 disables it."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.count = 0
        self.images: torch.Tensor | None = None
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch (N, C, H, W) to show the discriminator for the new ``images``."""
        if self.size == 0:
            return images
        images = images.detach()
        if self.images is None or self.images.shape[1:] != images.shape[1:]:
            self.images = images.new_empty((self.size, *images.shape[1:]))
            self.count = 0
        elif self.images.device != images.device or self.images.dtype != images.dtype:
            self.images = self.images.to(device=images.device, dtype=images.dtype)
        out = []
        for image in images:
            if self.count < self.size:
                self.images[self.count].copy_(image)
                self.count += 1
                out.append(image)
                continue
            coin = float(torch.rand((), generator=self.generator))
            if coin > 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[slot].clone())
                self.images[slot].copy_(image)
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Pool contents (on CPU), fill count and RNG state, for checkpoints."""
        images = None if self.images is None else self.images[: self.count].cpu()
        return {
            "size": self.size,
            "count": self.count,
            "images": images,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore a pool saved by :meth:`state_dict` onto ``device``."""
        if int(state["size"]) != self.size:
            raise ValueError(
                f"checkpoint image pool has size {state['size']}, config says {self.size}"
            )
        self.count = int(state["count"])
        saved = state["images"]
        if saved is None:
            self.images = None
        else:
            self.images = saved.new_empty((self.size, *saved.shape[1:])).to(device)
            self.images[: self.count].copy_(saved.to(device))
        self.generator.set_state(state["generator"])
