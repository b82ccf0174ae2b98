"""stage=gan_train: train the SyntheX CycleGAN (DRR ↔ real X-ray), resumable, then check it.

Outputs: ``generator_a2b.pt`` (used by gan_translate) and ``generator_b2a.pt``,
``train/checkpoint.pt`` (resume state), ``history.csv`` (losses and learning rate per
epoch), ``samples/epoch_NNNN.png`` (held-out DRR → translated → real X-ray),
``figures/`` (intensity histograms, before/after grid) and ``checks.json`` (domain gap
before and after translation on the held-out images).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from gensyn.base import io
from gensyn.base.bounds import hashed_field_names
from gensyn.base.devices import torch_device
from gensyn.config.generator import GeneratorConfig
from gensyn.config.settings import to_settings
from gensyn.core.registry import stage
from gensyn.gan import checks
from gensyn.gan.domains import domain_paths
from gensyn.gan.settings import CycleGANSettings
from gensyn.stages._shared import synthetic_seed, synthetic_seed_key

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext
    from gensyn.gan.trainer import CycleGANTrainer

log = logging.getLogger(__name__)


def _hashed_keys(cfg: DictConfig) -> tuple[str, ...]:
    """The generator's hashed keys (logging, translation and speed switches are declared
    unhashed in gensyn/gan/settings.py) and the seed of the synthetic images (``split_seed``,
    or ``seed`` with ``synthex_per_seed``: a CycleGAN per training seed)."""
    keys = [f"generator.{name}" for name in hashed_field_names(GeneratorConfig)]
    return (*keys, synthetic_seed_key(cfg))


@stage(
    "gan_train",
    summary="train the SyntheX CycleGAN (DRR <-> real X-ray); checkpoints, samples, checks",
    config_keys=_hashed_keys,
    upstream=("synthex_prep",),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    from gensyn.gan.trainer import CycleGANTrainer  # heavy: torch

    opts = to_settings(cfg.generator, CycleGANSettings)
    table = io.read_table(ctx.upstream_dir("synthex_prep") / "domains.csv")
    train_a, train_b = domain_paths(table, "A", "train"), domain_paths(table, "B", "train")
    held_a, held_b = domain_paths(table, "A", "heldout"), domain_paths(table, "B", "heldout")
    trainer = CycleGANTrainer(
        opts,
        train_a,
        train_b,
        ctx.out_dir / "train",
        device=str(torch_device(str(cfg.device), "gan_train")),
        seed=synthetic_seed(cfg),
        num_workers=cfg.num_workers,
        on_epoch_end=_epoch_logger(ctx, opts, held_a, held_b),
    )
    history = trainer.fit()
    trainer.save_generator(ctx.path("generator_a2b.pt"), "a2b")
    trainer.save_generator(ctx.path("generator_b2a.pt"), "b2a")
    io.write_table(ctx.path("history.csv"), pd.DataFrame(history))
    last = history[-1]
    ctx.summary.update(
        epochs=len(history),
        train_images_a=len(train_a),
        train_images_b=len(train_b),
        train_time_s=round(sum(h["epoch_time_s"] for h in history), 2),
        iterations_per_s=round(last["iterations_per_s"], 3),
        device=str(trainer.device),
        cuda_graphs=bool(trainer.model.use_graphs and not trainer.model.graphs_failed),
        cuda_graphs_failed=trainer.model.graphs_failed,
        **{k: round(v, 5) for k, v in last.items() if k.startswith("loss_")},
    )
    ctx.summary.update(_check(trainer, held_a, held_b, opts, ctx, synthetic_seed(cfg)))


def _epoch_logger(
    ctx: RunContext, opts: CycleGANSettings, held_a: list[str], held_b: list[str]
) -> Callable[[CycleGANTrainer, dict[str, float]], None]:
    """The trainer's end-of-epoch call: log the metrics and, every ``sample_every_epochs``
    and at the last epoch, write ``samples/epoch_NNNN.png`` (held-out DRR | translated |
    real X-ray)."""
    from gensyn.gan.data import load_image, tensor_to_uint8  # heavy: torch

    n_show = min(opts.num_samples, len(held_a), len(held_b))
    show_a = [load_image(p, opts.input_nc) for p in held_a[:n_show]]
    show_b = [load_image(p, opts.output_nc) for p in held_b[:n_show]]

    def on_epoch_end(trainer: CycleGANTrainer, metrics: dict[str, float]) -> None:
        epoch = int(metrics["epoch"])
        ctx.log_metrics(metrics, step=epoch)
        every = max(1, opts.sample_every_epochs)
        last = epoch == trainer.total_epochs
        if n_show and (epoch % every == 0 or last):
            fake = [tensor_to_uint8(trainer.model.translate(a[None]))[0] for a in show_a]
            real_a = [tensor_to_uint8(a[None])[0] for a in show_a]
            real_b = [tensor_to_uint8(b[None])[0] for b in show_b]
            grid = checks.image_grid(
                list(zip(real_a, fake, real_b, strict=True)), titles=("DRR", "SyntheX", "real")
            )
            path = io.write_image(ctx.path("samples", f"epoch_{epoch:04d}.png"), grid)
            ctx.log_image("samples", path, caption=f"epoch {epoch}: DRR | translated | real")

    return on_epoch_end


def _check(
    trainer: Any, held_a: list[str], held_b: list[str], opts: Any, ctx: RunContext, seed: int
) -> dict[str, Any]:
    """Histograms, domain gap before/after and a before/after grid on the held-out images."""
    import torch  # heavy: torch

    from gensyn.gan.data import load_image, tensor_to_uint8  # heavy: torch
    from gensyn.gan.translate import translate_batch  # heavy: torch

    if not held_a or not held_b:
        log.warning("no held-out images: skipping the translation checks")
        return {}
    real = [io.read_image(p) for p in held_b]
    drr = [io.read_image(p) for p in held_a]
    translated: list[Any] = []
    batch = max(1, opts.translate_batch_size)
    for i in range(0, len(held_a), batch):
        images = torch.stack([load_image(p, opts.input_nc) for p in held_a[i : i + batch]])
        out = translate_batch(trainer.model.g_ab.eval(), images, opts.precision, opts.channels_last)
        translated.extend(tensor_to_uint8(out))
    hists = {
        "real X-ray": checks.intensity_histogram(real),
        "DRR": checks.intensity_histogram(drr),
        "translated DRR": checks.intensity_histogram(translated),
    }
    checks.plot_histograms(
        ctx.path("figures", "histograms.png"), hists, "held-out intensity histograms"
    )
    n = min(4, len(drr))
    grid = checks.image_grid([[drr[i], translated[i]] for i in range(n)], titles=("DRR", "SyntheX"))
    io.write_image(ctx.path("figures", "before_after.png"), grid)
    ctx.log_image(
        "before_after",
        ctx.out_dir / "figures" / "before_after.png",
        caption="held-out DRR | translated",
    )
    result: dict[str, Any] = {
        "histogram_emd_drr_vs_real": checks.histogram_distance(hists["DRR"], hists["real X-ray"]),
        "histogram_emd_translated_vs_real": checks.histogram_distance(
            hists["translated DRR"], hists["real X-ray"]
        ),
        "heldout_a": len(held_a),
        "heldout_b": len(held_b),
    }
    folds = min(5, len(real), len(drr))
    if folds >= 2:
        result["domain_gap_acc_drr"] = checks.domain_gap_accuracy(real, drr, seed, folds)
        result["domain_gap_acc_translated"] = checks.domain_gap_accuracy(
            real, translated, seed, folds
        )
    io.write_json(ctx.path("checks.json"), result)
    ctx.log_metrics({k: v for k, v in result.items() if isinstance(v, float)})
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    result["figures"] = ["figures/before_after.png", "figures/histograms.png"]
    return result
