"""stage=classify: train one classifier of one sampling arm on one cross-validation fold.

Reads ``xrays.csv`` of ``prepare_xrays`` (real images; ``split == train`` rows are folded,
patient-level and multilabel-stratified, into ``classifier.n_folds`` folds; fold
``split_idx`` validates), and for ``sampling.source=drr|synthex`` the manifest of ``drr`` or
``gan_translate`` plus the CT labels of ``convert``: the centre view + ``views_per_ct - 1``
angled views of every CT join the training folds only.

Writes ``arm.json`` (arm name and image counts), ``split.csv`` (the folds used, drawn with
``split_seed``, also kept in ``<runs_dir>/splits/`` and reused by every arm, fold and
training ``seed``), ``train_images.csv``,
``val_images.csv``, ``checkpoint.npz`` (each epoch; a killed run resumes there),
``best.keras`` (best validation macro AUC) and ``history.csv``. ``summary.json`` records the
``schedule``, the ``optimizer_steps`` taken (``classifier.schedule=steps`` gives every arm
of a fold the baseline's number), the ``real_images_seen`` and ``synthetic_images_seen`` (the
images fed to the optimiser, counted batch by batch; ``real_times_seen_min/max``: the fewest
and most times one real image was fed; ``synthetic_per_batch`` under ``real_epochs``), and
``image_cache``: whether the decode-once image caches were ``written``, ``used`` (found),
``off`` or not written (the reason). ``time_setup_s``, ``time_fit_s``, ``time_validate_s``,
``time_checkpoint_s`` and ``time_save_s`` say where this call's seconds went.

``classifier.cache`` (``auto`` = ``<paths.work_dir>/cache/classify``, ``off``, or a folder)
holds, in ``images/``, the decode-once image caches (one of the real images, shared by every
arm and fold, and one of the arm's synthetic images) and, in ``jax/``, JAX's compiled
programs, so the next arm, fold or prediction of the same model loads its steps instead of
compiling them.

``classifier.feature_cache=auto`` (the default) computes DenseNet121's frozen part once per
image and trains the last layers on the stored features (:mod:`gensyn.classify.features`),
where the frozen part is deterministic (no augmentation); the summary's ``feature_cache`` says
``used`` (with ``feature_cache_bytes``, ``_where``, ``_dtype``, ``_cut_layer`` and
``time_feature_pass_s``), ``off`` or ``not used: <why>``. With features expected, the
decode-once image caches are read where they exist but not written (each image is decoded
once, for its features).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gensyn.base import io, preemption
from gensyn.base.devices import jax_device
from gensyn.base.errors import GensynError
from gensyn.classify import data as classify_data  # as a module: tests replace its checks
from gensyn.classify import sampling
from gensyn.classify.cache import cache_report, describe, open_existing, open_or_build
from gensyn.classify.settings import ClassifierSettings
from gensyn.config.settings import to_settings
from gensyn.core.registry import stage
from gensyn.data.splits import leaking_patients
from gensyn.stages._shared import (
    SYNTHETIC_STAGE,
    cache_folder,
    feature_settings,
    features_expected,
    option_str,
    real_folds,
    source_of,
    upstream_of,
    write_left_out,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


@stage(
    "classify",
    summary="train the chest X-ray classifier of one sampling arm on one fold (split_idx)",
    config_keys=("classifier", "sampling", "split_idx", "seed", "split_seed"),
    upstream=upstream_of,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    ctx.summary["jax_backend"] = jax_device(str(cfg.device), "classify")
    findings = list(cfg.dataset.findings)
    src, views = source_of(cfg), int(cfg.sampling.views_per_ct)
    arm = sampling.arm_name(src, views)

    xray_dir = ctx.upstream_dir("prepare_xrays")
    xrays = sampling.resolve_paths(io.read_table(xray_dir / "xrays.csv"), xray_dir)
    _check_held_out(cfg, xrays, xray_dir)
    real_train = xrays[xrays["split"] == "train"].reset_index(drop=True)
    if real_train.empty:
        raise GensynError(f"{xray_dir / 'xrays.csv'} has no rows with split == train")
    folds = real_folds(cfg, real_train)
    io.write_table(ctx.path("split.csv"), folds)

    synthetic = None
    if src in SYNTHETIC_STAGE:
        syn_dir = ctx.upstream_dir(SYNTHETIC_STAGE[src])
        manifest = sampling.resolve_paths(io.read_table(syn_dir / "manifest.csv"), syn_dir)
        synthetic = sampling.synthetic_training_rows(
            manifest, _ct_labels(ctx.upstream_dir("convert")), findings, views, int(cfg.split_seed)
        )
    train, val = sampling.training_tables(
        real_train, folds, int(cfg.split_idx), synthetic, findings
    )
    folder = cache_folder(cfg)
    record = None if folder is None else folder / "readable.csv"
    train, val = _without_unreadable(ctx, train, val, int(cfg.num_workers), record)
    io.write_table(ctx.path("train_images.csv"), train)
    io.write_table(ctx.path("val_images.csv"), val)
    counts = {
        "arm": arm,
        "source": src,
        "views_per_ct": views,
        "split_idx": int(cfg.split_idx),
        "n_train_real": int((train["source"] == "real").sum()),
        "n_train_synthetic": int((train["source"] == "synthetic").sum()),
        "n_val": len(val),
    }
    io.write_json(ctx.path("arm.json"), counts)
    ctx.summary.update(counts)
    log.info("classify %s fold %d: %s", arm, cfg.split_idx, counts)

    features = feature_settings(cfg)
    caches = _image_caches(cfg, ctx, train, val, write=not features_expected(cfg))
    result = _train(cfg, ctx, train, val, findings, caches, features)
    ctx.summary.update(result.feature_cache)
    ctx.summary.update(training_summary(cfg, result))


def training_summary(cfg: DictConfig, result: Any) -> dict[str, Any]:
    """The summary's account of the training (a TrainResult): schedule, steps, images seen,
    the best epoch and its validation AUCs, the epoch resumed from."""
    summary = dict(
        schedule=option_str(cfg.classifier.schedule),
        steps_per_epoch=result.steps_per_epoch,
        optimizer_steps=result.optimizer_steps,
        synthetic_per_batch=result.synthetic_per_batch,
        real_images_seen=result.real_images_seen,
        synthetic_images_seen=result.synthetic_images_seen,
        real_times_seen_min=result.real_times_seen_min,
        real_times_seen_max=result.real_times_seen_max,
        best_epoch=result.best_epoch,
        best_val_macro_auc=result.best_val_macro_auc,
        **{f"best_val_auc_{k}": v for k, v in result.best_val_auc.items()},
    )
    summary.update({f"time_{k}_s": v for k, v in result.seconds.items()})
    if result.resumed_from_epoch is not None:
        summary["resumed_from_epoch"] = result.resumed_from_epoch
    return summary


def _without_unreadable(ctx, train, val, workers, record):  # type: ignore[no-untyped-def]
    """Leave out images that cannot be read (checked before training, not mid-epoch).

    They are listed in ``unreadable_images.csv`` (split, path, reason; empty when none).
    ``record``: ``<classifier.cache>/readable.csv`` (None: cache off), what earlier runs in
    any process found of unchanged files, so a sweep's jobs do not read them all again.
    """
    bad = classify_data.unreadable_images([*train["path"], *val["path"]], workers, record)
    rows = [
        {"split": split, "path": path, "reason": bad[path]}
        for split, table in (("train", train), ("val", val))
        for path in table["path"]
        if path in bad
    ]
    write_left_out(
        log, ctx.path("unreadable_images.csv"), rows, ["split", "path", "reason"],
        "classify: %d unreadable image(s)",
    )  # fmt: skip
    ctx.summary["n_unreadable_images"] = len(rows)
    if not rows:
        return train, val
    keep = [~t["path"].isin(bad) for t in (train, val)]
    return train[keep[0]].reset_index(drop=True), val[keep[1]].reset_index(drop=True)


def _image_caches(cfg, ctx, train, val, write=True):  # type: ignore[no-untyped-def]
    """Open or write the caches of the run's real images and of its synthetic images
    (``write`` False: only open those that exist).

    A cache that cannot be written (no space) is a warning: training then
    decodes the files every epoch, with the same result.
    """
    from gensyn.classify.keras_env import use_compilation_cache  # heavy: keras, jax

    folder = cache_folder(cfg)
    if folder is None:
        ctx.summary["image_cache"] = "off"
        log.info("classify: image cache off (classifier.cache): decoding the images every epoch")
        return []
    use_compilation_cache(folder / "jax")
    images = pd.concat([train, val], ignore_index=True)
    sets = [images.loc[images["source"] == s, "path"].tolist() for s in ("real", "synthetic")]
    size = int(cfg.classifier.image_size_px)
    if not write:
        found = [c for p in sets if p and (c := open_existing(folder / "images", p, size))]
        ctx.summary["image_cache"] = "used" if found else "not written: features computed once"
        if found:
            log.info("classify: image cache: %s", cache_report(found))
        return found
    try:
        caches = [
            open_or_build(
                folder / "images",
                paths,
                size,
                int(cfg.num_workers),
                option_str(cfg.classifier.decode),
            )
            for paths in sets
            if paths
        ]
    except OSError as exc:
        log.warning("classify: image cache not written (%s); decoding the images every epoch", exc)
        ctx.summary["image_cache"] = f"not written: {exc}"
        return []
    log.info("classify: image cache: %s", cache_report(caches))
    ctx.summary.update(describe(caches))
    return caches


def _ct_labels(convert_dir):  # type: ignore[no-untyped-def]
    """CT label table with ``ct_id``: convert's labels.csv (common table) or volumes.csv."""
    labels = convert_dir / "labels.csv"
    if labels.is_file():
        return io.read_table(labels).rename(columns={"image_id": "ct_id"})
    volumes = io.read_table(convert_dir / "volumes.csv")
    if "ct_id" not in volumes.columns:
        raise GensynError(f"no CT labels: neither {labels} nor a ct_id column in volumes.csv")
    return volumes


def _train(cfg, ctx, train, val, findings, caches, features):  # type: ignore[no-untyped-def]
    from gensyn.classify.models import ModelSpec  # heavy: keras, jax
    from gensyn.classify.train import TrainSettings, train_classifier  # heavy: keras, jax

    classifier = to_settings(cfg.classifier, ClassifierSettings)
    spec = ModelSpec.of(classifier, n_classes=len(findings), seed=int(cfg.seed))
    settings = TrainSettings.of(classifier, seed=int(cfg.seed), num_workers=int(cfg.num_workers))
    return train_classifier(
        spec,
        list(train["path"]),
        train[findings].to_numpy(),
        list(val["path"]),
        val[findings].to_numpy(),
        ctx.out_dir,
        settings,
        findings,
        on_epoch=lambda epoch, metrics: _after_epoch(ctx, epoch, metrics),
        n_real_train=int((train["source"] == "real").sum()),
        cache=caches,
        feature_cache=features,
    )


def _after_epoch(ctx, epoch, metrics):  # type: ignore[no-untyped-def]
    """Log the epoch; its checkpoint is saved, so stop here if SLURM asked (gensyn.base.preemption)."""
    ctx.log_metrics(metrics, step=epoch)
    preemption.checkpoint_point()


def _check_held_out(cfg: DictConfig, xrays: Any, xray_dir: Path) -> None:
    """Refuse to train when a patient of the test split also has training images.

    Checked here, where the split is used, not in prepare_xrays: the same prepared images
    serve as another data set's external test set, where their split does not matter.
    """
    leaking = leaking_patients(xrays)
    if not leaking:
        return
    x, name = cfg.dataset.xray, cfg.dataset.name
    summary = (
        io.read_json(xray_dir / "summary.json") if (xray_dir / "summary.json").is_file() else {}
    )
    where = (
        f"from its official lists {x.official_train_list} and {x.official_test_list} in "
        f"{cfg.dataset.raw_dir}; fix or remove the lists (without them a patient hold-out is "
        "used), or set dataset.xray.split_source=holdout"
        if summary.get("split_source") == "official"
        else f"in {xray_dir / 'xrays.csv'}"
    )
    raise GensynError(
        f"classify: dataset={name}: {len(leaking)} patient(s) in both the train and the test "
        f"split (e.g. {leaking[:5]}), so the test set would not be held out; the split comes "
        f"{where}"
    )
