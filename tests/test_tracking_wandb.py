"""W&B runs that group themselves: names, groups, job types, tags and config labels, read back
from the offline run records; the report's AUC table checked against scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from wandb_offline import wandb_records

from gensyn.base import io
from gensyn.core.runs import run_dir
from gensyn.tracking.report_table import TABLE_COLUMNS, TABLE_KEY, auc_rows
from gensyn.tracking.run_labels import parse_overrides, run_labels

HASH = "7141cf5123ef"


def test_arms_group_across_folds_and_classify_shares_its_group_with_predict(compose) -> None:
    sweep = ["stage=classify", "carm_pose.num_random=3", "logger=wandb"]
    labels = {
        (stage, arm, fold): run_labels(
            compose(f"sampling={arm}", f"split_idx={fold}", "experiment=thesis_grid"),
            stage,
            HASH,
            [*sweep, f"sampling={arm}", f"split_idx={fold}"],
        )
        for stage in ("classify", "predict")
        for arm in ("none", "synthex_5")
        for fold in (0, 2)
    }
    one = labels["classify", "synthex_5", 2]
    assert one.name == "classify/synthex_5/fold2 #7141cf"
    assert one.job_type == "classify"
    assert one.group == "thesis_grid/synthex_5/carm_pose.num_random=3"
    assert {"classify", "thesis_grid", "arm:synthex_5", "fold:2", "seed:0"} <= set(one.tags)
    assert {"test:padchest", "test:chestxray14", "carm_pose.num_random=3"} <= set(one.tags)
    assert "logger=wandb" in one.tags and "logger" not in one.group  # recorded, not compared
    assert one.labels == {
        "arm": "synthex_5",
        "fold": 2,
        "test_sets": ["padchest", "chestxray14"],
        "swept": {"carm_pose.num_random": "3", "logger": "wandb"},
    }
    assert labels["predict", "none", 0].name == "predict/baseline/fold0 #7141cf"
    # one group per arm, holding both folds and both stages
    groups: dict[str, set[tuple[str, int]]] = {}
    for (stage, _arm, fold), lab in labels.items():
        groups.setdefault(lab.group, set()).add((stage, fold))
    assert sorted(groups) == [
        "thesis_grid/baseline/carm_pose.num_random=3",
        "thesis_grid/synthex_5/carm_pose.num_random=3",
    ]
    assert all(
        v == {("classify", 0), ("classify", 2), ("predict", 0), ("predict", 2)}
        for v in groups.values()
    )


def test_seed_names_stages_without_an_arm_and_logger_overrides(compose) -> None:
    seeded = run_labels(compose("seed=1", "split_idx=3"), "classify", HASH, ["seed=1"])
    assert seeded.name == "classify/baseline/fold3/seed1 #7141cf"
    assert seeded.group == "demo/baseline" and "seed:1" in seeded.tags
    swept_zero = run_labels(compose(), "predict", HASH, ["seed=0"])
    assert swept_zero.name == "predict/baseline/fold0/seed0 #7141cf"  # swept: named even at 0
    drr = run_labels(compose("carm_pose=random"), "drr", HASH, ["carm_pose=random", "split_idx=1"])
    assert drr.name == "drr #7141cf" and drr.job_type == "drr"
    assert drr.group == "demo/carm_pose=random"  # no arm, and folds are not compared
    assert "arm" not in drr.labels and not any(t.startswith(("arm:", "fold:")) for t in drr.tags)
    report = run_labels(compose("report.test_datasets=[chestxray14]"), "report", HASH, [])
    assert report.group == "demo" and report.labels["test_sets"] == ["demo", "chestxray14"]

    own = compose("logger.name=my-run", "logger.group=pilot", "logger.tags=[v2,night]")
    mine = run_labels(own, "classify", HASH, [])
    assert (mine.name, mine.group) == ("my-run", "pilot")
    assert {"v2", "night", "arm:baseline"} <= set(mine.tags)
    long = run_labels(compose(), "drr", HASH, ["projector.name=" + "x" * 200])
    assert all(len(t) <= 64 for t in long.tags) and len(long.group) <= 128


def test_overrides_are_read_as_keys_and_values() -> None:
    assert parse_overrides(["+a.b=1", "~c", "++d=x=y", "e=[1,2]"]) == {
        "a.b": "1",
        "d": "x=y",
        "e": "[1,2]",
    }


def test_auc_table_matches_scikit_learn() -> None:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    frames = []
    for arm in ("baseline", "drr_2"):
        for fold in (0, 1):
            y = rng.integers(0, 2, (40, 2))
            p = np.clip(0.3 * y + rng.random((40, 2)), 0, 1)
            y[:, 1] = 0 if fold == 1 else y[:, 1]  # one class only: no AUC
            frames.append(
                pd.DataFrame(
                    {
                        "arm": arm,
                        "fold": fold,
                        "seed": 0,
                        "test_set": "demo",
                        "y_A": y[:, 0],
                        "y_B": y[:, 1],
                        "p_A": p[:, 0],
                        "p_B": p[:, 1],
                    }
                )
            )
    preds = pd.concat(frames, ignore_index=True)
    rows = auc_rows(preds, ["A", "B"])
    assert len(rows) == 4 * 3
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for (arm, fold), part in preds.groupby(["arm", "fold"]):
        got = table[(table["arm"] == arm) & (table["fold"] == fold)].set_index("finding")["auc"]
        a = roc_auc_score(part["y_A"], part["p_A"])
        assert got["A"] == pytest.approx(a, abs=1e-6)
        if fold == 1:
            raw = [r for r in rows if (r[0], r[1], r[4]) == (arm, fold, "B")]
            assert raw[0][5] is None and got["macro"] == pytest.approx(a, abs=1e-6)
        else:
            b = roc_auc_score(part["y_B"], part["p_B"])
            assert got["macro"] == pytest.approx((a + b) / 2, abs=1e-6)


# ---- end to end: a sweep, its predictions and the report, as W&B recorded them offline -------
def run_record(folder: Path) -> dict[str, Any]:
    """Name, group, job type, tags and top-level config of the offline W&B run in ``folder``."""
    (run,) = wandb_records(folder, "run")
    config = {
        item.key or "/".join(item.nested_key): json.loads(item.value_json)
        for item in run.config.update
    }
    return {
        "name": run.display_name,
        "group": run.run_group,
        "job_type": run.job_type,
        "tags": set(run.tags),
        "config": config,
    }


@pytest.mark.slow
def test_sweep_runs_are_named_grouped_and_the_report_logs_its_table(
    compose, launch, gensyn_root
) -> None:
    from test_classify_stages import _fake_upstreams

    _fake_upstreams(compose, gensyn_root)
    common = ("profile=tiny", "logger=wandb", "classifier.learning_rate=0.002")
    for stage in ("classify", "predict"):
        launch(f"stage={stage}", "split_idx=0,1", "sampling=none,drr_2", *common, "-m")
    launch("stage=report", *common, "report.n_bootstrap=50")

    groups: dict[str, set[str]] = {}
    for stage in ("classify", "predict"):
        for arm, label in (("none", "baseline"), ("drr_2", "drr_2")):
            for fold in (0, 1):
                cfg = compose(
                    "profile=tiny",
                    f"sampling={arm}",
                    f"split_idx={fold}",
                    "classifier.learning_rate=0.002",
                )
                folder = run_dir(cfg, stage)
                rec = run_record(folder)
                assert rec["name"] == f"{stage}/{label}/fold{fold} #{folder.name[:6]}"
                assert rec["job_type"] == stage
                assert {f"arm:{label}", f"fold:{fold}", "test:demo", "seed:0"} <= rec["tags"]
                assert "classifier.learning_rate=0.002" in rec["tags"]
                config = rec["config"]
                assert (config["arm"], config["fold"], config["seed"]) == (label, fold, 0)
                assert config["stage"]["name"] == stage and config["test_sets"] == ["demo"]
                assert config["swept"]["classifier.learning_rate"] == "0.002"
                groups.setdefault(rec["group"], set()).add(f"{stage}{fold}")
                if stage == "predict":  # the test AUCs are in this run's history
                    keys = {
                        i.key or "/".join(i.nested_key)
                        for h in wandb_records(folder, "history")
                        for i in h.item
                    }
                    assert "test_macro_auc" in keys
    assert groups == {
        f"demo/{arm}/classifier.learning_rate=0.002/profile=tiny": {
            "classify0",
            "classify1",
            "predict0",
            "predict1",
        }
        for arm in ("baseline", "drr_2")
    }

    (report_dir,) = (gensyn_root / "workdir" / "runs" / "report").iterdir()
    rec = run_record(report_dir)
    assert (
        rec["job_type"] == "report"
        and rec["group"] == "demo/classifier.learning_rate=0.002/profile=tiny"
    )
    logged = {  # nested values (a table's or an image's fields) as "key/field"
        i.key or "/".join(i.nested_key): json.loads(i.value_json)
        for h in wandb_records(report_dir, "history")
        for i in h.item
    }
    assert logged[f"{TABLE_KEY}/_type"] == "table-file"
    (table_file,) = report_dir.glob(f"wandb/offline-run-*/files/{logged[f'{TABLE_KEY}/path']}")
    table = json.loads(table_file.read_text())
    assert table["columns"] == TABLE_COLUMNS
    preds = io.read_table(report_dir / "predictions.csv")
    assert table["data"] == json.loads(
        json.dumps(auc_rows(preds, list(compose().dataset.findings)))
    )
    arms_folds = {(r[0], r[1]) for r in table["data"]}
    assert arms_folds == {(a, f) for a in ("baseline", "drr_2") for f in (0, 1)}
    figures = io.read_json(report_dir / "summary.json")["figures"]
    assert figures
    assert all(logged[f"report/{Path(f).stem}/_type"] == "image-file" for f in figures)

    # runs that stage=pipeline starts carry their own stage, arm and fold
    pipeline = ("profile=tiny", "logger=wandb", "classifier.learning_rate=0.003")
    launch(
        "stage=pipeline", "stage.stages=[classify,predict]", "stage.arms=[none,drr_2]", *pipeline
    )
    for stage in ("classify", "predict"):
        for arm, label in (("none", "baseline"), ("drr_2", "drr_2")):
            cfg = compose(*pipeline[:1], pipeline[2], f"sampling={arm}")
            rec = run_record(run_dir(cfg, stage))
            assert rec["name"].startswith(f"{stage}/{label}/fold0 #"), rec["name"]
            assert rec["job_type"] == stage and rec["config"]["stage"]["name"] == stage
            assert rec["group"] == f"demo/{label}/classifier.learning_rate=0.003/profile=tiny"
            assert {f"arm:{label}", "fold:0", "test:demo"} <= rec["tags"]
            assert "stage=pipeline" not in rec["tags"]
