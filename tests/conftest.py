"""Shared test set-up: keep every tool out of $HOME, give each test its own GENSYN root."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_TOOL_HOME = Path(tempfile.mkdtemp(prefix="gensyn-test-home-"))
for _var, _sub in {
    "KERAS_HOME": "keras",
    "MPLCONFIGDIR": "matplotlib",
    "WANDB_DIR": "wandb",
    "WANDB_CACHE_DIR": "wandb-cache",
    "WANDB_CONFIG_DIR": "wandb-config",
    "WANDB_DATA_DIR": "wandb-data",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "CUPY_CACHE_DIR": "cupy",
}.items():
    os.environ[_var] = str(_TOOL_HOME / _sub)
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def gensyn_root(tmp_path: Path) -> Path:
    """A fresh GENSYN root folder (data, workdir) for one test."""
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def compose(gensyn_root: Path) -> Callable[..., object]:
    """Compose the real config (conf/) with overrides, rooted in a temp folder, logger off."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gensyn.config import register_configs

    register_configs()

    def _compose(*overrides: str, root: Path | None = None) -> object:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return hydra_compose(
                config_name="config",
                overrides=[f"paths.root_dir={root or gensyn_root}", "logger=none", *overrides],
            )

    return _compose


@pytest.fixture
def launch(gensyn_root: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python launch.py ARGS`` as a subprocess in a temp GENSYN root."""

    def _launch(
        *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "GENSYN_ROOT": str(gensyn_root), **(env or {})}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *args],
            cwd=gensyn_root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"launch.py {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    return _launch


@pytest.fixture(scope="session")
def in_ci() -> Iterator[bool]:
    """Whether the tests run in CI (CI=true), where missing services are failures, not skips."""
    yield IN_CI
