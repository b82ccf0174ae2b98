"""Reader-study statistics against published values, statsmodels and hand counts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from gensyn.reader.analyze import (
    ClusterBootstrap,
    analyze,
    fleiss_kappa,
    score_answers,
    wilson_interval,
)
from gensyn.reader.report import write_report

# Fleiss (1971) as reproduced in most textbooks: 10 items, 14 raters, 5 categories, kappa 0.210
FLEISS_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_textbook_and_statsmodels() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        votes = rng.integers(0, 3, size=(15, 4))  # 15 items, 4 raters, 3 categories
        table = np.stack([(votes == c).sum(axis=1) for c in range(3)], axis=1)
        assert fleiss_kappa(table) == pytest.approx(
            sm_fleiss_kappa(table, method="fleiss"), abs=1e-12
        )
    assert fleiss_kappa(np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 1], [1, 1]]))


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    # Newcombe (1998), Stat Med 17:857, table II, method 3 (Wilson score without correction)
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_published_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert got == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-12)


def test_wilson_interval_edges() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _tiny_study() -> tuple[pd.DataFrame, pd.DataFrame]:
    key = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "source": ["xr", "xr", "drr", "synthex"],
            "truth": ["real", "real", "fake", "fake"],
        }
    )
    answers = pd.DataFrame(
        [
            ("R1", "a", "real", "", 10.0),
            ("R1", "b", "fake", "too smooth", 20.0),  # false alarm
            ("R1", "c", "fake", "no noise", 30.0),
            ("R1", "d", "uncertain", "ribs odd", 40.0),
            ("R2", "a", "real", "", 5.0),
            ("R2", "b", "real", "", 5.0),
            ("R2", "c", "fake", "edges", 7.0),
            ("R2", "d", "real", "", 9.0),  # missed fake
        ],
        columns=["reader_id", "image_id", "verdict", "reason", "lead_time_s"],
    )
    return answers, key


def test_uncertain_rules_by_hand() -> None:
    answers, key = _tiny_study()
    # R1 d is uncertain on a fake image.
    expected = {  # rule -> (overall correct, counted, sensitivity k/n, specificity k/n)
        "wrong": (5, 8, (2, 4), (3, 4)),  # counted as 'real' on a fake: missed
        "exclude": (5, 7, (2, 3), (3, 4)),
        "fake": (6, 8, (3, 4), (3, 4)),
        "real": (5, 8, (2, 4), (3, 4)),
    }
    for rule, (k, n, sens, spec) in expected.items():
        res = analyze(answers, key, uncertain_as=rule)
        o = res.overall
        assert (o["accuracy_k"], o["accuracy_n"]) == (k, n), rule
        assert (o["sensitivity_k"], o["sensitivity_n"]) == sens, rule
        assert (o["specificity_k"], o["specificity_n"]) == spec, rule
        assert o["accuracy_ci_low"] == pytest.approx(wilson_interval(k, n)[0])
        assert o["uncertain"] == 1
    with pytest.raises(ValueError, match="uncertain_as must be one of"):
        score_answers(answers, key, "maybe")


def test_per_reader_source_agreement_time_reasons(tmp_path: Path) -> None:
    answers, key = _tiny_study()
    res = analyze(answers, key, uncertain_as="wrong", readers=["R1", "R2", "R3"])
    readers = res.readers.set_index("reader_id")
    assert readers.loc["R1", "accuracy_k"] == 2 and readers.loc["R2", "accuracy_k"] == 3
    assert readers.loc["R2", "specificity"] == 1.0 and readers.loc["R2", "sensitivity"] == 0.5
    sources = res.sources.set_index("source")
    assert sources.loc["xr", "accuracy_k"] == 3 and sources.loc["xr", "accuracy_n"] == 4
    assert (
        sources.loc["synthex", "said_uncertain"] == 1 and sources.loc["synthex", "accuracy_k"] == 0
    )
    # kappa by hand: items a(real 2) b(real 1, fake 1) c(fake 2) d(real 1, unc 1), n=2 raters
    p_i = np.array([1, 0, 1, 0])
    p_j = np.array([4, 3, 1]) / 8  # real, fake, uncertain
    kappa = (p_i.mean() - (p_j**2).sum()) / (1 - (p_j**2).sum())
    assert res.agreement["fleiss_kappa"] == pytest.approx(kappa)
    t = res.time_by_reader.set_index("reader_id")
    assert t.loc["R1", "median_s"] == 25.0 and t.loc["R2", "mean_s"] == 6.5
    assert list(res.reasons["reason"]) == ["no noise", "edges", "ribs odd", "too smooth"]
    assert len(res.missing) == 4 and set(res.missing["reader_id"]) == {"R3"}

    html = write_report(res, tmp_path, "Reader study")
    text = (tmp_path / "report.md").read_text()
    assert "uncertain_as=wrong" in text and "Fleiss" in text and html.is_file()
    for fig in ("correct_by_source.png", "readers.png", "time_by_source.png"):
        assert (tmp_path / "figures" / fig).stat().st_size > 1000


def test_unknown_image_is_an_error() -> None:
    answers, key = _tiny_study()
    with pytest.raises(ValueError, match="not in the answer key"):
        score_answers(answers, key[key["image_id"] != "a"])


def test_cluster_interval_by_hand() -> None:
    """2 readers × 3 images, three hand-picked replicates: rates, variance, design effect,
    effective n and the Wilson interval at that n, all computed by hand."""
    answers = pd.DataFrame({"reader_id": ["R1"] * 3 + ["R2"] * 3, "image_id": ["a", "b", "c"] * 2})
    hits = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    counted = np.ones(6, dtype=bool)
    boot = ClusterBootstrap(
        readers=("R1", "R2"),
        images=("a", "b", "c"),
        reader_weights=np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]]),
        image_weights=np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]),
    )
    # replicate 1: R1 twice, every image once: 4 of 6; replicate 2: R1 + R2, a twice and c:
    # R1 (a, a, c) = 2, R2 (a, a, c) = 2 -> 4 of 6; replicate 3: R2 twice, b twice and c: 0 of 6
    rates = boot.replicates_of(answers, hits, counted, over_readers=True)
    assert rates == pytest.approx([4 / 6, 4 / 6, 0.0])
    variance = ((2 / 9) ** 2 * 2 + (4 / 9) ** 2) / 2  # around the mean 4/9, ddof 1
    design_effect = variance / (0.5 * 0.5 / 6)  # p = 3/6
    n_eff = 6 / design_effect
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / n_eff + z * z / (4 * n_eff**2)) / (1 + z * z / n_eff)
    low, high, deff = boot.interval(answers, hits, counted)
    assert deff == pytest.approx(design_effect) and deff == pytest.approx(96 / 27)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert (low, high) == pytest.approx(
        proportion_confint(0.5 * n_eff, n_eff, alpha=0.05, method="wilson")
    )
    # one reader, readers fixed: R1 gets 2 of 3 in every replicate -> no spread -> Wilson
    r1 = answers["reader_id"] == "R1"
    one = boot.interval(answers[r1], hits[r1.to_numpy()], counted[:3], over_readers=False)
    assert one == pytest.approx((*wilson_interval(2, 3), 1.0))
    # a rate of 1 keeps the plain Wilson interval
    assert boot.interval(answers, counted, counted) == pytest.approx((*wilson_interval(6, 6), 1.0))


def test_bootstrap_draws_readers_and_images_within_each_source() -> None:
    sources = {f"x{i}": "xr" for i in range(5)} | {f"d{i}": "drr" for i in range(3)}
    boot = ClusterBootstrap.draw(["R1", "R2", "R3"], sources, 20000, seed=1)
    assert (boot.reader_weights.sum(axis=1) == 3).all()
    by_source = np.array([sources[i] for i in boot.images])
    assert (boot.image_weights[:, by_source == "xr"].sum(axis=1) == 5).all()
    assert (boot.image_weights[:, by_source == "drr"].sum(axis=1) == 3).all()
    again = ClusterBootstrap.draw(["R1", "R2", "R3"], sources, 20000, seed=1)
    assert np.array_equal(boot.image_weights, again.image_weights)
    # two readers right on every image, one wrong on every image: the rate is the mean of
    # 3 readers drawn with replacement, variance (population variance of 1, 1, 0) / 3 = 2/27
    answers = pd.DataFrame(
        [(r, i) for r in ("R1", "R2", "R3") for i in sorted(sources)],
        columns=["reader_id", "image_id"],
    )
    hits = np.concatenate([np.ones(16), np.zeros(8)]).astype(bool)
    rates = boot.replicates_of(answers, hits, np.ones(24, dtype=bool), over_readers=True)
    assert rates.var() == pytest.approx(2 / 27, rel=0.03)
    with pytest.raises(ValueError, match="replicates must be >= 100"):
        ClusterBootstrap.draw(["R1"], sources, 10, seed=0)


def _true_accuracy(mu: float, reader_sd: float, image_sd: float) -> float:
    """E[expit(mu + reader effect + image effect)] by 2-D Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    grid = expit(mu + reader_sd * x[:, None] + image_sd * x[None, :])
    return float((w[:, None] * w[None, :] * grid).sum())


def test_cluster_intervals_cover_the_truth_where_wilson_does_not() -> None:
    """300 simulated studies, 3 readers × 60 images (3 sources × 20): a reader's and an
    image's random effects (sd 0.5 and 1.0 on the logit scale) around 88% correct. The
    cluster interval of the pooled and per-source accuracy covers the true mean accuracy
    at about its nominal 95%; the Wilson interval, which treats the answers as
    independent, covers it far less often."""
    truth_of_source = {"xr": "real", "drr": "fake", "syn": "fake"}
    key = pd.DataFrame({"image_id": [f"i{j:02d}" for j in range(60)],
                        "source": np.repeat(list(truth_of_source), 20)})  # fmt: skip
    key["truth"] = key["source"].map(truth_of_source)
    truth = _true_accuracy(2.0, 0.5, 1.0)
    other = {"real": "fake", "fake": "real"}
    covered = {"cluster": [], "wilson": [], "source_cluster": [], "source_wilson": []}
    for study in range(300):
        rng = np.random.default_rng([11, study])
        reader, image = rng.normal(0, 0.5, 3), rng.normal(0, 1.0, 60)
        right = rng.random((3, 60)) < expit(2.0 + reader[:, None] + image[None, :])
        answers = pd.DataFrame(
            [(f"R{r}", key["image_id"][j], t if right[r, j] else other[t], "", 1.0)
             for r in range(3) for j, t in enumerate(key["truth"])],
            columns=["reader_id", "image_id", "verdict", "reason", "lead_time_s"],
        )  # fmt: skip
        res = analyze(answers, key, bootstrap_replicates=1000, seed=study)
        o, src = res.overall, res.sources
        covered["cluster"].append(
            o["accuracy_cluster_ci_low"] <= truth <= o["accuracy_cluster_ci_high"]
        )
        covered["wilson"].append(o["accuracy_ci_low"] <= truth <= o["accuracy_ci_high"])
        covered["source_cluster"] += list(
            (src["accuracy_cluster_ci_low"] <= truth) & (truth <= src["accuracy_cluster_ci_high"])
        )
        covered["source_wilson"] += list(
            (src["accuracy_ci_low"] <= truth) & (truth <= src["accuracy_ci_high"])
        )
    rate = {k: float(np.mean(v)) for k, v in covered.items()}
    assert 0.90 <= rate["cluster"] <= 0.99, rate
    assert 0.90 <= rate["source_cluster"] <= 0.99, rate
    assert rate["wilson"] < 0.85 and rate["source_wilson"] < 0.90, rate


def test_report_shows_cluster_intervals_and_verdict_shares(tmp_path: Path) -> None:
    answers, key = _tiny_study()
    res = analyze(answers, key, bootstrap_replicates=500, seed=3)
    again = analyze(answers, key, bootstrap_replicates=500, seed=3)
    assert res.overall == again.overall  # seeded
    o = res.overall
    assert o["accuracy_cluster_ci_low"] <= o["accuracy"] <= o["accuracy_cluster_ci_high"]
    assert o["accuracy_design_effect"] >= 1.0
    xr = res.sources.set_index("source").loc["xr"]
    assert xr["said_fake_share"] == 0.25 and xr["said_real_share"] == 0.75
    assert xr["said_fake_share_cluster_ci_low"] <= 0.25 <= xr["said_fake_share_cluster_ci_high"]
    write_report(res, tmp_path, "Reader study")
    text = (tmp_path / "report.md").read_text()
    assert "cluster intervals" in text and "500 bootstrap replicates" in text
    assert "said fake (95% CI)" in text and "design effect" in text
    assert "Wilson CI (independent answers)" in text
    saved = pd.read_csv(tmp_path / "sources.csv")
    assert "said_uncertain_share_cluster_ci_high" in saved.columns
    assert "accuracy_cluster_ci_low" in (tmp_path / "results.json").read_text()
