"""Statistics of one test set of a grid: per-arm AUCs and the comparisons with the baseline.

Input is one long table of predictions, one row per (arm, fold, test set, image) with
``arm, source, views_per_ct, fold, test_set, image_id, patient_id, y_<class>, p_<class>``
and optionally ``seed``: a trained model is one (fold, seed); without the column every model
counts as seed 0. :func:`summarise_test_set` returns one row per arm and class (each finding
and ``macro``):

* ``n_folds``, ``n_models``: distinct folds, and trained models (folds × seeds) of the arm;
* ``auc_mean``, ``auc_sd``: mean and sample standard deviation of the models' AUCs;
* ``ci_low``, ``ci_high``: patient-level bootstrap percentile interval of the model-mean AUC
  (test patients resampled; every model scored on the same replicates);
* ``na_reason``: why there is no AUC ('' if there is one): ``no positive case``,
  ``no negative case`` (in this test set), ``not predicted`` (the arm's predictions lack it);
  ``macro_over``: the findings the arm's macro AUC averages;
* ``vs_baseline``: the row compares the arm with the baseline; then, over the ``n_pairs``
  models trained for both (same fold and seed):

  - **the headline** ``delta`` (mean over pairs of the arm's AUC minus the baseline's),
    ``delta_ci_low``, ``delta_ci_high``, ``p_value``, ``se_delta``, ``df_delta`` and the
    variance parts ``var_shared_test``, ``var_models``, ``var_training_overlap``: an interval
    covering test patients *and* trained models (:mod:`gensyn.report.inference`);
    ``delta_ci_covers`` says which, ``delta_note`` flags a degenerate case;
    ``delta_na_reason`` why a finding is not compared, ``delta_macro_over`` the findings the
    macro Δ averages (those with an AUC for both arms);
  - one-source tests, kept for comparison: ``p_bootstrap`` (paired patient bootstrap, test
    patients only); ``delta_models_mean``, ``delta_models_sd``, ``t_corrected``,
    ``p_corrected``, ``note_corrected`` (Nadeau–Bengio corrected resampled t-test over the
    models, training only: :func:`metrics.corrected_resampled_ttest`); ``p_delong_ensemble``
    (DeLong's test of the model-averaged probabilities: another quantity than Δ, image level).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gensyn.report import inference, metrics

MODEL_KEYS = ("fold", "seed")  # one trained model; ``seed`` is optional in the predictions
#: Numeric columns of a comparison row, NaN where the finding is not compared.
_DELTA_COLUMNS = (
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "p_value",
    "se_delta",
    "df_delta",
    "var_shared_test",
    "var_models",
    "var_training_overlap",
    "p_bootstrap",
)


def _with_seed(preds: pd.DataFrame) -> pd.DataFrame:
    return preds if "seed" in preds.columns else preds.assign(seed=0)


def _corrected(a: np.ndarray, b: np.ndarray, ratio: float | None) -> dict[str, Any]:
    """Columns of the corrected t-test of paired values (NaN where it cannot be run)."""
    ok = np.isfinite(a) & np.isfinite(b)
    row: dict[str, Any] = {}
    if ratio is None or ok.sum() < 2:
        why = "fewer than 2 paired models" if ok.sum() < 2 else "fewer than 2 folds"
        nan = float("nan")
        row.update(delta_models_mean=float(np.mean(a[ok] - b[ok])) if ok.any() else nan)
        row.update(delta_models_sd=nan, t_corrected=nan, p_corrected=nan, note_corrected=why)
        return row
    res = metrics.corrected_resampled_ttest(a[ok], b[ok], ratio)
    row.update(
        delta_models_mean=res.mean_diff,
        delta_models_sd=res.sd_diff,
        t_corrected=res.t,
        p_corrected=res.p_value,
        note_corrected=res.note,
    )
    return row


def _arm_order(preds: pd.DataFrame) -> list[str]:
    arms = preds[["arm", "source", "views_per_ct"]].drop_duplicates()
    src_rank = {"none": 0, "drr": 1, "synthex": 2}
    arms = arms.assign(r=arms["source"].map(src_rank).fillna(9)).sort_values(["r", "views_per_ct"])
    return list(arms["arm"])


def label_reasons(y: np.ndarray, classes: Sequence[str]) -> dict[str, str]:
    """Finding -> why it has no AUC on these labels ('' if it has one).

    ``y``: (n_images, n_classes) 0/1 labels, NaN where unknown.
    """
    reasons = {}
    for k, cls in enumerate(classes):
        col = y[:, k]
        if not np.isfinite(col).all():
            reasons[cls] = "labels missing"
        elif not (col > 0.5).any():
            reasons[cls] = "no positive case"
        elif (col > 0.5).all():
            reasons[cls] = "no negative case"
        else:
            reasons[cls] = ""
    return reasons


def _macro_over(aucs: np.ndarray, reps: np.ndarray, keep: np.ndarray) -> tuple[Any, Any]:
    """Per-model macro AUC over the findings ``keep`` (bool, C): full set (M,), replicates (M, B).

    On a replicate, findings without a positive or negative case there are left out.
    """
    if not keep.any():
        nan = np.full(aucs.shape[0], np.nan)
        return nan, np.full(reps.shape[:2], np.nan)
    return aucs[:, keep].mean(axis=1), metrics.macro_of(reps[:, :, keep])


def _arm_rows(
    aucs: np.ndarray, reps: np.ndarray, classes: list[str], reasons: dict[str, str], level: float
) -> list[dict[str, Any]]:
    """One arm's rows (finding and macro): mean ± sd over its models, bootstrap CI."""
    defined = np.isfinite(aucs).all(axis=0)  # (C,): every model of the arm has this AUC
    macro_full, macro_reps = _macro_over(aucs, reps, defined)
    per_model = np.concatenate([aucs, macro_full[:, None]], axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_reps = np.concatenate(
            [np.nanmean(reps, axis=0), np.nanmean(macro_reps, axis=0)[:, None]], axis=1
        )
    rows = []
    for k, cls in enumerate([*classes, "macro"]):
        col = per_model[:, k]
        finite = col[np.isfinite(col)]
        if cls == "macro":
            reason = "" if defined.any() else "no finding has an AUC"
            over = ", ".join(c for c, ok in zip(classes, defined, strict=True) if ok)
        else:
            reason = reasons[cls] or ("" if finite.size else "not predicted")
            over = ""
        low, high = metrics.percentile_ci(mean_reps[:, k], level) if finite.size else (np.nan,) * 2
        rows.append(
            {
                "class": cls,
                "auc_mean": float(finite.mean()) if finite.size else float("nan"),
                "auc_sd": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "na_reason": reason,
                "macro_over": over,
            }
        )
    return rows


def _comparison_rows(
    arm: str,
    baseline: str,
    arm_fit: tuple[np.ndarray, np.ndarray],
    base_fit: tuple[np.ndarray, np.ndarray],
    classes: list[str],
    reasons: dict[str, str],
    ratio: float | None,
    level: float,
) -> list[dict[str, Any]]:
    """Rows of arm vs baseline over paired models: the headline Δ and the one-source tests.

    ``*_fit``: (AUCs (J, C), bootstrap replicates (J, B, C)) of the paired models, same order.
    A finding is compared only where every paired model of both arms has its AUC; the macro
    Δ is over those findings (on every replicate, those with a positive and a negative case).
    """
    (a_auc, a_reps), (b_auc, b_reps) = arm_fit, base_fit
    arm_ok, base_ok = np.isfinite(a_auc).all(axis=0), np.isfinite(b_auc).all(axis=0)
    both = arm_ok & base_ok
    a_macro, a_macro_reps = _macro_over(a_auc, a_reps, both)
    b_macro, b_macro_reps = _macro_over(b_auc, b_reps, both)
    diffs = np.concatenate([a_auc - b_auc, (a_macro - b_macro)[:, None]], axis=1)
    rep_diffs = np.concatenate(
        [a_reps - b_reps, (a_macro_reps - b_macro_reps)[:, :, None]], axis=2
    )  # (J, B, C + 1)
    rows = []
    for k, cls in enumerate([*classes, "macro"]):
        row: dict[str, Any] = {"n_pairs": int(diffs.shape[0])}
        if cls == "macro":
            defined = bool(both.any())
            reason = "" if defined else "no finding has an AUC for both"
            row["delta_macro_over"] = ", ".join(
                c for c, ok in zip(classes, both, strict=True) if ok
            )
        else:
            defined = bool(both[k])
            reason = reasons[cls] or (
                "" if defined else f"not predicted by {arm if not arm_ok[k] else baseline}"
            )
        if defined and not diffs.shape[0]:
            defined, reason = False, "no model trained for both"
        row["delta_na_reason"] = reason
        row.update(dict.fromkeys(_DELTA_COLUMNS, float("nan")), delta_ci_covers="", delta_note="")
        if defined:
            res = inference.two_level_delta(diffs[:, k], rep_diffs[:, :, k], ratio or 0.0, level)
            test_only = rep_diffs[:, :, k].mean(axis=0)  # Δ on each replicate, models fixed
            row.update(
                delta=res.delta,
                delta_ci_low=res.ci_low,
                delta_ci_high=res.ci_high,
                p_value=res.p_value,
                se_delta=res.se,
                df_delta=res.df,
                var_shared_test=res.var_shared_test,
                var_models=res.var_models,
                var_training_overlap=res.var_training_overlap,
                delta_ci_covers=res.covers,
                delta_note=res.note,
                p_bootstrap=metrics.bootstrap_p_value(test_only),
            )
        row.update(_corrected(a_auc[:, k] if k < len(classes) else a_macro,
                              b_auc[:, k] if k < len(classes) else b_macro, ratio))  # fmt: skip
        rows.append(row)
    return rows


def summarise_test_set(
    preds: pd.DataFrame,
    classes: Sequence[str],
    baseline: str = "baseline",
    n_boot: int = metrics.DEFAULT_N_BOOTSTRAP,
    level: float = 0.95,
    seed: int = 0,
    test_train_ratio: float | None = None,
) -> pd.DataFrame:
    """One test set's statistics: a row per (arm, class incl. ``macro``); see module docstring.

    ``test_train_ratio`` is n_test / n_train of the training folds (Nadeau–Bengio's r);
    default 1 / (k - 1) with k the number of distinct folds in ``preds`` (0 with one fold).
    A finding without a positive (or negative) case, or that an arm did not predict, gets
    NaN statistics and its reason in ``na_reason`` / ``delta_na_reason``; it never stops the
    report.
    """
    classes = list(classes)
    preds = _with_seed(preds)
    if test_train_ratio is None and preds["fold"].nunique() >= 2:
        test_train_ratio = metrics.kfold_test_train_ratio(int(preds["fold"].nunique()))
    arms = _arm_order(preds)
    first_arm = preds[preds["arm"] == arms[0]]
    fold0 = first_arm["fold"].min()
    seed0 = first_arm.loc[first_arm["fold"] == fold0, "seed"].min()
    first = first_arm[(first_arm["fold"] == fold0) & (first_arm["seed"] == seed0)]
    images = first.drop_duplicates("image_id")[["image_id", "patient_id"]].reset_index(drop=True)
    labels = first.drop_duplicates("image_id").set_index("image_id")
    y = labels.reindex(columns=[f"y_{c}" for c in classes]).loc[images["image_id"]]
    y = y.to_numpy(dtype=np.float64)
    reasons = label_reasons(y, classes)

    scores: list[np.ndarray] = []
    models: dict[str, list[tuple[int, int]]] = {}  # arm -> its (fold, seed) models
    index: dict[str, list[int]] = {}  # arm -> rows of its models in ``scores``
    for arm in arms:
        models[arm], index[arm] = [], []
        for key, group in preds[preds["arm"] == arm].groupby(list(MODEL_KEYS), sort=True):
            g = group.drop_duplicates("image_id").set_index("image_id")
            if set(g.index) != set(images["image_id"]):
                raise ValueError(f"arm {arm} model {key} predicted other images than {arms[0]}")
            p = g.reindex(columns=[f"p_{c}" for c in classes]).loc[images["image_id"]]
            index[arm].append(len(scores))
            scores.append(p.to_numpy(dtype=np.float64))
            models[arm].append((int(str(key[0])), int(str(key[1]))))
    y01 = np.nan_to_num(y)
    reps = metrics.bootstrap_auc_replicates(
        y01, scores, images["patient_id"].to_numpy(), n_boot, seed
    )  # (models, B, C)
    aucs = np.array([metrics.per_class_auc(y01, s) for s in scores])  # (models, C)
    for k, cls in enumerate(classes):
        if reasons[cls]:
            aucs[:, k], reps[:, :, k] = np.nan, np.nan
    meta = preds.drop_duplicates("arm").set_index("arm")
    rows = []
    for arm in arms:
        head = {
            "arm": arm,
            "source": meta.loc[arm, "source"],
            "views_per_ct": int(str(meta.loc[arm, "views_per_ct"])),
            "n_folds": len({fold for fold, _ in models[arm]}),
            "n_models": len(models[arm]),
        }
        own = _arm_rows(aucs[index[arm]], reps[index[arm]], classes, reasons, level)
        compare = baseline in models and arm != baseline
        if compare:
            pairs = sorted(set(models[arm]) & set(models[baseline]))
            arm_i = [index[arm][models[arm].index(m)] for m in pairs]
            base_i = [index[baseline][models[baseline].index(m)] for m in pairs]
            cmp_rows = _comparison_rows(
                arm,
                baseline,
                (aucs[arm_i], reps[arm_i]),
                (aucs[base_i], reps[base_i]),
                classes,
                reasons,
                test_train_ratio,
                level,
            )
            ens_arm = np.mean([scores[i] for i in index[arm]], axis=0)
            ens_base = np.mean([scores[i] for i in index[baseline]], axis=0)
        for k, row in enumerate(own):
            full = {**head, **row, "vs_baseline": compare}
            if compare:
                full.update(cmp_rows[k])
                ok = k < len(classes) and not reasons[classes[k]]
                ok = ok and bool(
                    np.isfinite(ens_arm[:, k]).all() and np.isfinite(ens_base[:, k]).all()
                )
                full["p_delong_ensemble"] = (
                    metrics.delong_paired_test(y01[:, k], ens_arm[:, k], ens_base[:, k])[1]
                    if ok
                    else float("nan")
                )
            rows.append(full)
    return pd.DataFrame(rows)
