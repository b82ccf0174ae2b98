"""The whole demo pipeline through ``python launch.py device=cuda``, default settings (GPU only).

Every GPU stage must run on the GPU with its defaults (CUDA graphs, torch.compile, bf16):
a configuration a speed switch cannot capture falls back and says so, it never crashes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _summary(root: Path, stage: str) -> dict[str, Any]:
    (done,) = sorted((root / "workdir" / "runs" / stage).glob("*/DONE"))[-1:]
    return json.loads((done.parent / "summary.json").read_text())


def test_demo_pipeline_on_cuda(launch: Callable[..., Any], gensyn_root: Path) -> None:
    # the test session pins JAX to the CPU (conftest); this run must see the GPU
    proc = launch("device=cuda", timeout=1800, env={"JAX_PLATFORMS": ""})
    assert "GENSYN pipeline finished" in proc.stdout
    assert _summary(gensyn_root, "drr")["device"].startswith("cuda")
    gan = _summary(gensyn_root, "gan_train")
    assert gan["device"].startswith("cuda")
    # graphs either ran, or their failure was caught, logged and recorded
    assert gan["cuda_graphs"] or gan["cuda_graphs_failed"]
    assert _summary(gensyn_root, "classify")["jax_backend"] == "gpu"
    assert _summary(gensyn_root, "predict")["jax_backend"] == "gpu"
    log = proc.stdout + proc.stderr
    assert "PyTorch" in log and "runs on cuda" in log and "JAX" in log
