"""What a sweep varied, and one table comparing its conditions.

A *condition* is one sampling arm at one combination of swept config values (e.g. ``drr_5``
with ``carm_pose.alpha_range_deg = [-10, 10]``); its trained models are its folds × seeds.
A swept key only belongs to the conditions of arms whose runs it changes: the baseline
(no synthetic images) trains the same model whatever the C-arm angles, so it is one
condition however many angles were swept. Which keys change which runs is read from the
run identities (hashes) that the caller gives, never guessed from key names.

Knows nothing of Hydra or run folders: the stage gives arms, swept values and a function
naming each (arm, values)'s run; the summary table comes from
:func:`gensyn.report.render.write_report`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gensyn.report.multiplicity import format_p


def format_value(value: Any) -> str:
    """A swept value as the report prints it: ``5``, ``0.5``, ``[-10,10]``, ``grid``."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(getattr(value, "name", value))  # an Enum prints its name


def present(value: Any) -> bool:
    """Whether a cell holds a swept value (not None / NaN: the key does not change that arm)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's last part (``alpha_range_deg``), the full key where two would clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


@dataclass(frozen=True)
class Condition:
    """One arm at the swept values that change its runs (``values``: (key, value) pairs)."""

    arm: str
    values: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:  # lists (angle ranges) as tuples: a condition is a key
        object.__setattr__(self, "values", tuple((k, _hashable(v)) for k, v in self.values))

    def label(self, names: Mapping[str, str] | None = None) -> str:
        """``drr_5 alpha_range_deg=[-10,10]`` (``names``: short names of the keys)."""
        parts = [self.arm]
        for key, value in self.values:
            parts.append(f"{(names or {}).get(key, key)}={format_value(value)}")
        return " ".join(parts)

    def value(self, key: str) -> Any:
        """The value of swept ``key``, or None where it does not change this arm's runs."""
        return dict(self.values).get(key)


def combinations(sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the swept values, in the order given (first key slowest)."""
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())]


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


def conditions(
    arms: Sequence[str],
    sweep: Mapping[str, Sequence[Any]],
    identity: Callable[[str, Mapping[str, Any]], str],
) -> dict[Condition, dict[str, Any]]:
    """The distinct conditions of ``arms`` × ``sweep``, each with a combination that gives it.

    ``identity(arm, values)`` names the run of one arm at one combination (a run hash): a
    key belongs to an arm's conditions when changing only that key changes the identity
    for some combination. Combinations that give the same run are one condition.
    """
    combos = combinations(sweep)
    out: dict[Condition, dict[str, Any]] = {}
    for arm in arms:
        ids = {i: identity(arm, combo) for i, combo in enumerate(combos)}
        used = []
        for key in sweep:
            for i, j in itertools.combinations(range(len(combos)), 2):
                a, b = combos[i], combos[j]
                others_equal = all(_hashable(a[k]) == _hashable(b[k]) for k in sweep if k != key)
                if others_equal and ids[i] != ids[j]:
                    used.append(key)
                    break
        for combo in combos:
            cond = Condition(arm, tuple((k, combo[k]) for k in used))
            out.setdefault(cond, combo)
    return out


def varied_keys(conds: Sequence[Condition]) -> list[str]:
    """Swept keys with more than one value among ``conds`` (in first-seen order)."""
    seen: dict[str, set[Any]] = {}
    for cond in conds:
        for key, value in cond.values:
            seen.setdefault(key, set()).add(_hashable(value))
    return [k for k, values in seen.items() if len(values) > 1]


def _printed(value: Any) -> str | None:
    return format_value(value) if present(value) else None


def p_column(summary: pd.DataFrame) -> str | None:
    """The summary's p-value column of Δ: ``p_value`` where present, else ``p_bootstrap``."""
    for name in ("p_value", "p_bootstrap"):
        if name in summary.columns:
            return name
    return None


def comparison_table(
    summary: pd.DataFrame,
    conds: Sequence[Condition],
    baseline: Condition,
    finding: str = "macro",
) -> pd.DataFrame:
    """One row per (test set, condition): its factors, AUC with CI and Δ to the baseline.

    ``summary``: the report's long table (``arm`` = :meth:`Condition.label`, ``class``,
    ``test_set``, ``n_models``, ``auc_mean``, ``ci_low``, ``ci_high`` and, for conditions
    compared with the baseline, ``delta``, ``delta_ci_low``, ``delta_ci_high`` and a p-value).
    Columns: ``test_set, condition, arm``, one per swept key (its value as
    :func:`format_value` prints it; None where the key does not change that arm), ``n_models, auc_mean, ci_low, ci_high, delta, delta_ci_low, delta_ci_high,
    p, is_baseline``; conditions without predictions are left out.
    """
    keys = list(dict.fromkeys(k for c in conds for k, _ in c.values))
    names = short_names(keys)
    rows_of = summary[summary["class"] == finding].set_index(["test_set", "arm"])
    p_col = p_column(summary)
    rows = []
    for test_set in dict.fromkeys(summary["test_set"]):
        for cond in conds:
            at = (test_set, cond.label(names))
            if at not in rows_of.index:
                continue
            r = rows_of.loc[at]
            row: dict[str, Any] = {"test_set": test_set, "condition": at[1], "arm": cond.arm}
            row.update({key: _printed(cond.value(key)) for key in keys})
            for col in ("n_models", "auc_mean", "ci_low", "ci_high"):
                row[col] = r[col]
            for col in ("delta", "delta_ci_low", "delta_ci_high"):
                row[col] = r[col] if col in r.index else float("nan")
            row["p"] = r[p_col] if p_col else float("nan")
            row["is_baseline"] = cond == baseline
            rows.append(row)
    return pd.DataFrame(rows)


def pretty_table(table: pd.DataFrame, keys: Sequence[str], pct: str = "95%") -> pd.DataFrame:
    """:func:`comparison_table` as the page shows it: factors, then 'AUC [CI]', 'Δ [CI]', p.

    A key that does not change an arm's runs reads "any"; the baseline's Δ reads "—".
    """
    names = short_names(list(keys))
    arms = [
        f"{arm} (baseline)" if base and arm != "baseline" else arm
        for arm, base in zip(table["arm"], table["is_baseline"], strict=True)
    ]
    out = pd.DataFrame({"test set": table["test_set"], "arm": arms})
    for key in keys:
        out[names[key]] = [(format_value(v) if present(v) else "any") for v in table[key]]
    out["models"] = table["n_models"].astype(int)
    out[f"macro AUC [{pct} CI]"] = [
        f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
        for m, lo, hi in zip(table["auc_mean"], table["ci_low"], table["ci_high"], strict=True)
    ]
    deltas = []
    for r in table.itertuples():
        if r.is_baseline:
            deltas.append("—")
        elif np.isfinite(float(str(r.delta))):
            deltas.append(f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]")
        else:
            deltas.append("n/a")
    out[f"Δ vs baseline [{pct} CI]"] = deltas
    out["p"] = [
        "" if b else format_p(float(p))
        for b, p in zip(table["is_baseline"], table["p"], strict=True)
    ]
    return out
