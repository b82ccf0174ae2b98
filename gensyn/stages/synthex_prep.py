"""stage=synthex_prep: choose the CycleGAN's two domains (DRRs and real X-rays), seeded.

Writes ``domains.csv`` (columns ``domain`` A|B, ``subset`` train|heldout, ``path``,
``group`` and the upstream tables' columns). Images are referenced, not copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gensyn.base import io
from gensyn.core.registry import stage
from gensyn.gan.domains import (
    DRR_MANIFESTS,
    XRAY_TABLES,
    read_upstream_table,
    select_domains,
)
from gensyn.stages._shared import synthetic_seed, synthetic_seed_key

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext


@stage(
    "synthex_prep",
    summary="select the CycleGAN domains: DRRs (A) and real X-rays (B), train + held-out",
    config_keys=lambda cfg: (
        "generator.max_dataset_size",
        "generator.heldout_size",
        synthetic_seed_key(cfg),
    ),
    upstream=("drr", "prepare_xrays"),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    drrs = read_upstream_table(ctx.upstream_dir("drr"), DRR_MANIFESTS, "DRR manifest")
    xrays = read_upstream_table(ctx.upstream_dir("prepare_xrays"), XRAY_TABLES, "X-ray")
    table = select_domains(
        drrs, xrays, cfg.generator.max_dataset_size, cfg.generator.heldout_size, synthetic_seed(cfg)
    )
    io.write_table(ctx.path("domains.csv"), table)
    counts = table.groupby(["domain", "subset"]).size().reset_index(name="n")
    for row in counts.itertuples():
        ctx.summary[f"n_{row.domain}_{row.subset}"] = int(row.n)  # type: ignore[arg-type]
    ctx.summary["n_drrs_available"] = len(drrs)
    ctx.summary["n_xrays_available"] = len(xrays)
