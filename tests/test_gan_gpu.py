"""CUDA paths (bf16 autocast, channels-last, fused Adam) agree with the CPU fp32 reference."""

from __future__ import annotations

import pytest
import torch

from gensyn.base.pipeline_io import StageTimer
from gensyn.gan.model import CycleGAN
from gensyn.gan.settings import CycleGANSettings
from gensyn.gan.translate import compiled_generator, translate_batch, translate_files

pytestmark = pytest.mark.gpu


def _pair() -> tuple[CycleGAN, CycleGAN]:
    opts = CycleGANSettings(arch="resnet_6blocks", ngf=16, ndf=16, pool_size=4)
    cpu = CycleGAN(opts, torch.device("cpu"), seed=0)
    gpu = CycleGAN(opts, torch.device("cuda"), seed=0)  # same seed: same initial weights
    return cpu, gpu


def test_first_step_losses_match_cpu_within_bf16() -> None:
    cpu, gpu = _pair()
    assert gpu.amp and gpu.use_graphs
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


def test_compiled_translation_matches_eager_and_pads_the_last_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The compiled path (an all-bf16 InferenceGenerator) is as close to the fp32 network as
    bf16 autocast is, on tensors and through PNG files, and its padded last batch is right."""
    import numpy as np

    from gensyn.base.io import read_image, write_image

    _, gpu = _pair()
    net = gpu.g_ab.eval()
    x = torch.rand(8, 1, 96, 96, device="cuda") * 2 - 1
    exact = translate_batch(net, x, "fp32", False)
    eager = translate_batch(net, x, "bf16", False)
    fast = translate_batch(compiled_generator(net), x, "bf16", False)
    err_eager, err_fast = float((eager - exact).abs().max()), float((fast - exact).abs().max())
    assert err_fast < max(0.05, 1.5 * err_eager), (err_fast, err_eager)
    assert float((fast - exact).abs().mean()) < 0.012
    rng = np.random.default_rng(0)
    srcs = [tmp_path / f"in{i}.png" for i in range(11)]  # 11 = 8 + a short batch of 3
    for p in srcs:
        write_image(p, rng.integers(0, 256, (96, 96), dtype=np.uint8))
    outs = {}
    for name, precision, flag in (("fp32", "fp32", False), ("eager", "bf16", False), ("compiled", "bf16", True)):  # fmt: skip
        dst = [tmp_path / name / p.name for p in srcs]
        timer = StageTimer()
        assert translate_files(net, srcs, dst, 1, 8, precision, compile=flag, timer=timer) == 11
        outs[name] = np.stack([read_image(p).astype(int) for p in dst])
        keys = timer.summary(11, "images")
        # compiled: the first batch is timed as compilation, the rate after it reported apart
        assert ("time_compile_s" in keys) == flag
        assert ("images_per_s_after_compile" in keys) == flag
        # the GPU's own seconds, from CUDA events around each batch (one batch in flight)
        assert 0 < keys["time_gpu_s"] <= keys["time_wall_s"]
    # grey levels from the fp32 network: bf16 rounding only, on every image of both batches
    worst = {k: int(np.abs(outs[k] - outs["fp32"]).max()) for k in ("eager", "compiled")}
    assert worst["compiled"] <= max(6, worst["eager"] + 2), worst
    per_image = np.abs(outs["compiled"] - outs["fp32"]).mean(axis=(1, 2))
    assert per_image.max() < 1.5, per_image  # the padded short batch (images 8-10) too


def _graph_model(graphs: bool, seed: int = 0) -> CycleGAN:
    opts = CycleGANSettings(
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


def _snapshot(model: CycleGAN) -> dict:
    import io

    buf = io.BytesIO()
    torch.save(model.training_state(), buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=False)


def _net_weights(model: CycleGAN) -> dict[str, torch.Tensor]:
    return {
        name: torch.cat([p.detach().flatten().cpu() for p in getattr(model, name).parameters()])
        for name in ("g_ab", "g_ba", "d_a", "d_b")
    }


def _assert_same_update(
    before: dict[str, torch.Tensor], x: CycleGAN, y: CycleGAN, what: str
) -> None:
    """x and y made the same update from ``before``, network by network.

    Compared as update vectors (cosine, norm) rather than weights: a GAN step on a GPU is
    not bit-reproducible (reflection-pad backward adds atomically), and Adam turns the
    rounding noise of the zero gradients of the biases before instance norm into full-size
    updates that change no output. Any real difference (a stale LR, a missed update, wrong
    gradients) moves the whole vector.
    """
    wx, wy = _net_weights(x), _net_weights(y)
    for name, w0 in before.items():
        dx, dy = wx[name] - w0, wy[name] - w0
        cos = torch.nn.functional.cosine_similarity(dx, dy, dim=0)
        ratio = dx.norm() / dy.norm()
        assert cos > 0.99 and abs(ratio - 1) < 0.02, (what, name, float(cos), float(ratio))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager_nets", "compiled_nets"])
def test_cuda_graph_step_equals_eager_step(compiled: bool) -> None:
    """From the same state, a replayed step (of eager or torch.compile'd networks) makes the
    eager step's update, also after the learning rate changed while the graphs existed."""
    batches = _batches(7)
    graphed = _graph_model(True)
    if compiled:
        graphed.compile()
    for a, b in batches[:4]:  # 3 eager warm-up steps, then capture and replay
        graphed.train_step(a, b)
    assert graphed._graphs is not None
    for i, (a, b) in enumerate(batches[4:]):
        if i == 1:
            graphed.step_schedulers()
        eager = _graph_model(False, seed=9)
        eager.load_training_state(_snapshot(graphed))
        assert eager.lr == pytest.approx(graphed.lr)
        before = _net_weights(graphed)
        l_graph = graphed.train_step(a, b).cpu()
        l_eager = eager.train_step(a, b).cpu()
        assert graphed._graphs is not None and eager._graphs is None
        assert torch.allclose(l_graph, l_eager, rtol=1e-3, atol=1e-5), (l_graph, l_eager)
        _assert_same_update(before, graphed, eager, f"step {i}")
    assert graphed.lr == pytest.approx(graphed.opts.lr * 0.75)


def test_cuda_graph_checkpoint_resume_and_cross_device_load() -> None:
    batches = _batches(6)
    whole = _graph_model(True)
    for a, b in batches[:5]:
        whole.train_step(a, b)
    state = _snapshot(whole)
    resumed = _graph_model(True, seed=5)  # other initial weights: all must come from the state
    resumed.load_training_state(state)
    assert resumed._graphs is None  # captured again for the restored optimiser state
    before = _net_weights(whole)
    l_whole = whole.train_step(*batches[5]).cpu()
    l_resumed = resumed.train_step(*batches[5]).cpu()
    assert torch.allclose(l_whole, l_resumed, rtol=1e-3, atol=1e-5), (l_whole, l_resumed)
    _assert_same_update(before, whole, resumed, "resumed")
    # the same checkpoint continues on the CPU, in eager mode
    cpu = CycleGAN(whole.opts, torch.device("cpu"), seed=0)
    cpu.load_training_state(state)
    assert isinstance(cpu.opt_g.param_groups[0]["lr"], float)
    assert torch.isfinite(cpu.train_step(*batches[5])).all()
