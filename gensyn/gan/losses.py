"""CycleGAN objectives: adversarial (LSGAN or vanilla) and L1 cycle/identity losses.

All functions take score maps or images as tensors and return scalar tensors; they are
computed in float32 even under bf16 autocast, so small loss differences are not lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_MODES = ("lsgan", "vanilla")


def gan_loss(scores: torch.Tensor, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """Adversarial loss of discriminator ``scores`` (raw, any shape) against all-real/all-fake.

    lsgan: mean((scores - target)²) with target 1 (real) or 0 (fake) (Mao et al., 2017).
    vanilla: binary cross-entropy on logits.
    """
    scores = scores.float()
    target = torch.ones_like(scores) if target_is_real else torch.zeros_like(scores)
    if mode == "lsgan":
        return F.mse_loss(scores, target)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(scores, target)
    raise ValueError(f"unknown gan_mode {mode!r}; allowed: {', '.join(GAN_MODES)}")


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (cycle-consistency and identity losses), in float32."""
    return F.l1_loss(prediction.float(), target.float())


def discriminator_loss(
    real_scores: torch.Tensor, fake_scores: torch.Tensor, mode: str = "lsgan"
) -> torch.Tensor:
    """Discriminator objective: half the sum of its losses on real and on (pooled) fake images."""
    return 0.5 * (gan_loss(real_scores, True, mode) + gan_loss(fake_scores, False, mode))
