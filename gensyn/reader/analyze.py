"""Statistics of a reader study: accuracy, sensitivity/specificity, agreement, time, reasons.

Spotting a synthetic image is the "positive" finding: sensitivity = fakes called fake /
fakes answered, specificity = real images called real / real images answered. How an
"uncertain" answer counts is a parameter (``uncertain_as``), always stated in the report:

* ``wrong`` (default): a wrong answer whatever the truth (missed fake on a synthetic
  image, false alarm on a real one) - the count behind "59 of 60 correct";
* ``exclude``: left out of accuracy, sensitivity and specificity (their number is reported);
* ``fake`` / ``real``: counted as that call.

Answers are not independent: every reader answers every image, so a strict reader lowers
all of their answers and a hard image fools every reader. Each rate therefore gets a
**cluster interval** (:class:`ClusterBootstrap`): the two-way "pigeonhole" bootstrap over
readers and images (Owen 2007, Ann. Appl. Stat. 1:246; images resampled within their
source) gives the rate's variance, hence a design effect (that variance over the binomial
one, at least 1) and an effective number of answers n / design effect, and the interval is
Wilson's at that effective number (as survey statistics do for clustered samples; Korn &
Graubard 1998, Survey Methodology 24:193). A rate of 0 or 1 has no bootstrap spread and
keeps the plain Wilson interval. The plain Wilson interval (answers as independent) is
reported beside it; inter-reader agreement is Fleiss' kappa over the three raw answers
(real / fake / uncertain) on the images every reader answered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

VERDICTS = ("real", "fake", "uncertain")


class UncertainAs(StrEnum):
    """How an 'uncertain' answer counts (``reader_study.uncertain_as``; :data:`UNCERTAIN_RULES`)."""

    wrong = "wrong"
    exclude = "exclude"
    fake = "fake"
    real = "real"


#: What each :class:`UncertainAs` means, in the report's words.
UNCERTAIN_RULES: dict[str, str] = {
    UncertainAs.wrong: "'uncertain' counts as a wrong answer: a missed fake on a synthetic image, a false "
    "alarm on a real one.",
    UncertainAs.exclude: "'uncertain' answers are left out of accuracy, sensitivity and specificity "
    "(their number is reported).",
    UncertainAs.fake: "'uncertain' counts as calling the image fake (any doubt flags it).",
    UncertainAs.real: "'uncertain' counts as calling the image real (only a firm 'fake' flags it).",
}
ANSWER_COLUMNS = ("reader_id", "image_id", "verdict", "reason", "lead_time_s")
INTERVALS = (
    "Intervals: 95% cluster intervals (readers and images resampled together, 2-way "
    "bootstrap; Wilson at the effective number of answers), which hold for other readers "
    "and images like these; the Wilson interval that treats every answer as independent "
    "is shown for comparison and is too narrow when readers or images differ."
)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; (nan, nan) when n == 0.

    ``n`` may be an effective (non-integer) number of observations."""
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


@dataclass(frozen=True)
class ClusterBootstrap:
    """Seeded two-way resampling weights for a readers × images study (module docstring).

    Replicate ``b`` draws the readers with replacement and, within each source, that
    source's images with replacement; an answer then counts (times its reader was drawn) ×
    (times its image was drawn). ``reader_weights``: replicates × readers,
    ``image_weights``: replicates × images, in the order of ``readers`` and ``images``.
    """

    readers: tuple[str, ...]
    images: tuple[str, ...]
    reader_weights: np.ndarray
    image_weights: np.ndarray
    confidence: float = 0.95

    @classmethod
    def draw(
        cls,
        readers: Sequence[str],
        image_source: Mapping[str, str],
        replicates: int,
        seed: int,
        confidence: float = 0.95,
    ) -> ClusterBootstrap:
        """``replicates`` draws for ``readers`` and the images of ``image_source`` (id -> source)."""
        if replicates < 100:
            raise ValueError(f"bootstrap replicates must be >= 100, got {replicates}")
        rng = np.random.default_rng(seed)
        images = tuple(sorted(image_source))
        rows = np.arange(replicates)[:, None]
        reader_weights = np.zeros((replicates, len(readers)))
        np.add.at(
            reader_weights, (rows, rng.integers(0, len(readers), (replicates, len(readers)))), 1.0
        )
        image_weights = np.zeros((replicates, len(images)))
        sources = np.array([image_source[i] for i in images])
        for source in sorted(set(sources)):  # the design fixes how many images each source has
            members = np.flatnonzero(sources == source)
            picks = members[rng.integers(0, members.size, (replicates, members.size))]
            np.add.at(image_weights, (rows, picks), 1.0)
        return cls(tuple(readers), images, reader_weights, image_weights, confidence)

    def replicates_of(
        self, answers: pd.DataFrame, hits: np.ndarray, counted: np.ndarray, over_readers: bool
    ) -> np.ndarray:
        """The rate sum(hits) / sum(counted) of ``answers`` (reader_id, image_id) in every
        replicate (nan where no counted answer was drawn). ``over_readers=False`` keeps the
        readers fixed (one reader's rate varies only with the images)."""
        r = pd.Index(self.readers).get_indexer(pd.Index(answers["reader_id"]))
        i = pd.Index(self.images).get_indexer(pd.Index(answers["image_id"]))
        if (r < 0).any() or (i < 0).any():
            raise ValueError("answers name readers or images outside the bootstrap")
        shape = (len(self.readers), len(self.images))
        k, n = np.zeros(shape), np.zeros(shape)
        np.add.at(k, (r, i), np.asarray(hits, dtype=np.float64))
        np.add.at(n, (r, i), np.asarray(counted, dtype=np.float64))
        wr = self.reader_weights if over_readers else np.ones_like(self.reader_weights)
        num = ((wr @ k) * self.image_weights).sum(axis=1)
        den = ((wr @ n) * self.image_weights).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)

    def interval(
        self,
        answers: pd.DataFrame,
        hits: np.ndarray,
        counted: np.ndarray,
        over_readers: bool = True,
    ) -> tuple[float, float, float]:
        """(low, high, design effect) of the rate sum(hits) / sum(counted) (module docstring)."""
        k = float(np.sum(np.asarray(hits, dtype=np.float64) * np.asarray(counted, dtype=bool)))
        n = float(np.sum(np.asarray(counted, dtype=bool)))
        if n == 0:
            return math.nan, math.nan, math.nan
        p = k / n
        binomial = p * (1 - p) / n
        rates = self.replicates_of(answers, hits, counted, over_readers)
        rates = rates[np.isfinite(rates)]
        if binomial == 0 or rates.size < 2:
            design_effect = 1.0
        else:
            design_effect = max(1.0, float(np.var(rates, ddof=1)) / binomial)
        n_eff = n / design_effect
        low, high = wilson_interval(p * n_eff, n_eff, self.confidence)
        return low, high, design_effect


def score_answers(
    answers: pd.DataFrame, key: pd.DataFrame, uncertain_as: str = "wrong"
) -> pd.DataFrame:
    """Join answers with the key; add ``call`` (real/fake/None = not counted) and ``correct``.

    ValueError if an answer names an image missing from the key or an unknown verdict.
    """
    if uncertain_as not in tuple(UncertainAs):
        raise ValueError(
            f"uncertain_as must be one of {[str(u) for u in UncertainAs]}, got {uncertain_as!r}"
        )
    uncertain_as = str(uncertain_as)  # a member's value: the answers' calls are plain strings
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


def _proportion(
    answers: pd.DataFrame,
    hits: np.ndarray,
    counted: np.ndarray,
    name: str,
    boot: ClusterBootstrap | None,
    over_readers: bool,
) -> dict[str, Any]:
    """Count, rate, Wilson CI and (with ``boot``) cluster CI and design effect of a rate."""
    k, n = int(np.sum(hits & counted)), int(np.sum(counted))
    lo, hi = wilson_interval(k, n)
    row = {
        f"{name}_k": k,
        f"{name}_n": n,
        name: k / n if n else math.nan,
        f"{name}_ci_low": lo,
        f"{name}_ci_high": hi,
    }
    if boot is not None:
        c_lo, c_hi, deff = boot.interval(answers, hits, counted, over_readers)
        row |= {f"{name}_cluster_ci_low": c_lo, f"{name}_cluster_ci_high": c_hi,
                f"{name}_design_effect": deff}  # fmt: skip
    return row


def performance(
    scored: pd.DataFrame, boot: ClusterBootstrap | None = None, over_readers: bool = True
) -> dict[str, Any]:
    """Accuracy, sensitivity and specificity of scored answers: counts, value, Wilson 95% CI
    (``*_ci_low/high``) and, with ``boot``, the cluster 95% CI (``*_cluster_ci_low/high``)
    and design effect (``over_readers=False``: readers fixed, for one reader's answers)."""
    counted = scored["counted"].to_numpy(dtype=bool)
    truth, call = scored["truth"].to_numpy(), scored["call"].to_numpy()
    row: dict[str, Any] = {
        "answers": len(scored),
        "uncertain": int((scored["verdict"] == "uncertain").sum()),
    }
    correct = scored["correct"].to_numpy(dtype=bool)
    fake, real = truth == "fake", truth == "real"
    for name, hits, among in (
        ("accuracy", correct, counted),
        ("sensitivity", call == "fake", counted & fake),
        ("specificity", call == "real", counted & real),
    ):
        row |= _proportion(scored, hits, among, name, boot, over_readers)
    row["median_time_s"] = float(scored["lead_time_s"].median()) if len(scored) else math.nan
    return row


def per_group(scored: pd.DataFrame, by: str, boot: ClusterBootstrap | None = None) -> pd.DataFrame:
    """:func:`performance` per value of column ``by`` (reader_id or source).

    Per source it adds how often each verdict was given (``said_<verdict>``: count,
    ``said_<verdict>_share`` of the source's answers, with Wilson and, with ``boot``,
    cluster CIs). Per reader, the cluster CI resamples images only."""
    rows = []
    for value, group in scored.groupby(by, sort=True):
        row = {by: value}
        if by == "source":
            row["truth"] = group["truth"].iloc[0]
            answered = np.ones(len(group), dtype=bool)
            for verdict in VERDICTS:
                said = (group["verdict"] == verdict).to_numpy()
                row[f"said_{verdict}"] = int(said.sum())
                share = _proportion(group, said, answered, f"said_{verdict}_share", boot, True)
                row |= {k: v for k, v in share.items() if not k.endswith(("_k", "_n"))}
        rows.append(row | performance(group, boot, over_readers=by != "reader_id"))
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
    bootstrap_replicates: int = 0  # of the cluster intervals (0: none computed)
    seed: int = 0

    @property
    def rule(self) -> str:
        """The stated handling of 'uncertain'."""
        return UNCERTAIN_RULES[self.uncertain_as]


def analyze(
    answers: pd.DataFrame,
    key: pd.DataFrame,
    uncertain_as: str = "wrong",
    readers: Sequence[str] | None = None,
    bootstrap_replicates: int = 2000,
    seed: int = 0,
) -> StudyResults:
    """Score ``answers`` (columns :data:`ANSWER_COLUMNS`) against ``key`` and summarise.

    ``readers``: the readers expected (default: those with answers); readers without any
    answer appear in ``missing``. Cluster intervals use ``bootstrap_replicates`` seeded
    draws over the readers who answered and the key's images (within their source).
    """
    uncertain_as = str(uncertain_as)  # as the report and summary show it
    scored = score_answers(answers, key, uncertain_as)
    answering = sorted(scored["reader_id"].unique())
    boot = (
        ClusterBootstrap.draw(
            answering,
            dict(zip(key["image_id"], key["source"], strict=True)),
            bootstrap_replicates,
            seed,
        )
        if answering
        else None
    )
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
        overall=performance(scored, boot),
        readers=per_group(scored, "reader_id", boot),
        sources=per_group(scored, "source", boot),
        agreement=agreement(scored),
        time_by_reader=timing(scored, "reader_id"),
        time_by_source=timing(scored, "source"),
        reasons=reasons(scored),
        missing=missing,
        scored=scored,
        notes=notes,
        bootstrap_replicates=bootstrap_replicates if boot is not None else 0,
        seed=seed,
    )
