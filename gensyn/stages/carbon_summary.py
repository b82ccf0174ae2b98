"""stage=carbon_summary: every run folder's carbontracker logs -> one energy / CO2eq table.

Writes ``carbon_runs.csv`` (one row per monitored run: stage, run hash, experiment, arm,
fold, status, duration_s, energy_kwh, co2eq_g), ``carbon_summary.csv`` (per stage, per
stage and arm, total) and a report page. Runs without a finished carbontracker summary are
rebuilt from their per-epoch lines (status ``partial``), see :mod:`gensyn.tracking.carbon_logs`.
It always runs anew (a collector: not hashed), in a time-stamped folder.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gensyn.base import io
from gensyn.core.registry import stage
from gensyn.report.page import Page
from gensyn.tracking.carbon_logs import assumptions, collect, sig_figs, summarise

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext


@stage(
    "carbon_summary",
    summary="collect every run's carbontracker logs into one energy / CO2eq table",
    hashed=False,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    runs = collect(cfg.paths.runs_dir, exclude=ctx.out_dir)  # not this run's own logs
    summary = summarise(runs)
    io.write_table(ctx.path("carbon_runs.csv"), runs)
    io.write_table(ctx.path("carbon_summary.csv"), summary)
    total = summary[summary["level"] == "total"].iloc[0]
    page = Page("Energy and CO2eq (carbontracker)")
    page.text(
        f"{len(runs)} monitored run(s) below {cfg.paths.runs_dir}; each row sums its run "
        "folders' own figures. Status 'partial' = energy rebuilt from per-epoch lines of a run "
        "that stopped before its summary. Figures are rounded to 3 significant digits."
    )
    page.text("Assumptions: " + assumptions(runs))
    page.table(sig_figs(summary).to_dict("records"))
    ctx.summary["reports"] = [page.write(ctx.out_dir, "carbon").name]

    def num(v: object) -> float:
        f = float(v)  # type: ignore[arg-type]
        return 0.0 if math.isnan(f) else round(f, 9)

    ctx.summary.update(
        n_runs=len(runs),
        energy_kwh=num(total["energy_kwh"]),
        co2eq_g=num(total["co2eq_g"]),
        duration_s_total=num(total["duration_s"]),
    )
