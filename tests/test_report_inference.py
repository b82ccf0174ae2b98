"""The headline Δ's interval: special cases against known tests, calibration by simulation.

The simulation draws whole studies with a known true Δ: binormal scores (a positive image's
score is N(d, 1), a negative's N(0, 1), so a model's AUC is Φ(d/√2)), k = 5 trained models per
arm whose separations d_j = d + τ·m_j are equicorrelated with ρ = 1/k (the correlation
Nadeau & Bengio assume for k-fold cross-validation), and patients with 1-3 images that share a
patient effect (labels per patient). Image noise is partly shared by all models (patient and
image effects), partly by the models of one arm (what that arm's training taught all of its
models), partly each model's own. Each study is analysed exactly as the report does: every
model of both arms scored on the same patient-bootstrap replicates
(:func:`metrics.bootstrap_auc_replicates`), then :func:`inference.two_level_delta`.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gensyn.report import inference, metrics

K_FOLDS = 5


def _true_auc(d: float, tau: float) -> float:
    """E[Φ(d_j/√2)] over d_j ~ N(d, τ²): Φ((d/√2) / sqrt(1 + τ²/2))."""
    return float(stats.norm.cdf(d / np.sqrt(2) / np.sqrt(1 + tau**2 / 2)))


def _study(rng, n_patients, d_base, d_arm, tau, var_model_noise, var_arm_noise, n_boot=80):
    """One simulated study: (paired differences (J,), replicate differences (J, B), true Δ)."""
    shared_sd = np.sqrt((1 - var_model_noise - var_arm_noise) / 2)  # patient, image: equal parts
    n_img = rng.integers(1, 4, n_patients)
    patient = np.repeat(np.arange(n_patients), n_img)
    y = (rng.random(n_patients) < 0.3)[patient]
    shared = shared_sd * (rng.normal(size=n_patients)[patient] + rng.normal(size=patient.size))
    scores = []
    for d in (d_arm, d_base):
        arm_noise = np.sqrt(var_arm_noise) * rng.normal(size=patient.size)
        rho = 1 / K_FOLDS
        m = np.sqrt(rho) * rng.normal() + np.sqrt(1 - rho) * rng.normal(size=K_FOLDS)
        for j in range(K_FOLDS):
            noise = np.sqrt(var_model_noise) * rng.normal(size=patient.size)
            scores.append(((d + tau * m[j]) * y + shared + arm_noise + noise)[:, None])
    seed = int(rng.integers(2**31))
    reps = metrics.bootstrap_auc_replicates(y[:, None], scores, patient, n_boot, seed)[:, :, 0]
    full = np.array([metrics.roc_auc(y, s[:, 0]) for s in scores])
    true = _true_auc(d_arm, tau) - _true_auc(d_base, tau)
    return full[:K_FOLDS] - full[K_FOLDS:], reps[:K_FOLDS] - reps[K_FOLDS:], true


def _calibration(n_studies, seed, **regime):
    """(coverage of the 95% interval, share of studies with p < 0.05)."""
    rng = np.random.default_rng(seed)
    ratio = metrics.kfold_test_train_ratio(K_FOLDS)
    covered = rejected = 0
    for _ in range(n_studies):
        d, reps, true = _study(rng, **regime)
        res = inference.two_level_delta(d, reps, ratio)
        covered += res.ci_low <= true <= res.ci_high
        rejected += res.p_value < 0.05
    return covered / n_studies, rejected / n_studies


#: Training variability dominates: large test set, models' separations vary (τ = 0.15).
MODEL_DOMINATED = {"n_patients": 250, "tau": 0.15, "var_model_noise": 0.1, "var_arm_noise": 0.05}
#: Test-patient noise dominates: small test set, models' separations nearly alike (τ = 0.02).
TEST_DOMINATED = {"n_patients": 150, "tau": 0.02, "var_model_noise": 0.1, "var_arm_noise": 0.1}


@pytest.mark.parametrize(
    ("regime", "d_arm"),
    [(MODEL_DOMINATED, 1.1), (MODEL_DOMINATED, 1.0), (TEST_DOMINATED, 1.1), (TEST_DOMINATED, 1.0)],
    ids=["model-dominated", "model-dominated-null", "test-dominated", "test-dominated-null"],
)
def test_interval_covers_the_true_delta(regime, d_arm):
    """400 seeded studies: 95% coverage in 93-97%, and at Δ = 0 at most 6% false positives."""
    coverage, rejected = _calibration(400, seed=2024, d_base=1.0, d_arm=d_arm, **regime)
    assert 0.93 <= coverage <= 0.97, coverage
    if d_arm == 1.0:
        assert rejected <= 0.06, rejected


def test_one_source_intervals_are_not_calibrated():
    """The reason for the two-level interval: each one-source interval alone under-covers.

    Where training varies, the patient bootstrap (models fixed) misses it; where all models of
    an arm share what they learnt (arm-level image noise), the corrected t-test over models
    (test set fixed) misses the test-patient noise they share.
    """
    rng = np.random.default_rng(7)
    ratio = metrics.kfold_test_train_ratio(K_FOLDS)
    hits_boot = hits_models = 0
    n = 150
    for _ in range(n):
        d, reps, true = _study(rng, **MODEL_DOMINATED, d_base=1.0, d_arm=1.1)
        low, high = metrics.percentile_ci(reps.mean(axis=0))
        hits_boot += low <= true <= high
    for _ in range(n):
        d, reps, true = _study(rng, 150, 1.0, 1.1, 0.0, var_model_noise=0.01, var_arm_noise=0.3)
        res = metrics.corrected_resampled_ttest(d, np.zeros_like(d), ratio)
        half = stats.t.ppf(0.975, res.df) * res.sd_diff * np.sqrt(1 / d.size + ratio)
        hits_models += abs(res.mean_diff - true) <= half
    assert hits_boot / n < 0.85 and hits_models / n < 0.85, (hits_boot / n, hits_models / n)


def test_without_test_noise_it_is_the_corrected_resampled_ttest():
    """Replicates equal to the full-set differences (b = c = 0): Nadeau–Bengio exactly."""
    d = np.array([0.02, 0.01, 0.03, 0.00, 0.04])
    reps = np.repeat(d[:, None], 50, axis=1)
    res = inference.two_level_delta(d, reps, 0.25)
    ref = metrics.corrected_resampled_ttest(d, np.zeros(5), 0.25)
    assert res.delta == pytest.approx(0.02) and res.df == 4
    assert res.p_value == pytest.approx(ref.p_value)
    assert res.se == pytest.approx(np.sqrt((1 / 5 + 0.25) * 2.5e-4))
    assert res.ci_low == pytest.approx(0.02 - stats.t.ppf(0.975, 4) * res.se)
    assert res.covers == inference.COVERS_BOTH and res.var_shared_test == pytest.approx(0)


def test_variance_parts_by_hand():
    """J = 3, r = 0.5, replicate covariance known: every part and ν worked out on paper.

    Replicates R[j] = d_j + e_j with e = (u + v_j): three replicates of shared u and own v_j.
    """
    d = np.array([0.10, 0.04, 0.07])  # mean 0.07, s² = (9 + 9 + 0)e-4 / 2 = 9e-4
    u = np.array([-1.0, 0.0, 1.0, 0.0]) * 0.01
    v = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [-1, 1, 1, -1]]) * 0.02
    reps = d[:, None] + u[None, :] + v
    cov = np.cov(reps)
    b = (cov.sum() - np.trace(cov)) / 6
    c = np.trace(cov) / 3 - b
    s2 = 9e-4
    var = max(b, 0) + s2 / 3 + 0.5 * max(s2 - c, 0)
    res = inference.two_level_delta(d, reps, 0.5)
    assert res.var_shared_test == pytest.approx(max(b, 0))
    assert res.var_models == pytest.approx(s2 / 3)
    assert res.var_training_overlap == pytest.approx(0.5 * max(s2 - c, 0))
    assert res.se**2 == pytest.approx(var)
    est = s2 / 3 + (0.5 * s2 if s2 > c else 0)
    assert res.df == pytest.approx(max(2, 2 * (var / est) ** 2))
    assert res.p_value == pytest.approx(2 * stats.t.sf(0.07 / np.sqrt(var), res.df))


def test_one_pair_covers_test_patients_only_and_degenerate_cases():
    rng = np.random.default_rng(0)
    reps = 0.05 + 0.01 * rng.normal(size=(1, 400))
    res = inference.two_level_delta(np.array([0.05]), reps, 0.25)
    assert res.covers == inference.COVERS_TEST_ONLY and np.isinf(res.df)
    assert res.se == pytest.approx(reps.std(ddof=1))
    assert res.ci_high - res.ci_low == pytest.approx(2 * 1.959964 * res.se)
    same = inference.two_level_delta(np.zeros(3), np.zeros((3, 10)), 0.25)
    assert same.p_value == 1.0 and same.note
    # replicates without the finding (NaN) are dropped; all NaN: no result, with a reason
    gone = inference.two_level_delta(np.zeros(2), np.full((2, 10), np.nan), 0.25)
    assert np.isnan(gone.delta) and "replicates" in gone.note
    with pytest.raises(ValueError, match="replicate_diffs"):
        inference.two_level_delta(np.zeros(3), np.zeros((2, 10)), 0.25)
    with pytest.raises(ValueError, match="test_train_ratio"):
        inference.two_level_delta(np.zeros(3), np.zeros((3, 10)), -1)
