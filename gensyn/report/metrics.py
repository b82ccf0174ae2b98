"""ROC AUC, patient-level bootstrap replicates, DeLong's paired test, the corrected t-test.

The building blocks of the report's statistics: :mod:`gensyn.report.summary` assembles them
into per-arm intervals and comparisons with the baseline (with :mod:`gensyn.report.inference`).
All functions take arrays and return numbers or tables; nothing here reads files.

Conventions
-----------
* ``y_true``: (n_images,) or (n_images, n_classes) of 0/1 labels.
* ``y_score``: the same shape, predicted probabilities (any monotone score works).
* ``patient_ids``: (n_images,) labels of the patient each image belongs to. Bootstrap
  replicates resample *patients* with replacement and keep all of a patient's images,
  because images of one patient are not independent (the original study resampled nothing
  and split by image).

The AUC is the Mann-Whitney statistic: the probability that a random positive scores higher
than a random negative, ties counting one half. A class without positives or without
negatives has no AUC (NaN), nor has a class whose scores are missing (any NaN score: a model
that did not predict that finding); the macro AUC is the mean over classes that have one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

DEFAULT_N_BOOTSTRAP = 2000
#: threads computing a bootstrap's (model, class) pairs (at most the machine's cores)
BOOTSTRAP_THREADS = 8


def _as_2d(a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a)
    return arr[:, None] if arr.ndim == 1 else arr


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of one class (NaN if only one class is present).

    ``y_true`` and ``y_score`` are (n,) arrays. Ties between a positive and a negative score
    count one half (midranks), which is what scikit-learn's ``roc_auc_score`` computes.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(s).all():
        return float("nan")
    ranks = stats.rankdata(s)  # midranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """AUC of every column: (n, n_classes) arrays -> (n_classes,) (NaN where undefined)."""
    yt, ys = _as_2d(y_true), _as_2d(y_score)
    if yt.shape != ys.shape:
        raise ValueError(f"y_true shape {yt.shape} differs from y_score shape {ys.shape}")
    return np.array([roc_auc(yt[:, k], ys[:, k]) for k in range(yt.shape[1])])


# --- weighted AUC: the engine of the bootstrap -------------------------------------------


class _SortedClass:
    """One class's scores sorted once, so that many weighted AUCs cost O(n) each.

    With ``patient_of_image`` (and ``n_patients``), :meth:`auc_of_counts` takes the
    bootstrap's draws per patient directly: each score group's positive and negative weight
    is then a sparse product (patients × groups), never an image-sized weight matrix.
    """

    def __init__(
        self,
        y: np.ndarray,
        s: np.ndarray,
        patient_of_image: np.ndarray | None = None,
        n_patients: int = 0,
    ) -> None:
        order = np.argsort(s, kind="mergesort")
        self.order = order
        s_sorted = s[order]
        self.is_pos = y[order].astype(bool)
        # tie groups: index of each sorted element's group
        new_group = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        self.group = np.cumsum(new_group) - 1
        self.n_groups = int(self.group[-1]) + 1 if s.size else 0
        self.by_patient: tuple[sparse.csr_matrix, sparse.csr_matrix] | None = None
        if patient_of_image is not None:
            pid = np.asarray(patient_of_image)[order]
            shape = (n_patients, self.n_groups)
            self.by_patient = tuple(  # type: ignore[assignment]
                sparse.csr_matrix(
                    (np.ones(int(m.sum())), (pid[m], self.group[m])), shape=shape
                )  # images of a patient in a group: their count (duplicates summed)
                for m in (self.is_pos, ~self.is_pos)
            )

    def auc(self, w: np.ndarray) -> np.ndarray:
        """Weighted AUC for each row of weights ``w`` (B, n) in the original image order.

        AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg).
        """
        ws = w[:, self.order]
        w_pos = np.where(self.is_pos, ws, 0.0)
        w_neg = ws - w_pos
        if self.n_groups == ws.shape[1]:  # no ties (continuous scores): no tie groups needed
            num = np.einsum("ij,ij->i", w_pos, np.cumsum(w_neg, axis=1) - w_neg)
            den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        b = ws.shape[0]
        # one bincount over all rows: offset each row's group index by row * n_groups
        idx = (np.arange(b)[:, None] * self.n_groups + self.group[None, :]).ravel()
        size = b * self.n_groups
        pos_g = np.bincount(idx, weights=w_pos.ravel(), minlength=size).reshape(b, -1)
        neg_g = np.bincount(idx, weights=w_neg.ravel(), minlength=size).reshape(b, -1)
        return _grouped_auc(pos_g, neg_g)

    def auc_of_counts(self, counts: np.ndarray) -> np.ndarray:
        """Weighted AUC for each row of ``counts`` (B, n_patients): how often each patient
        was drawn; every image of a patient weighs its patient's count. The same numbers as
        :meth:`auc` of the image weights ``counts[:, patient_of_image]``."""
        assert self.by_patient is not None, "built without patient_of_image"
        pos, neg = self.by_patient
        # (B, P) @ (P, G) as (G, P) @ (P, B): the sparse matrix on the left
        pos_g = np.asarray((pos.T @ counts.T).T)
        neg_g = np.asarray((neg.T @ counts.T).T)
        return _grouped_auc(pos_g, neg_g)


def _grouped_auc(pos_g: np.ndarray, neg_g: np.ndarray) -> np.ndarray:
    """Weighted AUC per row from the positive and negative weight of each score group
    (columns in increasing score): ties count one half."""
    neg_below = np.cumsum(neg_g, axis=1) - neg_g  # negative weight strictly below each group
    num = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    den = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _patient_index(patient_ids: np.ndarray) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(np.asarray(patient_ids), return_inverse=True)
    return inverse.ravel(), int(inverse.max()) + 1 if inverse.size else 0


def bootstrap_auc_replicates(
    y_true: np.ndarray,
    y_scores: Sequence[np.ndarray],
    patient_ids: np.ndarray,
    n_boot: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
    chunk: int = 200,
) -> np.ndarray:
    """Per-class AUCs of several models on the same patient-level bootstrap replicates.

    ``y_scores`` holds one (n, n_classes) score array per model; all models see the same
    resampled patients in each replicate, which is what a paired comparison needs.
    Returns (n_models, n_boot, n_classes); NaN where a replicate lacks positives or negatives,
    and for every replicate of a model's class whose scores are missing (NaN).
    """
    yt = _as_2d(y_true)
    scores = [_as_2d(np.asarray(s, dtype=np.float64)) for s in y_scores]
    for s in scores:
        if s.shape != yt.shape:
            raise ValueError(f"score shape {s.shape} differs from label shape {yt.shape}")
    pid, n_pat = _patient_index(np.asarray(patient_ids))
    if pid.size != yt.shape[0]:
        raise ValueError(f"{pid.size} patient ids for {yt.shape[0]} images")
    rng = np.random.default_rng(seed)
    sorted_cls = [
        [_SortedClass(yt[:, k], s[:, k], pid, n_pat) if np.isfinite(s[:, k]).all() else None
         for k in range(yt.shape[1])]
        for s in scores
    ]  # fmt: skip
    jobs = [(m, k, sc) for m, per in enumerate(sorted_cls) for k, sc in enumerate(per) if sc]
    out = np.full((len(scores), n_boot, yt.shape[1]), np.nan)
    # the sparse products and sums release the GIL: (model, class) pairs in parallel threads
    threads = max(1, min(len(jobs), BOOTSTRAP_THREADS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, n_boot, chunk):
            stop = min(start + chunk, n_boot)
            counts = rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=stop - start).astype(
                np.float64
            )  # draws per patient: the same draws as image weights gave
            done = pool.map(
                _SortedClass.auc_of_counts, [job[2] for job in jobs], [counts] * len(jobs)
            )
            for (m, k, _), aucs in zip(jobs, done, strict=True):
                out[m, start:stop, k] = aucs
    return out


# --- DeLong ----------------------------------------------------------------------------


def delong_components(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one model's AUC.

    Returns (v10, v01): v10[i] = fraction of negatives a positive i beats (ties one half),
    shape (n_pos,); v01[j] = fraction of positives that beat negative j, shape (n_neg,).
    The AUC is ``v10.mean() == v01.mean()``. Computed with midranks (Sun & Xu, 2014) in
    O(n log n) instead of the O(n_pos × n_neg) definition.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    pos, neg = s[y], s[~y]
    n_pos, n_neg = pos.size, neg.size
    r_all = stats.rankdata(np.r_[pos, neg])
    r_pos, r_neg = stats.rankdata(pos), stats.rankdata(neg)
    v10 = (r_all[:n_pos] - r_pos) / n_neg
    v01 = 1.0 - (r_all[n_pos:] - r_neg) / n_pos
    return v10, v01


def delong_paired_test(
    y_true: np.ndarray, y_score_a: np.ndarray, y_score_b: np.ndarray
) -> tuple[float, float]:
    """DeLong's test of equal AUC for two models scored on the same images.

    Returns (z, two-sided p). NaN if the AUC is undefined or both models are identical.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    if y.all() or not y.any():
        return float("nan"), float("nan")
    v10a, v01a = delong_components(y, y_score_a)
    v10b, v01b = delong_components(y, y_score_b)
    s10 = np.cov(np.vstack([v10a, v10b])) if v10a.size > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01a, v01b])) if v01a.size > 1 else np.zeros((2, 2))
    cov = s10 / v10a.size + s01 / v01a.size
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    delta = v10a.mean() - v10b.mean()
    if var_diff <= 0:
        return float("nan"), float("nan")
    z = float(delta / np.sqrt(var_diff))
    return z, float(2 * stats.norm.sf(abs(z)))


# --- intervals and p-values of replicates -----------------------------------------------


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite values of ``replicates`` (NaN, NaN if none)."""
    reps = np.asarray(replicates, dtype=np.float64)
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_p_value(diff_replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference' (2 × the smaller tail mass at zero)."""
    diffs = np.asarray(diff_replicates, dtype=np.float64)
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return float("nan")
    tail = min((d <= 0).mean(), (d >= 0).mean())
    return float(min(1.0, 2.0 * tail))


def macro_of(per_class: np.ndarray) -> np.ndarray:
    """Macro average over the last axis, ignoring NaN classes (NaN where all are NaN)."""
    values = np.asarray(per_class, dtype=np.float64)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    n = finite.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


# --- comparing arms across trained models (folds × seeds) --------------------------------


def kfold_test_train_ratio(n_folds: int) -> float:
    """n_test / n_train of one k-fold split: the validation fold over the other k - 1 folds.

    This is the ratio the corrected resampled t-test uses for k-fold cross-validation, also
    when it is repeated with several seeds (Bouckaert & Frank 2004: J = seeds × k, same ratio).
    """
    if n_folds < 2:
        raise ValueError(f"k-fold cross-validation needs n_folds >= 2, got {n_folds}")
    return 1.0 / (n_folds - 1)


@dataclass(frozen=True)
class CorrectedTTest:
    """Nadeau–Bengio corrected resampled t-test of paired per-model differences.

    ``note`` is empty unless the test is degenerate (all differences equal), in which case
    ``p_value`` is 1 (all differences zero) or NaN (all equal but not zero) and ``t`` is NaN.
    """

    n_pairs: int
    mean_diff: float
    sd_diff: float
    t: float
    df: int
    p_value: float
    note: str = ""


def corrected_resampled_ttest(
    scores_model: np.ndarray, scores_baseline: np.ndarray, test_train_ratio: float
) -> CorrectedTTest:
    """Compare two learners over J paired trained models (e.g. folds × seeds).

    ``scores_model``, ``scores_baseline``: (J,) metric values (e.g. macro AUC) of the two
    learners' models, pair j trained on the same split and scored on the same test set.
    With d = model - baseline,

        t = mean(d) / sqrt((1/J + n_test/n_train) · var(d, ddof=1)),  J - 1 degrees of freedom,

    two-sided p. The plain paired t-test (``test_train_ratio=0``) treats the J models as
    independent, but their training sets overlap, so the d_j are positively correlated and
    var(d)/J underestimates the variance of mean(d); Nadeau & Bengio (2003) approximate the
    correlation by n_test / (n_test + n_train), which adds ``test_train_ratio`` to 1/J.
    Use :func:`kfold_test_train_ratio` for (repeated) k-fold cross-validation.
    """
    a = np.asarray(scores_model, dtype=np.float64)
    b = np.asarray(scores_baseline, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two (J,) arrays of paired values, got shapes {a.shape}, {b.shape}")
    if a.size < 2:
        raise ValueError(f"the corrected t-test needs at least 2 paired models, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite (drop models without a metric first)")
    if not (np.isfinite(test_train_ratio) and test_train_ratio >= 0):
        raise ValueError(f"test_train_ratio must be finite and >= 0, got {test_train_ratio}")
    d = a - b
    n, mean, var = d.size, float(d.mean()), float(d.var(ddof=1))
    sd = float(np.sqrt(var))
    if var <= 0.0:  # every pair differs by the same amount: no spread to test against
        if mean == 0.0:
            return CorrectedTTest(n, mean, sd, float("nan"), n - 1, 1.0, "all differences are 0")
        note = f"all {n} differences are equal ({mean:+.4g}); the t-test is undefined"
        return CorrectedTTest(n, mean, sd, float("nan"), n - 1, float("nan"), note)
    t = mean / np.sqrt((1.0 / n + test_train_ratio) * var)
    return CorrectedTTest(n, mean, sd, float(t), n - 1, float(2 * stats.t.sf(abs(t), n - 1)))
