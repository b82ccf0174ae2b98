"""Reader-study statistics against published values, statsmodels and hand counts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from gensyn.reader.analyze import analyze, fleiss_kappa, score_answers, wilson_interval
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
