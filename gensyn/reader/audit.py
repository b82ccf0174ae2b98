"""Blinding audit: can simple whole-image features tell the study's sources apart?

A reader should judge anatomy and texture, not framing, borders or grey levels. The audit
computes features a reader could pick up at a glance (grey-level statistics, border and
corner statistics, the share of the image inside the exposed field, the power spectrum)
and, for every pair of sources, runs two permutation tests of "the two sources' images
are drawn from one distribution":

* **all features together**: the stratified cross-validated accuracy (k <= 5) of a
  standardised least-squares (ridge) linear classifier, against the accuracies it reaches
  when the images are shuffled between the two sources (Ojala & Garriga 2010, JMLR 11:1833);
* **the worst single feature**: the largest separation max(AUC, 1 - AUC) of any one
  feature, against the largest separation under the same shuffles (the max-T permutation
  test of Westfall & Young 1993, which corrects for having looked at every feature).

Both p-values are ``(1 + shuffles at least as extreme) / (1 + shuffles)``, exact under
the hypothesis. A pair of a real and a fake source fails when either p-value is at most
``alpha`` / 2 / (number of judged real/fake pairs): the chance that a build whose sources
differ in nothing stops is at most ``alpha`` (Bonferroni over both tests and all pairs).
Pairs of two fake (or two real) sources are reported but cannot give the truth away.
Arrays in, tables out; no file I/O here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gensyn.base.bounds import bounded, check_instance

if TYPE_CHECKING:
    import pandas as pd

#: Ridge penalty of the audit's classifier on standardised features (scikit-learn's default).
RIDGE_ALPHA = 1.0
#: Shuffles evaluated at once by :func:`shuffled_separations` (bounds its memory).
BLOCK = 256


@dataclass
class AuditParams:
    """When the audit stops a build (module docstring): the ``reader_study.blinding`` group's
    ``audit_*`` keys. Per real/fake pair of sources, permutation tests of a classifier's CV
    accuracy and of the worst single feature; ``audit_alpha`` bounds the chance that a build
    whose sources differ in nothing stops (split over both tests and all real/fake pairs)."""

    audit_alpha: float = bounded(0.05, gt=0, le=0.5)  # chance of stopping a blind build (at most)
    audit_permutations: int = bounded(1000, ge=200)  # label shuffles per pair of sources
    # fewer images in a source: reported, never judged (CV on a handful is noise)
    audit_min_images_per_source: int = bounded(10, ge=2)

    def __post_init__(self) -> None:
        check_instance(self, "reader_study.blinding.")


def image_features(pix: np.ndarray) -> dict[str, float]:
    """Whole-image features of a square grey image (any range; shape N×N)."""
    img = np.asarray(pix, dtype=np.float64)
    n = img.shape[0]
    b, c = max(1, n // 20), max(1, n // 10)
    border = np.concatenate(
        [img[:b].ravel(), img[-b:].ravel(), img[:, :b].ravel(), img[:, -b:].ravel()]
    )
    corners = np.array([q.mean() for q in (img[:c, :c], img[:c, -c:], img[-c:, :c], img[-c:, -c:])])
    lo, hi = float(img.min()), float(img.max())
    p5, p25, p50, p75, p95 = np.percentile(img, [5, 25, 50, 75, 95])
    # radially averaged power spectrum: share of power above half Nyquist, and its log-log slope
    power = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    yy, xx = np.indices(power.shape)
    radius = np.hypot(yy - n // 2, xx - n // 2).astype(int)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.maximum(np.bincount(radius.ravel()), 1)
    f = np.arange(1, n // 2)
    slope = float(np.polyfit(np.log(f), np.log(radial[f] + 1e-12), 1)[0]) if f.size > 1 else 0.0
    total = float(radial[1 : n // 2].sum()) or 1.0
    return {
        "mean": float(img.mean()),
        "std": float(img.std()),
        "p5": float(p5),
        "p25": float(p25),
        "median": float(p50),
        "p75": float(p75),
        "p95": float(p95),
        "border_mean": float(border.mean()),
        "border_std": float(border.std()),
        "corner_mean": float(corners.mean()),
        "corner_max": float(corners.max()),
        "corner_spread": float(np.ptp(corners)),
        "field_fraction": float((img > lo + 0.05 * (hi - lo)).mean()),
        "high_freq_power": float(radial[n // 4 : n // 2].sum()) / total,
        "spectrum_slope": slope,
    }


def cv_folds(y: np.ndarray, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (k = min(5, smaller class)) train/test indices, shuffled with ``seed``."""
    from sklearn.model_selection import StratifiedKFold

    folds = int(min(5, np.bincount(y, minlength=2).min()))
    if folds < 2:
        return []
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros((y.size, 1)), y))


def shuffled_cv_accuracy(
    x: np.ndarray, y: np.ndarray, orders: np.ndarray, seed: int = 0
) -> np.ndarray:
    """CV accuracy of the audit's classifier with the images reordered by each row of ``orders``.

    ``x``: images × features; ``y``: 0/1 source of each image; ``orders``: shuffles × images,
    each row a permutation (the identity gives the observed accuracy). Row ``k`` of the
    result is the mean over the :func:`cv_folds` of the accuracy of a ridge classifier
    (features standardised on the training fold, penalty :data:`RIDGE_ALPHA`, labels ±1,
    class 1 where the decision is > 0), trained and tested on ``x[orders[k]]`` against
    ``y``: what scikit-learn's ``StandardScaler`` + ``RidgeClassifier`` give with these
    folds. Labels and folds stay in place and the images move, so every shuffle keeps the
    folds stratified. nan for every row when a class has fewer than 2 images.
    """
    from threadpoolctl import threadpool_limits

    folds = cv_folds(y, seed)
    if not folds:
        return np.full(len(orders), np.nan)
    # Standardising is affine-invariant: scale every feature once so sums of squares stay
    # well conditioned, then get each shuffle's training-fold moments from 2-D products
    # (which images sit in the fold, per shuffle) instead of copying the images around.
    spread = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    sign = np.where(y == 1, 1.0, -1.0)
    position = np.argsort(orders, axis=1)  # [k, m]: where shuffle k puts image m
    out = np.zeros(len(orders))
    with threadpool_limits(1, user_api="blas"):  # small products: threads only cost here
        for train, test in folds:
            out += _fold_accuracy(z, sign, position, train, test)
    return out / len(folds)


def _fold_accuracy(
    z: np.ndarray, sign: np.ndarray, position: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """Per shuffle, the test-fold accuracy of :func:`shuffled_cv_accuracy` for one fold."""
    n_img, n_feat = z.shape
    squares = (z[:, :, None] * z[:, None, :]).reshape(n_img, n_feat * n_feat)
    in_fold = np.zeros(n_img, dtype=bool)
    in_fold[train] = True
    trains = in_fold[position].astype(np.float64)  # shuffles × images
    n_train, offset = float(train.size), float(sign[train].mean())
    mean = trains @ z / n_train
    cov = (trains @ squares).reshape(-1, n_feat, n_feat) / n_train
    cov -= mean[:, :, None] * mean[:, None, :]
    var = np.diagonal(cov, axis1=1, axis2=2)
    scale = np.sqrt(np.where(var > 1e-12, var, 1.0))  # constant: stays 0, as in sklearn
    gram = n_train * cov / (scale[:, :, None] * scale[:, None, :])
    gram += RIDGE_ALPHA * np.eye(n_feat)
    target = (sign[position] - offset) * trains  # centred ±1 label of training images
    rhs = (target @ z) / scale
    weights = np.linalg.solve(gram, rhs[..., None])[..., 0] / scale
    decision = weights @ z.T - (mean * weights).sum(axis=1, keepdims=True) + offset
    right = (decision > 0) == (sign[position] > 0)
    return (right & ~in_fold[position]).sum(axis=1) / test.size


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """The audit classifier's cross-validated accuracy on ``x`` (images × features) vs ``y``."""
    return float(shuffled_cv_accuracy(x, y, np.arange(y.size)[None, :], seed)[0])


def shuffled_separations(x: np.ndarray, y: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Every feature's separation max(AUC, 1 - AUC) with the images reordered by ``orders``.

    Shapes as :func:`shuffled_cv_accuracy`; returns shuffles × features. The AUC is the
    Mann-Whitney one (ties count one half), computed from mid-ranks: it equals
    ``sklearn.metrics.roc_auc_score(y, x[order, j])``; a constant feature gives 0.5.
    """
    from scipy.stats import rankdata

    ranks = rankdata(x, axis=0)  # images × features; reordering images reorders ranks
    ones = y == 1
    n1, n0 = int(ones.sum()), int((~ones).sum())
    if n1 == 0 or n0 == 0:
        return np.full((len(orders), x.shape[1]), np.nan)
    out = np.empty((len(orders), x.shape[1]))
    for start in range(0, len(orders), BLOCK):
        block = orders[start : start + BLOCK]
        rank_sum = ranks[block[:, ones]].sum(axis=1)  # shuffles × features
        out[start : start + BLOCK] = (rank_sum - n1 * (n1 + 1) / 2) / (n0 * n1)
    return np.maximum(out, 1.0 - out)


def permutation_p(observed: float | np.ndarray, null: np.ndarray) -> np.ndarray:
    """(number of ``null`` values >= ``observed``) / ``null.size``, per observed value.

    ``null`` holds the observed statistic itself (the identity shuffle) and the shuffled
    ones, so the smallest p-value is 1 / (1 + shuffles). Ties (within 1e-12) count as
    at least as extreme.
    """
    obs = np.atleast_1d(np.asarray(observed, dtype=np.float64))
    return (null[None, :] >= obs[:, None] - 1e-12).mean(axis=1)


def permutation_audit(
    x: np.ndarray, y: np.ndarray, permutations: int, seed: int = 0
) -> dict[str, object]:
    """Both permutation tests (module docstring) of one pair of sources.

    ``x``: images × features, ``y``: 0/1 source. The same ``permutations`` seeded shuffles
    drive both tests. Returns ``cv_accuracy``, ``cv_p``, ``separation`` (per feature),
    ``feature_p`` (per feature, max-T adjusted), ``worst_feature`` (index) and ``worst_p``.
    """
    rng = np.random.default_rng(seed)
    n = y.size
    orders = np.vstack(
        [np.arange(n)[None, :], rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1)]
    )
    accuracy = shuffled_cv_accuracy(x, y, orders, seed)
    separations = shuffled_separations(x, y, orders)
    worst = separations.max(axis=1)
    observed = separations[0]
    cv_p = float(permutation_p(accuracy[0], accuracy)[0]) if np.isfinite(accuracy[0]) else np.nan
    return {
        "cv_accuracy": float(accuracy[0]),
        "cv_p": cv_p,
        "separation": observed,
        "feature_p": permutation_p(observed, worst),
        "worst_feature": int(np.argmax(observed)),
        "worst_p": float(permutation_p(worst[0], worst)[0]),
    }


def audit_sources(
    features: pd.DataFrame, truth: Mapping[str, str], params: AuditParams, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair of sources: both permutation tests and the features that give a source away.

    ``features``: one row per image, a ``source`` column and feature columns;
    ``truth``: source -> "real" | "fake". Returns (pairs, per-feature separations).
    pairs has ``source_a, source_b, n_a, n_b, real_vs_fake, cv_accuracy, cv_p,
    worst_feature, worst_separation, worst_p, threshold, judged, fails, giveaway``:
    ``threshold`` is the p-value at or below which a judged real/fake pair fails
    (``alpha`` / 2 / judged real/fake pairs); ``giveaway`` lists the features with the
    largest separation (at most four with separation >= 0.8, else the largest).
    per-feature has ``source_a, source_b, feature, separation, p_adjusted`` (max-T).
    """
    import pandas as pd

    names = [c for c in features.columns if c != "source"]
    sources = list(dict.fromkeys(features["source"]))
    combos = list(itertools.combinations(sources, 2))
    counts = features["source"].value_counts()
    judged = {
        (a, b): bool(min(counts[a], counts[b]) >= params.audit_min_images_per_source)
        for a, b in combos
    }
    gated = sum(judged[c] and truth[c[0]] != truth[c[1]] for c in combos)
    threshold = params.audit_alpha / 2 / max(gated, 1)
    if gated and 1 / (params.audit_permutations + 1) > threshold:
        raise ValueError(
            f"audit permutations={params.audit_permutations} cannot reach p <= {threshold:.4g} "
            f"(alpha {params.audit_alpha} over 2 tests and {gated} real/fake pairs): "
            f"use at least {int(np.ceil(1 / threshold))}"
        )
    pairs, per_feature = [], []
    for index, (a, b) in enumerate(combos):
        sub = features[features["source"].isin([a, b])]
        y = (sub["source"] == b).to_numpy().astype(int)
        test = permutation_audit(
            sub[names].to_numpy(dtype=np.float64), y, params.audit_permutations, seed + index
        )
        seps = dict(zip(names, np.asarray(test["separation"]).tolist(), strict=True))
        for name, p in zip(names, np.asarray(test["feature_p"]).tolist(), strict=True):
            per_feature.append({"source_a": a, "source_b": b, "feature": name,
                                "separation": seps[name], "p_adjusted": p})  # fmt: skip
        real_vs_fake = truth[a] != truth[b]
        ranked = sorted(seps, key=lambda k: seps[k], reverse=True)
        giveaway = [k for k in ranked if seps[k] >= 0.8][:4] or ranked[:1]
        cv_p, worst_p = float(test["cv_p"]), float(test["worst_p"])  # type: ignore[arg-type]
        leaks = cv_p <= threshold or worst_p <= threshold
        pairs.append({
            "source_a": a, "source_b": b, "n_a": int((y == 0).sum()), "n_b": int((y == 1).sum()),
            "real_vs_fake": real_vs_fake, "cv_accuracy": test["cv_accuracy"], "cv_p": cv_p,
            "worst_feature": ranked[0], "worst_separation": seps[ranked[0]], "worst_p": worst_p,
            "threshold": threshold, "judged": judged[(a, b)],
            "fails": bool(judged[(a, b)] and real_vs_fake and leaks),
            "giveaway": ", ".join(f"{k} ({seps[k]:.2f})" for k in giveaway),
        })  # fmt: skip
    return pd.DataFrame(pairs), pd.DataFrame(per_feature)


def failure_message(pairs: pd.DataFrame) -> str:
    """One line per failing pair (empty string if none)."""
    bad = pairs[pairs["fails"]]
    return "\n".join(
        f"  {r.source_a} vs {r.source_b}: accuracy {r.cv_accuracy:.2f} (p = {r.cv_p:.4f}), "
        f"worst feature {r.worst_feature} {r.worst_separation:.2f} (p = {r.worst_p:.4f}), "
        f"limit p <= {r.threshold:.4f}; given away by {r.giveaway}"
        for r in bad.itertuples()
    )


def feature_table(images: Sequence[np.ndarray], sources: Sequence[str]) -> pd.DataFrame:
    """:func:`image_features` of every image, with its ``source``."""
    import pandas as pd

    rows = [{"source": s, **image_features(img)} for img, s in zip(images, sources, strict=True)]
    return pd.DataFrame(rows)
