"""The reader study's statistics by simulation: the figures in docs/reader_study.md.

* **Blinding gate** (``gensyn.reader.audit``): how often it stops a build whose sources
  are drawn from one distribution (false alarm), and how often it catches one feature of
  15 moved by 1 sd in one source (power), at 20 images per source, beside the old gate
  (5-fold logistic-regression accuracy > 0.65) on the same simulated audits.
* **Cluster intervals** (``gensyn.reader.analyze``): how often the 95% cluster interval
  and the Wilson interval cover the true mean accuracy of studies with reader and image
  random effects (logit-normal, truth by Gauss-Hermite quadrature).

    python benchmarks/reader_stats.py gate --sources 2 --shift 1.0 --audits 1000
    python benchmarks/reader_stats.py coverage --reader-sd 0.5 --image-sd 1.0 --studies 300

Seeded; prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from gensyn.reader.analyze import analyze
from gensyn.reader.audit import AuditParams, audit_sources

NAMES = ("real", "drr", "synthex")  # the first is real, the others fake; the giveaway is in drr


def old_gate(x: np.ndarray, y: np.ndarray, seed: int) -> bool:
    """The gate before: 5-fold CV accuracy of a standardised logistic regression > 0.65."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        return bool(cross_val_score(model, x, y, cv=cv).mean() > 0.65)


def gate(args: argparse.Namespace) -> dict[str, object]:
    """Share of simulated audits in which the gate stops the build."""
    n, f = args.images, 15
    cov = args.correlation + (1 - args.correlation) * np.eye(f)
    root = np.linalg.cholesky(cov).T
    params = AuditParams(audit_alpha=args.alpha, audit_permutations=args.permutations)
    truth = {s: ("real" if s == "real" else "fake") for s in NAMES[: args.sources]}
    stopped, old, by_test = 0, 0, {"cv": 0, "feature": 0}
    for i in range(args.audits):
        rng = np.random.default_rng([args.seed, i])
        x = rng.standard_normal((args.sources * n, f)) @ root
        x[n : 2 * n, 0] += args.shift
        table = pd.DataFrame(x, columns=[f"f{j}" for j in range(f)])
        table.insert(0, "source", np.repeat(NAMES[: args.sources], n))
        pairs, _ = audit_sources(table, truth, params, seed=i)
        stopped += bool(pairs["fails"].any())
        gated = pairs[pairs["fails"]]
        by_test["cv"] += bool((gated["cv_p"] <= gated["threshold"]).any())
        by_test["feature"] += bool((gated["worst_p"] <= gated["threshold"]).any())
        if args.old:
            y = np.repeat([0, 1], n)
            old += old_gate(x[: 2 * n], y, i)
    out = {"stopped": stopped / args.audits, "by_cv_test": by_test["cv"] / args.audits,
           "by_feature_test": by_test["feature"] / args.audits}  # fmt: skip
    if args.old:
        out["old_gate"] = old / args.audits
    return out


def true_accuracy(mu: float, reader_sd: float, image_sd: float) -> float:
    """E[expit(mu + reader effect + image effect)] by 2-D Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    grid = expit(mu + reader_sd * x[:, None] + image_sd * x[None, :])
    return float((w[:, None] * w[None, :] * grid).sum())


def coverage(args: argparse.Namespace) -> dict[str, object]:
    """Share of simulated studies whose 95% intervals cover the true mean accuracy."""
    per = args.images
    key = pd.DataFrame({"image_id": [f"i{j:03d}" for j in range(3 * per)],
                        "source": np.repeat(NAMES, per)})  # fmt: skip
    key["truth"] = np.where(key["source"] == "real", "real", "fake")
    truth = true_accuracy(args.mu, args.reader_sd, args.image_sd)
    other = {"real": "fake", "fake": "real"}
    hits = {"cluster": 0, "wilson": 0, "source_cluster": 0, "source_wilson": 0}
    width = {"cluster": 0.0, "wilson": 0.0}
    for s in range(args.studies):
        rng = np.random.default_rng([args.seed, s])
        reader = rng.normal(0, args.reader_sd, args.readers)
        image = rng.normal(0, args.image_sd, len(key))
        right = rng.random((args.readers, len(key))) < expit(args.mu + reader[:, None] + image)
        answers = pd.DataFrame(
            [(f"R{r}", key["image_id"][j], t if right[r, j] else other[t], "", 1.0)
             for r in range(args.readers) for j, t in enumerate(key["truth"])],
            columns=["reader_id", "image_id", "verdict", "reason", "lead_time_s"],
        )  # fmt: skip
        res = analyze(answers, key, bootstrap_replicates=args.replicates, seed=s)
        o, src = res.overall, res.sources
        for name, low, high in (("cluster", "accuracy_cluster_ci_low", "accuracy_cluster_ci_high"),
                                ("wilson", "accuracy_ci_low", "accuracy_ci_high")):  # fmt: skip
            hits[name] += o[low] <= truth <= o[high]
            width[name] += (o[high] - o[low]) / args.studies
            hits["source_" + name] += int(((src[low] <= truth) & (truth <= src[high])).sum())
    n_src = 3 * args.studies
    return {"truth": round(truth, 4),
            "cover_cluster": hits["cluster"] / args.studies,
            "cover_wilson": hits["wilson"] / args.studies,
            "cover_source_cluster": hits["source_cluster"] / n_src,
            "cover_source_wilson": hits["source_wilson"] / n_src,
            "width_cluster": round(width["cluster"], 4), "width_wilson": round(width["wilson"], 4)}  # fmt: skip


def main() -> None:
    """Parse the command line, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    g = sub.add_parser("gate")
    g.add_argument("--sources", type=int, default=2, choices=(2, 3))
    g.add_argument("--images", type=int, default=20, help="images per source")
    g.add_argument("--shift", type=float, default=1.0, help="sd by which f0 moves in drr")
    g.add_argument("--correlation", type=float, default=0.0, help="between any two features")
    g.add_argument("--audits", type=int, default=1000)
    g.add_argument("--permutations", type=int, default=1000)
    g.add_argument("--alpha", type=float, default=0.05)
    g.add_argument("--old", action="store_true", help="also the old fixed-threshold gate")
    g.add_argument("--seed", type=int, default=7)
    c = sub.add_parser("coverage")
    c.add_argument("--readers", type=int, default=3)
    c.add_argument("--images", type=int, default=20, help="images per source (3 sources)")
    c.add_argument("--mu", type=float, default=2.0, help="logit of a typical answer's accuracy")
    c.add_argument("--reader-sd", type=float, default=0.5)
    c.add_argument("--image-sd", type=float, default=1.0)
    c.add_argument("--studies", type=int, default=300)
    c.add_argument("--replicates", type=int, default=1000)
    c.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    start = time.perf_counter()
    result = gate(args) if args.what == "gate" else coverage(args)
    print(json.dumps(vars(args) | result | {"seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
