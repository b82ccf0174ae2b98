"""The demo pipeline end to end through `python launch.py`, and a local multirun."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gensyn.base import io

#: Manifest columns that name files, and the folder (below the run folder) they are relative to.
PATH_COLUMNS = {"path": ".", "source_drr": ".", "nifti": "volumes"}
#: Tables that list files which could not be read (or were never there) on purpose.
LISTS_OF_BAD_FILES = ("failures.csv", "unreadable.csv", "unreadable_images.csv")


def manifest_paths(runs: Path) -> dict[str, list[Path]]:
    """Every file named by a manifest of every run folder below ``runs``, by manifest."""
    import pandas as pd

    found: dict[str, list[Path]] = {}
    for table in sorted(runs.glob("*/*/**/*.csv")):
        if table.name in LISTS_OF_BAD_FILES:
            continue
        run = table.relative_to(runs).parts[:2]
        frame = pd.read_csv(table)
        for column, below in PATH_COLUMNS.items():
            if column in frame.columns:
                base = runs.joinpath(*run) / below
                found[f"{table.relative_to(runs)}:{column}"] = [
                    base / str(p) for p in frame[column].dropna()
                ]
    return found


def assert_manifest_paths_exist(runs: Path, stages: list[str]) -> None:
    """Each stage in ``stages`` has a manifest naming files, and every file named exists."""
    found = manifest_paths(runs)
    for name in stages:
        assert any(key.startswith(f"{name}/") for key in found), f"no manifest of {name}"
    for key, paths in found.items():
        missing = [str(p) for p in paths if not p.is_file()]
        assert not missing, f"{key}: {len(missing)} missing, e.g. {missing[:3]}"
        doubled = [str(p) for p in paths if "images/images/" in p.as_posix()]
        assert not doubled, f"{key}: doubled folder, e.g. {doubled[:3]}"


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
    for name in [
        "convert",
        "prepare_xrays",
        "drr",
        "gan_train",
        "gan_translate",
        "classify",
        "predict",
        "report",
    ]:
        assert name in stages, f"pipeline did not run {name}"
        assert any((d / "DONE").is_file() for d in (runs / name).iterdir()), name
    assert_manifest_paths_exist(
        runs, ["convert", "prepare_xrays", "drr", "synthex_prep", "gan_translate", "classify"]
    )
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
    proc = launch(
        "stage=convert", "split_seed=0,1", "-m", "profile=tiny", "logger=none", timeout=900
    )
    assert "#0 : stage=convert split_seed=0" in proc.stdout + proc.stderr
    folders = sorted((gensyn_root / "workdir" / "runs" / "convert").iterdir())
    assert len(folders) == 2 and all((f / "DONE").is_file() for f in folders)
    seeds = {io.read_json(f / "identity.json")["config"]["split_seed"] for f in folders}
    assert seeds == {0, 1}
    assert (gensyn_root / "workdir" / "multirun").is_dir()
