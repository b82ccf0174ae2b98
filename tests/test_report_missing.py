"""Findings without an AUC: a test set without a positive (or negative) case, a single positive,
a finding one arm did not predict. The report says n/a with the reason and never crashes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gensyn.report import render

CLASSES = ["Effusion", "Atelectasis", "Cardiomegaly", "Pneumonia"]
ARMS = [("baseline", "none", 1, 1.0), ("drr_5", "drr", 5, 1.5), ("synthex_5", "synthex", 5, 2.0)]


def _preds(labels: dict[str, np.ndarray] | None = None, n: int = 90, seed: int = 0):
    """3 arms × 3 folds on one test set; ``labels`` overrides a finding's 0/1 column."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, 40, n)
    y = (rng.random((n, len(CLASSES))) < 0.4).astype(int)
    for cls, col in (labels or {}).items():
        y[:, CLASSES.index(cls)] = col
    frames = []
    for arm, source, views, strength in ARMS:
        for fold in range(3):
            p = 1 / (1 + np.exp(-(strength * y + rng.normal(size=y.shape))))
            frames.append(
                pd.DataFrame(
                    {
                        "arm": arm,
                        "source": source,
                        "views_per_ct": views,
                        "fold": fold,
                        "test_set": "chestxray14",
                        "image_id": [f"i{i}" for i in range(n)],
                        "patient_id": [f"p{q}" for q in patients],
                        **{f"y_{c}": y[:, k] for k, c in enumerate(CLASSES)},
                        **{f"p_{c}": p[:, k] for k, c in enumerate(CLASSES)},
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _row(summary, arm, cls):
    return summary[(summary.arm == arm) & (summary["class"] == cls)].iloc[0]


@pytest.mark.parametrize(("fill", "reason"), [(0, "no positive case"), (1, "no negative case")])
def test_test_set_without_a_finding(tmp_path, fill, reason):
    """The KeyError of issue 34: a test set without Pneumonia positives (or negatives)."""
    preds = _preds({"Pneumonia": np.full(90, fill)})
    page, summary = render.write_report(tmp_path, preds, CLASSES, n_boot=100)
    text = page.with_suffix(".md").read_text()
    for arm, *_ in ARMS:
        row = _row(summary, arm, "Pneumonia")
        assert np.isnan(row.auc_mean) and row.na_reason == reason
        macro = _row(summary, arm, "macro")
        assert macro.macro_over == "Effusion, Atelectasis, Cardiomegaly"
        # the macro is the mean of the three findings that have an AUC, model by model
        per_model = []
        for _, g in preds[preds.arm == arm].groupby("fold"):
            per_model.append(
                np.mean([roc_auc_score(g[f"y_{c}"], g[f"p_{c}"]) for c in CLASSES[:3]])
            )
        assert macro.auc_mean == pytest.approx(np.mean(per_model))
    for arm in ("drr_5", "synthex_5"):
        assert np.isnan(_row(summary, arm, "Pneumonia").delta)
        assert _row(summary, arm, "Pneumonia").delta_na_reason == reason
        assert _row(summary, arm, "Pneumonia").family == f"per finding, chestxray14, {arm}"
        assert np.isfinite(_row(summary, arm, "macro").delta)
    assert f"n/a ({reason})" in text
    assert text.count(f"| n/a ({reason}) |") >= 2 * len(ARMS) - 1  # AUC and Δ tables
    assert (
        f"Macro AUC = mean over Effusion, Atelectasis, Cardiomegaly (left out: Pneumonia: n/a ({reason}))"
        in text
    )
    assert (tmp_path / "figures" / "roc_chestxray14.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "auc_vs_views_chestxray14.png").stat().st_size > 1000


def test_figures_say_na_in_the_empty_panels():
    from matplotlib.figure import Figure

    from gensyn.report import plots

    preds = _preds({"Pneumonia": np.zeros(90, int)})
    summary = render.summarise_test_set(preds, CLASSES, n_boot=50)
    fig = plots.draw_auc_vs_views(Figure(figsize=(12, 3)), summary, CLASSES)
    panel = next(ax for ax in fig.axes if ax.get_title() == "Pneumonia")
    assert [t.get_text() for t in panel.texts] == ["n/a (no positive case)"]
    assert all(not ax.texts for ax in fig.axes if ax.get_title() != "Pneumonia")


def test_single_positive_case(tmp_path):
    """One positive image: the AUC exists; replicates without that patient are left out."""
    col = np.zeros(90, int)
    col[7] = 1
    preds = _preds({"Pneumonia": col})
    page, summary = render.write_report(tmp_path, preds, CLASSES, n_boot=200)
    for arm, *_ in ARMS:
        row = _row(summary, arm, "Pneumonia")
        per_fold = [
            roc_auc_score(g["y_Pneumonia"], g["p_Pneumonia"])
            for _, g in preds[preds.arm == arm].groupby("fold")
        ]
        assert row.auc_mean == pytest.approx(np.mean(per_fold)) and row.na_reason == ""
        assert np.isfinite(row.ci_low) and row.ci_low <= row.auc_mean <= row.ci_high
        assert "Pneumonia" in _row(summary, arm, "macro").macro_over
    cmp = _row(summary, "synthex_5", "Pneumonia")
    assert np.isfinite(cmp.delta) and np.isfinite(cmp.p_value)
    assert cmp.delta_ci_low <= cmp.delta <= cmp.delta_ci_high
    assert "n/a" not in page.with_suffix(".md").read_text().split("## Test set")[1]


def test_finding_one_arm_did_not_predict_is_never_compared(tmp_path):
    """drr_5's predictions lack Atelectasis: its AUC is n/a, no arm is compared on it with
    drr_5, and drr_5's macro Δ is over the findings both it and the baseline have."""
    preds = _preds()
    preds.loc[preds.arm == "drr_5", "p_Atelectasis"] = np.nan
    page, summary = render.write_report(tmp_path, preds, CLASSES, n_boot=100)
    assert _row(summary, "drr_5", "Atelectasis").na_reason == "not predicted"
    gap = _row(summary, "drr_5", "Atelectasis")
    assert np.isnan(gap.delta) and gap.delta_na_reason == "not predicted by drr_5"
    assert np.isfinite(_row(summary, "synthex_5", "Atelectasis").delta)
    macro = _row(summary, "drr_5", "macro")
    assert macro.macro_over == "Effusion, Cardiomegaly, Pneumonia"
    assert macro.delta_macro_over == "Effusion, Cardiomegaly, Pneumonia"
    # Δ macro by hand: per fold, mean over the three shared findings of arm AUC - baseline AUC
    common = ["Effusion", "Cardiomegaly", "Pneumonia"]
    diffs = []
    for fold in range(3):
        a = preds[(preds.arm == "drr_5") & (preds.fold == fold)]
        b = preds[(preds.arm == "baseline") & (preds.fold == fold)]
        diffs.append(
            np.mean([roc_auc_score(a[f"y_{c}"], a[f"p_{c}"]) for c in common])
            - np.mean([roc_auc_score(b[f"y_{c}"], b[f"p_{c}"]) for c in common])
        )
    assert macro.delta == pytest.approx(np.mean(diffs))
    assert _row(summary, "synthex_5", "macro").delta_macro_over == ", ".join(CLASSES)
    text = page.with_suffix(".md").read_text()
    assert "n/a (not predicted by drr_5)" in text and "n/a (not predicted)" in text
    # a missing column is the same as NaN probabilities
    dropped = _preds()
    dropped = dropped.assign(p_Atelectasis=dropped["p_Atelectasis"].where(dropped.arm != "drr_5"))
    again = render.summarise_test_set(dropped, CLASSES, n_boot=100)
    assert _row(again, "drr_5", "macro").delta == pytest.approx(macro.delta)


def test_extra_tables_follow_the_notes(tmp_path):
    exposure = pd.DataFrame({"arm": ["baseline", "drr_5"], "steps": [100, 100]})
    page, _ = render.write_report(
        tmp_path,
        _preds(),
        CLASSES,
        n_boot=50,
        notes=["a note"],
        extra_tables=[("Per-arm exposure", exposure)],
    )
    text = page.with_suffix(".md").read_text()
    assert text.index("a note") < text.index("*Per-arm exposure*") < text.index("Glossary")
    assert "| drr_5 | 100 |" in text


def test_arm_without_a_model_pair_is_not_compared(tmp_path):
    """drr_5 has only fold 2, the baseline only folds 0 and 1: nothing to pair, n/a."""
    preds = _preds()
    preds = preds[
        ~((preds.arm == "drr_5") & (preds.fold < 2))
        & ~((preds.arm == "baseline") & (preds.fold == 2))
    ]
    page, summary = render.write_report(tmp_path, preds, CLASSES, n_boot=50)
    rows = summary[summary.arm == "drr_5"]
    assert (rows["delta_na_reason"] == "no model trained for both").all()
    assert rows["delta"].isna().all() and (rows["n_pairs"] == 0).all()
    assert np.isfinite(rows["auc_mean"]).all()  # its own AUCs are still reported
    text = page.with_suffix(".md").read_text()
    assert "n/a (no model trained for both)" in text
    assert render.variance_table(summary) is not None


def test_one_model_pair_is_marked_test_patients_only(tmp_path):
    preds = _preds()
    page, summary = render.write_report(tmp_path, preds[preds.fold == 0], CLASSES, n_boot=100)
    macro = _row(summary, "synthex_5", "macro")
    assert macro.n_pairs == 1 and macro.delta_ci_covers.startswith("test patients only")
    text = page.with_suffix(".md").read_text()
    assert "the interval covers test patients only" in text and " † " in text
    assert render.variance_table(summary)["df"].tolist() == ["∞", "∞"]
