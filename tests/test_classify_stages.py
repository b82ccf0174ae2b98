"""classify / predict / report as stages: a tiny sweep over folds and arms, then the report.

Upstream folders (prepare_xrays, convert, drr) are written by the test at the hash the
config gives them, so these tests exercise exactly the classification stages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from classify_fakes import FINDINGS, draw_xray, make_xray_set

from gensyn.base import io
from gensyn.core.runs import DONE, run_dir
from gensyn.stages.predict import with_dataset


def _done(folder):
    io.write_json(folder / DONE, {"fake": True})


def _fake_upstreams(compose, root, ct_findings=FINDINGS):
    """Fake prepare_xrays, convert (CT labels with the columns ``ct_findings``) and drr."""
    cfg = compose("profile=tiny", root=root)
    xray_dir = run_dir(cfg, "prepare_xrays")
    table = make_xray_set(xray_dir / "images", n_patients=60, size_px=32, seed=0)
    table["path"] = [f"images/{p.split('/')[-1]}" for p in table["path"]]  # relative, as upstream
    io.write_table(xray_dir / "xrays.csv", table)
    _done(xray_dir)

    drr_cfg = compose("profile=tiny", "sampling=drr_2", root=root)
    conv_dir, drr_dir = run_dir(drr_cfg, "convert"), run_dir(drr_cfg, "drr")
    rng = np.random.default_rng(1)
    cts, rows = [], []
    for c in range(8):
        labels = (rng.random(5) < 0.4).astype(int)
        cts.append(
            {
                "image_id": f"ct{c}",
                "patient_id": f"ctp{c}",
                **{f: v for f, v in zip(FINDINGS, labels, strict=True) if f in ct_findings},
            }
        )
        for v in range(4):
            name = f"images/ct{c}/ct{c}_v{v:02d}.png"
            io.write_image(drr_dir / name, draw_xray(labels, 32, rng))
            rows.append(
                {
                    "path": name,
                    "ct_id": f"ct{c}",
                    "patient_id": f"ctp{c}",
                    "view_index": v,
                    "is_center": v == 0,
                    "alpha_deg": 5.0 * v,
                    "beta_deg": 0.0,
                }
            )
    # an external test set (all split == test), as prepare_xrays would write for ChestX-ray14
    ext_dir = run_dir(with_dataset(cfg, "chestxray14"), "prepare_xrays")
    ext = make_xray_set(ext_dir / "images", n_patients=30, size_px=48, seed=5, prefix="cxr")
    ext["path"] = [f"images/{p.split('/')[-1]}" for p in ext["path"]]
    io.write_table(ext_dir / "xrays.csv", ext.assign(split="test"))
    _done(ext_dir)
    io.write_table(conv_dir / "labels.csv", pd.DataFrame(cts))
    io.write_table(drr_dir / "manifest.csv", pd.DataFrame(rows))
    _done(conv_dir)
    _done(drr_dir)
    return table


@pytest.mark.slow
def test_sweep_over_folds_and_arms_then_report(compose, launch, gensyn_root):
    table = _fake_upstreams(compose, gensyn_root)
    launch(
        "stage=classify",
        "split_idx=0,1",
        "sampling=none,drr_2",
        "profile=tiny",
        "logger=none",
        "-m",
    )
    proc = launch(
        "stage=report",
        "profile=tiny",
        "logger=none",
        "report.n_bootstrap=200",
        "report.test_datasets=[chestxray14]",
    )
    assert "Classification report" in proc.stdout

    # each run folder records its arm; the DRR arm trained on 2 views × 8 CTs extra
    base = io.read_json(run_dir(compose("profile=tiny", "split_idx=1"), "classify") / "arm.json")
    drr = io.read_json(
        run_dir(compose("profile=tiny", "split_idx=1", "sampling=drr_2"), "classify") / "arm.json"
    )
    assert base["arm"] == "baseline" and base["n_train_synthetic"] == 0
    assert drr["arm"] == "drr_2" and drr["n_train_synthetic"] == 16
    assert drr["n_train_real"] == base["n_train_real"] and drr["n_val"] == base["n_val"]

    # no leakage: the two folds' validation patients are disjoint, and the split file is shared
    folder0 = run_dir(compose("profile=tiny", "split_idx=0"), "classify")
    folder1 = run_dir(compose("profile=tiny", "split_idx=1"), "classify")
    val0 = set(io.read_table(folder0 / "val_images.csv")["patient_id"])
    val1 = set(io.read_table(folder1 / "val_images.csv")["patient_id"])
    train1 = set(io.read_table(folder1 / "train_images.csv")["patient_id"])
    assert val0 and val1 and not val0 & val1 and not val1 & train1
    pd.testing.assert_frame_equal(
        io.read_table(folder0 / "split.csv"), io.read_table(folder1 / "split.csv")
    )

    reports = sorted((gensyn_root / "workdir" / "runs" / "report").glob("*/report.md"))
    assert reports, "report not written"
    text = reports[-1].read_text()
    assert "baseline" in text and "drr_2" in text
    summary = io.read_table(reports[-1].parent / "auc_summary.csv")
    assert set(summary["arm"]) == {"baseline", "drr_2"}
    assert set(summary["test_set"]) == {"demo", "chestxray14"}
    assert (summary["n_folds"] == 2).all()
    n_test = int((table["split"] == "test").sum())
    preds = io.read_table(reports[-1].parent / "predictions.csv")
    assert (preds["test_set"] == "demo").sum() == 4 * n_test  # 2 arms × 2 folds × test images
    assert (preds["test_set"] == "chestxray14").sum() == 4 * len(
        io.read_table(
            run_dir(with_dataset(compose("profile=tiny"), "chestxray14"), "prepare_xrays")
            / "xrays.csv"
        )
    )
    assert "Test set: chestxray14" in text


def test_steps_schedule_gives_a_synthetic_arm_the_baseline_steps(compose, gensyn_root):
    """Tiny profile, fold 0: under ``steps`` the DRR arm takes the baseline's optimiser steps,
    under ``epochs`` more; the CT table has no Pneumonia column, so those labels are unknown."""
    from gensyn.core.runs import execute

    _fake_upstreams(compose, gensyn_root, ct_findings=FINDINGS[:4])
    runs = {}
    for arm, schedule in (("none", "steps"), ("drr_2", "steps"), ("drr_2", "epochs")):
        cfg = compose(
            "profile=tiny", "num_workers=2", f"sampling={arm}", f"classifier.schedule={schedule}"
        )
        runs[arm, schedule] = execute(cfg, "classify")
    assert runs["drr_2", "steps"] != runs["drr_2", "epochs"]  # the schedule is hashed
    summary = {k: io.read_json(folder / "summary.json") for k, folder in runs.items()}
    n_real, n_syn = (
        summary["drr_2", "steps"]["n_train_real"],
        summary["drr_2", "steps"]["n_train_synthetic"],
    )
    epochs, batch = 2, 8  # the tiny profile's
    assert n_syn == 16 and summary["none", "steps"]["n_train_real"] == n_real
    assert summary["drr_2", "steps"]["schedule"] == "steps"
    assert summary["drr_2", "epochs"]["schedule"] == "epochs"
    baseline_steps = summary["none", "steps"]["optimizer_steps"]
    assert baseline_steps == epochs * -(-n_real // batch)
    assert summary["drr_2", "steps"]["optimizer_steps"] == baseline_steps
    assert summary["drr_2", "epochs"]["optimizer_steps"] == epochs * ((n_real + n_syn) // batch)
    assert summary["drr_2", "epochs"]["optimizer_steps"] > baseline_steps
    # unknown, not 0: the synthetic rows' Pneumonia is empty, everything else is known
    train = io.read_table(runs["drr_2", "steps"] / "train_images.csv")
    synthetic = train["source"] == "synthetic"
    assert train.loc[synthetic, "Pneumonia"].isna().all()
    assert train.loc[~synthetic, FINDINGS].notna().all().all()
    assert train.loc[synthetic, FINDINGS[:4]].notna().all().all()
    history = io.read_table(runs["drr_2", "steps"] / "history.csv")
    assert np.isfinite(history["loss"]).all()


def test_real_epochs_stage_summary_counts(compose, gensyn_root):
    """Tiny profile, fold 0, schedule=real_epochs: the baseline and the DRR arm each see every
    real image ``epochs`` times; the DRR arm's batches carry s synthetic images on top (s from
    the natural share, capped) and the summary's counts equal the formulas."""
    from gensyn.classify.train import synthetic_per_batch
    from gensyn.core.runs import execute

    _fake_upstreams(compose, gensyn_root)
    summary = {}
    for arm in ("none", "drr_2"):
        cfg = compose(
            "profile=tiny", "num_workers=2", f"sampling={arm}", "classifier.schedule=real_epochs"
        )
        summary[arm] = io.read_json(execute(cfg, "classify") / "summary.json")
    epochs, batch = 2, 8  # the tiny profile's
    n_real = summary["none"]["n_train_real"]
    n_syn = summary["drr_2"]["n_train_synthetic"]
    assert summary["drr_2"]["n_train_real"] == n_real and n_syn == 16
    s = synthetic_per_batch(n_real, n_syn, batch, 0.5)
    assert s == round(batch * n_syn / (n_real + n_syn)) >= 1  # natural share, under the cap
    base, drr = summary["none"], summary["drr_2"]
    assert base["schedule"] == drr["schedule"] == "real_epochs"
    assert base["optimizer_steps"] == epochs * -(-n_real // batch)
    assert drr["optimizer_steps"] == epochs * -(-n_real // (batch - s))
    for run in (base, drr):
        assert run["real_images_seen"] == epochs * n_real
        assert run["real_times_seen_min"] == run["real_times_seen_max"] == epochs
    assert base["synthetic_images_seen"] == 0 and base["synthetic_per_batch"] == 0
    assert drr["synthetic_per_batch"] == s
    assert drr["synthetic_images_seen"] == drr["optimizer_steps"] * batch - epochs * n_real


def test_weights_and_schedule_options(compose):
    from gensyn.config.classifier import ClassifierConfig, Schedule

    assert ClassifierConfig().weights == "imagenet"
    assert ClassifierConfig().schedule is Schedule.epochs  # the original study's
    study = compose("classifier=densenet121")
    assert study.classifier.weights == "imagenet"
    assert study.classifier.schedule is Schedule.epochs
    assert compose().classifier.weights is None  # the demo's small CNN: random init
    assert compose("classifier=densenet121", "classifier.weights=null").classifier.weights is None
    local = compose("classifier=densenet121", "classifier.weights=/w/notop.h5")
    assert local.classifier.weights == "/w/notop.h5"
    assert compose("classifier.schedule=steps").classifier.schedule is Schedule.steps
    real = compose("classifier.schedule=real_epochs", "classifier.synthetic_share=0.25")
    assert real.classifier.schedule is Schedule.real_epochs
    assert real.classifier.synthetic_share == 0.25
    with pytest.raises(Exception, match=r"classifier\.schedule"):
        compose("classifier.schedule=step")


def test_misspelt_arm_is_an_error(compose):
    with pytest.raises(Exception, match="syntex"):
        compose("sampling.source=syntex")
    with pytest.raises(Exception, match="synthex_3"):
        compose("sampling=synthex_3")
    cfg = compose("sampling=synthex_5")
    assert cfg.sampling.source.value == "synthex" and cfg.sampling.views_per_ct == 5


def test_named_arm_options_match_their_names():
    from pathlib import Path

    import yaml

    from gensyn.classify.sampling import parse_arm

    conf = Path(__file__).resolve().parent.parent / "conf" / "sampling"
    for path in conf.glob("*.yaml"):
        values = yaml.safe_load(path.read_text())
        source, views = parse_arm(path.stem)
        assert values["source"] == source
        if "_" in path.stem:
            assert values["views_per_ct"] == views


def test_thesis_grid_is_nine_arms_by_five_folds(compose):
    from pathlib import Path

    import yaml
    from hydra import compose as hydra_compose  # noqa: F401  (the experiment file is plain YAML)

    exp = Path(__file__).resolve().parent.parent / "conf" / "experiment" / "thesis_grid.yaml"
    params = yaml.safe_load(exp.read_text())["hydra"]["sweeper"]["params"]
    arms = params["sampling"].split(",")
    assert len(arms) == 9 and len(set(arms)) == 9
    assert params["split_idx"].split(",") == ["0", "1", "2", "3", "4"]
    for arm in arms:  # every arm composes with the grid (real option files, typed values)
        compose("experiment=thesis_grid", f"sampling={arm}")


@pytest.mark.slow
def test_tiny_sweep_on_the_real_demo_upstreams(launch, gensyn_root):
    """The issue's command on the tiny profile, with the real prepare_xrays demo stage."""
    launch("stage=classify", "split_idx=0,1", "profile=tiny", "logger=none", "-m")
    proc = launch("stage=report", "profile=tiny", "logger=none", "report.n_bootstrap=100")
    assert "baseline" in proc.stdout and "(2 fold(s))" in proc.stdout


@pytest.mark.slow
def test_demo_classifier_learns(launch, gensyn_root):
    """The demo's small CNN on the default demo data: test macro AUC >= 0.75 (fold 0)."""
    launch("stage=predict", "logger=none")
    (summary,) = (gensyn_root / "workdir" / "runs" / "predict").glob("*/summary.json")
    assert io.read_json(summary)["test_macro_auc"] >= 0.75


@pytest.mark.slow
def test_repeated_cross_validation_over_seeds(compose, launch, gensyn_root):
    """seed=0,1,2 × 2 folds × {baseline, drr_2}, trained for real (one model left out): the
    seeds share the hold-out and the folds, their models differ, and report.seeds=[0,1,2]
    compares J = folds × seeds paired models; the exposure table counts what each arm saw."""
    from gensyn.core.runs import execute

    _fake_upstreams(compose, gensyn_root)
    base = ("profile=tiny", "num_workers=2", "classifier.n_folds=2")
    schedule = "classifier.schedule=real_epochs"
    folders = {}
    for arm in ("none", "drr_2"):
        for seed in (0, 1, 2):
            for fold in (0, 1):
                if (arm, seed, fold) == ("drr_2", 2, 1):
                    continue  # not trained: listed as missing, left out of the pairs
                cfg = compose(
                    *base, schedule, f"sampling={arm}", f"seed={seed}", f"split_idx={fold}"
                )
                folders[arm, seed, fold] = execute(cfg, "classify")
    assert len(set(folders.values())) == 11  # every (arm, seed, fold) its own model
    for arm, seed, fold in folders:  # one fold split for every seed (drawn with split_seed)
        pd.testing.assert_frame_equal(
            io.read_table(folders[arm, seed, fold] / "split.csv"),
            io.read_table(folders["none", 0, 0] / "split.csv"),
        )
    proc = launch(
        *base,
        schedule,
        "stage=report",
        "logger=none",
        "report.n_bootstrap=50",
        "report.arms=[none,drr_2]",
        "report.seeds=[0,1,2]",
        "report.test_datasets=[chestxray14]",
    )
    assert "Classification report" in proc.stdout
    (report,) = (gensyn_root / "workdir" / "runs" / "report").glob("*/report.md")
    text = report.read_text()
    assert "seed(s) 0, 1, 2" in text and "drr_2 seed 2 (fold 1)" in text

    preds = io.read_table(report.parent / "predictions.csv")
    models = preds.drop_duplicates(["arm", "seed", "fold"])
    assert len(models) == 11 and set(models["seed"]) == {0, 1, 2}
    for test_set, group in preds.groupby("test_set"):  # the same test images for every model
        images = group.groupby(["arm", "seed", "fold"])["image_id"].apply(frozenset)
        assert images.nunique() == 1, test_set
    # genuinely different models: the seeds' probabilities for the same images differ
    own = preds[(preds.arm == "baseline") & (preds.fold == 0) & (preds.test_set == "demo")]
    by_seed = own.pivot(index="image_id", columns="seed", values="p_Effusion")
    assert not np.allclose(by_seed[0], by_seed[1]) and not np.allclose(by_seed[0], by_seed[2])

    summary = io.read_table(report.parent / "auc_summary.csv")
    for test_set in ("demo", "chestxray14"):
        macro = summary[
            (summary.arm == "drr_2")
            & (summary["class"] == "macro")
            & (summary.test_set == test_set)
        ].iloc[0]
        assert macro.n_models == 5 and macro.n_pairs == 5 and macro.n_folds == 2  # J = 2 × 3 - 1
        assert np.isfinite(macro.p_corrected)

    # exposure: mean over each arm's models of what its classify runs counted
    assert "Training exposure per arm" in text
    runs = {k: io.read_json(f / "summary.json") for k, f in folders.items()}
    for arm, label, n in (("none", "baseline", 6), ("drr_2", "drr_2", 5)):
        mine = [r for (a, _, _), r in runs.items() if a == arm]
        assert len(mine) == n
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(n)
        for k, key in enumerate(("optimizer_steps", "real_images_seen", "synthetic_images_seen")):
            assert cells[2 + k] == f"{np.mean([r[key] for r in mine]):,.0f}", key
        assert cells[5] == "2"  # every real image seen exactly epochs = 2 times
