"""Run folders: hashing, DONE markers, force, resume after a kill, tracking files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gensyn import io
from gensyn.registry import _REGISTRY, stage
from gensyn.runs import execute, is_done, run_dir, stage_hash, with_overrides

ROOT = Path(__file__).resolve().parent.parent

# A real stage, registered only in this test process: it writes one file per item.
N_ITEMS = 6


@stage("_test_writer", summary="test stage writing numbered files",
       config_keys=("seed", "sampling"), upstream=())
def _writer(cfg, ctx) -> None:
    for i in range(N_ITEMS):
        out = ctx.out_dir / f"item_{i}.txt"
        if not out.exists():
            io.write_text(out, f"{cfg.seed}-{i}")
    ctx.summary["items"] = N_ITEMS


@stage("_test_child", summary="test stage downstream of _test_writer",
       config_keys=("split_idx",), upstream=("_test_writer",))
def _child(cfg, ctx) -> None:
    parent = ctx.upstream_dir("_test_writer")
    io.write_text(ctx.out_dir / "sum.txt", str(len(list(parent.glob("item_*.txt")))))


def teardown_module() -> None:
    _REGISTRY.pop("_test_writer", None)
    _REGISTRY.pop("_test_child", None)


def test_same_config_same_folder_and_irrelevant_keys_ignored(compose) -> None:
    a = compose("seed=1")
    assert stage_hash(a, "_test_writer") == stage_hash(compose("seed=1"), "_test_writer")
    # logging, devices, workers and unrelated groups do not change the folder
    for other in ["logger=wandb", "num_workers=7", "device=cpu", "classifier=small_cnn",
                  "split_idx=3", "dry_run=true"]:
        assert run_dir(compose("seed=1", other), "_test_writer") == run_dir(a, "_test_writer")
    # hashed keys do
    assert stage_hash(compose("seed=2"), "_test_writer") != stage_hash(a, "_test_writer")
    assert stage_hash(compose("seed=1", "sampling=drr"), "_test_writer") != stage_hash(
        a, "_test_writer")
    # an upstream change changes the downstream folder; the child's own key too
    assert stage_hash(compose("seed=2"), "_test_child") != stage_hash(a, "_test_child")
    assert stage_hash(compose("seed=1", "split_idx=1"), "_test_child") != stage_hash(
        a, "_test_child")
    # with_overrides finds the same folder as composing with the override
    assert run_dir(with_overrides(a, {"seed": 2}), "_test_writer") == run_dir(
        compose("seed=2"), "_test_writer")


def test_execute_writes_metadata_done_last_and_skips_when_done(compose) -> None:
    cfg = compose("seed=3")
    out = execute(cfg, "_test_child")
    parent = run_dir(cfg, "_test_writer")
    assert is_done(out) and is_done(parent)  # the upstream ran first
    assert (out / "sum.txt").read_text() == str(N_ITEMS)
    for name in ["config.yaml", "identity.json", "code_version.json", "summary.json"]:
        assert (out / name).is_file(), name
    identity = io.read_json(out / "identity.json")
    assert identity["upstream"] == {"_test_writer": parent.name}
    assert (out / "DONE").stat().st_mtime >= (out / "summary.json").stat().st_mtime
    done_before = (out / "DONE").read_text()
    time.sleep(0.01)
    assert execute(cfg, "_test_child") == out  # skipped: DONE untouched
    assert (out / "DONE").read_text() == done_before
    execute(cfg, "_test_child", force=True)  # recomputed
    assert (out / "DONE").read_text() != done_before


def test_missing_upstream_without_run_upstream_is_a_clear_error(compose) -> None:
    from gensyn.runs import UpstreamMissingError

    cfg = compose("seed=4", "run_upstream=false")
    with pytest.raises(UpstreamMissingError, match="stage=_test_writer"):
        execute(cfg, "_test_child")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from hydra import compose, initialize_config_dir
    from gensyn import io
    from gensyn.config import register_configs
    from gensyn.registry import stage
    from gensyn.runs import execute

    @stage("_slow", summary="slow writer", config_keys=("seed",))
    def run(cfg, ctx):
        for i in range(20):
            out = ctx.out_dir / f"part_{{i:02d}}.npy"
            if out.exists():
                continue
            with io.atomic_write(out) as tmp:
                with open(tmp, "wb") as fh:
                    for _ in range(50):           # a slow, chunked write: killable midway
                        fh.write(b"x" * 20000)
                        fh.flush()
                        time.sleep(0.002)
            print("wrote", i, flush=True)
        ctx.summary["parts"] = 20

    register_configs()
    with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
        cfg = compose("config", overrides=["paths.root_dir=" + sys.argv[1], "logger=none",
                                           "logger.carbontracker=false"])
    print(execute(cfg, "_slow"), flush=True)
    """
)


def test_killed_run_leaves_no_complete_looking_file_and_resumes(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT), conf=str(ROOT / "conf")))
    root = tmp_path / "root"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until a few parts are written, then kill mid-write
        if line.startswith("wrote 4"):
            time.sleep(0.03)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    run = next((root / "workdir" / "runs" / "_slow").iterdir())
    assert not (run / "DONE").exists()
    finished = sorted(run.glob("part_*.npy"))
    assert 5 <= len(finished) < 20
    assert all(p.stat().st_size == 50 * 20000 for p in finished)  # no truncated output
    # re-run: resumes, completes, leaves no temporary files behind
    done = subprocess.run([sys.executable, str(script), str(root)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    wrote = [line for line in done.stdout.splitlines() if line.startswith("wrote")]
    assert len(wrote) == 20 - len(finished)  # only the missing parts were written
    assert (run / "DONE").exists()
    assert len(list(run.glob("part_*.npy"))) == 20
    assert all(p.stat().st_size == 50 * 20000 for p in run.glob("part_*.npy"))
    leftovers = [p for p in run.glob("*.partial*")]
    # the killed write may leave its own temp file; the framework's outputs never look complete
    assert all(p.name.startswith(".") for p in leftovers)


def test_wandb_offline_and_carbontracker_logs_live_in_the_run_folder(compose) -> None:
    cfg = compose("seed=5", "logger=wandb")
    out = execute(cfg, "_test_writer")
    assert list((out / "wandb").glob("offline-run-*")), "no offline W&B run in the run folder"
    summary = io.read_json(out / "summary.json")
    assert summary["items"] == N_ITEMS
    logs = list((out / "carbon_logs").glob("*carbontracker*.log"))
    assert logs, "carbontracker wrote no log"
    assert summary.get("energy_kwh", 0.0) >= 0.0


def test_tracking_can_be_switched_off(compose) -> None:
    cfg = compose("seed=6", "logger=none", "logger.carbontracker=false")
    out = execute(cfg, "_test_writer")
    assert not (out / "wandb").exists() and not (out / "carbon_logs").exists()
