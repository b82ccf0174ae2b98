"""AUC, bootstrap CI and paired comparison against scikit-learn and hand-computed answers.

The intervals and comparisons of one test set are those the report computes
(:func:`gensyn.report.summary.summarise_test_set`, from this module's building blocks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gensyn.report import metrics
from gensyn.report.summary import summarise_test_set

CLASSES = ["a", "b", "c"]


def _toy(n_images: int = 300, n_patients: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_patients, size=n_images)
    y = (rng.random((n_images, 3)) < [0.3, 0.5, 0.1]).astype(int)
    signal = np.array([1.5, 0.5, 1.0])
    score = 1 / (1 + np.exp(-(y * signal + rng.normal(size=y.shape))))
    return y, score, patients


def _preds(y: np.ndarray, patients: np.ndarray, **arms: np.ndarray) -> pd.DataFrame:
    """A test set's predictions table, one model (fold 0) per arm: ``arm=scores``; the first
    arm is the baseline ("baseline", source none), the others DRR arms."""
    frames = []
    for i, (arm, scores) in enumerate(arms.items()):
        frames.append(
            pd.DataFrame(
                {
                    "arm": arm,
                    "source": "none" if i == 0 else "drr",
                    "views_per_ct": 1 if i == 0 else 5,
                    "fold": 0,
                    "test_set": "toy",
                    "image_id": [f"i{n}" for n in range(len(y))],
                    "patient_id": [f"p{q}" for q in patients],
                    **{f"y_{c}": y[:, k] for k, c in enumerate(CLASSES)},
                    **{f"p_{c}": scores[:, k] for k, c in enumerate(CLASSES)},
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _ci_table(n_images: int, n_patients: int, n_boot: int, seed: int) -> pd.DataFrame:
    """One arm's AUC and bootstrap interval per class and macro, indexed by class."""
    y, s, patients = _toy(n_images, n_patients)
    table = summarise_test_set(_preds(y, patients, baseline=s), CLASSES, n_boot=n_boot, seed=seed)
    return table.set_index("class")


def _delong_variance(y: np.ndarray, s: np.ndarray) -> float:
    """DeLong's variance of one AUC, S10 / m + S01 / n, from its structural components."""
    v10, v01 = metrics.delong_components(y, s)
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


def test_auc_hand_computed_with_ties():
    # positives 0.8, 0.4; negatives 0.4, 0.1, 0.9 -> pairs: (0.8>0.4,0.8>0.1,0.8<0.9) = 2,
    # (0.4=0.4 -> .5, 0.4>0.1 -> 1, 0.4<0.9 -> 0) = 1.5  => 3.5 / 6
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.8, 0.4, 0.4, 0.1, 0.9])
    assert metrics.roc_auc(y, s) == pytest.approx(3.5 / 6)


def test_auc_matches_sklearn_on_rounded_scores():
    y, s, _ = _toy()
    s = np.round(s, 1)  # many ties
    for k in range(3):
        assert metrics.roc_auc(y[:, k], s[:, k]) == pytest.approx(roc_auc_score(y[:, k], s[:, k]))
    macro = metrics.macro_of(metrics.per_class_auc(y, s))
    assert macro == pytest.approx(roc_auc_score(y, s, average="macro"))


def test_auc_undefined_class_is_nan_and_skipped_in_macro():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.2], [0.7, 0.5]])
    per = metrics.per_class_auc(y, s)
    assert per[0] == pytest.approx(0.75) and np.isnan(per[1])
    assert metrics.macro_of(per) == pytest.approx(0.75)


def test_weighted_auc_equals_auc_of_repeated_images():
    """A bootstrap weight of k must count like k copies of the image (checked by sklearn)."""
    y, s, _ = _toy(n_images=80)
    s = np.round(s, 1)
    rng = np.random.default_rng(3)
    w = rng.integers(0, 4, size=(5, y.shape[0])).astype(float)
    sc = metrics._SortedClass(y[:, 0], s[:, 0])
    got = sc.auc(w)
    for b in range(5):
        rep = np.repeat(np.arange(y.shape[0]), w[b].astype(int))
        assert got[b] == pytest.approx(roc_auc_score(y[rep, 0], s[rep, 0]))


def test_bootstrap_resamples_whole_patients():
    """Replicates are identical to a by-hand patient bootstrap with the same draws."""
    y, s, patients = _toy(n_images=120, n_patients=30)
    reps = metrics.bootstrap_auc_replicates(y, [s], patients, n_boot=20, seed=5)[0]
    rng = np.random.default_rng(5)
    uniq, inverse = np.unique(patients, return_inverse=True)
    counts = rng.multinomial(uniq.size, np.full(uniq.size, 1 / uniq.size), size=20)
    for b in range(20):
        # build the replicate explicitly: each drawn patient contributes all its images
        rows = np.concatenate(
            [
                np.flatnonzero(inverse == p).repeat(1)
                for p in np.repeat(np.arange(uniq.size), counts[b])
            ]
        )
        for k in range(3):
            if 0 < y[rows, k].sum() < rows.size:
                assert reps[b, k] == pytest.approx(roc_auc_score(y[rows, k], s[rows, k]))
            else:
                assert np.isnan(reps[b, k])


def test_ci_contains_point_and_shrinks_with_more_patients():
    small = _ci_table(200, 50, n_boot=400, seed=1)
    large = _ci_table(2000, 500, n_boot=400, seed=1)
    y, s, _ = _toy(2000, 500)
    for k, name in enumerate(CLASSES):
        assert large.loc[name, "auc_mean"] == pytest.approx(roc_auc_score(y[:, k], s[:, k]))
    assert large.loc["macro", "auc_mean"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    for name in [*CLASSES, "macro"]:
        for table in (small, large):
            assert table.loc[name, "ci_low"] <= table.loc[name, "auc_mean"]
            assert table.loc[name, "auc_mean"] <= table.loc[name, "ci_high"]
        width_small = small.loc[name, "ci_high"] - small.loc[name, "ci_low"]
        width_large = large.loc[name, "ci_high"] - large.loc[name, "ci_low"]
        assert width_large < width_small


def test_ci_width_agrees_with_delong_for_independent_images():
    """With one image per patient the bootstrap SD and DeLong's SD estimate the same thing."""
    y, s, _ = _toy(3000, 3000, seed=2)
    patients = np.arange(y.shape[0])
    reps = metrics.bootstrap_auc_replicates(y, [s], patients, n_boot=1000, seed=0)[0]
    for k in range(3):
        sd_boot = np.nanstd(reps[:, k])
        sd_delong = np.sqrt(_delong_variance(y[:, k], s[:, k]))
        assert sd_boot == pytest.approx(sd_delong, rel=0.12)


def test_same_seed_same_ci():
    a = _ci_table(300, 100, n_boot=100, seed=7)
    pd.testing.assert_frame_equal(a, _ci_table(300, 100, n_boot=100, seed=7))
    other = _ci_table(300, 100, n_boot=100, seed=8)
    assert not np.allclose(a["ci_low"], other["ci_low"])


def test_delong_components_match_definition():
    y, s, _ = _toy(60)
    s = np.round(s, 1)
    yk, sk = y[:, 0].astype(bool), s[:, 0]
    pos, neg = sk[yk], sk[~yk]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = metrics.delong_components(yk, sk)
    np.testing.assert_allclose(v10, psi.mean(axis=1))
    np.testing.assert_allclose(v01, psi.mean(axis=0))


def test_delong_paired_hand_computed():
    """Two positives, two negatives: everything worked out on paper.

    Model A: pos (0.9, 0.6), neg (0.5, 0.1) -> AUC 1, all components 1, variance 0.
    Model B: pos (0.9, 0.3), neg (0.5, 0.1) -> v10 = (1, 0.5), v01 = (0.5, 1), AUC 0.75.
    var(A - B) = var(v10 diff)/2 + var(v01 diff)/2 = 0.125/2 + 0.125/2 = 0.125,
    z = 0.25 / sqrt(0.125).
    """
    y = np.array([1, 1, 0, 0])
    a = np.array([0.9, 0.6, 0.5, 0.1])
    b = np.array([0.9, 0.3, 0.5, 0.1])
    z, p = metrics.delong_paired_test(y, a, b)
    assert z == pytest.approx(0.25 / np.sqrt(0.125))
    from scipy.stats import norm

    assert p == pytest.approx(2 * norm.sf(0.25 / np.sqrt(0.125)))


def test_paired_comparison_detects_better_model_and_not_equal_one():
    y, s, patients = _toy(1500, 500, seed=4)
    rng = np.random.default_rng(9)
    better = 1 / (1 + np.exp(-(y * 2.5 + rng.normal(size=y.shape))))
    preds = _preds(y, patients, baseline=s, better=better, same=s.copy())
    table = summarise_test_set(preds, CLASSES, n_boot=500, seed=0)
    base = table[table.arm == "baseline"].set_index("class")
    res = table[table.arm == "better"].set_index("class")
    for k, name in enumerate([*CLASSES, "macro"]):
        r = res.loc[name]
        assert r["delta"] == pytest.approx(r["auc_mean"] - base.loc[name, "auc_mean"])
        if k < len(CLASSES):
            truth = roc_auc_score(y[:, k], better[:, k]) - roc_auc_score(y[:, k], s[:, k])
            assert r["delta"] == pytest.approx(truth)
        assert r["delta_ci_low"] <= r["delta"] <= r["delta_ci_high"]
    assert res.loc["macro", "delta_ci_low"] > 0 and res.loc["macro", "p_bootstrap"] < 0.01
    assert res.loc["macro", "p_value"] < 0.01
    assert res.loc["a", "p_delong_ensemble"] < 0.01
    same = table[table.arm == "same"].set_index("class")
    assert same.loc["macro", "delta"] == 0 and same.loc["macro", "p_bootstrap"] == 1.0
    assert same.loc["a", "p_bootstrap"] == 1.0


# --- corrected resampled t-test across trained models ------------------------------------


def test_corrected_ttest_without_correction_is_scipy_paired_ttest():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(11)
    base = rng.uniform(0.7, 0.8, size=7)
    model = base + rng.normal(0.01, 0.01, size=7)
    res = metrics.corrected_resampled_ttest(model, base, test_train_ratio=0.0)
    ref = ttest_rel(model, base)
    assert res.t == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert res.n_pairs == 7 and res.df == 6 and res.note == ""


def test_corrected_ttest_hand_computed():
    """d = (0.02, 0.01, 0.03, 0.00, 0.04): mean 0.02, var = (0+1+1+4+4)e-4 / 4 = 2.5e-4.

    k = 5 folds: n_test/n_train = 1/4; (1/5 + 1/4) · 2.5e-4 = 1.125e-4,
    t = 0.02 / sqrt(1.125e-4) = 1.885618083..., 4 degrees of freedom.
    """
    base = np.array([0.80, 0.75, 0.70, 0.72, 0.78])
    model = base + np.array([0.02, 0.01, 0.03, 0.00, 0.04])
    ratio = metrics.kfold_test_train_ratio(5)
    assert ratio == 0.25
    res = metrics.corrected_resampled_ttest(model, base, ratio)
    assert res.mean_diff == pytest.approx(0.02)
    assert res.sd_diff == pytest.approx(np.sqrt(2.5e-4))
    assert res.t == pytest.approx(1.8856180831641267)
    assert res.df == 4
    # the uncorrected t would be 0.02 / sqrt(2.5e-4 / 5) = 2.828...: the correction shrinks it
    assert res.t < 0.02 / np.sqrt(2.5e-4 / 5)


def test_corrected_ttest_p_from_t_distribution():
    """Two-sided p of Student's t by the regularised incomplete beta function, and statsmodels."""
    from scipy.special import betainc
    from statsmodels.stats.weightstats import _tstat_generic

    rng = np.random.default_rng(5)
    base = rng.uniform(0.6, 0.9, size=15)  # 3 seeds × 5 folds
    model = base + rng.normal(0.005, 0.02, size=15)
    res = metrics.corrected_resampled_ttest(model, base, metrics.kfold_test_train_ratio(5))
    df = 14
    assert res.p_value == pytest.approx(betainc(df / 2, 0.5, df / (df + res.t**2)))
    d = model - base
    se = np.sqrt((1 / 15 + 0.25) * d.var(ddof=1))
    t_sm, p_sm = _tstat_generic(d.mean(), 0.0, se, df, "two-sided", diff=0)
    assert res.t == pytest.approx(t_sm) and res.p_value == pytest.approx(p_sm)


def test_corrected_ttest_degenerate_and_invalid_inputs():
    a = np.array([0.8, 0.7, 0.75])
    same = metrics.corrected_resampled_ttest(a, a, 0.25)
    assert same.p_value == 1.0 and np.isnan(same.t) and "0" in same.note
    shifted = metrics.corrected_resampled_ttest(a + 0.01, a, 0.25)
    assert np.isnan(shifted.p_value) and "equal" in shifted.note
    with pytest.raises(ValueError, match="at least 2"):
        metrics.corrected_resampled_ttest(a[:1], a[:1], 0.25)
    with pytest.raises(ValueError, match="shapes"):
        metrics.corrected_resampled_ttest(a, a[:2], 0.25)
    with pytest.raises(ValueError, match="finite"):
        metrics.corrected_resampled_ttest(np.array([0.8, np.nan]), np.array([0.7, 0.6]), 0.25)
    with pytest.raises(ValueError, match=">= 0"):
        metrics.corrected_resampled_ttest(a, a, -1.0)
    with pytest.raises(ValueError, match="n_folds >= 2"):
        metrics.kfold_test_train_ratio(1)
