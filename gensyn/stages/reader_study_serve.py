"""Stage ``reader_study_serve``: the blinded study in Label Studio, one site per reader."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gensyn.base import io
from gensyn.core.registry import stage

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.runs import RunContext


@stage(
    "reader_study_serve",
    summary="start/connect Label Studio (one server per reader), create projects, accounts, tasks",
    config_keys=(
        "reader_study.readers",
        "reader_study.server.mode",
        "reader_study.server.urls",
        "seed",
    ),
    upstream=("reader_study_build",),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Writes ``sites.json`` (URL, project, data folder per reader; no credentials).

    Label Studio's databases live in ``reader_study.server.data_root/<run hash>/<reader>``,
    outside the run folder, so ``force=true`` on this stage can never delete answers.
    Started servers keep running after this stage ends (stop: ``python -m gensyn.reader stop``).
    """
    from gensyn.reader.serve import (  # heavy: requests (Label Studio's API)
        reader_email,
        reader_url,
        site_records,
    )
    from gensyn.reader.sites import (  # heavy: requests (Label Studio's API)
        connect_sites,
        credentials_from_env,
        start_sites,
    )

    rs, srv = cfg.reader_study, cfg.reader_study.server
    images = sorted((ctx.upstream_dir("reader_study_build") / "images").glob("*.png"))
    creds = credentials_from_env(
        list(rs.readers),
        srv.admin_email_env,
        srv.admin_password_env,
        srv.reader_password_env,
        srv.admin_token_env if srv.mode == "connect" else "",
    )
    if srv.mode == "start":
        data_root = Path(srv.data_root) / ctx.stage_hash
        sites, _ = start_sites(
            images,
            list(rs.readers),
            creds,
            data_root,
            srv.base_port,
            cfg.seed,
            venv=srv.venv,
            host=srv.host,
            timeout_s=srv.startup_timeout_s,
        )
    else:
        sites = connect_sites(images, dict(srv.urls), list(rs.readers), creds, cfg.seed)
    io.write_json(ctx.out_dir / "sites.json", site_records(sites))
    ctx.summary["n_images"] = len(images)
    ctx.summary["sites"] = ", ".join(f"{s.reader_id}: {s.url}" for s in sites)
    for s in sites:  # one line per reader, for the coordinator to hand out
        print(f"reader {s.reader_id}: {reader_url(s)}  (login {reader_email(s.reader_id)})")
