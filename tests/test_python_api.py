"""The README's "Python API" snippet runs as written (on a phantom CT, fresh networks)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def _fake_run_outputs(runs: Path) -> None:
    """An untrained generator and classifier where gan_train and classify save theirs."""
    import torch

    from gensyn.classify.models import ModelSpec, build_model
    from gensyn.gan.networks import build_generator
    from gensyn.gan.settings import CycleGANSettings
    from gensyn.gan.trainer import options_dict

    opts = CycleGANSettings(ngf=8, arch="resnet_6blocks")
    net = build_generator(opts.input_nc, opts.output_nc, opts.ngf, opts.arch, opts.norm)
    payload = {"options": options_dict(opts), "direction": "a2b", "state_dict": net.state_dict()}
    (runs / "gan_train" / "h").mkdir(parents=True)
    torch.save(payload, runs / "gan_train" / "h" / "generator_a2b.pt")
    model = build_model(ModelSpec(name="small_cnn", image_size_px=64, widths=(4, 8)))
    (runs / "classify" / "h").mkdir(parents=True)
    model.save(runs / "classify" / "h" / "best.keras")


def test_readme_python_api_snippet_runs(tmp_path, monkeypatch):
    _fake_run_outputs(tmp_path / "workdir" / "runs")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_snippet(), "README.md#python-api", "exec"), scope)
    drrs = np.asarray(scope["drrs"])
    assert drrs.shape == (2, 64, 64) and np.isfinite(drrs).all() and drrs.max() > 0
    assert all((tmp_path / f).is_file() for f in scope["synthex_files"])  # type: ignore[attr-defined]
    probabilities = np.asarray(scope["probabilities"])
    assert probabilities.shape == (2, 5)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
