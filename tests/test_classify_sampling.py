"""Sampling arms: which synthetic views join the training folds, with which labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gensyn.classify import sampling
from gensyn.data.splits import patient_folds

FINDINGS = ["Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia"]


def _manifest(n_ct: int = 6, n_angled: int = 9) -> pd.DataFrame:
    rows = []
    for c in range(n_ct):
        for v in range(n_angled + 1):
            rows.append(
                {
                    "path": f"images/ct{c}_v{v}.png",
                    "ct_id": f"ct{c}",
                    "patient_id": f"P{c}",
                    "view_index": v,
                    "is_center": v == 0,
                }
            )
    return pd.DataFrame(rows)


def _labels(n_ct: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "ct_id": [f"ct{c}" for c in range(n_ct)],
            **{f: rng.integers(0, 2, n_ct) for f in FINDINGS},
        }
    )


@pytest.mark.parametrize("views", [1, 2, 5, 10])
def test_centre_plus_n_minus_1_angled_views_per_ct(views):
    chosen = sampling.select_views(_manifest(), views, seed=0)
    per_ct = chosen.groupby("ct_id")
    assert (per_ct.size() == views).all()
    assert (per_ct["is_center"].sum() == 1).all()


def test_views_are_seeded_nested_and_vary_by_ct():
    m = _manifest()
    two = sampling.select_views(m, 2, seed=0)
    five = sampling.select_views(m, 5, seed=0)
    assert set(two["path"]) <= set(five["path"])  # more views extend fewer views
    again = sampling.select_views(m, 5, seed=0)
    pd.testing.assert_frame_equal(five, again)
    other = sampling.select_views(m, 5, seed=1)
    assert set(other["path"]) != set(five["path"])
    angled = five[~five["is_center"]]
    picks = angled.groupby("ct_id")["view_index"].apply(tuple)
    assert picks.nunique() > 1  # not the same angled views for every CT


def _views_one_ct_at_a_time(manifest: pd.DataFrame, views: int, seed: int) -> pd.DataFrame:
    """select_views' definition, written the slow way: a groupby loop over the CTs."""
    import zlib

    rows = []
    for ct_id, group in manifest.groupby("ct_id", sort=True):
        center = group[group["is_center"].astype(bool)]
        angled = group[~group["is_center"].astype(bool)]
        order = np.random.default_rng([seed, zlib.crc32(str(ct_id).encode())]).permutation(
            len(angled)
        )
        rows += [center, angled.iloc[np.sort(order[: views - 1])]]
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("views", [1, 3, 10])
def test_views_match_a_per_ct_loop_on_a_shuffled_uneven_manifest(views):
    rng = np.random.default_rng(7)
    rows = []
    for c in rng.permutation(300):
        n_angled = int(rng.integers(views - 1, 15))
        for v in range(n_angled + 1):
            rows.append({"path": f"c{c}/v{v}.png", "ct_id": f"ct{c:03d}", "is_center": v == 3 % (n_angled + 1)})  # fmt: skip
    m = pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)
    got = sampling.select_views(m, views, seed=11)
    pd.testing.assert_frame_equal(got, _views_one_ct_at_a_time(m, views, seed=11))
    assert got.groupby("ct_id").size().eq(views).all()


def test_too_many_views_or_no_centre_is_an_error():
    with pytest.raises(ValueError, match="angled views"):
        sampling.select_views(_manifest(n_angled=3), 5, seed=0)
    m = _manifest()
    m.loc[0, "is_center"] = False
    with pytest.raises(ValueError, match="centre"):
        sampling.select_views(m, 1, seed=0)


def _vols() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ct_id": ["a", "b"],
            "pleural_effusion": [1, 0],
            "pneumothorax": [0, 1],
            "atelectasis": [0, 0],
            "cardiomegaly": [1, 1],
            "pneumonia": [0, 0],
        }
    )


def test_ct_labels_mapped_by_alias():
    out = sampling.ct_findings(_vols(), FINDINGS)
    assert out["Effusion"].tolist() == [1, 0] and out["Cardiomegaly"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="2 columns for 'Effusion'"):
        sampling.ct_findings(_vols().assign(Effusion=[0, 0]), FINDINGS)


def test_missing_finding_is_unknown_with_one_warning_never_zero(caplog):
    with caplog.at_level("WARNING", logger="gensyn.classify.sampling"):
        out = sampling.ct_findings(_vols().drop(columns="pneumonia"), FINDINGS)
    assert out["Pneumonia"].isna().all()
    assert out["Effusion"].tolist() == [1, 0]  # the others are read as before
    (record,) = caplog.records
    assert "Pneumonia" in record.getMessage() and "pleural_effusion" in record.getMessage()


def test_empty_cell_stays_unknown():
    vols = _vols().astype({"pneumothorax": float})
    vols.loc[1, "pneumothorax"] = np.nan
    out = sampling.ct_findings(vols, FINDINGS)
    assert out["Pneumothorax"].iloc[0] == 0 and np.isnan(out["Pneumothorax"].iloc[1])


def test_ct_set_without_label_table_gives_all_unknown_synthetic_rows(caplog):
    # e.g. LIDC-IDRI: volumes.csv has ids and paths, no finding at all
    volumes = pd.DataFrame(
        {"ct_id": [f"ct{c}" for c in range(6)], "patient_id": "P", "path": "v.npz"}
    )
    with caplog.at_level("WARNING", logger="gensyn.classify.sampling"):
        syn = sampling.synthetic_training_rows(_manifest(), volumes, FINDINGS, 2, seed=0)
    assert len(syn) == 12 and syn[FINDINGS].isna().all().all()
    assert len(caplog.records) == 1 and all(f in caplog.text for f in FINDINGS)
    with pytest.raises(ValueError, match="missing from the CT label table"):
        sampling.synthetic_training_rows(_manifest(), volumes.iloc[:5], FINDINGS, 2, seed=0)


def test_synthetic_rows_join_training_only():
    syn = sampling.synthetic_training_rows(_manifest(), _labels(), FINDINGS, 5, seed=0)
    assert len(syn) == 6 * 5
    lab = _labels().set_index("ct_id")
    for row in syn.itertuples():
        ct = row.path.split("/")[-1].split("_")[0]
        assert row.Effusion == lab.loc[ct, "Effusion"]
    real = pd.DataFrame(
        {
            "image_id": [f"r{i}" for i in range(40)],
            "patient_id": [f"q{i // 2}" for i in range(40)],
            "path": [f"r{i}.png" for i in range(40)],
            **{f: np.arange(40) % (k + 2) == 0 for k, f in enumerate(FINDINGS)},
        }
    )
    real[FINDINGS] = real[FINDINGS].astype(int)
    folds = patient_folds(real, FINDINGS, n_folds=4, seed=0)
    train, val = sampling.training_tables(real, folds, 1, syn, FINDINGS)
    assert (val["source"] == "real").all() and len(val) + (train["source"] == "real").sum() == 40
    assert (train["source"] == "synthetic").sum() == len(syn)
    assert not set(val["patient_id"]) & set(train["patient_id"])


def test_arm_names_and_parsing():
    assert sampling.arm_name("none", 1) == "baseline"
    assert sampling.arm_name("synthex", 10) == "synthex_10"
    assert sampling.parse_arm("drr_5") == ("drr", 5) and sampling.parse_arm("none") == ("none", 1)
    with pytest.raises(ValueError, match=r"sampling\.source"):
        sampling.parse_arm("syntex_5")
    with pytest.raises(ValueError):
        sampling.parse_arm("drr_x")


@pytest.mark.parametrize("root", ["/data/run", "/data/run/", "/", "rel/dir", ".", "./rel"])
def test_resolved_paths_are_pathlib_joins(root):
    import os
    from pathlib import Path

    paths = ["a/b.png", "./a.png", "a/./b", "a//b", "a/", "", "/abs/x.png", "../x.png",
             "a/../b", ".hidden/x", "a..b/c", "x.", "...", "a/.", "./", "//x"]  # fmt: skip
    got = sampling.resolve_paths(pd.DataFrame({"path": paths, "k": range(len(paths))}), root)
    assert list(got["path"]) == [p if os.path.isabs(p) else str(Path(root) / p) for p in paths]
    assert list(got["k"]) == list(range(len(paths)))
