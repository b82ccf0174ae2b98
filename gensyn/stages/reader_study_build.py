"""Stage ``reader_study_build``: a blinded real-vs-synthetic image set and its answer key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gensyn.registry import stage

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.runs import RunContext


def _upstream(cfg: DictConfig) -> list[str]:
    from gensyn.registry import load_stages

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
        "seed",
    ),
    upstream=_upstream,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Outputs: ``images/<id>.png`` (served to readers), ``key/answer_key.csv`` (never served)."""
    from gensyn.errors import GensynError
    from gensyn.reader.blinding import BlindingParams
    from gensyn.reader.build import Source, build_study

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
    b = rs.blinding
    params = BlindingParams(
        image_size_px=b.image_size_px,
        margin_fraction=b.margin_fraction,
        border_std_fraction=b.border_std_fraction,
        field_dark_fraction=b.field_dark_fraction,
        remove_markers=b.remove_markers,
        window_percentiles=(b.window_low_percentile, b.window_high_percentile),
    )
    try:
        key = build_study(sources, rs.images_per_source, ctx.out_dir, seed=cfg.seed, params=params)
    except (ValueError, FileNotFoundError) as exc:
        raise GensynError(f"reader_study_build: {exc}") from exc
    audit_file = ctx.out_dir / "key" / "blinding_audit.csv"
    if audit_file.exists():
        import logging

        from gensyn import io

        audit = io.read_table(audit_file)
        worst = audit.loc[audit["separation"].idxmax()]
        ctx.summary["blinding_worst_feature"] = (
            f"{worst['feature']} (separation {worst['separation']:.2f})"
        )
        if worst["separation"] > 0.9:
            logging.getLogger(__name__).warning(
                "reader study: %s alone separates fake from real images (%.2f); look at the "
                "blinded images before serving them (%s)",
                worst["feature"],
                worst["separation"],
                audit_file,
            )
    ctx.summary["n_images"] = len(key)
    ctx.summary["sources"] = ", ".join(f"{s.name} ({s.truth})" for s in sources)
    ctx.log_metrics({"n_images": len(key)})
