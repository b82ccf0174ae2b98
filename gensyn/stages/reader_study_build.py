"""Stage ``reader_study_build``: a blinded real-vs-synthetic image set and its answer key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.config.settings import to_settings
from gensyn.core.registry import load_stages, stage
from gensyn.reader.audit import AuditParams
from gensyn.reader.blinding import BlindingParams
from gensyn.reader.build import Source, build_study

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext


def _upstream(cfg: DictConfig) -> list[str]:
    known = load_stages()  # a source naming an unknown stage is reported by run()
    names = [s.stage for s in cfg.reader_study.sources if s.stage and s.stage in known]
    return list(dict.fromkeys(names))


@stage(
    "reader_study_build",
    summary="pick N images per source (seeded), make them alike, write blinded images + answer key",
    config_keys=(
        "reader_study.sources",
        "reader_study.images_per_source",
        "reader_study.blinding",
        "reader_study.force_blinding",
        "seed",
    ),
    upstream=_upstream,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Outputs: ``images/<id>.png`` (served to readers), ``key/answer_key.csv`` (never served)."""
    rs = cfg.reader_study
    if not rs.sources:
        raise GensynError(
            "reader_study.sources is empty: configure at least one real and one fake source"
        )
    sources = []
    for s in rs.sources:
        if s.stage and s.stage not in ctx.upstream_dirs:
            raise GensynError(
                f"reader_study source {s.name!r} reads stage {s.stage!r}, which does not exist"
            )
        if s.stage:
            folder = ctx.upstream_dir(s.stage) / s.subdir
        elif s.folder:
            folder = Path(s.folder)
        else:
            raise GensynError(f"reader_study source {s.name!r} needs `stage` or `folder`")
        sources.append(Source(s.name, s.truth, folder, s.pattern))
    params = to_settings(rs.blinding, BlindingParams)
    audit = to_settings(rs.blinding, AuditParams)
    try:
        key = build_study(
            sources, rs.images_per_source, ctx.out_dir, cfg.seed, params=params, audit=audit,
            force=rs.force_blinding,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        raise GensynError(f"reader_study_build: {exc}") from exc

    pairs = io.read_table(ctx.out_dir / "key" / "blinding_audit.csv")
    if len(pairs):
        order = pairs.assign(p=pairs[["cv_p", "worst_p"]].min(axis=1).fillna(1.0))
        order = order.sort_values(["real_vs_fake", "p"], ascending=[False, True], kind="stable")
        worst = order.iloc[0]  # the real/fake pair told apart best (others cannot leak truth)
        ctx.summary["blinding_audit"] = (
            f"{worst['source_a']} vs {worst['source_b']}: accuracy {worst['cv_accuracy']:.2f}"
            f" (p = {worst['cv_p']:.4f}), worst feature {worst['worst_feature']}"
            f" {worst['worst_separation']:.2f} (p = {worst['worst_p']:.4f});"
            " a real/fake pair fails at p <= "
            f"{worst['threshold']:.4f}{'' if worst['judged'] else ' (too few to judge)'}"
        )
    if (ctx.out_dir / "key" / "blinding_warning.txt").exists():
        ctx.summary["blinding_forced"] = "audit failed, build forced (key/blinding_warning.txt)"
    ctx.summary["n_images"] = len(key)
    ctx.summary["sources"] = ", ".join(f"{s.name} ({s.truth})" for s in sources)
    ctx.log_metrics({"n_images": len(key)})
