"""The data stages end to end through ``python launch.py`` against local fake services."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from data_fakes import FakeState, make_series_zip, serve

# Each test runs `python launch.py` (several seconds of start-up each): slow, run in CI.
pytestmark = pytest.mark.slow

TOKEN = "zen-T0KEN-4242-never-print"


def _all_text(root: Path) -> bytes:
    blob = b""
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            blob += p.read_bytes()
    return blob


def test_zenodo_download_stage_keeps_the_token_secret(launch, gensyn_root: Path) -> None:
    from test_data_download import _zip_bytes

    files = {
        "trn00001.npz": b"x" * 70_000,
        "labels.csv": b"NoteAcc_DEID,nodule\ntrn00001,1\n",
        "part2.zip": _zip_bytes({"trn00002.npz": b"y" * 1000}),
    }
    state = FakeState(files=files, token=TOKEN)
    state.faults["/api/records/6406114/files/trn00001.npz/content"] = ["cut", "500"]
    with serve(state) as url:
        api = f"ct_dataset.download.api_url={url}/api"
        dry = launch(
            "stage=download",
            "experiment=thesis",
            "ct_dataset=radchest",
            api,
            "dry_run=true",
            env={"ZENODO_TOKEN": TOKEN},
        )
        assert "3 item(s)" in dry.stdout and "trn00001.npz" in dry.stdout
        raw = gensyn_root / "data" / "radchest" / "raw"
        assert not raw.exists() or not any(raw.iterdir())
        proc = launch(
            "stage=download",
            "experiment=thesis",
            "ct_dataset=radchest",
            api,
            "logger=wandb",
            env={"ZENODO_TOKEN": TOKEN},
        )
        refused = launch(
            "stage=download",
            "experiment=thesis",
            "ct_dataset=radchest",
            api,
            "ct_dataset.download.attempts=2",
            "ct_dataset.download.reuse_raw_dir=false",  # the files are there: ask anyway
            check=False,
            env={"ZENODO_TOKEN": "wrong"},
        )
    for name, data in files.items():
        assert (raw / name).read_bytes() == data
    assert (raw / "part2" / "trn00002.npz").read_bytes() == b"y" * 1000  # unpack: true
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
        api = f"ct_dataset.download.api_url={url}/nbia"
        launch(
            "stage=download",
            "experiment=thesis",
            "ct_dataset=lidc_idri",
            api,
            "logger=none",
            "shard=0,1",
            "num_shards=2",
            "-m",
        )
        bad = launch(
            "stage=download",
            "experiment=thesis",
            "ct_dataset=lidc_idri",
            api,
            "logger=none",
            "ct_dataset.download.collection=LIDC_IDRI",
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


def test_convert_stage_dicom_with_a_bad_series(launch, gensyn_root: Path) -> None:
    import nibabel as nib
    import numpy as np
    from data_fakes import write_dicom_series

    raw = gensyn_root / "data" / "lidc_idri" / "raw"
    hu = np.full((5, 6, 7), -1000, np.int16)
    hu[2, 3, 4] = 500
    write_dicom_series(raw / "1.2.good", hu, pixel_spacing=(0.7, 0.7), slice_step=(0, 0, 2.5))
    write_dicom_series(raw / "1.2.gap", hu, skip_slices=(2,))
    launch(
        "stage=convert",
        "experiment=thesis",
        "ct_dataset=lidc_idri",
        "ct_dataset.download.source=none",
        "logger=none",
    )
    out = next((gensyn_root / "workdir" / "runs" / "convert").glob("*/DONE")).parent
    volumes = pd.read_csv(out / "volumes.csv")
    failures = pd.read_csv(out / "failures.csv")
    assert list(volumes["volume_id"]) == ["1.2.good"] and volumes.loc[0, "patient_id"] == "PHANTOM"
    assert volumes.loc[0, "spacing_z_mm"] == 2.5 and volumes.loc[0, "hu_max"] == 500
    assert (
        list(failures["volume_id"]) == ["1.2.gap"] and "missing slices" in failures.loc[0, "reason"]
    )
    img = nib.load(out / "volumes" / "1.2.good.nii.gz")
    assert img.shape == (7, 6, 5) and img.get_data_dtype() == np.int16


def test_convert_with_failed_volumes_says_so_and_redo_failed_retries_them(
    launch, gensyn_root: Path
) -> None:
    """issue 36: the failed volumes are named at the end and on every rerun, with the option
    that retries only them (redo=failed)."""
    import shutil

    import numpy as np
    from data_fakes import write_dicom_series

    raw = gensyn_root / "data" / "lidc_idri" / "raw"
    hu = np.full((5, 6, 7), -1000, np.int16)
    hu[2, 3, 4] = 500
    write_dicom_series(raw / "1.2.good", hu)
    write_dicom_series(raw / "1.2.gap", hu, skip_slices=(2,))
    args = ("stage=convert", "experiment=thesis", "ct_dataset=lidc_idri",
            "ct_dataset.download.source=none", "logger=none")  # fmt: skip
    first = launch(*args)
    out = next((gensyn_root / "workdir" / "runs" / "convert").glob("*/DONE")).parent
    note = (
        f"stage convert: 1 volume failed, listed in {out / 'failures.csv'}; fix them and run "
        "the same command with redo=failed"
    )
    assert note in first.stdout + first.stderr
    again = launch(*args)
    assert "already done" in again.stdout + again.stderr and note in again.stdout + again.stderr
    good = out / "volumes" / "1.2.good.nii.gz"
    stamp = good.stat().st_mtime_ns
    shutil.rmtree(raw / "1.2.gap")  # the fix: the whole series
    write_dicom_series(raw / "1.2.gap", hu)
    redo = launch(*args, "redo=failed")
    text = redo.stdout + redo.stderr
    assert "redo=failed: trying the 1 failed volume(s) again" in text and note not in text
    assert (out / "DONE").is_file() and good.stat().st_mtime_ns == stamp  # kept, not redone
    assert sorted(pd.read_csv(out / "volumes.csv")["volume_id"]) == ["1.2.gap", "1.2.good"]
    assert pd.read_csv(out / "failures.csv").empty
    nothing = launch(*args, "redo=failed")
    assert "redo=failed, but no item failed" in nothing.stdout + nothing.stderr


def test_prepare_xrays_stage_padchest(launch, gensyn_root: Path) -> None:
    import numpy as np
    from PIL import Image
    from test_data_labels import PADCHEST_HEADER, _pc_row

    raw = gensyn_root / "data" / "padchest" / "raw"
    (raw / "images" / "0").mkdir(parents=True)
    rows = [
        ("a.png", "p1", "PA", "\"['pleural effusion']\""),
        ("b.png", "p1", "L", "\"['normal']\""),
        ("c.png", "p2", "AP", "\"['pneumothorax']\""),
        ("d.png", "p3", "PA", "\"['normal']\""),
        ("e.png", "p4", "PA", "\"['cardiomegaly']\""),
    ]
    (raw / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").write_text(
        "\n".join([PADCHEST_HEADER] + [_pc_row(n, *r) for n, r in enumerate(rows)]) + "\n"
    )
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 4096, (90, 70)).astype(np.uint16)).save(
            raw / "images" / "0" / name
        )
    (raw / "images" / "0" / "d.png").write_bytes(b"corrupt")  # e.png is missing
    proc = (
        launch(  # test_fraction 0: no hold-out, every image train (as before the hold-out existed)
            "stage=prepare_xrays",
            "experiment=thesis",
            "dataset=padchest",
            "dataset.xray.size_px=32",
            "dataset.xray.test_fraction=0",
            "logger=none",
        )
    )
    out = next((gensyn_root / "workdir" / "runs" / "prepare_xrays").glob("*/DONE")).parent
    table = pd.read_csv(out / "xrays.csv")
    assert list(table["image_id"]) == ["a.png", "c.png"]  # b is lateral, d corrupt, e missing
    assert list(table["Effusion"]) == [1, 0] and list(table["Pneumothorax"]) == [0, 1]
    assert set(table["split"]) == {"train"} and (table["width_px"] == 70).all()
    for p in table["path"]:
        assert Image.open(out / p).size == (32, 32)
    bad = pd.read_csv(out / "unreadable.csv").set_index("image_id")
    assert bad.loc["e.png", "reason"] == "file not found" and "d.png" in bad.loc["d.png", "reason"]
    # said on the console too (issue 36), as convert, classify and predict do
    warning = f"prepare_xrays: {len(bad)} image(s) left out (listed in {out / 'unreadable.csv'})"
    assert warning in proc.stdout + proc.stderr


def test_carbon_summary_stage(launch, gensyn_root: Path) -> None:
    from test_data_carbon import _output, _std

    logs = gensyn_root / "workdir" / "runs" / "drr" / "abc123" / "carbon_logs"
    logs.mkdir(parents=True)
    (logs / "x_carbontracker_output.log").write_text(_output("0.002", "0.89"))
    (logs / "y_carbontracker.log").write_text(_std([("0:00:10.00", "36.0")]))
    proc = launch("stage=carbon_summary", "logger=none")
    out = next((gensyn_root / "workdir" / "runs" / "carbon_summary").iterdir())
    runs = pd.read_csv(out / "carbon_runs.csv")
    assert sorted(runs["status"]) == ["actual", "partial"]
    total = pd.read_csv(out / "carbon_summary.csv").query("level == 'total'").iloc[0]
    assert abs(total["energy_kwh"] - (0.002 + 36 * 10 * 1.58 / 3.6e6)) < 1e-9
    assert (out / "carbon.html").is_file() and proc.returncode == 0


def test_convert_stage_radchest_npz_with_labels(launch, gensyn_root: Path) -> None:
    import numpy as np

    raw = gensyn_root / "data" / "radchest" / "raw"
    (raw / "part1").mkdir(parents=True)
    for name in ("trn00001", "trn00002"):
        np.savez_compressed(raw / "part1" / f"{name}.npz", ct=np.full((4, 5, 6), -1000, np.int16))
    pd.DataFrame(
        {"NoteAcc_DEID": ["trn00001", "trn09999"], "pneumothorax*right_lung": [1, 1]}
    ).to_csv(raw / "imgtrain_Abnormality_and_Location_Labels.csv", index=False)
    pd.DataFrame({"NoteAcc_DEID": ["trn00002"], "cardiomegaly": [1]}).to_csv(
        raw / "imgvalid_Abnormality_and_Location_Labels.csv", index=False
    )
    pd.DataFrame({"NoteAcc_DEID": ["trn00001", "trn00002"], "MRN_DEID": ["P7", "P7"]}).to_csv(
        raw / "CT_Scan_Metadata_Complete_35747.csv", index=False
    )
    launch(
        "stage=convert",
        "experiment=thesis",
        "ct_dataset=radchest",
        "ct_dataset.download.source=none",
        "logger=none",
    )
    out = next((gensyn_root / "workdir" / "runs" / "convert").glob("*/DONE")).parent
    volumes = pd.read_csv(out / "volumes.csv").set_index("volume_id")
    assert list(volumes.index) == ["trn00001", "trn00002"]
    assert (volumes[["spacing_x_mm", "spacing_y_mm", "spacing_z_mm"]] == 0.8).all().all()
    # each fake table names one finding: the other is unknown for its CTs, never 0
    assert (
        volumes.loc["trn00001", "Pneumothorax"] == 1
        and volumes.loc["trn00002", "Cardiomegaly"] == 1
    )
    assert pd.isna(volumes.loc["trn00002", "Pneumothorax"])
    assert pd.isna(volumes.loc["trn00001", "Cardiomegaly"])
    assert list(volumes["patient_id"]) == ["P7", "P7"]  # two scans of one patient
    assert len(pd.read_csv(out / "labels.csv")) == 2  # the unconverted trn09999 is left out
