"""Blinding audit: can simple whole-image features tell the study's sources apart?

A reader should judge anatomy and texture, not framing, borders or grey levels. The audit
computes features a reader could pick up at a glance (grey-level statistics, border and
corner statistics, the share of the image inside the exposed field, the power spectrum)
and asks, for every pair of sources, how well a logistic regression on them separates
the two (stratified cross-validated accuracy). Pairs of a real and a fake source above
``max_accuracy`` mean the blinding leaks; pairs of two fake (or two real) sources are
reported but cannot give the truth away. Arrays in, tables out; no file I/O here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class AuditParams:
    """When the audit stops a build."""

    max_accuracy: float = 0.65  # cross-validated accuracy above this for a real/fake pair fails
    min_images_per_source: int = 10  # fewer: reported, never judged (CV on a handful is noise)
    force: bool = False  # build anyway, with a warning recorded next to the key

    def __post_init__(self) -> None:
        if not 0.5 <= self.max_accuracy <= 1.0:
            raise ValueError(f"max_accuracy must be in [0.5, 1], got {self.max_accuracy}")


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


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Stratified k-fold (k <= 5) accuracy of a standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(5, np.bincount(y).min()))
    if folds < 2:
        return float("nan")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, x, y, cv=cv, scoring="accuracy").mean())


def audit_sources(
    features: pd.DataFrame, truth: Mapping[str, str], params: AuditParams, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair of sources: CV accuracy and the features that give a source away.

    ``features``: one row per image, a ``source`` column and feature columns;
    ``truth``: source -> "real" | "fake". Returns (pairs, per-feature separations):
    pairs has ``source_a, source_b, n_a, n_b, real_vs_fake, cv_accuracy, judged, fails,
    giveaway`` (features with the largest single-feature separation, max(AUC, 1 - AUC)).
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    names = [c for c in features.columns if c != "source"]
    pairs, per_feature = [], []
    for a, b in itertools.combinations(list(dict.fromkeys(features["source"])), 2):
        sub = features[features["source"].isin([a, b])]
        y = (sub["source"] == b).to_numpy().astype(int)
        n_a, n_b = int((y == 0).sum()), int((y == 1).sum())
        seps = {}
        for name in names:
            auc = float(roc_auc_score(y, sub[name])) if sub[name].nunique() > 1 else 0.5
            seps[name] = max(auc, 1 - auc)
            per_feature.append(
                {"source_a": a, "source_b": b, "feature": name, "separation": seps[name]}
            )
        accuracy = cv_accuracy(sub[names].to_numpy(), y, seed)
        judged = min(n_a, n_b) >= params.min_images_per_source
        real_vs_fake = truth[a] != truth[b]
        ranked = sorted(seps, key=lambda k: seps[k], reverse=True)
        giveaway = [k for k in ranked if seps[k] >= 0.8][:4] or ranked[:1]
        pairs.append({
            "source_a": a, "source_b": b, "n_a": n_a, "n_b": n_b, "real_vs_fake": real_vs_fake,
            "cv_accuracy": accuracy, "judged": judged,
            "fails": bool(judged and real_vs_fake and accuracy > params.max_accuracy),
            "giveaway": ", ".join(f"{k} ({seps[k]:.2f})" for k in giveaway),
        })  # fmt: skip
    return pd.DataFrame(pairs), pd.DataFrame(per_feature)


def failure_message(pairs: pd.DataFrame, max_accuracy: float) -> str:
    """One line per failing pair (empty string if none)."""
    bad = pairs[pairs["fails"]]
    return "\n".join(
        f"  {r.source_a} vs {r.source_b}: accuracy {r.cv_accuracy:.2f} > {max_accuracy:.2f}; "
        f"given away by {r.giveaway}"
        for r in bad.itertuples()
    )


def feature_table(images: Sequence[np.ndarray], sources: Sequence[str]) -> pd.DataFrame:
    """:func:`image_features` of every image, with its ``source``."""
    import pandas as pd

    rows = [{"source": s, **image_features(img)} for img, s in zip(images, sources, strict=True)]
    return pd.DataFrame(rows)
