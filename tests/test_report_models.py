"""Arms vs baseline over trained models: known per-model AUCs, tables per test set, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gensyn.base import io
from gensyn.core.runs import DONE, run_dir
from gensyn.report import multiplicity, render

CLASSES = ["Effusion", "Cardiomegaly"]
#: test set -> number of negatives per class (one positive each, so AUCs are k / n_neg)
TEST_SETS = {"demo": 10, "chestxray14": 20}
ARMS = [("baseline", "none", 1), ("drr_5", "drr", 5)]


def _scores_with_auc(n_neg: int, k: int) -> tuple[np.ndarray, float]:
    """Scores of n_neg negatives, (i + 0.5) / n_neg, and of a positive that beats exactly k."""
    return (np.arange(n_neg) + 0.5) / n_neg, k / n_neg


def _known_preds(n_folds: int = 5, seeds: tuple[int, ...] = (0,), seed_column: bool = True):
    """Predictions whose per-model per-class AUCs are set by construction.

    Per test set the images are 0 .. n_neg; image 0 is the only Effusion positive and image 1
    the only Cardiomegaly positive, two images per patient. Returns the table and the AUCs:
    ``aucs[test_set][arm]`` is (models, classes), models ordered (fold, seed).
    """
    rng = np.random.default_rng(0)
    rows, aucs = [], {}
    for test_set, n_neg in TEST_SETS.items():
        n_img = n_neg + 1
        y = np.zeros((n_img, 2), int)
        y[0, 0] = y[1, 1] = 1
        aucs[test_set] = {}
        for arm, source, views in ARMS:
            ks = rng.integers(n_neg // 2, n_neg + 1, size=(n_folds * len(seeds), 2))
            if arm == "drr_5":  # better on average, but not in every model
                ks = np.minimum(ks + rng.integers(-1, 4, size=ks.shape), n_neg)
            aucs[test_set][arm] = ks / n_neg
            model = 0
            for fold in range(n_folds):
                for seed in seeds:
                    p = np.zeros((n_img, 2))
                    for c in range(2):
                        neg, pos = _scores_with_auc(n_neg, int(ks[model, c]))
                        p[y[:, c] == 0, c], p[y[:, c] == 1, c] = neg, pos
                    model += 1
                    for i in range(n_img):
                        rows.append(
                            {
                                "arm": arm,
                                "source": source,
                                "views_per_ct": views,
                                "fold": fold,
                                **({"seed": seed} if seed_column else {}),
                                "test_set": test_set,
                                "image_id": f"{test_set}{i}",
                                "patient_id": f"{test_set}p{i // 2}",
                                **{f"y_{c}": y[i, k] for k, c in enumerate(CLASSES)},
                                **{f"p_{c}": p[i, k] for k, c in enumerate(CLASSES)},
                            }
                        )
    return pd.DataFrame(rows), aucs


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_variance_table_from_known_aucs(tmp_path, seeds):
    preds, aucs = _known_preds(seeds=seeds, seed_column=len(seeds) > 1)
    page, summary = render.write_report(tmp_path, preds, CLASSES, n_boot=50, n_folds=5)
    text = page.with_suffix(".md").read_text()
    n_models = 5 * len(seeds)
    for test_set, n_neg in TEST_SETS.items():
        rows = summary[summary.test_set == test_set]
        base, arm = aucs[test_set]["baseline"], aucs[test_set]["drr_5"]
        for k, cls in enumerate([*CLASSES, "macro"]):
            a = arm[:, k] if k < 2 else arm.mean(axis=1)
            b = base[:, k] if k < 2 else base.mean(axis=1)
            row = rows[(rows.arm == "drr_5") & (rows["class"] == cls)].iloc[0]
            assert row.auc_mean == pytest.approx(a.mean())
            assert row.n_models == n_models and row.n_pairs == n_models and row.n_folds == 5
            # the formula by hand: ratio 1/(5-1), J - 1 degrees of freedom
            d = a - b
            t = d.mean() / np.sqrt((1 / n_models + 0.25) * d.var(ddof=1))
            assert row.delta_models_mean == pytest.approx(d.mean())
            assert row.delta_models_sd == pytest.approx(d.std(ddof=1))
            assert row.t_corrected == pytest.approx(t)
            assert row.p_corrected == pytest.approx(2 * stats.t.sf(abs(t), n_models - 1))
        assert np.isnan(rows[rows.arm == "baseline"]["p_corrected"]).all()

        table = render.variance_table(rows)
        assert table is not None and list(table.columns)[:6] == [
            "arm",
            "J (models)",
            "Δ",
            "CI",
            "p",
            "p (Holm)",
        ]
        macro = rows[(rows.arm == "drr_5") & (rows["class"] == "macro")].iloc[0]
        assert table.iloc[0]["arm"] == "drr_5" and table.iloc[0]["J (models)"] == n_models
        assert table.iloc[0]["p"] == multiplicity.format_p(macro.p_value)
        assert table.iloc[0]["p, models only"] == multiplicity.format_p(macro.p_corrected)
        assert f"| drr_5 | {n_models} | {macro.delta:+.3f} |" in text
        # every table of this test set is headed with its name, images and patients
        head = f"{test_set} ({n_neg + 1} images, {(n_neg + 2) // 2} patients)"
        assert f"## Test set: {head}" in text
        for caption in ["per-class and macro AUC", "AUC difference to", "Δ macro AUC: where"]:
            assert f"*{head}: {caption}" in text
    assert "n_test/n_train = 1/(k - 1) = 0.25 for k = 5 folds" in text
    assert render.VARIANCE_TITLE in (tmp_path / "report.html").read_text()


def test_unpaired_models_are_left_out_and_one_pair_gives_no_test(tmp_path):
    preds, aucs = _known_preds(n_folds=3)
    # the arm lacks fold 2: J = 2 pairs, folds 0 and 1
    summary = render.summarise_test_set(
        preds[(preds.test_set == "demo") & ~((preds.arm == "drr_5") & (preds.fold == 2))],
        CLASSES,
        n_boot=20,
        test_train_ratio=0.5,
    )
    row = summary[(summary.arm == "drr_5") & (summary["class"] == "macro")].iloc[0]
    d = aucs["demo"]["drr_5"][:2].mean(axis=1) - aucs["demo"]["baseline"][:2].mean(axis=1)
    assert row.n_pairs == 2 and row.delta_models_mean == pytest.approx(d.mean())
    assert row.t_corrected == pytest.approx(d.mean() / np.sqrt(1.0 * d.var(ddof=1)))
    one = render.summarise_test_set(
        preds[(preds.test_set == "demo") & (preds.fold == 0)], CLASSES, n_boot=20
    )
    row = one[(one.arm == "drr_5") & (one["class"] == "macro")].iloc[0]
    assert row.n_pairs == 1 and np.isnan(row.p_corrected)
    assert row.note_corrected == "fewer than 2 paired models"


def test_format_p_and_schedule_note():
    assert multiplicity.format_p(0.0004) == "p < 0.001"
    assert multiplicity.format_p(0.001) == "p = 0.001"
    assert multiplicity.format_p(0.04567) == "p = 0.0457"
    assert multiplicity.format_p(0.0496) == "p = 0.0496"  # never "0.050"
    assert multiplicity.format_p(0.04996) == "p = 0.04996"
    assert multiplicity.format_p(0.0500) == "p = 0.05"
    assert multiplicity.format_p(0.00996) == "p = 0.00996"
    assert multiplicity.format_p(0.3149) == "p = 0.31"
    assert multiplicity.format_p(float("nan")) == "p = n/a"
    for p in np.linspace(0.001, 1, 2001):  # printed and true p on the same side of 0.05 and 0.01
        printed = float(multiplicity.format_p(p).split("= ")[1])
        assert (printed < 0.05) == (p < 0.05) and (printed < 0.01) == (p < 0.01), p
    assert "more optimiser steps" in render.schedule_note("epochs")
    assert "as many optimiser steps" in render.schedule_note("steps")
    assert "each real training image once per epoch" in render.schedule_note("real_epochs")
    with pytest.raises(ValueError, match="allowed: \\['epochs', 'steps', 'real_epochs'\\]"):
        render.schedule_note("epoch")


# stage=report over report.seeds with genuinely different trained models (same test images):
# tests/test_classify_stages.py::test_repeated_cross_validation_over_seeds


def _fake_predictions(
    arm: str, source: str, views: int, fold: int, findings, seed: int, absent: str = ""
):
    """What stage=predict writes (no seed column), for 30 images of 15 patients; the finding
    ``absent`` has no positive case."""
    rng = np.random.default_rng(100 * seed + 10 * fold + views)
    y = (np.random.default_rng(0).random((30, len(findings))) < 0.4).astype(int)
    if absent:
        y[:, list(findings).index(absent)] = 0
    p = 1 / (1 + np.exp(-(views * y + rng.normal(size=y.shape))))
    return pd.DataFrame(
        {
            "arm": arm,
            "source": source,
            "views_per_ct": views,
            "fold": fold,
            "test_set": "demo",
            "image_id": [f"i{i}" for i in range(30)],
            "patient_id": [f"p{i // 2}" for i in range(30)],
            **{f"y_{f}": y[:, k] for k, f in enumerate(findings)},
            **{f"p_{f}": p[:, k] for k, f in enumerate(findings)},
        }
    )


def test_report_stage_with_a_finding_without_positive_case(compose, launch, gensyn_root):
    """stage=report on predictions where no test image has Pneumonia: n/a, not a KeyError."""
    base = ("profile=tiny", "classifier.n_folds=3")
    findings = list(compose(*base).dataset.findings)
    for arm, source, views in [("baseline", "none", 1), ("drr_5", "drr", 5)]:
        for fold in range(3):
            sampling = "none" if source == "none" else arm
            cfg = compose(*base, f"sampling={sampling}", f"split_idx={fold}")
            folder = run_dir(cfg, "predict")
            table = _fake_predictions(arm, source, views, fold, findings, 0, absent="Pneumonia")
            io.write_table(folder / "predictions.csv", table)
            io.write_json(folder / DONE, {"fake": True})
    proc = launch(*base, "stage=report", "logger=none", "report.n_bootstrap=50",
                  "report.arms=[none,drr_5]")  # fmt: skip
    assert "Classification report" in proc.stdout
    (report,) = (gensyn_root / "workdir" / "runs" / "report").glob("*/report.md")
    text = report.read_text()
    assert "| n/a (no positive case) |" in text
    others = ", ".join(f for f in findings if f != "Pneumonia")
    assert f"Macro AUC = mean over {others} (left out: Pneumonia: n/a (no positive case))" in text
    assert "Primary comparison (macro AUC, drr_5 vs baseline on demo)" in text
    summary = io.read_table(report.parent / "auc_summary.csv")
    macro = summary[(summary.arm == "drr_5") & (summary["class"] == "macro")].iloc[0]
    assert bool(macro.primary) and macro.family == "primary" and macro.macro_over == others
    assert macro.p_adjusted == macro.p_value and np.isfinite(macro.delta_ci_low)
    summary_json = io.read_json(report.parent / "summary.json")
    assert summary_json["primary"] == "macro AUC, drr_5 vs baseline on demo"
