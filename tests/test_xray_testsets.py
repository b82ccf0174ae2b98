"""The real study's test sets: PadChest's patient hold-out, ChestX-ray14's official lists,
ChestX-ray14 as an external test set (issue "The real study's test sets")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_fakes import write_chestxray14_tree, write_padchest_tree
from test_classify_splits import LABELS, _table

from gensyn.base import io
from gensyn.data import splits


def _patients_by_split(table: pd.DataFrame) -> dict[str, set[str]]:
    return {s: set(g["patient_id"].astype(str)) for s, g in table.groupby("split")}


def test_holdout_keeps_patients_whole_and_is_stratified() -> None:
    table = _table(1000)
    held = splits.patient_holdout(table, LABELS, 0.3, seed=0)
    assert list(held["image_id"]) == list(table["image_id"])
    assert (held.groupby("patient_id")["split"].nunique() == 1).all()
    patients = table.groupby("patient_id")[LABELS].max()
    is_test = held.groupby("patient_id")["split"].first().loc[patients.index] == "test"
    assert abs(is_test.mean() - 0.3) < 0.01
    # stratified: each finding's patient prevalence within half a point in train and test
    # (a random 30% of the patients stays within 1.5 points only 3% of the time)
    gap = (patients[is_test].mean() - patients[~is_test].mean()).abs()
    assert (gap < 0.005).all(), gap


def test_no_test_patient_in_any_fold() -> None:
    table = _table(300)
    held = splits.patient_holdout(table, LABELS, 0.3, seed=2)
    train = table[held["split"].to_numpy() == "train"].reset_index(drop=True)
    folds = splits.patient_folds(train, LABELS, n_folds=5, seed=2)
    test_patients = set(held.loc[held["split"] == "test", "patient_id"])
    assert test_patients and not test_patients & set(folds["patient_id"])
    assert set(folds["image_id"]) == set(train["image_id"])


def test_fraction_zero_is_all_train_and_bad_fractions_fail() -> None:
    table = _table(20)
    assert set(splits.patient_holdout(table, LABELS, 0.0)["split"]) == {"train"}
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            splits.patient_holdout(table, LABELS, bad)
    with pytest.raises(ValueError, match="cannot be split"):
        splits.patient_holdout(table[table["patient_id"] == "p0"], LABELS, 0.3)


def test_holdout_is_seeded_saved_and_reused(tmp_path: Path) -> None:
    table = _table()
    a = splits.patient_holdout(table, LABELS, 0.3, seed=5)
    pd.testing.assert_frame_equal(a, splits.patient_holdout(table, LABELS, 0.3, seed=5))
    assert (a["split"] != splits.patient_holdout(table, LABELS, 0.3, seed=6)["split"]).any()
    path = tmp_path / "test_split.csv"
    first = splits.load_or_make_holdout(path, table, LABELS, 0.3, seed=5)
    again = splits.load_or_make_holdout(path, table, LABELS, 0.5, seed=99)  # the file wins
    assert list(first["split"]) == list(again["split"]) == list(a["split"])
    with pytest.raises(ValueError, match="other images"):
        splits.load_or_make_holdout(path, table.iloc[:-2], LABELS, 0.3)


def test_official_lists_and_leakage_check() -> None:
    ids = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]
    got = splits.official_split(ids, ["00000002_000.png"], ids[:2])
    assert list(got) == ["test", "test", "train", ""]
    # an image in both lists is never trained on; the leak it makes is found where it matters
    assert list(splits.official_split(ids, ids[:2], ids[1:3])) == ["train", "test", "test", ""]
    leaky = pd.DataFrame({"patient_id": ["1", "1", "2"], "split": ["train", "test", "test"]})
    assert splits.leaking_patients(leaky) == ["1"]
    with pytest.raises(ValueError, match=r"both the train and the test split: \['1'\]"):
        splits.check_train_test_disjoint(leaky)


def test_predict_row_selection() -> None:
    from gensyn.stages import predict

    xrays = pd.DataFrame({"image_id": list("abc"), "split": ["train", "test", "train"]})
    assert list(predict.select_test_rows(xrays, "all")["image_id"]) == ["a", "b", "c"]
    assert list(predict.select_test_rows(xrays, "test_split")["image_id"]) == ["b"]


def test_configs_and_hash(compose) -> None:
    from gensyn.core.runs import stage_hash

    pc = compose("dataset=padchest")
    assert pc.dataset.xray.test_fraction == 0.3 and pc.dataset.xray.split_source == "holdout"
    cx = compose("dataset=chestxray14").dataset.xray
    assert cx.external_test == "all" and cx.split_source == "auto"
    assert cx.official_train_list == "train_val_list.txt"
    assert cx.official_test_list == "test_list.txt"
    # external_test only steers predict: it must not re-run prepare_xrays
    same = compose("dataset=padchest", "dataset.xray.external_test=test_split")
    other = compose("dataset=padchest", "dataset.xray.test_fraction=0.2")
    assert stage_hash(same, "prepare_xrays") == stage_hash(pc, "prepare_xrays")
    assert stage_hash(other, "prepare_xrays") != stage_hash(pc, "prepare_xrays")


def _write_nih_lists(raw: Path, rows: pd.DataFrame) -> tuple[set[str], str]:
    """Official lists: every third patient's images are test; one train image is in neither."""
    is_test = rows["patient_id"].astype(int) % 3 == 0
    test = rows.loc[is_test, "image_id"].tolist()
    train = rows.loc[~is_test, "image_id"].tolist()
    unlisted = next(i for i, v in zip(train, rows.loc[~is_test, "view"], strict=True) if v == "PA")
    train.remove(unlisted)
    (raw / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (raw / "test_list.txt").write_text("\n".join(test) + "\n")
    return set(test), unlisted


def test_chestxray14_official_lists_are_honoured(compose, gensyn_root: Path) -> None:
    from gensyn.base.errors import GensynError
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute

    load_stages()
    raw = gensyn_root / "data" / "chestxray14" / "raw"
    rows = write_chestxray14_tree(raw, n_patients=12, size_px=24)
    small = ("experiment=thesis", "dataset=chestxray14", "dataset.xray.size_px=16")
    with pytest.raises(GensynError, match="needs both official lists"):
        execute(compose(*small, "dataset.xray.split_source=official"), "prepare_xrays")
    test_ids, unlisted = _write_nih_lists(raw, rows)
    out = execute(compose(*small), "prepare_xrays")
    table = io.read_table(out / "xrays.csv")
    pa = rows[rows["view"] == "PA"]
    assert set(table["image_id"]) == set(pa["image_id"]) - {unlisted}
    assert set(table.loc[table["split"] == "test", "image_id"]) == test_ids & set(pa["image_id"])
    bad = io.read_table(out / "unreadable.csv")
    assert list(bad["image_id"]) == [unlisted] and "neither" in bad.loc[0, "reason"]
    assert io.read_json(out / "summary.json")["split_source"] == "official"
    assert not (out / "test_split.csv").exists()


@pytest.mark.slow
def test_predict_padchest_with_chestxray14_external(compose, launch, gensyn_root: Path) -> None:
    """The issue's command on fakes: PadChest's 30% patient hold-out and all of ChestX-ray14's
    PA images (its official lists present, yet ignored: external_test=all)."""
    from gensyn.core.runs import run_dir
    from gensyn.stages.predict import with_dataset

    data = gensyn_root / "data"
    pc_rows = write_padchest_tree(data / "padchest" / "raw", n_patients=40)
    cx_rows = write_chestxray14_tree(data / "chestxray14" / "raw", n_patients=12, size_px=24)
    _write_nih_lists(data / "chestxray14" / "raw", cx_rows)
    args = (
        "experiment=thesis",
        "dataset=padchest",
        "report.test_datasets=[chestxray14]",
        "profile=tiny",
        "classifier=small_cnn",
        "dataset.xray.size_px=32",
    )
    launch("stage=predict", "logger=none", *args)
    cfg = compose(*args)
    pc_dir = run_dir(cfg, "prepare_xrays")
    cx_dir = run_dir(with_dataset(cfg, "chestxray14"), "prepare_xrays")
    pc = io.read_table(pc_dir / "xrays.csv")
    by_split = _patients_by_split(pc)
    assert not by_split["test"] & by_split["train"]
    assert 0.2 <= len(by_split["test"]) / pc["patient_id"].nunique() <= 0.4
    assert (pc_dir / "test_split.csv").is_file()
    assert set(pc["image_id"]) == set(pc_rows.loc[pc_rows["projection"] == "PA", "image_id"])

    # classify folded split == train only: no test patient in any fold
    folds = io.read_table(run_dir(cfg, "classify") / "split.csv")
    assert set(folds["patient_id"].astype(str)) == by_split["train"]

    pred_dir = run_dir(cfg, "predict")
    preds = io.read_table(pred_dir / "predictions.csv")
    summary = io.read_json(pred_dir / "summary.json")
    cx = io.read_table(cx_dir / "xrays.csv")
    assert set(cx["split"]) == {"train", "test"}  # official lists ...
    expected = {  # ... but as an external set every row counts
        "padchest": set(pc.loc[pc["split"] == "test", "image_id"].astype(str)),
        "chestxray14": set(cx["image_id"].astype(str)),
    }
    for name, ids in expected.items():
        got = preds[preds["test_set"] == name]
        assert set(got["image_id"]) == ids and len(got) == len(ids)
        n_pat = got["patient_id"].nunique()
        assert summary[f"n_{name}_images"] == len(ids) and summary[f"n_{name}_patients"] == n_pat
        assert (got["n_test_set_images"] == len(ids)).all()
        assert (got["n_test_set_patients"] == n_pat).all()
        assert np.isfinite(got[[f"p_{f}" for f in LABELS]].to_numpy()).all()
    assert summary["chestxray14_rows"] == "all" and summary["padchest_rows"] == "split == test"


def _write_leaky_lists(raw: Path, rows: pd.DataFrame) -> list[str]:
    """NIH-style lists where two patients have one image in the train list and the others in
    the test list (as a tester made them). Returns those patients."""
    pa = rows[rows["view"] == "PA"]
    counts = pa["patient_id"].value_counts()
    leaking = sorted(counts[counts >= 2].index[:2])
    first = {p: pa.loc[pa["patient_id"] == p, "image_id"].iloc[0] for p in leaking}
    test = [i for i, p in zip(rows["image_id"], rows["patient_id"], strict=True)
            if p in leaking and i != first[p]]  # fmt: skip
    train = [i for i in rows["image_id"] if i not in test]
    (raw / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (raw / "test_list.txt").write_text("\n".join(test) + "\n")
    return leaking


def test_patients_in_both_lists_block_training_only(compose, gensyn_root: Path) -> None:
    """The lists' leak is refused where the split is used (classify on ChestX-ray14), naming
    the data set and the list files; preparing it as an external test set still works."""
    from gensyn.base.errors import GensynError
    from gensyn.core.registry import load_stages
    from gensyn.core.runs import execute

    load_stages()
    raw = gensyn_root / "data" / "chestxray14" / "raw"
    rows = write_chestxray14_tree(raw, n_patients=8, size_px=24)
    leaking = _write_leaky_lists(raw, rows)
    cfg = compose("experiment=thesis", "dataset=chestxray14", "dataset.xray.size_px=16",
                  "classifier=small_cnn", "profile=tiny")  # fmt: skip
    out = execute(cfg, "prepare_xrays")  # no error: as an external set the split is unused
    table = io.read_table(out / "xrays.csv")
    assert splits.leaking_patients(table) == leaking
    assert io.read_json(out / "summary.json")["n_patients_in_both_lists"] == len(leaking)
    with pytest.raises(GensynError) as err:
        execute(cfg, "classify")
    text = str(err.value)
    assert "\n" not in text and "dataset=chestxray14: 2 patient(s) in both" in text
    assert "train_val_list.txt" in text and "test_list.txt" in text and str(raw) in text
    assert "split_source=holdout" in text


def test_official_lists_enter_the_prepare_hash(compose, gensyn_root: Path) -> None:
    from gensyn.core.runs import stage_hash

    raw = gensyn_root / "data" / "chestxray14" / "raw"
    raw.mkdir(parents=True)

    def prepare_hash(*extra: str) -> str:
        return stage_hash(compose("experiment=thesis", "dataset=chestxray14", *extra),
                          "prepare_xrays")  # fmt: skip

    none = prepare_hash()
    holdout = prepare_hash("dataset.xray.split_source=holdout")
    (raw / "train_val_list.txt").write_text("00000001_000.png\n")
    assert prepare_hash() != none  # one list added (auto still holds out: both are needed)
    (raw / "test_list.txt").write_text("00000002_000.png\n")
    both = prepare_hash()
    assert both not in (none, prepare_hash.__name__)
    (raw / "test_list.txt").write_text("00000003_000.png\n")  # content, not just presence
    assert prepare_hash() not in (none, both)
    assert prepare_hash("dataset.xray.split_source=holdout") == holdout  # lists unused
    (raw / "test_list.txt").write_text("00000002_000.png\n")
    assert prepare_hash() == both
    (raw / "train_val_list.txt").unlink()
    (raw / "test_list.txt").unlink()
    assert prepare_hash() == none


def test_external_set_settings_from_the_command_line(compose, gensyn_root: Path) -> None:
    from gensyn.app.cli import check_overrides
    from gensyn.core.runs import stage_hash, stage_identity
    from gensyn.stages.predict import with_dataset

    base = compose("experiment=thesis")
    ext = with_dataset(base, "chestxray14").dataset
    assert ext.raw_dir == str(gensyn_root / "data" / "chestxray14" / "raw")
    assert ext.xray.external_test == "all" and list(ext.xray.views) == ["PA"]
    assert base.dataset.raw_dir == str(gensyn_root / "data" / "padchest" / "raw")
    moved = compose("experiment=thesis", "report.external.chestxray14.raw_dir=/data/nih")
    rows = compose("experiment=thesis", "report.external.chestxray14.xray.external_test=test_split")
    assert with_dataset(moved, "chestxray14").dataset.raw_dir == "/data/nih"
    assert with_dataset(rows, "chestxray14").dataset.xray.external_test == "test_split"
    hashes = {stage_hash(c, "predict") for c in (base, moved, rows)}
    assert len(hashes) == 3  # each setting changes the predictions' run
    # without the external set, predict's hash is what it always was (no inputs entry)
    assert "inputs" not in stage_identity(
        compose("experiment=thesis", "report.test_datasets=[]"), "predict"
    )
    with pytest.raises(SystemExit):  # a misspelt key is refused before anything runs
        check_overrides(["experiment=thesis", "report.external.chestxray14.xray.sizepx=64"])


def test_a_misspelt_external_test_choice_is_refused_naming_the_allowed_rows(compose) -> None:
    """``external_test`` is an Enum on the schema: a misspelling is refused when the config is
    composed, for the data set itself and for an external test set, with the choices listed."""
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    with pytest.raises((ConfigCompositionException, ValidationError)) as own:
        compose("dataset=padchest", "dataset.xray.external_test=test")
    assert "all" in str(own.value.__cause__ or own.value) and "test_split" in str(
        own.value.__cause__ or own.value
    )
    with pytest.raises((ConfigCompositionException, ValidationError)) as external:
        compose("experiment=thesis", "report.external.chestxray14.xray.external_test=tests")
    assert "test_split" in str(external.value.__cause__ or external.value)
