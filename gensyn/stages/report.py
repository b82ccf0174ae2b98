"""stage=report: gather a grid's predictions and write the classification report.

For every arm in ``report.arms`` (``sampling`` option names), every fold
0 .. ``classifier.n_folds - 1`` and every seed in ``report.seeds`` (default: only ``seed``)
it looks up the ``predict`` run of that config by hash (the rest of the config is this
one's) and uses it if it is finished. Missing runs are listed in the report, not trained:
training 45 models is the sweep's job, not the report's. A finished ``classify`` run without
its ``predict`` run is predicted here (cheap), and the current config's own arm, fold and
seed are run if missing, so the demo pipeline always has one.

Writes ``report.md`` / ``report.html``, ``auc_summary.csv`` (every statistic),
``predictions.csv`` (all gathered predictions) and ``figures/``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gensyn.registry import stage

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.run_context import RunContext

log = logging.getLogger(__name__)


def report_settings(cfg: DictConfig) -> DictConfig:
    """``cfg.report`` merged over the :class:`ReportConfig` defaults (typed either way)."""
    from omegaconf import OmegaConf

    from gensyn.config.report import ReportConfig

    base = OmegaConf.structured(ReportConfig)
    return OmegaConf.merge(base, cfg.get("report") or {})  # type: ignore[return-value]


@stage(
    "report",
    summary="per-class/macro AUC over folds with CIs, arms vs baseline, ROC and AUC-vs-views plots",
    hashed=False,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    import pandas as pd
    from omegaconf import OmegaConf

    from gensyn import io
    from gensyn.classify.sampling import arm_name, parse_arm
    from gensyn.errors import GensynError
    from gensyn.report.multiplicity import PrimaryComparison
    from gensyn.report.render import missing_note, schedule_note, write_report
    from gensyn.runs import execute, is_done, run_dir, with_overrides
    from gensyn.stages._shared import source_of

    rc = report_settings(cfg)
    own = (source_of(cfg), int(cfg.sampling.views_per_ct))
    arms = [parse_arm(a) for a in rc.arms]
    if own not in arms:
        arms.append(own)
    seeds = [int(s) for s in rc.seeds] or [int(cfg.seed)]
    own_model = (int(cfg.split_idx), int(cfg.seed))
    frames: list[pd.DataFrame] = []
    missing: list[tuple[str, int]] = []
    for source, views in arms:
        for seed in seeds:
            for fold in range(int(cfg.classifier.n_folds)):
                where = {"sampling.source": source, "sampling.views_per_ct": views}
                sub = with_overrides(cfg, {**where, "split_idx": fold, "seed": seed})
                folder = run_dir(sub, "predict")
                is_own = (source, views) == own and (fold, seed) == own_model
                if not is_done(folder) and (is_own or is_done(run_dir(sub, "classify"))):
                    folder = execute(sub, "predict")  # predicting is cheap once a model exists
                if is_done(folder):
                    frame = io.read_table(folder / "predictions.csv")
                    frames.append(frame if "seed" in frame else frame.assign(seed=seed))
                else:
                    label = arm_name(source, views)
                    missing.append((f"{label} seed {seed}" if len(seeds) > 1 else label, fold))
    if not frames:
        raise GensynError("report: no finished predict runs for this config; run stage=predict")
    preds = pd.concat(frames, ignore_index=True)
    io.write_table(ctx.path("predictions.csv"), preds)
    notes = [
        f"dataset={cfg.dataset.name}, classifier={getattr(cfg.classifier.name, 'value', '')}"
        f", {preds['arm'].nunique()} arm(s), {len(frames)} model(s), seed(s) "
        f"{', '.join(map(str, seeds))}."
    ]
    # classifier.schedule may be absent from older configs: they trained by epochs
    schedule = OmegaConf.select(cfg, "classifier.schedule", default="epochs")
    notes.append(schedule_note(str(getattr(schedule, "value", schedule))))
    if cfg.dataset.name == "demo":
        notes.append("The demo data are SIMULATED: these numbers test the machinery, not medicine.")
    if missing:
        notes.append(missing_note(missing, int(cfg.classifier.n_folds)))
    baseline = arm_name(*parse_arm(rc.baseline))
    declared = rc.primary
    primary = PrimaryComparison(
        str(declared.metric), str(declared.test_set), arm_name(*parse_arm(str(declared.arm)))
    )
    page, summary = write_report(
        ctx.out_dir,
        preds,
        list(cfg.dataset.findings),
        title="Classification report",
        baseline=baseline,
        n_boot=int(rc.n_bootstrap),
        level=float(rc.ci_level),
        seed=int(cfg.seed),
        notes=notes,
        n_folds=int(cfg.classifier.n_folds),
        primary=primary,
        external_test_sets=[str(t) for t in rc.test_datasets],
        internal_test_set=str(cfg.dataset.name),
    )
    macro = summary[summary["class"] == "macro"]
    for row in macro.itertuples():
        ctx.summary[f"macro_auc_{row.test_set}_{row.arm}"] = round(float(str(row.auc_mean)), 4)
        if bool(getattr(row, "vs_baseline", False)):
            ctx.summary[f"p_delta_{row.test_set}_{row.arm}"] = float(str(row.p_value))
    ctx.summary["n_models"] = len(frames)
    ctx.summary["n_missing"] = len(missing)
    ctx.summary["reports"] = [page.name]
    ctx.summary["figures"] = sorted(
        str(p.relative_to(ctx.out_dir)) for p in (ctx.out_dir / "figures").glob("*.png")
    )
    for _, first in summary[summary["primary"]].iterrows():  # at most one row
        ctx.summary["primary"] = f"{first['class']} AUC, {first['arm']} vs {baseline} on " + str(
            first["test_set"]
        )
        ctx.summary["primary_delta"] = round(float(first["delta"]), 4)
        ctx.summary["primary_p"] = float(first["p_value"])
    print(f"Classification report: {page}")
    for row in macro.itertuples():
        print(
            f"  {row.test_set:<12} {row.arm:<12} macro AUC {row.auc_mean:.3f} "
            f"[{row.ci_low:.3f}, {row.ci_high:.3f}] ({row.n_folds} fold(s))"
        )
