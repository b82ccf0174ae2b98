"""The demo pipeline end to end through `python launch.py`, and a local multirun."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gensyn import io


@pytest.mark.slow
def test_demo_pipeline_end_to_end_then_skips_when_done(launch, gensyn_root: Path) -> None:
    proc = launch("profile=tiny", "logger=none", timeout=1800)
    out = proc.stdout + proc.stderr
    match = re.search(r"Report: (\S+report\.html)", out)
    assert match, out[-3000:]
    report = Path(match.group(1))
    assert report.is_file() and report.with_suffix(".md").is_file()
    runs = gensyn_root / "workdir" / "runs"
    pipeline_dir = report.parent
    assert (pipeline_dir / "DONE").is_file()
    stages = io.read_json(pipeline_dir / "summary.json")["stages"]
    for name in ["convert", "prepare_xrays", "drr", "gan_train", "gan_translate", "classify",
                 "predict", "report"]:
        assert name in stages, f"pipeline did not run {name}"
        assert any((d / "DONE").is_file() for d in (runs / name).iterdir()), name
    text = report.with_suffix(".md").read_text()
    assert "SIMULATED" in text
    # every figure the report links exists
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (pipeline_dir / rel).resolve().is_file(), rel

    again = launch("profile=tiny", "logger=none", timeout=600)
    assert "already done" in again.stdout + again.stderr


@pytest.mark.slow
def test_local_multirun_makes_one_run_folder_per_value(launch, gensyn_root: Path) -> None:
    # the demo's phantoms are data: drawn from split_seed (the training seed leaves them alone)
    proc = launch("stage=convert", "split_seed=0,1", "-m", "profile=tiny", "logger=none",
                  timeout=900)
    assert "#0 : stage=convert split_seed=0" in proc.stdout + proc.stderr
    folders = sorted((gensyn_root / "workdir" / "runs" / "convert").iterdir())
    assert len(folders) == 2 and all((f / "DONE").is_file() for f in folders)
    seeds = {io.read_json(f / "identity.json")["config"]["split_seed"] for f in folders}
    assert seeds == {0, 1}
    assert (gensyn_root / "workdir" / "multirun").is_dir()
