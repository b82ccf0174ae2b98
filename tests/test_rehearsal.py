"""Rehearsal of the real study in the real formats, through the README's own commands.

A RAD-ChestCT-like Zenodo record (NPZ volumes, some inside a ZIP part, the abnormality and
metadata tables) is served by the local fake Zenodo server; a PadChest-like tree (16-bit
PNGs in numbered folders, the real label table) and a ChestX-ray14-like tree (the real
``Data_Entry_2017.csv``) sit in their raw folders. Then the README's "Running the real
study" commands run with ``experiment=thesis_grid`` and ``profile=tiny``: download → convert
→ prepare_xrays → drr → SyntheX → classify (all 9 arms, 2 folds, training seeds 0 and 1:
repeated cross-validation on one test set and one CycleGAN) → predict → report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from data_fakes import FakeState, serve, write_chestxray14_tree, write_padchest_tree
from study_fakes import radchest_record

from gensyn.classify.sampling import arm_name, parse_arm
from gensyn.config.report import THESIS_ARMS

# 36 tiny classifiers (9 arms x 2 folds x 2 seeds) and their predictions: beyond the default 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

TOKEN = "rehearsal-token-0042"
#: the report's names of the thesis grid's nine arms (baseline, drr_1 ... synthex_10)
ARM_NAMES = tuple(arm_name(*parse_arm(option)) for option in THESIS_ARMS)


def _done(root: Path, stage: str) -> list[Path]:
    return sorted(p.parent for p in (root / "workdir" / "runs" / stage).glob("*/DONE"))


def test_real_study_rehearsal(launch: Callable[..., Any], gensyn_root: Path) -> None:
    files, truth = radchest_record(n_cts=6)
    write_padchest_tree(gensyn_root / "data" / "padchest" / "raw", n_patients=60, size_px=40)
    # the external test set has no Pneumonia at all (as a ChestX-ray14 subset may): the report
    # must say n/a for it, not stop
    write_chestxray14_tree(
        gensyn_root / "data" / "chestxray14" / "raw", n_patients=24, size_px=40,
        without=("Pneumonia",),
    )  # fmt: skip
    env = {"ZENODO_TOKEN": TOKEN}
    state = FakeState(files=files, token=TOKEN)
    with serve(state) as url:
        common = (
            "experiment=thesis_grid",
            "profile=tiny",
            "logger=none",
            f"ct_dataset.download.api_url={url}/api",
            # the fake volumes are 48³ phantoms at 7.5 mm, not RAD-ChestCT's 0.8 mm
            "ct_dataset.convert.npz_spacing_mm=[7.0,7.5,7.5]",
            "classifier.n_folds=2",
        )
        # --- data, exactly the README's commands plus the rehearsal's sizes
        dry = launch("stage=download", "dry_run=true", *common, env=env)
        assert "trn_part2.zip" in dry.stdout
        launch("stage=download", *common, env=env)
    root = gensyn_root
    manifests = [
        pd.read_csv(d / "manifest.csv")
        for d in _done(root, "download")
        if (d / "manifest.csv").is_file()
    ]
    real = [m for m in manifests if set(m["status"]) == {"verified"}]  # the dry run is apart
    assert len(real) == 1 and len(real[0]) == len(files)

    launch("stage=convert", *common)
    (convert,) = _done(root, "convert")
    volumes = pd.read_csv(convert / "volumes.csv").set_index("volume_id").sort_index()
    assert list(volumes.index) == list(truth["ct_id"])  # bare and zipped volumes all found
    assert list(volumes["patient_id"]) == list(truth["patient_id"])  # MRN from the metadata
    for finding in ("Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia"):
        assert list(volumes[finding]) == list(truth[finding]), finding

    launch("stage=prepare_xrays", *common)
    (xr_dir,) = _done(root, "prepare_xrays")
    xrays = pd.read_csv(xr_dir / "xrays.csv")
    test_patients = set(xrays.loc[xrays["split"] == "test", "patient_id"])
    train_patients = set(xrays.loc[xrays["split"] == "train", "patient_id"])
    assert test_patients and train_patients and not test_patients & train_patients

    launch("stage=drr", *common)
    (drr,) = _done(root, "drr")
    drrs = pd.read_csv(drr / "manifest.csv")
    assert len(drrs) == 6 * 10  # centre + 9 random views per CT
    assert drrs.groupby("ct_id")["is_center"].sum().eq(1).all()

    launch("stage=gan_translate", *common)
    (translate,) = _done(root, "gan_translate")
    assert len(pd.read_csv(translate / "manifest.csv")) == len(drrs)

    # --- the grid: 9 arms x 2 folds x 2 training seeds, then predictions and the report
    launch("-m", "stage=classify", "split_idx=0,1", "seed=0,1", *common, timeout=3600)
    classify = _done(root, "classify")
    assert len(classify) == 9 * 2 * 2
    summaries = [pd.read_json(d / "summary.json", typ="series") for d in classify]
    assert {s["schedule"] for s in summaries} == {"real_epochs"}
    real_seen: dict[int, set[int]] = {}
    for d, s in zip(classify, summaries, strict=True):
        fold = int(pd.read_json(d / "identity.json", typ="series")["config"]["split_idx"])
        real_seen.setdefault(fold, set()).add(int(s["real_images_seen"]))
        assert s["real_times_seen_min"] == s["real_times_seen_max"] == 2  # tiny: 2 epochs
        assert (int(s["synthetic_images_seen"]) > 0) == (int(s["n_train_synthetic"]) > 0)
    assert all(len(seen) == 1 for seen in real_seen.values()), real_seen  # equal real exposure
    # the training seeds shared the data and the synthetic images: one of each upstream run
    for upstream in ("prepare_xrays", "drr", "gan_train", "gan_translate"):
        assert len(_done(root, upstream)) == 1, upstream

    launch("-m", "stage=predict", "split_idx=0,1", "seed=0,1", *common, timeout=2400)
    assert len(_done(root, "predict")) == 9 * 2 * 2
    proc = launch("stage=report", "report.seeds=[0,1]", *common)
    report_dir = sorted((root / "workdir" / "runs" / "report").iterdir())[-1]
    preds = pd.read_csv(report_dir / "predictions.csv")
    assert set(preds["arm"]) == set(ARM_NAMES)
    assert set(preds["test_set"]) == {"padchest", "chestxray14"}
    assert set(preds["fold"]) == {0, 1} and set(preds["seed"]) == {0, 1}
    for test_set, group in preds.groupby("test_set"):  # one test set for every model
        images = group.groupby(["arm", "fold", "seed"])["image_id"].apply(frozenset)
        assert len(images) == 9 * 2 * 2 and images.nunique() == 1, test_set
    summary = pd.read_csv(report_dir / "auc_summary.csv")
    macro = summary[(summary["class"] == "macro") & (summary["arm"] != "baseline")]
    assert (macro["n_pairs"] == 2 * 2).all()  # J = folds x seeds
    text = (report_dir / "report.md").read_text()
    for arm in ARM_NAMES:
        assert arm in text
    assert "chestxray14" in text and "padchest" in text
    assert "real_epochs" in text and "seed(s) 0, 1" in text  # schedule and seeds stated
    assert "Training exposure per arm" in text
    assert proc.returncode == 0
    summary = pd.read_csv(report_dir / "auc_summary.csv")
    pneumonia = summary[(summary["test_set"] == "chestxray14") & (summary["class"] == "Pneumonia")]
    assert len(pneumonia) == 9 and (pneumonia["na_reason"] == "no positive case").all()
    assert "n/a (no positive case)" in text and "Pneumonia: n/a (no positive case)" in text
    primary = summary[summary["primary"]]  # the declared primary: macro, external, synthex_10
    assert list(primary[["test_set", "arm", "class"]].iloc[0]) == [
        "chestxray14",
        "synthex_10",
        "macro",
    ]
    assert (summary.loc[summary["vs_baseline"], "family"] != "").all()
