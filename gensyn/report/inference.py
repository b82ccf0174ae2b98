"""The headline comparison: one interval and p-value for Δ that cover test patients *and* models.

Δ is the arm's mean AUC over its trained models minus the baseline's, over the J models
trained for both (pairs of the same fold and seed): Δ̂ = mean_j d_j with d_j = AUC of the
arm's model j - AUC of the baseline's model j, all on one test set. Δ̂ varies for two reasons:
which patients happened to be in the test set, and which models training happened to produce
(training data of the fold, initialisation, data order). A patient bootstrap alone misses the
second; a t-test over the d_j alone (Nadeau & Bengio's) treats the test set as fixed.

Method: the Obuchowski–Rockette analysis of multi-reader multi-case ROC studies, with trained
models as the readers and test patients as the cases (Obuchowski & Rockette 1995; Hillis 2007;
Hillis, Berbaum & Metz 2008), plus Nadeau & Bengio's (2003) correction for models trained on
overlapping data. With ``R`` the (J, B) differences of each model pair on B patient-bootstrap
replicates (every model of both arms scored on the same resampled patients):

* ``b`` = mean covariance over replicates between *different* pairs' differences: the
  test-patient noise every model shares; averaging over more models does not remove it
  (Obuchowski–Rockette's 2·(Cov2 - Cov3), here from the bootstrap instead of the jackknife);
* ``c`` = mean variance of one pair's difference over replicates, minus ``b``: the part of
  each model's test-set error that is its own;
* ``s²`` = var_j(d_j) (ddof 1): how much the paired differences spread across models. It
  contains the models' own test noise (expected ``c``) and the training variability.

    Var(Δ̂) = max(b, 0) + s²/J + r · max(s² - c, 0),

where ``s²/J`` is the usual variance of a mean over models (it already holds each model's own
test noise once), and ``r · max(s² - c, 0)`` is Nadeau & Bengio's correction applied to the
training part of the spread only: models trained on folds of one data set are correlated
(ρ ≈ n_test / (n_test + n_train)), which adds ρ/(1-ρ) = n_test/n_train = ``r`` times that
variance (``metrics.kfold_test_train_ratio``: 1/(k-1) for k folds; with several seeds the same
ratio, Bouckaert & Frank 2004). The interval is Δ̂ ± t_ν · sqrt(Var), the p-value two-sided
from the same t, with Hillis' (2007) Satterthwaite degrees of freedom: only ``s²`` is estimated
from few (J - 1 degrees of freedom) values, the bootstrap terms from many, so
ν = max(J - 1, (J - 1) · Var² / (s²/J + r·s²·[s² > c])²). Without test noise this is Nadeau &
Bengio's corrected resampled t-test exactly (ν = J - 1); ν grows as the shared test noise
dominates. The floor at J - 1 matters where s² barely exceeds c: Satterthwaite's formula, which
is unreliable for sums with a subtracted part (here -r·c), would then give ν < 1 and absurdly
wide intervals.

With one model pair (J = 1) nothing estimates the training variability: the interval is the
bootstrap's normal interval (test patients only) and says so (``covers``).

Calibration (tests/test_report_inference.py, binormal studies with known Δ, k = 5 models per
arm whose separations are equicorrelated with ρ = 1/5, patient clustering): see
docs/classification.md for the measured coverage and false-positive rates. The plain
Obuchowski–Rockette variance without ``r`` under-covers when training variability dominates;
adding ``r · s²`` (instead of ``r · (s² - c)``) over-covers (≈ 99 %) when each model's own test
noise dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: What the interval of :class:`DeltaInference` covers.
COVERS_BOTH = "test patients and trained models"
COVERS_TEST_ONLY = "test patients only (1 model pair: training variability not estimable)"


@dataclass(frozen=True)
class DeltaInference:
    """Δ̂ with its interval and p-value, and the variance parts it is built from.

    ``var_shared_test`` (max(b, 0)), ``var_models`` (s²/J) and ``var_training_overlap``
    (r·max(s² - c, 0)) add up to ``se**2``; ``df`` is the t distribution's degrees of
    freedom (inf: normal). ``note`` is empty unless the test is degenerate.
    """

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    df: float
    n_pairs: int
    var_shared_test: float
    var_models: float
    var_training_overlap: float
    covers: str
    note: str = ""


def _nan_result(n_pairs: int, note: str) -> DeltaInference:
    nan = float("nan")
    return DeltaInference(nan, nan, nan, nan, nan, nan, n_pairs, nan, nan, nan, "", note)


def two_level_delta(
    model_diffs: np.ndarray,
    replicate_diffs: np.ndarray,
    test_train_ratio: float,
    level: float = 0.95,
) -> DeltaInference:
    """Interval and two-sided p-value of Δ̂ = mean(model_diffs) over models and test patients.

    ``model_diffs``: (J,) paired differences d_j on the full test set (arm's model j minus the
    baseline's model j). ``replicate_diffs``: (J, B) the same differences on B patient
    bootstrap replicates (the same replicates for every model); replicates where any pair is
    NaN (a finding without a positive case in that replicate) are dropped. ``test_train_ratio``:
    n_test / n_train of the training folds (r). See the module docstring for the method.
    """
    d = np.asarray(model_diffs, dtype=np.float64).ravel()
    reps = np.asarray(replicate_diffs, dtype=np.float64)
    if reps.ndim != 2 or reps.shape[0] != d.size:
        raise ValueError(f"replicate_diffs must be ({d.size}, B), got shape {reps.shape}")
    if not (np.isfinite(test_train_ratio) and test_train_ratio >= 0):
        raise ValueError(f"test_train_ratio must be finite and >= 0, got {test_train_ratio}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    j = d.size
    if j == 0 or not np.isfinite(d).all():
        return _nan_result(j, "no paired model with this AUC")
    reps = reps[:, np.isfinite(reps).all(axis=0)]
    if reps.shape[1] < 2:
        return _nan_result(j, "fewer than 2 bootstrap replicates with this AUC")
    delta = float(d.mean())
    cov = np.atleast_2d(np.cov(reps))  # (J, J) over replicates
    if j == 1:
        var, df, covers = float(cov[0, 0]), float("inf"), COVERS_TEST_ONLY
        shared, models, overlap = var, 0.0, 0.0
    else:
        mean_var = float(np.trace(cov)) / j
        shared_cov = (float(cov.sum()) - float(np.trace(cov))) / (j * (j - 1))  # b
        own_test = mean_var - shared_cov  # c
        s2 = float(d.var(ddof=1))
        shared = max(shared_cov, 0.0)
        models = s2 / j
        overlap = test_train_ratio * max(s2 - own_test, 0.0)
        var = shared + models + overlap
        estimated = models + (test_train_ratio * s2 if s2 > own_test else 0.0)
        # Satterthwaite is unreliable for a sum with a subtracted part (-r·c): never fewer
        # degrees of freedom than the J - 1 of the models' spread itself
        df = max(j - 1.0, (j - 1) * (var / estimated) ** 2) if estimated > 0 else float("inf")
        covers = COVERS_BOTH
    if var <= 0:  # every model and replicate agrees: nothing to test against
        note = "no variability: every model and replicate gives the same difference"
        p = 1.0 if delta == 0 else float("nan")
        return DeltaInference(
            delta, delta, delta, p, 0.0, df, j, shared, models, overlap, covers, note
        )
    se = float(np.sqrt(var))
    q = float(stats.t.ppf(0.5 + level / 2, df))
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return DeltaInference(
        delta, delta - q * se, delta + q * se, p, se, float(df), j, shared, models, overlap, covers
    )
