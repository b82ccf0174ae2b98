"""Batched translation: outputs match the network, sizes are kept, resumable, clear errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gensyn.base.io import read_image, write_image
from gensyn.gan.data import load_image, tensor_to_uint8, uint8_images
from gensyn.gan.model import CycleGAN
from gensyn.gan.settings import CycleGANSettings
from gensyn.gan.translate import load_generator, pad_to_multiple, translate_batch, translate_files


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def saved_generator(tmp_path: Path) -> Path:
    """A (randomly initialised) A→B generator saved the way gan_train saves it."""
    from gensyn.gan.trainer import options_dict

    opts = CycleGANSettings(arch="resnet_6blocks", ngf=8, ndf=8)
    model = CycleGAN(opts, torch.device("cpu"), seed=3)
    path = tmp_path / "generator_a2b.pt"
    torch.save(
        {"options": options_dict(opts), "direction": "a2b", "state_dict": model.g_ab.state_dict()},
        path,
    )
    return path


def _images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"drr_{i}.png"
        write_image(path, rng.integers(0, 256, (h, w), dtype=np.uint8))
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("batch_size", "write_threads"),
    [(2, 2), (3, 2), (5, 3), (4, 0)],  # writer jobs of 1, 2 and 2 + 2 + 1 images; inline
)
def test_outputs_equal_single_image_forward(
    tmp_path: Path, saved_generator: Path, batch_size: int, write_threads: int
) -> None:
    net, opts = load_generator(saved_generator)
    assert opts["ngf"] == 8 and net.in_channels == 1
    sources = _images(tmp_path / "in", [(64, 64)] * 5)
    outputs = [tmp_path / "out" / p.name for p in sources]
    written = translate_files(
        net, sources, outputs, batch_size=batch_size, write_threads=write_threads
    )
    assert written == 5
    for src, out in zip(sources, outputs, strict=True):
        got = read_image(out)
        assert got.shape == (64, 64) and got.dtype == np.uint8
        with torch.no_grad():
            expected = tensor_to_uint8(net(load_image(src, 1)[None]))[0]
        # batching must not change the result beyond one grey level of rounding
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # resumable: existing outputs are skipped, a missing one is redone, and so are ones a
    # machine crash cut or emptied (written without fsync, synced at the end)
    outputs[2].unlink()
    assert translate_files(net, sources, outputs, batch_size=2) == 1
    whole = outputs[1].read_bytes()
    outputs[1].write_bytes(whole[: len(whole) // 2])
    outputs[3].write_bytes(b"")
    assert translate_files(net, sources, outputs, batch_size=2) == 2
    assert outputs[1].read_bytes() == whole


def test_sizes_not_divisible_by_four_are_kept(tmp_path: Path, saved_generator: Path) -> None:
    net, _ = load_generator(saved_generator)
    sources = _images(tmp_path / "in", [(50, 66)] * 2)
    outputs = [tmp_path / "out" / p.name for p in sources]
    translate_files(net, sources, outputs, batch_size=2)
    assert all(read_image(p).shape == (50, 66) for p in outputs)
    padded, h, w = pad_to_multiple(torch.zeros(1, 1, 50, 66))
    assert padded.shape[-2:] == (52, 68) and (h, w) == (50, 66)


def test_bad_inputs(tmp_path: Path, saved_generator: Path) -> None:
    net, _ = load_generator(saved_generator)
    mixed = _images(tmp_path / "in", [(64, 64), (32, 32)])
    with pytest.raises(ValueError, match="differ in size"):
        translate_files(net, mixed, [tmp_path / "o" / p.name for p in mixed], batch_size=2)
    with pytest.raises(FileNotFoundError, match="run stage=gan_train first"):
        load_generator(tmp_path / "missing.pt")
    rgb = tmp_path / "rgb.png"
    write_image(rgb, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="3 channel"):
        translate_files(net, [rgb], [tmp_path / "o" / "rgb.png"])
    with pytest.raises(ValueError, match="2 sources but 1 outputs"):
        translate_files(net, mixed, [tmp_path / "x.png"])


def test_compiled_translation_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled graph that fails costs one warning: that batch and every later one are
    translated eagerly with the same weights; without Triton compilation is not tried."""
    import torch.utils._triton as triton_check

    from gensyn.gan.translate import FallbackForward, compile_unavailable

    eager = torch.nn.Conv2d(1, 1, 3, padding=1)
    calls = {"compiled": 0}

    def broken(x: torch.Tensor) -> torch.Tensor:
        calls["compiled"] += 1
        raise RuntimeError("InductorError: no working C compiler\nmore detail")

    forward = FallbackForward(broken, eager)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        # through translate_batch, as translate_files calls it (it asks for the device)
        torch.testing.assert_close(translate_batch(forward, x), eager(x))
        torch.testing.assert_close(forward(x), eager(x))
    assert calls["compiled"] == 1  # not tried again after the first failure
    assert forward.failed == "RuntimeError: InductorError: no working C compiler"
    assert "CUDA devices, not cpu" in str(compile_unavailable("cpu"))
    monkeypatch.setattr(triton_check, "has_triton", lambda: False)
    assert "Triton is not importable" in str(compile_unavailable("cuda"))
    monkeypatch.setattr(triton_check, "has_triton", lambda: True)
    assert compile_unavailable("cuda") is None


def test_translation_reports_whether_it_compiled(tmp_path: Path, saved_generator: Path) -> None:
    """On the CPU compile=true translates eagerly (compilation is CUDA-only) and says so."""
    net, _ = load_generator(saved_generator, "cpu")
    src = tmp_path / "drr.png"
    write_image(src, (np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32))
    report: dict[str, object] = {}
    n = translate_files(net, [src], [tmp_path / "out.png"], compile=True, report=report)
    assert n == 1 and report == {"compiled": False, "compile_fallback": None}


@pytest.mark.parametrize("graph", ["works", "fails"])
def test_compiled_path_of_translate_files_on_the_cpu(
    tmp_path: Path, saved_generator: Path, monkeypatch: pytest.MonkeyPatch, graph: str
) -> None:
    """The stage's compiled branch, composed as on a GPU (the wrapper, the padded short
    batch, the compile timing, the report), with the InferenceGenerator standing in for the
    compiled graph: the outputs are the eager network's; a graph that fails falls back."""
    import gensyn.gan.translate as translate
    from gensyn.base.pipeline_io import StageTimer
    from gensyn.gan.networks import InferenceGenerator

    net, _ = load_generator(saved_generator, "cpu")
    calls = {"graph": 0}

    def graph_of(eager: torch.nn.Module) -> object:
        fast = InferenceGenerator(eager, torch.float32, channels_last=True).eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            calls["graph"] += 1
            assert x.shape[0] == 4  # full batches only: the short last one is padded
            if graph == "fails":
                raise RuntimeError("CUDA graph capture failed")
            return fast(x)

        return run

    def available(device: str) -> None:  # importing Triton: seconds on a GPU host
        time.sleep(0.2)

    def built(eager: torch.nn.Module) -> object:  # torch.compile imports Dynamo
        time.sleep(0.2)
        return graph_of(eager)

    monkeypatch.setattr(translate, "compile_unavailable", available)
    monkeypatch.setattr(translate, "compiled_generator", built)
    rng = np.random.default_rng(1)
    srcs = [tmp_path / f"in{i}.png" for i in range(6)]  # batches of 4 and 2
    for p in srcs:
        write_image(p, rng.integers(0, 256, (32, 32), dtype=np.uint8))
    dst = [tmp_path / "out" / p.name for p in srcs]
    eager = [tmp_path / "eager" / p.name for p in srcs]
    report: dict[str, object] = {}
    timer = StageTimer()
    n = translate_files(net, srcs, dst, batch_size=4, compile=True, timer=timer, report=report)
    assert n == 6 and translate_files(net, srcs, eager, batch_size=4) == 6
    for a, b in zip(dst, eager, strict=True):
        assert np.abs(read_image(a).astype(int) - read_image(b).astype(int)).max() <= 1
    # the one-off work before the first compiled batch is compilation, not the steady loop
    keys = timer.summary(6, "images")
    assert keys["time_compile_s"] >= 0.4
    # the summary's times are rounded to the millisecond: the steady time is known to ±1 ms
    steady = keys["time_wall_s"] - keys["time_compile_s"]
    assert 6 / (steady + 0.001) <= keys["images_per_s_after_compile"] <= 6 / (steady - 0.001)
    if graph == "works":
        # compiled on a warm-up batch, then the two batches of the run
        assert calls["graph"] == 3 and report == {"compiled": True, "compile_fallback": None}
    else:  # tried once, then eager for good
        assert calls["graph"] == 1
        assert report == {"compiled": False, "compile_fallback": "RuntimeError: CUDA graph capture failed"}  # fmt: skip


def test_uint8_images_lay_channels_last_as_image_files_do() -> None:
    """(N, C, H, W) in [-1, 1] → uint8 (N, H, W) or (N, H, W, C): the formula, checked
    element by element in numpy, and the layout files have."""
    x = torch.linspace(-1.2, 1.2, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    expect = np.clip(np.round((np.clip(x.numpy(), -1, 1) + 1) * 127.5), 0, 255).astype(np.uint8)
    rgb = uint8_images(x)
    assert rgb.shape == (2, 4, 5, 3) and rgb.is_contiguous() and rgb.dtype == torch.uint8
    np.testing.assert_array_equal(rgb.numpy(), np.moveaxis(expect, 1, -1))
    grey = uint8_images(x[:, :1])
    assert grey.shape == (2, 4, 5)
    np.testing.assert_array_equal(grey.numpy(), expect[:, 0])
    assert tensor_to_uint8(x[:, :1]).tolist() == expect[:, 0].tolist()


@pytest.mark.parametrize(("weight", "reason"), [(float("nan"), "not finite"), (0.0, "one grey")])
def test_a_broken_generator_writes_nothing(
    tmp_path: Path, saved_generator: Path, weight: float, reason: str
) -> None:
    """A diverged (NaN) or dead (zero-weight) generator fails naming the DRR (issue 36)."""
    from gensyn.base.degenerate import DegenerateOutputError

    state = torch.load(saved_generator)
    state["state_dict"] = {
        k: torch.full_like(v, weight) if v.is_floating_point() else v
        for k, v in state["state_dict"].items()
    }
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    net, _ = load_generator(broken)
    sources = _images(tmp_path / "in", [(64, 64)] * 3)
    outputs = [tmp_path / "out" / p.name for p in sources]
    with pytest.raises(DegenerateOutputError, match=reason) as err:
        translate_files(net, sources, outputs, batch_size=2)
    assert str(sources[0]) in str(err.value)
    assert not any(p.exists() for p in outputs)
