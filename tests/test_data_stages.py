"""The data stages end to end through ``python launch.py`` against local fake services."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from data_fakes import FakeState, make_series_zip, serve

TOKEN = "zen-T0KEN-4242-never-print"


def _all_text(root: Path) -> bytes:
    blob = b""
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            blob += p.read_bytes()
    return blob


def test_zenodo_download_stage_keeps_the_token_secret(launch, gensyn_root: Path) -> None:
    files = {"trn00001.npz": b"x" * 70_000, "labels.csv": b"NoteAcc_DEID,nodule\ntrn00001,1\n"}
    state = FakeState(files=files, token=TOKEN)
    state.faults["/api/records/6406114/files/trn00001.npz/content"] = ["cut", "500"]
    with serve(state) as url:
        api = f"dataset.download.api_url={url}/api"
        dry = launch(
            "stage=download", "dataset=radchest", api, "dry_run=true", env={"ZENODO_TOKEN": TOKEN}
        )
        assert "2 item(s)" in dry.stdout and "trn00001.npz" in dry.stdout
        raw = gensyn_root / "data" / "radchest" / "raw"
        assert not raw.exists() or not any(raw.iterdir())
        proc = launch(
            "stage=download", "dataset=radchest", api, "logger=wandb", env={"ZENODO_TOKEN": TOKEN}
        )
        refused = launch(
            "stage=download",
            "dataset=radchest",
            api,
            "dataset.download.attempts=2",
            check=False,
            env={"ZENODO_TOKEN": "wrong"},
        )
    for name, data in files.items():
        assert (raw / name).read_bytes() == data
    manifest = next((gensyn_root / "workdir" / "runs" / "download").glob("*/manifest.csv"))
    table = pd.read_csv(manifest)
    assert set(table["status"]) == {"verified"}
    assert set(table["md5"]) == {hashlib.md5(d).hexdigest() for d in files.values()}
    assert refused.returncode == 1 and "ZENODO_TOKEN" in refused.stdout + refused.stderr
    for text in (dry.stdout, dry.stderr, proc.stdout, proc.stderr, refused.stdout, refused.stderr):
        assert TOKEN not in text
    assert TOKEN.encode() not in _all_text(gensyn_root)  # run folders, W&B files, manifests


def test_nbia_download_sharded_sweep(launch, gensyn_root: Path) -> None:
    state = FakeState()
    for i in range(5):
        uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{i}"
        state.series[uid] = {
            "SeriesInstanceUID": uid,
            "Collection": "LIDC-IDRI",
            "Modality": "CT",
            "PatientID": f"LIDC-IDRI-{i:04d}",
            "ImageCount": 3,
        }
        state.series_zip[uid] = make_series_zip(3, seed=i)
    with serve(state) as url:
        api = f"dataset.download.api_url={url}/nbia"
        launch(
            "stage=download",
            "dataset=lidc_idri",
            api,
            "logger=none",
            "shard=0,1",
            "num_shards=2",
            "-m",
        )
        bad = launch(
            "stage=download",
            "dataset=lidc_idri",
            api,
            "logger=none",
            "dataset.download.collection=LIDC_IDRI",
            check=False,
        )
    raw = gensyn_root / "data" / "lidc_idri" / "raw"
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == sorted(
        state.series
    )
    manifests = [
        pd.read_csv(p)
        for p in (gensyn_root / "workdir" / "runs" / "download").glob("*/manifest.csv")
    ]
    assert sorted(len(m) for m in manifests) == [2, 3]
    assert set(manifests[0]["name"]).isdisjoint(manifests[1]["name"])
    assert bad.returncode == 1 and "Did you mean: LIDC-IDRI" in bad.stdout + bad.stderr
