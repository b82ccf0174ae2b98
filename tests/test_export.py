"""stage=export: MONAI datalist + torchxrayvision-style CSV of an image set; manifest labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gensyn.config import FINDINGS


def test_export_drr_on_tiny_demo(launch, gensyn_root):
    launch("stage=export", "export.source=drr", "profile=tiny", "logger=none")
    runs = gensyn_root / "workdir" / "runs"
    (out,) = (runs / "export").iterdir()
    (drr_dir,) = (runs / "drr").iterdir()
    manifest = pd.read_csv(drr_dir / "manifest.csv")
    # the DRR manifest carries the pose and the CT's five labels
    for col in ("alpha_deg", "beta_deg", "is_center", "view_index", *FINDINGS):
        assert col in manifest.columns, col

    data = json.loads((out / "datalist.json").read_text())
    assert data["label_names"] == list(FINDINGS)
    assert "test" not in data  # DRRs are training data only: no empty list
    items = data["training"]
    assert len(items) == len(manifest) > 0
    for item in items:
        assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
        assert len(item["label"]) == 5
        assert all(v is None or v in (0.0, 1.0) for v in item["label"])

    table = pd.read_csv(out / "images.csv")
    assert list(table.columns[:6]) == ["path", *FINDINGS]
    expected = manifest.assign(path=[str(drr_dir / p) for p in manifest["path"]])
    assert table["path"].tolist() == expected["path"].tolist()
    np.testing.assert_array_equal(table[list(FINDINGS)], expected[list(FINDINGS)])
    assert [i["image"] for i in data["training"]] == table["path"].tolist()


def test_unknown_labels_join_and_split(tmp_path):
    from gensyn.stages.export import datalist, export_table

    images = pd.DataFrame(
        {"path": ["a.png", "/abs/b.png"], "ct_id": ["c1", "c2"], "patient_id": ["p1", "p2"]}
    )
    labels = pd.DataFrame({"ct_id": ["c1", "c2"], **{f: [1.0, np.nan] for f in FINDINGS}})
    table = export_table(images, tmp_path, FINDINGS, labels)
    assert table["path"].tolist() == [str(tmp_path / "a.png"), "/abs/b.png"]
    assert table.loc[0, list(FINDINGS)].tolist() == [1.0] * 5
    assert table.loc[1, list(FINDINGS)].isna().all()
    data = datalist(table, FINDINGS)
    assert "test" not in data and data["training"][1]["label"] == [None] * 5
    json.dumps(data, allow_nan=False)  # unknown is null, never NaN

    xrays = pd.DataFrame(
        {
            "path": ["x.png", "y.png"],
            "patient_id": ["p", "q"],
            "split": ["train", "test"],
            "Effusion": [0, 1],
        }
    )
    table = export_table(xrays, tmp_path, FINDINGS)
    assert table["split"].tolist() == ["training", "test"]
    assert math.isnan(table.loc[0, "Pneumonia"])  # a finding without a column is unknown
    data = datalist(table, FINDINGS)
    assert len(data["training"]) == len(data["test"]) == 1
    assert data["test"][0]["label"] == [1.0, None, None, None, None]


def test_synthetic_rows_take_ct_table_over_manifest_labels():
    from gensyn.classify.sampling import synthetic_training_rows

    manifest = pd.DataFrame(
        {
            "path": ["c1.png"],
            "ct_id": ["c1"],
            "patient_id": ["c1"],
            "is_center": [True],
            **{f: [0.0] for f in FINDINGS},
        }
    )
    volumes = pd.DataFrame({"ct_id": ["c1"], **{f: [1] for f in FINDINGS}})
    rows = synthetic_training_rows(manifest, volumes, FINDINGS, 1, 0)
    assert rows.loc[0, list(FINDINGS)].tolist() == [1.0] * 5


def test_empty_lists_are_left_out_and_folds_kept(tmp_path):
    from gensyn.stages.export import datalist, export_table

    images = pd.DataFrame({"path": ["a.png"], "ct_id": ["c1"], "patient_id": ["p1"]})
    data = datalist(export_table(images, tmp_path, FINDINGS), FINDINGS)
    assert set(data) == {"label_names", "training"}  # no "test": [] (MONAI fails on it)
    assert "fold" not in data["training"][0]  # synthetic images have no fold

    xrays = pd.DataFrame(
        {
            "image_id": ["i1", "i2", "i3"],
            "path": ["x.png", "y.png", "z.png"],
            "patient_id": ["p", "q", "r"],
            "split": ["train", "train", "test"],
        }
    )
    folds = pd.DataFrame({"image_id": ["i2", "i1"], "patient_id": ["q", "p"], "fold": [1, 0]})
    table = export_table(xrays, tmp_path, FINDINGS, folds=folds)
    assert table["fold"].tolist()[:2] == [0, 1] and pd.isna(table["fold"].iloc[2])
    data = datalist(table, FINDINGS)
    assert [i["fold"] for i in data["training"]] == [0, 1] and "fold" not in data["test"][0]
    only_test = datalist(table[table["split"] == "test"], FINDINGS)
    assert set(only_test) == {"label_names", "test"}


def test_xray_export_loads_with_monai_and_keeps_classify_folds(compose, gensyn_root, tmp_path):
    """``export.source=xrays`` on a prepared X-ray set: MONAI's own loader reads both lists,
    every path exists, the folds are those classify trains on, ``export.out_dir`` gets a copy."""
    monai_data = pytest.importorskip("monai.data")
    from test_classify_stages import _fake_upstreams

    from gensyn.base import io
    from gensyn.core.runs import execute, run_dir
    from gensyn.stages._shared import real_folds

    xrays = _fake_upstreams(compose, gensyn_root)
    copy_dir = tmp_path / "for_monai"
    cfg = compose("profile=tiny", "export.source=xrays", f"export.out_dir={copy_dir}")
    out = execute(cfg, "export")
    for folder in (out, copy_dir):
        training = monai_data.load_decathlon_datalist(
            folder / "datalist.json", is_segmentation=False, data_list_key="training"
        )
        test = monai_data.load_decathlon_datalist(
            folder / "datalist.json", is_segmentation=False, data_list_key="test"
        )
        assert len(training) == int((xrays["split"] == "train").sum()) > 0
        assert len(test) == int((xrays["split"] == "test").sum()) > 0
        assert all(Path(item["image"]).is_file() for item in training + test)
        assert all(len(item["label"]) == 5 for item in training + test)
    # the folds are the ones every classify run of this config uses
    folds = real_folds(cfg, xrays[xrays["split"] == "train"].reset_index(drop=True))
    prep = run_dir(cfg, "prepare_xrays")
    expected = {
        str(prep / p): f
        for p, f in zip(
            xrays.loc[xrays["split"] == "train", "path"],
            folds.set_index("image_id").loc[
                xrays.loc[xrays["split"] == "train", "image_id"], "fold"
            ],
            strict=True,
        )
    }
    assert {Path(i["image"]).as_posix(): i["fold"] for i in training} == expected
    assert sorted({i["fold"] for i in training}) == list(range(int(cfg.classifier.n_folds)))
    assert "fold" not in test[0]
    assert io.read_json(out / "summary.json")["out_dir"] == str(copy_dir)
