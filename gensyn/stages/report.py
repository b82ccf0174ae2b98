"""stage=report: gather a grid's predictions and write the classification report.

For every arm in ``report.arms`` (``sampling`` option names), every fold
0 .. ``classifier.n_folds - 1`` and every seed in ``report.seeds`` (default: only ``seed``)
it looks up the ``predict`` run of that config by hash (the rest of the config is this
one's) and uses it if it is finished. Missing runs are listed in the report, not trained:
training 45 models is the sweep's job, not the report's. A finished ``classify`` run without
its ``predict`` run is predicted here (cheap), and the current config's own arm, fold and
seed are run if missing, so the demo pipeline always has one. A missing run is "not
finished" when its classify folder exists (running, failed or killed), else "not scheduled".

``report.sweep`` (the multirun's sweep overrides, e.g. ``carm_pose.alpha_range_deg=[-5,5],
[-10,10]``) adds swept keys: every arm × combination of values is a condition, looked up by
hash like the arms; which keys change which arm is read from the run hashes
(:func:`gensyn.report.sweep.conditions`), and the report opens with a table and a plot of
macro AUC against each varied key.
Each model's ``classify`` summary gives the training-exposure table (steps, real and
synthetic images seen, per arm).

Writes ``report.md`` / ``report.html``, ``auc_summary.csv`` (every statistic),
``predictions.csv`` (all gathered predictions), ``figures/`` and, with a sweep,
``sweep_summary.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.classify.sampling import arm_name, parse_arm
from gensyn.config.report import ReportConfig
from gensyn.core.registry import stage
from gensyn.core.runs import execute, is_done, run_dir, stage_hash, with_overrides
from gensyn.report import plots
from gensyn.report.exposure import EXPOSURE_CAPTION, exposure_table
from gensyn.report.multiplicity import PrimaryComparison
from gensyn.report.page import Page
from gensyn.report.sweep import (
    Condition,
    comparison_table,
    conditions,
    pretty_table,
    short_names,
    varied_keys,
)
from gensyn.stages._shared import source_of
from gensyn.tracking.report_table import log_report

if TYPE_CHECKING:
    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)

#: How the report names runs it expected but could not read, by why.
NOT_FINISHED = "Not finished (started, no DONE marker: running, failed or killed): "
NOT_SCHEDULED = "Not scheduled (no run folder: never started, e.g. folds this sweep left out): "


def report_settings(cfg: DictConfig) -> DictConfig:
    """``cfg.report`` merged over the :class:`ReportConfig` defaults (typed either way)."""
    base = OmegaConf.structured(ReportConfig)
    return OmegaConf.merge(base, cfg.get("report") or {})  # type: ignore[return-value]


def _arm_overrides(source: str, views: int) -> dict[str, object]:
    return {"sampling.source": source, "sampling.views_per_ct": views}


def _current(cfg: DictConfig, key: str) -> object:
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def parse_sweep(overrides: list[str]) -> dict[str, list[Any]]:
    """``report.sweep``'s overrides (``key=v1,v2``, ``key=range(80,121,20)``) as key -> values."""
    parser = OverridesParser.create()
    sweep: dict[str, list[Any]] = {}
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            raise GensynError(
                f"report.sweep: cannot read {text!r} ({str(exc).splitlines()[0]}); write it as "
                "in the multirun, e.g. carm_pose.alpha_range_deg=[-5,5],[-10,10]"
            ) from exc
        key = override.key_or_group
        if key == "split_idx" or key.split(".")[0] in ("sampling", "report"):
            raise GensynError(
                f"report.sweep: {key!r} cannot be compared here: arms are report.arms, every "
                "fold 0 .. classifier.n_folds-1 is gathered anyway, report.* changes no run"
            )
        sweep[key] = (
            list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        )
    return sweep


def sweep_conditions(cfg: DictConfig, rc: DictConfig) -> dict[Condition, dict[str, Any]]:
    """The conditions to compare: ``report.arms`` × ``report.sweep`` (see gensyn.report.sweep).

    Which swept key changes which arm is read from the runs' hashes: the ``predict`` run of
    fold 0 (first seed) for each arm and combination of values.
    """
    sweep = parse_sweep([str(s) for s in rc.sweep])
    arms = {arm_name(*parse_arm(a)): parse_arm(a) for a in rc.arms}
    own = (source_of(cfg), int(cfg.sampling.views_per_ct))
    arms.setdefault(arm_name(*own), own)
    seed = int(next(iter(rc.seeds), cfg.seed))

    def identity(arm: str, combo: Mapping[str, Any]) -> str:
        where = {**_arm_overrides(*arms[arm]), "split_idx": 0, "seed": seed, **combo}
        try:
            return stage_hash(with_overrides(cfg, where), "predict")
        except Exception as exc:  # an unknown key or a value of the wrong type
            raise GensynError(f"report.sweep: cannot set {combo}: {exc}".splitlines()[0]) from exc

    conds = conditions(list(arms), sweep, identity)
    unused = [k for k in sweep if not any(k in dict(c.values) for c in conds)]
    if unused:
        raise GensynError(
            f"report.sweep: {unused} change(s) no run of the arms {list(arms)} (not part of "
            "their run hashes), so there is nothing to compare; sweep a key the runs depend on"
        )
    return conds


def gather(
    cfg: DictConfig, conds: dict[Condition, dict[str, Any]], names: dict[str, str], seeds: list[int]
) -> tuple[
    list[pd.DataFrame], list[dict[str, object]], list[tuple[str, int]], list[tuple[str, int]]
]:
    """Finished predictions of every condition × seed × fold: (frames, trained models, not
    finished, not scheduled). ``arm`` of each frame is the condition's label; each trained
    model is ``{"arm": label, **its classify summary}`` (for the exposure table); a missing run
    is "not finished" where its classify folder exists (running, failed or killed), else "not
    scheduled". A finished classify run, or this config's own run, is predicted here."""
    frames: list[pd.DataFrame] = []
    trained: list[dict[str, object]] = []
    not_finished: list[tuple[str, int]] = []
    not_scheduled: list[tuple[str, int]] = []
    for cond, combo in conds.items():
        source, views = parse_arm(cond.arm) if cond.arm != "baseline" else ("none", 1)
        label = cond.label(names)
        for seed in [int(combo["seed"])] if "seed" in combo else seeds:
            for fold in range(int(cfg.classifier.n_folds)):
                where = {**_arm_overrides(source, views), "split_idx": fold, "seed": seed}
                sub = with_overrides(cfg, {**where, **combo})
                folder = run_dir(sub, "predict")
                is_own = all(_current(sub, k) == _current(cfg, k) for k in [*where, *combo])
                if not is_done(folder) and (is_own or is_done(run_dir(sub, "classify"))):
                    folder = execute(sub, "predict")  # predicting is cheap once a model exists
                name = f"{label} seed {seed}" if len(seeds) > 1 else label
                if is_done(folder):
                    frame = io.read_table(folder / "predictions.csv").assign(arm=label)
                    frames.append(frame if "seed" in frame else frame.assign(seed=seed))
                    trained.append({"arm": label, **_classify_summary(sub)})
                elif run_dir(sub, "classify").is_dir():
                    not_finished.append((name, fold))
                else:
                    not_scheduled.append((name, fold))
    return frames, trained, not_finished, not_scheduled


@stage(
    "report",
    summary="per-class/macro AUC over folds with CIs, arms (and any report.sweep) vs baseline",
    hashed=False,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    from gensyn.report.render import write_report  # heavy: scipy

    rc = report_settings(cfg)
    conds = sweep_conditions(cfg, rc)
    names = short_names(list(dict.fromkeys(k for c in conds for k, _ in c.values)))
    seeds = [int(s) for s in rc.seeds] or [int(cfg.seed)]
    frames, trained, not_finished, not_scheduled = gather(cfg, conds, names, seeds)
    if not frames:
        raise GensynError("report: no finished predict runs for this config; run stage=predict")
    preds = pd.concat(frames, ignore_index=True)
    io.write_table(ctx.path("predictions.csv"), preds)
    notes = _notes(cfg, preds, len(frames), seeds, not_finished, not_scheduled)
    k = int(cfg.classifier.n_folds)
    base_arm = arm_name(*parse_arm(rc.baseline))
    base = next((c for c in conds if c.arm == base_arm), None)
    lead = None
    if base is not None and varied_keys(list(conds)):
        lead = partial(sweep_section, conds=list(conds), baseline=base, out_dir=ctx.out_dir,
                       level=float(rc.ci_level))  # fmt: skip
    declared = rc.primary
    primary = PrimaryComparison(
        str(declared.metric), str(declared.test_set), arm_name(*parse_arm(str(declared.arm)))
    )
    baseline = base.label(names) if base else base_arm
    page, summary = write_report(
        ctx.out_dir, preds, list(cfg.dataset.findings), title="Classification report",
        baseline=baseline, n_boot=int(rc.n_bootstrap), level=float(rc.ci_level),
        seed=int(cfg.seed), notes=notes, n_folds=k, lead=lead,
        extra_tables=[(EXPOSURE_CAPTION, exposure_table(trained))], primary=primary,
        external_test_sets=[str(t) for t in rc.test_datasets],
        internal_test_set=str(cfg.dataset.name),
    )  # fmt: skip
    counts = {"n_models": len(frames), "n_missing": len(not_finished) + len(not_scheduled),
              "n_not_scheduled": len(not_scheduled)}  # fmt: skip
    figures = (str(p.relative_to(ctx.out_dir)) for p in (ctx.out_dir / "figures").glob("*.png"))
    files = {"reports": [page.name], "figures": sorted(figures)}
    ctx.summary.update(report_summary(summary, baseline, counts, files))
    print(f"Classification report: {page}")
    for row in summary[summary["class"] == "macro"].itertuples():
        print(
            f"  {row.test_set:<12} {row.arm:<12} macro AUC {row.auc_mean:.3f} "
            f"[{row.ci_low:.3f}, {row.ci_high:.3f}] ({row.n_folds} fold(s))"
        )
    log_report(ctx, preds, list(cfg.dataset.findings))  # W&B: AUC per model as a table, figures


def _notes(
    cfg: DictConfig,
    preds: pd.DataFrame,
    n_models: int,
    seeds: list[int],
    not_finished: list[tuple[str, int]],
    not_scheduled: list[tuple[str, int]],
) -> list[str]:
    """The report's notes: what was gathered, how the models were scheduled, simulated data,
    the runs missing."""
    from gensyn.report.render import missing_note, schedule_note  # heavy: scipy

    notes = [
        f"dataset={cfg.dataset.name}, classifier={getattr(cfg.classifier.name, 'value', '')}"
        f", {preds['arm'].nunique()} arm(s), {n_models} model(s), seed(s) "
        f"{', '.join(map(str, seeds))}."
    ]
    # classifier.schedule may be absent from older configs: they trained by epochs
    schedule = OmegaConf.select(cfg, "classifier.schedule", default="epochs")
    notes.append(schedule_note(str(getattr(schedule, "value", schedule))))
    if cfg.dataset.name == "demo":
        notes.append("The demo data are SIMULATED: these numbers test the machinery, not medicine.")
    k = int(cfg.classifier.n_folds)
    if not_finished:
        notes.append(missing_note(not_finished, k, NOT_FINISHED))
    if not_scheduled:
        notes.append(missing_note(not_scheduled, k, NOT_SCHEDULED))
    return notes


def report_summary(
    summary: pd.DataFrame, baseline: str, counts: dict[str, int], files: dict[str, list[str]]
) -> dict[str, Any]:
    """The stage summary: macro AUC (and p of the difference from the baseline) per test set
    and arm, ``counts`` (models gathered and missing), ``files`` (reports, figures), the
    primary comparison."""
    out: dict[str, Any] = {}
    for row in summary[summary["class"] == "macro"].itertuples():
        out[f"macro_auc_{row.test_set}_{row.arm}"] = round(float(str(row.auc_mean)), 4)
        if bool(getattr(row, "vs_baseline", False)):
            out[f"p_delta_{row.test_set}_{row.arm}"] = float(str(row.p_value))
    out.update(counts)
    out.update(files)
    for _, first in summary[summary["primary"]].iterrows():  # at most one row
        out["primary"] = f"{first['class']} AUC, {first['arm']} vs {baseline} on " + str(
            first["test_set"]
        )
        out["primary_delta"] = round(float(first["delta"]), 4)
        out["primary_p"] = float(first["p_value"])
    return out


def sweep_section(
    summary: pd.DataFrame,
    conds: list[Condition],
    baseline: Condition,
    out_dir: Path,
    level: float,
) -> Page:
    """The report's first section: macro AUC against each varied key (table, figure, CSV)."""
    keys = varied_keys(conds)
    table = comparison_table(summary, conds, baseline)
    io.write_table(out_dir / "sweep_summary.csv", table)
    pct = f"{level:.0%}"
    page = Page("sweep")
    page.heading("What the sweep varied")
    page.text(
        "Varied: " + ", ".join(keys) + f". Baseline: {baseline.label(short_names(keys))}; "
        "a key reads 'any' where it does not change that arm's runs (e.g. C-arm angles for "
        "the arm without synthetic images). Per finding: the tables below; all numbers: "
        "sweep_summary.csv."
    )
    page.table(pretty_table(table, keys, pct), caption=f"Macro AUC per condition ({pct} CI)")
    for test_set, group in table.groupby("test_set", sort=False):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(test_set))
        fig = plots.plot_auc_vs_factors(
            group, keys, out_dir / "figures" / f"auc_vs_sweep_{safe}.png",
            title=f"{test_set}: macro AUC against what the sweep varied", level=level,
        )  # fmt: skip
        page.figure(fig, caption=f"Macro AUC ({pct} CI) against each varied key, {test_set}")
    return page


def _classify_summary(cfg: DictConfig) -> dict[str, object]:
    """The ``summary.json`` of the config's classify run ({} if it has none)."""
    path = run_dir(cfg, "classify") / "summary.json"
    return dict(io.read_json(path)) if path.is_file() else {}
