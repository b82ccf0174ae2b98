"""CUDA paths (bf16 autocast, channels-last, fused Adam) agree with the CPU fp32 reference."""

from __future__ import annotations

import pytest
import torch

from gensyn.config.generator import GeneratorConfig
from gensyn.gan.model import CycleGAN
from gensyn.gan.translate import translate_batch

pytestmark = pytest.mark.gpu


def _pair() -> tuple[CycleGAN, CycleGAN]:
    opts = GeneratorConfig(arch="resnet_6blocks", ngf=16, ndf=16, pool_size=4)
    cpu = CycleGAN(opts, torch.device("cpu"), seed=0)
    gpu = CycleGAN(opts, torch.device("cuda"), seed=0)  # same seed: same initial weights
    return cpu, gpu


def test_first_step_losses_match_cpu_within_bf16() -> None:
    cpu, gpu = _pair()
    assert gpu.amp and gpu.memory_format == torch.channels_last
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(1, 1, 128, 128, generator=gen) * 2 - 1
    b = torch.rand(1, 1, 128, 128, generator=gen) * 2 - 1
    l_cpu = cpu.train_step(a, b)
    l_gpu = gpu.train_step(a, b).cpu()
    assert torch.allclose(l_cpu, l_gpu, rtol=0.05, atol=0.02), (l_cpu, l_gpu)
    for _ in range(3):
        l_gpu = gpu.train_step(a, b)
    assert torch.isfinite(l_gpu).all()


def test_translation_matches_cpu() -> None:
    cpu, gpu = _pair()
    x = torch.rand(4, 1, 96, 96) * 2 - 1
    ref = translate_batch(cpu.g_ab.eval(), x, "fp32", False)
    out = translate_batch(gpu.g_ab.eval(), x, "bf16", True).cpu()
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05
