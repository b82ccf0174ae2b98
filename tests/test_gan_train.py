"""CycleGAN training: a step lowers the losses, LR schedule, pool, resume after kill/SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gensyn.base.io import write_image
from gensyn.gan.data import UnpairedDataset, epoch_plan
from gensyn.gan.model import LOSS_NAMES, CycleGAN, lr_factor
from gensyn.gan.pool import ImagePool
from gensyn.gan.settings import CycleGANSettings
from gensyn.gan.trainer import CycleGANTrainer

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(
    arch="resnet_6blocks",
    ngf=8,
    ndf=8,
    load_size=68,
    crop_size=64,
    pool_size=4,
    n_epochs=2,
    n_epochs_decay=2,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny networks run faster without thread hand-offs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_opts(**kw: object) -> CycleGANSettings:
    return CycleGANSettings(**{**SMALL, **kw})  # type: ignore[arg-type]


def make_domains(root: Path, n_a: int = 6, n_b: int = 5, size: int = 64) -> tuple[list, list]:
    """Two toy domains: smooth blobs (A) and noisy bright blobs (B), 8-bit PNGs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    paths: dict[str, list[Path]] = {"A": [], "B": []}
    for name, n in (("A", n_a), ("B", n_b)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cy, cx = rng.uniform(0.3, 0.7, 2)
            img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
            if name == "B":
                img = 0.3 + 0.7 * img + rng.normal(0, 0.05, img.shape)
            path = root / name / f"{i:03d}.png"
            write_image(path, (np.clip(img, 0, 1) * 255).astype(np.uint8))
            paths[name].append(path)
    return paths["A"], paths["B"]


def test_lr_schedule_constant_then_linear() -> None:
    factors = [lr_factor(e, 100, 100) for e in range(1, 201)]
    assert factors[:100] == [1.0] * 100
    assert factors[100] == pytest.approx(100 / 101)
    assert factors[-1] == pytest.approx(1 / 101)
    assert np.all(np.diff(factors[100:]) < 0)


def test_one_step_lowers_losses_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = CycleGAN(small_opts(pool_size=0), torch.device("cpu"), seed=0)
    a = torch.rand(1, 1, 64, 64) * 2 - 1
    b = torch.rand(1, 1, 64, 64) * 2 - 1
    before = model.evaluate_losses(a, b)
    model.train_step(a, b)
    after = model.evaluate_losses(a, b)
    g_keys = [k for k in LOSS_NAMES if not k.startswith("d_")]
    assert sum(after[k] for k in g_keys) < sum(before[k] for k in g_keys)
    assert after["d_a"] + after["d_b"] < before["d_a"] + before["d_b"]


def test_checkpoint_of_a_cuda_graph_run_loads_on_cpu() -> None:
    """A CUDA-graph run keeps Adam's LR and step count as tensors with ``capturable``; such a
    checkpoint restores into an eager CPU run with this run's own optimiser flags."""
    torch.manual_seed(0)
    a = torch.rand(1, 1, 64, 64) * 2 - 1
    b = torch.rand(1, 1, 64, 64) * 2 - 1
    source = CycleGAN(small_opts(n_epochs=1, n_epochs_decay=1), torch.device("cpu"), seed=0)
    source.train_step(a, b)
    source.step_schedulers()
    state = source.training_state()
    for key in ("opt_g", "opt_d"):  # as a capturable optimiser on a GPU saves them
        for group in state[key]["param_groups"]:
            group["lr"] = torch.tensor(group["lr"])
            group["capturable"] = True
    target = CycleGAN(small_opts(n_epochs=1, n_epochs_decay=1), torch.device("cpu"), seed=3)
    target.load_training_state(state)
    for opt in (target.opt_g, target.opt_d):
        group = opt.param_groups[0]
        assert isinstance(group["lr"], float) and group["capturable"] is False
        assert group["lr"] == pytest.approx(source.lr)
    assert target.lr == pytest.approx(2e-4 * 0.5)
    before = [p.detach().clone() for p in target.g_ab.parameters()]
    assert torch.isfinite(target.train_step(a, b)).all()
    assert any(not torch.equal(x, p) for x, p in zip(before, target.g_ab.parameters(), strict=True))


def test_image_pool_matches_reference_semantics() -> None:
    pool = ImagePool(size=3, seed=1)
    images = [torch.full((1, 1, 2, 2), float(i)) for i in range(20)]
    outs = [float(pool.query(x)[0, 0, 0, 0]) for x in images]
    assert outs[:3] == [0.0, 1.0, 2.0]  # filling: returns the new image
    later = outs[3:]
    new = [o == float(i + 3) for i, o in enumerate(later)]
    assert 0 < sum(new) < len(later)  # sometimes new, sometimes an older image
    assert all(o <= i + 3 for i, o in enumerate(later))  # never an image from the future
    # state round trip continues identically
    state = pool.state_dict()
    twin = ImagePool(size=3)
    twin.load_state_dict(state)
    x = torch.full((1, 1, 2, 2), 99.0)
    assert torch.equal(pool.query(x), twin.query(x))
    with pytest.raises(ValueError, match="size"):
        ImagePool(size=5).load_state_dict(state)


def test_epoch_plan_is_deterministic_and_covers_domain_a() -> None:
    p1 = epoch_plan(0, 3, 5, 8, 72, 64, True)
    p2 = epoch_plan(0, 3, 5, 8, 72, 64, True)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not torch.equal(p1["b"], epoch_plan(0, 4, 5, 8, 72, 64, True)["b"])
    assert sorted(p1["a"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 4]  # every A image, once or twice
    assert int(p1["a_y"].max()) <= 8 and int(p1["a_y"].min()) >= 0
    assert int(epoch_plan(0, 1, 5, 8, 72, 64, False)["a_flip"].sum()) == 0


def test_dataset_items_and_bad_inputs(tmp_path: Path) -> None:
    paths_a, paths_b = make_domains(tmp_path)
    ds = UnpairedDataset(paths_a, paths_b, load_size=68, crop_size=64)
    a, b = ds[(1, 0)]
    assert a.shape == b.shape == (1, 64, 64)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    assert len(ds) == 6
    with pytest.raises(ValueError, match=r"domain B .* no images"):
        UnpairedDataset(paths_a, [], load_size=68, crop_size=64)
    rgb = tmp_path / "rgb.png"
    write_image(rgb, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb.png: image has 3 channel\(s\)"):
        UnpairedDataset([rgb], paths_b, load_size=68, crop_size=64)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        UnpairedDataset([tmp_path / "missing.png"], paths_b, load_size=68, crop_size=64)
    with pytest.raises(ValueError, match="lambda_identity"):
        CycleGAN(small_opts(output_nc=3), torch.device("cpu"))


def test_training_runs_and_logs_schedule(tmp_path: Path) -> None:
    paths_a, paths_b = make_domains(tmp_path)
    seen: list[float] = []
    trainer = CycleGANTrainer(
        small_opts(),
        paths_a,
        paths_b,
        tmp_path / "run",
        device="cpu",
        on_epoch_end=lambda t, m: seen.append(m["lr"]),
    )
    history = trainer.fit()
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert seen == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    assert all(np.isfinite(h[f"loss_{k}"]) for h in history for k in LOSS_NAMES)
    # a finished run resumes to "nothing left to do" and keeps its weights
    again = CycleGANTrainer(small_opts(), paths_a, paths_b, tmp_path / "run", device="cpu")
    again.fit()
    assert torch.equal(again.model.g_ab.model[1].weight, trainer.model.g_ab.model[1].weight)
    with pytest.raises(ValueError, match="other options"):
        CycleGANTrainer(small_opts(ngf=4), paths_a, paths_b, tmp_path / "run", device="cpu").fit()


def _train_cmd(root: Path, out: Path) -> list[str]:
    opts = {
        **SMALL,
        "ngf": 4,
        "ndf": 4,
        "load_size": 36,
        "crop_size": 32,
        "n_epochs": 1,
        "n_epochs_decay": 2,
    }
    sets = [f"--set={k}={v}" for k, v in opts.items()]
    return [
        sys.executable,
        "-m",
        "gensyn.gan.cli",
        "train",
        "--domain-a",
        str(root / "A"),
        "--domain-b",
        str(root / "B"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
        *sets,
    ]


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_for_first_checkpoint(ckpt: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until epoch 1's checkpoint exists (the first one written)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            return
        time.sleep(0.02)
    raise AssertionError(f"training wrote no checkpoint (rc={proc.poll()})")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Toy domains and the checkpoint of an uninterrupted CPU run on them (made once)."""
    root = tmp_path_factory.mktemp("gan_resume")
    make_domains(root, n_a=16, n_b=12, size=32)
    proc = _start(_train_cmd(root, root / "full"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return root, torch.load(root / "full" / "checkpoint.pt", weights_only=False)


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_killed_run_resumes_to_the_same_weights(
    uninterrupted: tuple[Path, dict], sig: signal.Signals
) -> None:
    """Kill (or pre-empt) a CPU run in its second epoch, resume it, and compare it with an
    uninterrupted run: same learning rates per epoch and bit-identical weights."""
    tmp_path, a = uninterrupted
    out = tmp_path / f"killed_{sig.name}"
    proc = _start(_train_cmd(tmp_path, out))
    _wait_for_first_checkpoint(out / "checkpoint.pt", proc)
    time.sleep(0.1)  # into epoch 2
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # checkpoint written mid-epoch, exit code 3
        assert proc.returncode == 3, stderr
        assert "SIGTERM" in stderr
        state = torch.load(out / "checkpoint.pt", weights_only=False)["state"]
        assert state["index"] > 0
    assert not (out / "generator_a2b.pt").exists()
    resumed = _start(_train_cmd(tmp_path, out))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "resuming CycleGAN training" in stderr
    b = torch.load(out / "checkpoint.pt", weights_only=False)
    lrs = [[h["lr"] for h in ck["state"]["history"]] for ck in (a, b)]
    assert lrs[0] == lrs[1]
    assert len(lrs[0]) == 3
    for net in ("g_ab", "g_ba", "d_a", "d_b"):
        for key, value in a["model"][net].items():
            assert torch.equal(value, b["model"][net][key]), f"{net}.{key} differs after resume"
    for pool in ("pool_a", "pool_b"):
        assert torch.equal(a["model"][pool]["images"], b["model"][pool]["images"])
