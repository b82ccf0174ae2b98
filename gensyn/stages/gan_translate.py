"""stage=gan_translate: turn every DRR of the drr run into a SyntheX image (A→B generator).

Full resolution, no flips, batched. Outputs ``images/...png`` (same relative layout as
the DRRs) and ``manifest.csv``: one row per image with the upstream DRR manifest's columns
(CT, patient, pose, the CT's labels, physics ...), ``path`` (the SyntheX image, relative to this folder like
the drr manifest's) and ``source_drr`` (absolute path of the DRR it came from). Existing images are skipped, so a killed run resumes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gensyn.registry import stage

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.runs import RunContext

log = logging.getLogger(__name__)


@stage(
    "gan_translate",
    summary="translate all DRRs to SyntheX images with the trained generator (+ manifest)",
    config_keys=(),
    upstream=("gan_train", "drr"),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    import time
    from pathlib import Path

    from gensyn import io
    from gensyn.devices import torch_device
    from gensyn.gan import checks
    from gensyn.gan.domains import DRR_MANIFESTS, read_upstream_table
    from gensyn.gan.translate import load_generator, translate_files

    drr_dir = ctx.upstream_dir("drr")
    manifest = read_upstream_table(drr_dir, DRR_MANIFESTS, "DRR manifest")
    if len(manifest) == 0:
        raise ValueError(f"the drr run {drr_dir} lists no DRRs in its manifest")
    device = torch_device(str(cfg.device), "gan_translate")
    net, saved = load_generator(ctx.upstream_dir("gan_train") / "generator_a2b.pt", device)

    sources = manifest["path"].astype(str).tolist()
    outputs = []
    for i, src in enumerate(sources):
        try:
            rel = Path(src).resolve().relative_to(drr_dir.resolve())
        except ValueError:  # a DRR outside the run folder: keep names unique
            rel = Path(f"{i:07d}_{Path(src).name}")
        outputs.append(str(Path("images") / rel.with_suffix(".png")))

    start = time.perf_counter()
    out_paths = [str(ctx.out_dir / p) for p in outputs]
    written = translate_files(
        net,
        sources,
        out_paths,
        net.in_channels,
        cfg.generator.translate_batch_size,
        saved["precision"],
        cfg.generator.translate_channels_last,
        cfg.num_workers,
    )
    seconds = time.perf_counter() - start
    out = manifest.copy()
    out.insert(0, "source_drr", sources)
    out["path"] = outputs
    out = out[["path", *[c for c in out.columns if c != "path"]]]
    io.write_table(ctx.path("manifest.csv"), out)

    n = min(4, len(sources))
    grid = checks.image_grid(
        [[io.read_image(sources[i]), io.read_image(out_paths[i])] for i in range(n)],
        titles=("DRR", "SyntheX"),
    )
    io.write_image(ctx.path("figures", "drr_vs_synthex.png"), grid)
    ctx.log_image(
        "drr_vs_synthex", ctx.out_dir / "figures" / "drr_vs_synthex.png", caption="DRR | SyntheX"
    )
    rate = written / seconds if written and seconds > 0 else 0.0
    ctx.log_metrics({"images_translated": written, "images_per_s": rate})
    ctx.summary.update(
        n_images=len(outputs),
        translated_now=written,
        images_per_s=round(rate, 2),
        figures=["figures/drr_vs_synthex.png"],
    )
