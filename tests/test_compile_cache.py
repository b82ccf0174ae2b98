"""Compiled kernels kept in ``paths.compile_cache_dir``, shared by every run and job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gensyn.base.devices import COMPILE_CACHES, use_compile_caches


@pytest.fixture
def no_cache_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a user who set none of the compilers' variables (the test session
    sets them all, to keep the tools out of $HOME)."""
    for variable in COMPILE_CACHES:
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.usefixtures("no_cache_env")
def test_each_compiler_gets_its_folder_and_a_users_own_setting_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert use_compile_caches("off") == {} and use_compile_caches("") == {}
    monkeypatch.setenv("TRITON_CACHE_DIR", "/scratch/mine")
    got = use_compile_caches(tmp_path / "compile")
    assert got == {
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "compile" / "inductor"),
        "TRITON_CACHE_DIR": "/scratch/mine",  # the environment wins
        "CUPY_CACHE_DIR": str(tmp_path / "compile" / "cupy"),
    }
    assert {k: os.environ[k] for k in got} == got


@pytest.mark.usefixtures("no_cache_env")
def test_every_stage_runs_with_its_kernels_cached_in_the_work_dir(compose, gensyn_root: Path) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    from gensyn.app.main import run
    from gensyn.core.registry import _REGISTRY, stage

    seen: dict[str, str | None] = {}

    @stage("_test_compile_cache", summary="records the compilers' cache folders", config_keys=("seed",))  # fmt: skip
    def _record(cfg, ctx) -> None:  # type: ignore[no-untyped-def]
        seen.update({v: os.environ.get(v) for v in COMPILE_CACHES})

    try:
        run(compose("stage=list", "stage.name=_test_compile_cache"))
    finally:
        _REGISTRY.pop("_test_compile_cache", None)
    folder = gensyn_root / "workdir" / "cache" / "compile"
    assert seen == {v: str(folder / sub) for v, sub in COMPILE_CACHES.items()}


_COMPILE_ONCE = """
import json, sys
from gensyn.base.devices import use_compile_caches
use_compile_caches(sys.argv[1])
import torch
from torch._dynamo.utils import counters
f = torch.compile(lambda x: torch.sin(x) * 2 + 1)
assert torch.allclose(f(torch.ones(8)), torch.sin(torch.ones(8)) * 2 + 1)
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.slow
def test_a_new_process_loads_the_compiled_graph_from_the_shared_folder(
    tmp_path: Path, in_ci: bool
) -> None:
    """Two processes (two SLURM jobs on two nodes, say) with no cache of their own in /tmp:
    the first compiles into the folder, the second finds its graph there."""
    if not (shutil.which("c++") or shutil.which("g++")):  # Inductor's CPU code needs one
        if in_ci:
            pytest.fail("no C++ compiler: CI must install one (build-essential)")
        pytest.skip("no C++ compiler for Inductor's CPU code")
    env = {k: v for k, v in os.environ.items() if k not in COMPILE_CACHES}
    counts = []
    for _ in range(2):
        own_tmp = tmp_path / f"tmp{len(counts)}"  # each its own /tmp, as on another node
        own_tmp.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", _COMPILE_ONCE, str(tmp_path / "compile")],
            env={**env, "TMPDIR": str(own_tmp)},
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert counts[0].get("fxgraph_cache_miss", 0) >= 1 and not counts[0].get("fxgraph_cache_hit")
    assert counts[1].get("fxgraph_cache_hit", 0) >= 1 and not counts[1].get("fxgraph_cache_miss")
    assert any((tmp_path / "compile" / "inductor").rglob("*"))
