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


def _graph_model(graphs: bool, seed: int = 0) -> CycleGAN:
    opts = GeneratorConfig(
        arch="resnet_6blocks",
        ngf=16,
        ndf=16,
        pool_size=2,  # full after two steps: later steps exercise the pool's coin flips
        precision="fp32",
        channels_last=False,
        cuda_graphs=graphs,
        n_epochs=1,
        n_epochs_decay=3,
    )
    return CycleGAN(opts, torch.device("cuda"), seed=seed)


def _batches(n: int, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [
        (
            torch.rand(1, 1, size, size, generator=gen) * 2 - 1,
            torch.rand(1, 1, size, size, generator=gen) * 2 - 1,
        )
        for _ in range(n)
    ]


def _train(
    model: CycleGAN, batches: list[tuple[torch.Tensor, torch.Tensor]], sched_at: int = 5
) -> torch.Tensor:
    out = []
    for i, (a, b) in enumerate(batches):
        if i == sched_at:
            model.step_schedulers()  # the LR changes while the graphs exist
        out.append(model.train_step(a, b).cpu())
    return torch.stack(out)


def _weights(model: CycleGAN) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


def test_cuda_graph_step_equals_eager_step() -> None:
    torch.backends.cudnn.benchmark = False
    batches = _batches(9)
    eager, graphed = _graph_model(False), _graph_model(True)
    l_eager, l_graph = _train(eager, batches), _train(graphed, batches)
    assert graphed._graphs is not None and eager._graphs is None
    assert graphed.lr == eager.lr < graphed.opts.lr
    assert torch.allclose(l_eager, l_graph, rtol=2e-3, atol=1e-4), (l_eager - l_graph).abs().max()
    assert torch.allclose(_weights(eager), _weights(graphed), rtol=1e-3, atol=1e-5)


def test_cuda_graph_checkpoint_resume_and_cross_device_load() -> None:
    import io

    batches = _batches(8)
    whole = _graph_model(True)
    l_whole = _train(whole, batches)
    first = _graph_model(True)
    _train(first, batches[:4], sched_at=99)
    buf = io.BytesIO()
    torch.save(first.training_state(), buf)
    buf.seek(0)
    state = torch.load(buf, map_location="cpu", weights_only=False)
    second = _graph_model(True, seed=5)  # other initial weights: all must come from the state
    second.load_training_state(state)
    l_second = _train(second, batches[4:], sched_at=1)
    assert torch.allclose(l_whole[4:], l_second, rtol=2e-3, atol=1e-4)
    assert torch.allclose(_weights(whole), _weights(second), rtol=1e-3, atol=1e-5)
    # the same checkpoint continues on the CPU, in eager mode
    opts = second.opts
    cpu = CycleGAN(opts, torch.device("cpu"), seed=0)
    cpu.load_training_state(state)
    assert isinstance(cpu.opt_g.param_groups[0]["lr"], float)
    assert torch.isfinite(cpu.train_step(*batches[4])).all()
