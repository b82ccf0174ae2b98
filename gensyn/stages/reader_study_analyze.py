"""Stage ``reader_study_analyze``: pull the answers, join them with the key, write the report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gensyn.base import io
from gensyn.core.registry import stage
from gensyn.reader.analyze import analyze
from gensyn.reader.report import write_report

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext


def _upstream(cfg: DictConfig) -> list[str]:
    if cfg.reader_study.answers_file:
        return ["reader_study_build"]
    return ["reader_study_build", "reader_study_serve"]


@stage(
    "reader_study_analyze",
    summary="reader-study answers vs key: accuracy, sens/spec, cluster CIs, Fleiss kappa, time, reasons",
    upstream=_upstream,
    hashed=False,  # answers keep arriving while a study runs: every analysis is a new folder
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Writes ``answers.csv``, result tables, figures and ``report.md`` / ``report.html``."""
    rs = cfg.reader_study
    key = io.read_table(ctx.upstream_dir("reader_study_build") / "key" / "answer_key.csv")
    key["image_id"] = key["image_id"].astype(str)
    answers, origin = _answers(cfg, ctx)
    answers["image_id"] = answers["image_id"].astype(str)
    io.write_table(ctx.out_dir / "answers.csv", answers)
    results = analyze(
        answers, key, rs.uncertain_as, list(rs.readers), rs.bootstrap_replicates, cfg.seed
    )
    write_report(
        results,
        ctx.out_dir,
        f"Reader study ({cfg.experiment_name})",
        context={"answers from": origin, "seed": cfg.seed},
    )
    o = results.overall
    ctx.summary.update(
        {
            "answers": o["answers"],
            "accuracy": o["accuracy"],
            "accuracy_ci": f"{o.get('accuracy_cluster_ci_low', float('nan')):.3f}-"
            f"{o.get('accuracy_cluster_ci_high', float('nan')):.3f}",
            "sensitivity": o["sensitivity"],
            "specificity": o["specificity"],
            "fleiss_kappa": results.agreement["fleiss_kappa"],
            "uncertain_as": rs.uncertain_as,
            "figures": ["figures/correct_by_source.png", "figures/readers.png"],
            "reports": ["report.html"],
        }
    )
    ctx.log_metrics({k: float(o[k]) for k in ("accuracy", "sensitivity", "specificity")})


def _answers(cfg: DictConfig, ctx: RunContext) -> tuple[pd.DataFrame, str]:
    """(the readers' answers, where they came from): ``reader_study.answers_file``, else the
    Label Studio servers of ``reader_study_serve`` (a server stopped since is started again
    from its data)."""
    from gensyn.reader.sites import (  # heavy: requests (Label Studio's API)
        collect_answers,
        credentials_from_env,
        load_answers_file,
        read_sites,
        start_server,
    )

    rs, srv = cfg.reader_study, cfg.reader_study.server
    if rs.answers_file:
        return load_answers_file(rs.answers_file), f"answers file {rs.answers_file}"
    sites = read_sites(ctx.upstream_dir("reader_study_serve") / "sites.json")
    creds = credentials_from_env(
        list(rs.readers),
        srv.admin_email_env,
        srv.admin_password_env,
        srv.reader_password_env,
        srv.admin_token_env,
        need_readers=False,
    )
    for site in sites:  # a server stopped since (reboot): start it again from its data
        if site.data_dir:
            start_server(site, creds, srv.venv, srv.host, srv.startup_timeout_s)
    return collect_answers(sites, creds), "Label Studio API"
