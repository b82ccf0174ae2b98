"""stage=gan_translate: turn every DRR of the drr run into a SyntheX image (A→B generator).

Full resolution, no flips, batched. Outputs ``images/...png`` (same relative layout as
the DRRs) and ``manifest.csv``: one row per image with the upstream DRR manifest's columns
(CT, patient, pose, the CT's labels, physics ...), ``path`` (the SyntheX image, relative to this folder like
the drr manifest's) and ``source_drr`` (absolute path of the DRR it came from). Existing images are skipped, so a killed run resumes. ``num_workers`` processes decode DRRs ahead of the GPU and
``generator.translate_write_threads`` threads (4) encode and write, whatever ``num_workers``
is: one encodes ~900 images/s (ISA-L deflate, ~1.1 ms a 512² image) and more contend for the
GIL with the thread that drives the GPU, whose every torch call releases and retakes it
(``benchmarks/writer_threads.py``: 16 busy writer threads made 20 tiny torch calls cost
3.2 ms instead of 0.06 on 2 cores, 23.5 ms instead of 0.2 on an H200 host, where 9,600
images took 23.8 s after compilation with 16 threads and 18.0 s with 4). The summary holds
the time breakdown (``time_read_s`` ... ``time_wall_s``) and ``images_per_s``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gensyn.base import io
from gensyn.base.degenerate import DegenerateOutputError
from gensyn.base.devices import torch_device
from gensyn.base.errors import GensynError
from gensyn.base.pipeline_io import StageTimer
from gensyn.core.registry import stage
from gensyn.gan import checks
from gensyn.gan.domains import DRR_MANIFESTS, read_upstream_table

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


def synthex_path(drr: str, index: int, drr_dir: Path) -> str:
    """Where the SyntheX image of DRR ``drr`` goes, relative to this run folder: the DRR's own
    place below the drr run folder, under ``images/`` (``images/<ct>/<view>.png`` for
    ``images/<ct>/<view>.png``), or a numbered name for a DRR outside it."""
    try:
        rel = Path(drr).resolve().relative_to(drr_dir.resolve())
    except ValueError:  # a DRR outside the run folder: keep names unique
        rel = Path(f"{index:07d}_{Path(drr).name}")
    if rel.parts[0] == "images" and len(rel.parts) > 1:  # already below images/: not twice
        rel = rel.relative_to("images")
    return (Path("images") / rel.with_suffix(".png")).as_posix()


@stage(
    "gan_translate",
    summary="translate all DRRs to SyntheX images with the trained generator (+ manifest)",
    config_keys=(),
    upstream=("gan_train", "drr"),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    from gensyn.gan.translate import load_generator, translate_files  # heavy: torch

    drr_dir = ctx.upstream_dir("drr")
    manifest = read_upstream_table(drr_dir, DRR_MANIFESTS, "DRR manifest")
    if len(manifest) == 0:
        raise ValueError(f"the drr run {drr_dir} lists no DRRs in its manifest")
    device = torch_device(str(cfg.device), "gan_translate")
    net, saved = load_generator(ctx.upstream_dir("gan_train") / "generator_a2b.pt", device)
    sources = manifest["path"].astype(str).tolist()
    outputs = [synthex_path(src, i, drr_dir) for i, src in enumerate(sources)]
    out_paths = [str(ctx.out_dir / p) for p in outputs]
    timer = StageTimer()  # decoding and writing overlap the GPU: see gensyn.base.pipeline_io
    compile_report: dict[str, Any] = {}
    g = cfg.generator
    try:
        written = translate_files(
            net, sources, out_paths, net.in_channels, g.translate_batch_size,
            saved["precision"], g.translate_channels_last, cfg.num_workers,
            write_threads=int(g.translate_write_threads), timer=timer,
            compile=bool(g.compile), report=compile_report,
        )  # fmt: skip
    except DegenerateOutputError as exc:  # garbage is never marked DONE
        raise GensynError(
            f"gan_translate: {exc}; the run is not marked DONE. The generator of "
            f"{ctx.upstream_dir('gan_train')} gives no usable images: check its losses "
            "(metrics.jsonl) and retrain with other generator.* settings (docs/synthex.md)"
        ) from exc
    timing = timer.log(log, "gan_translate", written, "images")
    io.write_table(ctx.path("manifest.csv"), synthex_manifest(manifest, sources, outputs))
    _comparison_figure(ctx, sources, out_paths)
    if written:
        ctx.log_metrics({"images_translated": written, **timing})
    ctx.summary.update(
        n_images=len(outputs),
        translated_now=written,
        device=str(device),
        num_workers=int(cfg.num_workers),
        **compile_report,
        figures=["figures/drr_vs_synthex.png"],
        **timing,
    )


def synthex_manifest(
    manifest: pd.DataFrame, sources: list[str], outputs: list[str]
) -> pd.DataFrame:
    """The DRR manifest's rows with ``path`` the SyntheX image (first) and ``source_drr`` the
    DRR it came from."""
    out = manifest.copy()
    out.insert(0, "source_drr", sources)
    out["path"] = outputs
    return out[["path", *[c for c in out.columns if c != "path"]]]


def _comparison_figure(ctx: RunContext, sources: list[str], out_paths: list[str]) -> None:
    """``figures/drr_vs_synthex.png``: the first DRRs beside their SyntheX images."""
    n = min(4, len(sources))
    grid = checks.image_grid(
        [[io.read_image(sources[i]), io.read_image(out_paths[i])] for i in range(n)],
        titles=("DRR", "SyntheX"),
    )
    io.write_image(ctx.path("figures", "drr_vs_synthex.png"), grid)
    ctx.log_image(
        "drr_vs_synthex", ctx.out_dir / "figures" / "drr_vs_synthex.png", caption="DRR | SyntheX"
    )
