"""Bad input files: a truncated converted CT (drr) and a garbage PNG (classify)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pandas as pd

from gensyn.base import io

TINY = ("profile=tiny", "logger=none")


def _only(folder: Path) -> Path:
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run


def test_truncated_ct_is_listed_the_others_rendered_and_the_redo_works(
    launch, gensyn_root: Path
) -> None:
    launch("stage=convert", *TINY, timeout=300)
    runs = gensyn_root / "workdir" / "runs"
    convert_dir = _only(runs / "convert")
    bad = convert_dir / "volumes" / "demo-ct-0001.nii.gz"
    bad.write_bytes(bad.read_bytes()[:3000])  # a copy that stopped half-way

    proc = launch("stage=drr", *TINY, check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert "1 of 6 converted CT volume(s) could not be read" in out
    assert f"demo-ct-0001: cannot read NIfTI {bad}: EOFError" in out
    drr_dir = _only(runs / "drr")
    failures = io.read_table(drr_dir / "failures.csv")
    assert list(failures["ct_id"]) == ["demo-ct-0001"] and list(failures["file"]) == [str(bad)]
    rendered = sorted(p.name for p in (drr_dir / "images").iterdir())
    assert rendered == [f"demo-ct-{i:04d}" for i in (0, 2, 3, 4, 5)]
    assert not (drr_dir / "DONE").exists() and not (drr_dir / "manifest.csv").exists()

    # the commands the message gives redo only the bad volume, then drr finishes
    commands = [
        line.strip()
        for line in out.splitlines()
        if line.strip().startswith(("rm ", "python launch.py"))
    ]
    assert commands[0] == f"rm {bad} {convert_dir / 'DONE'}"
    subprocess.run(shlex.split(commands[0]), check=True)
    for command in commands[1:3]:
        launch(*shlex.split(command)[2:], timeout=600)
    assert (drr_dir / "DONE").is_file()
    assert io.read_table(drr_dir / "failures.csv").empty
    assert len(io.read_table(drr_dir / "manifest.csv")) == 6


def test_garbage_png_is_skipped_and_listed_before_training(launch, gensyn_root: Path) -> None:
    launch("stage=prepare_xrays", *TINY, timeout=300)
    xray_dir = _only(gensyn_root / "workdir" / "runs" / "prepare_xrays")
    table = io.read_table(xray_dir / "xrays.csv")
    train = table[table["split"] == "train"]
    garbage = xray_dir / str(train["path"].iloc[0])
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG in name only
    truncated = xray_dir / str(train["path"].iloc[1])
    truncated.write_bytes(truncated.read_bytes()[:200])

    proc = launch("stage=classify", *TINY, check=False, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "classify: 2 unreadable image(s) left out" in out
    classify_dir = _only(gensyn_root / "workdir" / "runs" / "classify")
    listed = io.read_table(classify_dir / "unreadable_images.csv")
    assert sorted(listed["path"]) == sorted([str(garbage), str(truncated)])
    assert set(listed["split"]) <= {"train", "val"} and listed["reason"].str.len().min() > 0
    used = pd.concat([io.read_table(classify_dir / f"{s}_images.csv") for s in ("train", "val")])
    assert not used["path"].isin(listed["path"]).any()
    assert (classify_dir / "DONE").is_file()
    assert io.read_json(classify_dir / "summary.json")["n_unreadable_images"] == 2
