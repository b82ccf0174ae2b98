"""Statistics of a reader study: accuracy, sensitivity/specificity, agreement, time, reasons.

Spotting a synthetic image is the "positive" finding: sensitivity = fakes called fake /
fakes answered, specificity = real images called real / real images answered. How an
"uncertain" answer counts is a parameter (``uncertain_as``), always stated in the report:

* ``wrong`` (default): a wrong answer whatever the truth (missed fake on a synthetic
  image, false alarm on a real one) - the count behind "59 of 60 correct";
* ``exclude``: left out of accuracy, sensitivity and specificity (their number is reported);
* ``fake`` / ``real``: counted as that call.

Confidence intervals are Wilson score intervals; inter-reader agreement is Fleiss' kappa
over the three raw answers (real / fake / uncertain) on the images every reader answered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

VERDICTS = ("real", "fake", "uncertain")
UNCERTAIN_RULES: dict[str, str] = {
    "wrong": "'uncertain' counts as a wrong answer: a missed fake on a synthetic image, a false "
    "alarm on a real one.",
    "exclude": "'uncertain' answers are left out of accuracy, sensitivity and specificity "
    "(their number is reported).",
    "fake": "'uncertain' counts as calling the image fake (any doubt flags it).",
    "real": "'uncertain' counts as calling the image real (only a firm 'fake' flags it).",
}
ANSWER_COLUMNS = ("reader_id", "image_id", "verdict", "reason", "lead_time_s")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items × categories table of how many raters chose each category.

    Every row must sum to the same number of raters (>= 2). nan when chance agreement is 1
    (all answers in one category).
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(
            f"counts must be a non-empty items × categories table, got shape {table.shape}"
        )
    raters = table.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings for Fleiss' kappa")
    n_items, n = table.shape[0], raters[0]
    p_cat = table.sum(axis=0) / (n_items * n)
    p_item = (np.sum(table * table, axis=1) - n) / (n * (n - 1))
    p_bar, p_e = float(p_item.mean()), float(np.sum(p_cat * p_cat))
    if math.isclose(p_e, 1.0):
        return math.nan
    return (p_bar - p_e) / (1 - p_e)


def score_answers(
    answers: pd.DataFrame, key: pd.DataFrame, uncertain_as: str = "wrong"
) -> pd.DataFrame:
    """Join answers with the key; add ``call`` (real/fake/None = not counted) and ``correct``.

    ValueError if an answer names an image missing from the key or an unknown verdict.
    """
    if uncertain_as not in UNCERTAIN_RULES:
        raise ValueError(
            f"uncertain_as must be one of {sorted(UNCERTAIN_RULES)}, got {uncertain_as!r}"
        )
    missing_cols = [c for c in ("reader_id", "image_id", "verdict") if c not in answers.columns]
    if missing_cols:
        raise ValueError(f"answers lack columns {missing_cols}")
    bad = sorted(set(answers["verdict"]) - set(VERDICTS))
    if bad:
        raise ValueError(f"unknown verdicts {bad}; allowed: {VERDICTS}")
    unknown = sorted(set(answers["image_id"]) - set(key["image_id"]))
    if unknown:
        raise ValueError(
            f"{len(unknown)} answered images are not in the answer key, e.g. {unknown[:3]}"
        )
    df = answers.copy()
    for col, default in (("reason", ""), ("lead_time_s", math.nan)):
        if col not in df.columns:
            df[col] = default
    df["reason"] = df["reason"].fillna("").astype(str)
    df = df.merge(
        key[["image_id", "source", "truth"]], on="image_id", how="left", validate="many_to_one"
    )

    def call(verdict: str, truth: str) -> str | None:
        if verdict != "uncertain":
            return verdict
        if uncertain_as == "wrong":
            return "real" if truth == "fake" else "fake"
        return None if uncertain_as == "exclude" else uncertain_as

    df["call"] = [call(v, t) for v, t in zip(df["verdict"], df["truth"], strict=True)]
    df["counted"] = df["call"].notna()
    df["correct"] = df["counted"] & (df["call"] == df["truth"])
    return df


def _proportion(k: int, n: int, name: str) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {
        f"{name}_k": k,
        f"{name}_n": n,
        name: k / n if n else math.nan,
        f"{name}_ci_low": lo,
        f"{name}_ci_high": hi,
    }


def performance(scored: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, sensitivity and specificity (counts, value, Wilson 95% CI) of scored answers."""
    counted = scored[scored["counted"]]
    fakes = counted[counted["truth"] == "fake"]
    reals = counted[counted["truth"] == "real"]
    row: dict[str, Any] = {
        "answers": len(scored),
        "uncertain": int((scored["verdict"] == "uncertain").sum()),
    }
    row |= _proportion(int(counted["correct"].sum()), len(counted), "accuracy")
    row |= _proportion(int((fakes["call"] == "fake").sum()), len(fakes), "sensitivity")
    row |= _proportion(int((reals["call"] == "real").sum()), len(reals), "specificity")
    row["median_time_s"] = float(scored["lead_time_s"].median()) if len(scored) else math.nan
    return row


def per_group(scored: pd.DataFrame, by: str) -> pd.DataFrame:
    """:func:`performance` per value of column ``by`` (reader_id or source)."""
    rows = []
    for value, group in scored.groupby(by, sort=True):
        row = {by: value}
        if by == "source":
            row["truth"] = group["truth"].iloc[0]
            for verdict in VERDICTS:
                row[f"said_{verdict}"] = int((group["verdict"] == verdict).sum())
        rows.append(row | performance(group))
    return pd.DataFrame(rows)


def agreement(answers: pd.DataFrame) -> dict[str, Any]:
    """Fleiss' kappa over the raw verdicts, on the images that every reader answered."""
    readers = sorted(answers["reader_id"].unique())
    per_image = answers.groupby("image_id")["reader_id"].nunique()
    complete = per_image[per_image == len(readers)].index
    sub = answers[answers["image_id"].isin(complete)]
    result: dict[str, Any] = {
        "readers": len(readers),
        "images": len(complete),
        "fleiss_kappa": math.nan,
    }
    if len(readers) >= 2 and len(complete):
        table = pd.crosstab(sub["image_id"], sub["verdict"]).reindex(
            columns=list(VERDICTS), fill_value=0
        )
        result["fleiss_kappa"] = fleiss_kappa(table.to_numpy())
    return result


def timing(scored: pd.DataFrame, by: str) -> pd.DataFrame:
    """Seconds per image (Label Studio's lead time) per ``by`` group: n, median, quartiles, mean."""
    g = scored.groupby(by)["lead_time_s"]
    return pd.DataFrame(
        {
            "n": g.count(),
            "median_s": g.median(),
            "q1_s": g.quantile(0.25),
            "q3_s": g.quantile(0.75),
            "mean_s": g.mean(),
            "total_min": g.sum() / 60.0,
        }
    ).reset_index()


def reasons(scored: pd.DataFrame) -> pd.DataFrame:
    """Every non-empty reason, grouped by source (what readers saw in fakes and doubtful images)."""
    cols = ["source", "truth", "verdict", "reader_id", "image_id", "reason"]
    with_reason = scored[scored["reason"].str.strip() != ""]
    return (
        with_reason[cols]
        .sort_values(["source", "verdict", "reader_id", "image_id"])
        .reset_index(drop=True)
    )


@dataclass
class StudyResults:
    """Everything the report shows."""

    uncertain_as: str
    overall: dict[str, Any]
    readers: pd.DataFrame
    sources: pd.DataFrame
    agreement: dict[str, Any]
    time_by_reader: pd.DataFrame
    time_by_source: pd.DataFrame
    reasons: pd.DataFrame
    missing: pd.DataFrame  # reader × image pairs without an answer
    scored: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def rule(self) -> str:
        """The stated handling of 'uncertain'."""
        return UNCERTAIN_RULES[self.uncertain_as]


def analyze(
    answers: pd.DataFrame,
    key: pd.DataFrame,
    uncertain_as: str = "wrong",
    readers: Sequence[str] | None = None,
) -> StudyResults:
    """Score ``answers`` (columns :data:`ANSWER_COLUMNS`) against ``key`` and summarise.

    ``readers``: the readers expected (default: those with answers); readers without any
    answer appear in ``missing``.
    """
    scored = score_answers(answers, key, uncertain_as)
    expected = sorted(readers) if readers is not None else sorted(scored["reader_id"].unique())
    grid = pd.MultiIndex.from_product(
        [expected, sorted(key["image_id"])], names=["reader_id", "image_id"]
    )
    answered = pd.MultiIndex.from_frame(scored[["reader_id", "image_id"]])
    missing = grid.difference(answered).to_frame(index=False)
    notes = []
    no_reason = scored[(scored["verdict"] != "real") & (scored["reason"].str.strip() == "")]
    if len(no_reason):
        notes.append(f"{len(no_reason)} fake/uncertain answers have no reason.")
    if len(missing):
        notes.append(f"{len(missing)} reader-image pairs have no answer.")
    return StudyResults(
        uncertain_as=uncertain_as,
        overall=performance(scored),
        readers=per_group(scored, "reader_id"),
        sources=per_group(scored, "source"),
        agreement=agreement(scored),
        time_by_reader=timing(scored, "reader_id"),
        time_by_source=timing(scored, "source"),
        reasons=reasons(scored),
        missing=missing,
        scored=scored,
        notes=notes,
    )
