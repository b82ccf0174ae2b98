"""Holm against statsmodels, the declared families, the primary comparison and its fallbacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from gensyn.report import multiplicity


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=12) ** 2
    p[3] = p[5]  # a tie
    p[[1, 8]] = np.nan  # not a test: stays NaN, not counted
    got = multiplicity.holm_adjust(p)
    finite = np.isfinite(p)
    ref = multipletests(p[finite], method="holm")[1]
    np.testing.assert_allclose(got[finite], ref)
    assert np.isnan(got[~finite]).all()


def test_holm_hand_computed_and_invalid():
    # sorted 0.01, 0.02, 0.04: 3 × 0.01 = 0.03; 2 × 0.02 = 0.04; 1 × 0.04 = 0.04
    np.testing.assert_allclose(multiplicity.holm_adjust([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])
    assert multiplicity.holm_adjust([]).size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multiplicity.holm_adjust([0.5, 1.5])


def _summary() -> pd.DataFrame:
    """Two test sets × baseline, drr_10, synthex_5, synthex_10 × two findings and macro."""
    rng = np.random.default_rng(0)
    rows = []
    arms = [("baseline", "none", 1), ("drr_10", "drr", 10), ("synthex_5", "synthex", 5),
            ("synthex_10", "synthex", 10)]  # fmt: skip
    for test_set in ("padchest", "chestxray14"):
        for arm, source, views in arms:
            for cls in ("Effusion", "Pneumonia", "macro"):
                compared = arm != "baseline"
                rows.append(
                    {
                        "test_set": test_set,
                        "arm": arm,
                        "source": source,
                        "views_per_ct": views,
                        "class": cls,
                        "vs_baseline": compared,
                        "delta": rng.normal(0, 0.02) if compared else np.nan,
                        "p_value": rng.uniform(0, 0.1) if compared else np.nan,
                    }
                )
    return pd.DataFrame(rows)


def test_families_and_primary():
    summary = _summary()
    primary = multiplicity.resolve_primary(
        summary, multiplicity.PrimaryComparison(), ["chestxray14"], "padchest"
    )
    assert primary == multiplicity.ResolvedPrimary("macro", "chestxray14", "synthex_10")
    out = multiplicity.assign_families(summary, primary)
    prim = out[out["primary"]]
    assert len(prim) == 1 and prim["family"].iloc[0] == "primary"
    assert prim["p_adjusted"].iloc[0] == prim["p_value"].iloc[0]  # unadjusted
    assert (out.loc[~out["vs_baseline"], "family"] == "").all()
    assert out.loc[~out["vs_baseline"], "p_adjusted"].isna().all()
    families = set(out.loc[out["vs_baseline"], "family"])
    assert families == {
        "primary",
        "macro, padchest",
        "macro, chestxray14",
        *(f"per finding, {t}, {a}" for t in ("padchest", "chestxray14")
          for a in ("drr_10", "synthex_5", "synthex_10")),
    }  # fmt: skip
    for family, rows in out[out["vs_baseline"] & (out["family"] != "primary")].groupby("family"):
        expected = multipletests(rows["p_value"], method="holm")[1]
        np.testing.assert_allclose(rows["p_adjusted"], expected, err_msg=family)
    # the primary is not in its macro family: chestxray14's macro family has the other 2 arms
    assert (out["family"] == "macro, chestxray14").sum() == 2
    assert (out["family"] == "macro, padchest").sum() == 3


def test_primary_fallbacks_are_said():
    summary = _summary()
    declared = multiplicity.PrimaryComparison(arm="synthex_20", test_set="external")
    got = multiplicity.resolve_primary(summary, declared, [], "padchest")
    assert (got.test_set, got.arm) == ("padchest", "synthex_10")  # largest SyntheX arm
    assert "no external test set" in got.note and "'synthex_20' is not in the grid" in got.note
    no_synthex = summary[~summary["arm"].str.startswith("synthex")]
    got = multiplicity.resolve_primary(
        no_synthex, multiplicity.PrimaryComparison(), ["chestxray14"]
    )
    assert (got.test_set, got.arm) == ("chestxray14", "drr_10")
    got = multiplicity.resolve_primary(
        summary, multiplicity.PrimaryComparison("Effusion", "internal", "drr_10"), [], "padchest"
    )
    assert got == multiplicity.ResolvedPrimary("Effusion", "padchest", "drr_10")
    out = multiplicity.assign_families(summary, got)
    assert out.loc[out["primary"], "class"].tolist() == ["Effusion"]
    assert (out["family"] == "per finding, padchest, drr_10").sum() == 1  # Pneumonia only
    with pytest.raises(ValueError, match=r"report\.primary\.metric='Effusoin'"):
        multiplicity.resolve_primary(summary, multiplicity.PrimaryComparison("Effusoin"))
    assert multiplicity.resolve_primary(summary.assign(vs_baseline=False), declared) is None


def test_stars_only_on_adjusted_p(tmp_path):
    """A p-value below 0.05 whose Holm-adjusted value is not gets no star."""
    from gensyn.report import render

    row = pd.Series({"p_value": 0.03, "p_adjusted": 0.09, "primary": False})
    assert render._p_text(row) == "p = 0.03, Holm p = 0.09"
    row = pd.Series({"p_value": 0.01, "p_adjusted": 0.03, "primary": False})
    assert render._p_text(row) == "p = 0.01, Holm p = 0.03*"
    row = pd.Series({"p_value": 0.0496, "p_adjusted": 0.0496, "primary": True})
    assert render._p_text(row) == "p = 0.0496* (primary)"
