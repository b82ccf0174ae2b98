"""stage=export: MONAI datalist + torchxrayvision-style CSV of an image set; manifest labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

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
    items = data["training"] + data["test"]
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
    assert data["test"] == [] and data["training"][1]["label"] == [None] * 5
    json.dumps(data, allow_nan=False)  # unknown is null, never NaN

    xrays = pd.DataFrame(
        {"path": ["x.png", "y.png"], "patient_id": ["p", "q"], "split": ["train", "test"],
         "Effusion": [0, 1]}
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
        {"path": ["c1.png"], "ct_id": ["c1"], "patient_id": ["c1"], "is_center": [True],
         **{f: [0.0] for f in FINDINGS}}
    )
    volumes = pd.DataFrame({"ct_id": ["c1"], **{f: [1] for f in FINDINGS}})
    rows = synthetic_training_rows(manifest, volumes, FINDINGS, 1, 0)
    assert rows.loc[0, list(FINDINGS)].tolist() == [1.0] * 5
