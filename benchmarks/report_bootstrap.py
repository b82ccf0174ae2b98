"""The report's patient bootstrap of AUCs at the study's size, against the image-weight way.

``stage=report`` draws ``report.n_bootstrap`` (2,000) patient-level replicates of every
model's per-finding AUC on the test set: at the thesis grid's size 45 models × 5 findings on
27,471 PadChest test images. This times :func:`gensyn.report.metrics.bootstrap_auc_replicates`
(draws per patient through sparse patient × score-group products, (model, finding) pairs in
threads) against the same replicates computed the way the report did before (an image-sized
weight matrix per chunk of replicates, one tie-group bincount per model and finding, one
thread), on the same draws; and one replicate of each model and finding against
scikit-learn's ``roc_auc_score`` on the explicitly resampled images. Scores are rounded to
bfloat16's 8 bits of mantissa, so ties occur as in the study's predictions.

    python benchmarks/report_bootstrap.py                       # the study's size
    python benchmarks/report_bootstrap.py --models 4 --boot 200 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from gensyn.report import metrics


def simulated(n_models: int, n_images: int, n_patients: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:  # fmt: skip
    """Labels (n, 5), one score array per model (n, 5), patient ids: signal plus model noise."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_patients, n_images)
    y = (rng.random((n_images, 5)) < [0.08, 0.02, 0.06, 0.05, 0.03]).astype(float)
    truth = y * 0.8 + rng.normal(size=y.shape)
    scores = []
    for _ in range(n_models):
        s = 1 / (1 + np.exp(-(truth + 0.5 * rng.normal(size=y.shape))))
        mant, expo = np.frexp(s)  # bfloat16: 8 significant bits
        scores.append(np.ldexp(np.round(mant * 256) / 256, expo))
    return y, scores, patients


def image_weight_way(y: np.ndarray, scores: list[np.ndarray], patients: np.ndarray, n_boot: int, seed: int, chunk: int = 200) -> np.ndarray:  # fmt: skip
    """The previous implementation: image weights (B, n) and tie-group bincounts, one thread."""
    _, pid = np.unique(patients, return_inverse=True)
    n_pat = int(pid.max()) + 1
    rng = np.random.default_rng(seed)
    sorted_cls = [[metrics._SortedClass(y[:, k], s[:, k]) for k in range(y.shape[1])] for s in scores]  # fmt: skip
    out = np.full((len(scores), n_boot, y.shape[1]), np.nan)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        counts = rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=stop - start)
        w = counts[:, pid].astype(np.float64)
        for m, per in enumerate(sorted_cls):
            for k, sc in enumerate(per):
                out[m, start:stop, k] = sc.auc(w)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=int, default=45)
    p.add_argument("--images", type=int, default=27_471)
    p.add_argument("--patients", type=int, default=24_000)
    p.add_argument("--boot", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="JSON of the figures")
    a = p.parse_args()
    y, scores, patients = simulated(a.models, a.images, a.patients, a.seed)
    start = time.perf_counter()
    ours = metrics.bootstrap_auc_replicates(y, scores, patients, a.boot, a.seed)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    before = image_weight_way(y, scores, patients, a.boot, a.seed)
    before_s = time.perf_counter() - start
    # one replicate by hand with scikit-learn: the resampled images, explicitly
    _, pid = np.unique(patients, return_inverse=True)
    n_pat = int(pid.max()) + 1
    counts = np.random.default_rng(a.seed).multinomial(n_pat, np.full(n_pat, 1.0 / n_pat))
    rows = np.repeat(np.arange(a.images), counts[pid])
    start = time.perf_counter()
    sk = np.array([[roc_auc_score(y[rows, k], s[rows, k]) for k in range(5)] for s in scores])
    sk_s = time.perf_counter() - start
    figures = {
        "models": a.models, "images": a.images, "patients": int(n_pat), "replicates": a.boot,
        "cpus": os.cpu_count(), "threads": min(metrics.BOOTSTRAP_THREADS, os.cpu_count() or 1),
        "ours_s": round(ours_s, 2), "image_weights_s": round(before_s, 2),
        "speedup": round(before_s / ours_s, 2),
        "max_abs_difference_vs_image_weights": float(np.nanmax(np.abs(ours - before))),
        "max_abs_difference_replicate_0_vs_sklearn": float(np.nanmax(np.abs(ours[:, 0, :] - sk))),
        "sklearn_one_replicate_s": round(sk_s, 2),
        "sklearn_all_replicates_s_extrapolated": round(sk_s * a.boot, 0),
    }  # fmt: skip
    print(json.dumps(figures, indent=1))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
