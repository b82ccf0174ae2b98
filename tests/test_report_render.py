"""The grid report: fold statistics against scikit-learn, paired deltas, files and figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gensyn.report import plots, render

CLASSES = ["Effusion", "Cardiomegaly"]


def _preds(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 200
    patients = rng.integers(0, 80, n)
    y = (rng.random((n, 2)) < 0.4).astype(int)
    rows = []
    arms = [("baseline", "none", 1, 1.0), ("drr_2", "drr", 2, 1.6), ("drr_5", "drr", 5, 2.2)]
    for arm, source, views, strength in arms:
        for fold in range(3):
            p = 1 / (1 + np.exp(-(strength * y + rng.normal(size=y.shape))))
            for i in range(n):
                rows.append(
                    {
                        "arm": arm,
                        "source": source,
                        "views_per_ct": views,
                        "fold": fold,
                        "test_set": "demo",
                        "image_id": f"i{i}",
                        "patient_id": f"p{patients[i]}",
                        **{f"y_{c}": y[i, k] for k, c in enumerate(CLASSES)},
                        **{f"p_{c}": p[i, k] for k, c in enumerate(CLASSES)},
                    }
                )
    return pd.DataFrame(rows)


def test_summary_matches_sklearn_and_orders_arms():
    preds = _preds()
    summary = render.summarise_test_set(preds, CLASSES, n_boot=300, seed=0)
    assert list(dict.fromkeys(summary["arm"])) == ["baseline", "drr_2", "drr_5"]
    for arm in ["baseline", "drr_5"]:
        per_fold = []
        for _, g in preds[preds.arm == arm].groupby("fold"):
            per_fold.append([roc_auc_score(g[f"y_{c}"], g[f"p_{c}"]) for c in CLASSES])
        per_fold = np.array(per_fold)
        rows = summary[summary.arm == arm].set_index("class")
        for k, c in enumerate(CLASSES):
            assert rows.loc[c, "auc_mean"] == pytest.approx(per_fold[:, k].mean())
            assert rows.loc[c, "auc_sd"] == pytest.approx(per_fold[:, k].std(ddof=1))
            assert rows.loc[c, "ci_low"] <= rows.loc[c, "auc_mean"] <= rows.loc[c, "ci_high"]
        assert rows.loc["macro", "auc_mean"] == pytest.approx(per_fold.mean())
    strong = summary[(summary.arm == "drr_5") & (summary["class"] == "macro")].iloc[0]
    assert strong.delta > 0 and strong.delta_ci_low > 0 and strong.p_value < 0.05
    assert (
        strong.p_bootstrap < 0.05 and strong.delta_ci_covers == "test patients and trained models"
    )
    assert np.isnan(summary[summary.arm == "baseline"]["delta"]).all()
    assert not summary[summary.arm == "baseline"]["vs_baseline"].any()


def test_write_report_files(tmp_path):
    page, table = render.write_report(tmp_path, _preds(), CLASSES, n_boot=100)
    assert page.is_file() and (tmp_path / "report.html").is_file()
    text = page.read_text()
    assert "drr_5" in text and "Test set: demo" in text
    assert (tmp_path / "figures" / "roc_demo.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "auc_vs_views_demo.png").stat().st_size > 1000
    assert set(table["arm"]) == {"baseline", "drr_2", "drr_5"}
    with pytest.raises(ValueError, match="lacks columns"):
        render.write_report(tmp_path, _preds().drop(columns="fold"), CLASSES)


def test_roc_points_match_sklearn():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(1)
    y = rng.random(100) < 0.3
    s = np.round(rng.random(100), 1)
    fpr, tpr = plots.roc_points(y, s)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_missing_note_groups_folds_by_arm():
    note = render.missing_note(
        [("baseline", 3), ("baseline", 1), ("drr_5", 0), ("drr_5", 1), ("drr_5", 2)], n_folds=3
    )
    assert note == "Not finished, so not in the tables: baseline (folds 1, 3); drr_5 (all 3 folds)."


def test_auc_vs_views_panels_share_ylim_and_draw_cis():
    from matplotlib.container import ErrorbarContainer
    from matplotlib.figure import Figure

    summary = render.summarise_test_set(_preds(), CLASSES, n_boot=100, seed=0)
    fig = plots.draw_auc_vs_views(Figure(figsize=(9, 3)), summary, CLASSES)
    axes = fig.axes
    assert len(axes) == len(CLASSES) + 1  # one panel per class and macro
    limits = {ax.get_ylim() for ax in axes}
    assert len(limits) == 1
    low, high = limits.pop()
    assert low <= summary["ci_low"].min() and high >= summary["ci_high"].max()
    for ax in axes:
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
        assert len(bars) == 1  # source drr: arms drr_2 and drr_5 as one line
        segments = bars[0].lines[2][0].get_segments()
        assert len(segments) == 2
        cls = ax.get_title()
        rows = summary[(summary["class"] == cls) & (summary["source"] == "drr")]
        rows = rows.sort_values("views_per_ct")
        for seg, (_, row) in zip(segments, rows.iterrows(), strict=True):
            assert seg[:, 1].min() == pytest.approx(row.ci_low)
            assert seg[:, 1].max() == pytest.approx(row.ci_high)


def test_report_has_glossary(tmp_path):
    from gensyn.report.glossary import REPORT_TERMS

    render.write_report(tmp_path, _preds(), CLASSES, n_boot=50)
    markdown = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    for term in ("macro AUC", "CI", "Δ", "Δ [CI]", "Holm p", "n/a (no positive case)"):
        line = f"| {term} | {REPORT_TERMS[term].format(pct='95%')} |"
        assert line in markdown
    assert "<td>macro AUC</td>" in html and "95% patient-level bootstrap" in html
