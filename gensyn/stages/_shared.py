"""Helpers several stages share (not a stage): config values as plain strings, the
sampling arm's source and the stages its images come from, the demo data's branch, the
listing of left-out items, the classifier's cache folder and feature cache settings, the
cross-validation folds of the real training images."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gensyn.base.errors import GensynError
from gensyn.base.io import unwritable_reason, write_table
from gensyn.core.runs import stage_hash
from gensyn.data.phantom.demo import DemoSpec
from gensyn.data.splits import load_or_make_folds

if TYPE_CHECKING:
    from gensyn.classify.features import FeatureCacheSettings  # heavy: keras, jax
    from gensyn.core.run_context import RunContext

#: stage that provides the synthetic images of each sampling source
SYNTHETIC_STAGE = {"drr": "drr", "synthex": "gan_translate"}


def option_str(value: Any) -> str:
    """A config value the schema types as an Enum, as its plain string."""
    return str(getattr(value, "value", value))


def source_of(cfg: DictConfig) -> str:
    """``sampling.source`` as a plain string."""
    return option_str(cfg.sampling.source)


def upstream_of(cfg: DictConfig) -> list[str]:
    """prepare_xrays, plus convert and drr / gan_translate for a synthetic arm."""
    src = source_of(cfg)
    return ["prepare_xrays"] + (["convert", SYNTHETIC_STAGE[src]] if src in SYNTHETIC_STAGE else [])


def synthetic_seed_key(cfg: DictConfig) -> str:
    """The config key that seeds the synthetic images (DRR noise, the CycleGAN's domains and
    training): ``seed`` when ``synthex_per_seed`` is on (retrained per training seed), else
    ``split_seed`` (one set of synthetic images for every training seed)."""
    return "seed" if bool(cfg.get("synthex_per_seed", False)) else "split_seed"


def synthetic_seed(cfg: DictConfig) -> int:
    """The value of :func:`synthetic_seed_key`."""
    return int(cfg[synthetic_seed_key(cfg)])


def demo_spec(cfg: DictConfig, group: str) -> tuple[DemoSpec, int]:
    """(DemoSpec, worker processes) of the demo data from ``<group>.demo`` and ``split_seed``
    (the data, like the hold-out, stay the same whatever the training ``seed``).

    ``group`` is ``ct_dataset`` for the phantom CTs and ``dataset`` for the simulated X-rays.
    """
    plain = OmegaConf.to_container(cfg[group].demo, resolve=True)
    assert isinstance(plain, dict)
    values = {str(k): v for k, v in plain.items()}
    workers = int(values.pop("num_workers", 2))
    return DemoSpec.from_mapping(values, seed=int(cfg.split_seed)), max(1, workers)


def run_demo(
    cfg: DictConfig,
    ctx: RunContext,
    group: str,
    make: Callable[[DemoSpec, Path, int], Mapping[str, Any] | None],
) -> None:
    """The demo branch of ``convert`` and ``prepare_xrays``: ``make``
    (:func:`gensyn.data.phantom.demo.convert` or ``.prepare_xrays``) writes the stage's
    outputs into its run folder from the demo data of ``<group>.demo``; what it returns goes
    into the summary."""
    spec, workers = demo_spec(cfg, group)
    ctx.summary.update(make(spec, ctx.out_dir, workers) or {})


def write_left_out(
    logger: logging.Logger, path: Path, rows: list[dict[str, Any]], columns: list[str], what: str
) -> None:
    """Write the items a stage left out (``rows`` of ``columns``: an id, the file, the reason;
    only the header when none) to ``path`` and, when there are any, warn once with the first:
    ``<what> left out (listed in <path>), e.g. <file>: <reason>``. ``what`` holds ``%d`` for
    their number, e.g. ``"predict: %d unreadable test image(s)"``."""
    write_table(path, pd.DataFrame(rows, columns=columns))
    if rows:
        first = rows[0]
        logger.warning(
            what + " left out (listed in %s), e.g. %s: %s",
            len(rows), path, first[columns[1]], first["reason"],
        )  # fmt: skip


#: classifier.cache values that switch the cache off (YAML reads a bare ``off`` as false)
CACHE_OFF = ("off", "false")


def cache_folder(cfg: DictConfig) -> Path | None:
    """The classifier's cache folder (``classifier.cache``: decoded images and JAX's compiled
    programs, shared by classify and predict), or None when off; a folder that cannot be made
    or written is a GensynError."""
    setting = str(cfg.classifier.cache)
    if setting.lower() in CACHE_OFF:
        return None
    folder = Path(cfg.paths.work_dir) / "cache" / "classify" if setting == "auto" else Path(setting)
    reason = unwritable_reason(folder)
    if reason:  # checked before the model is built, not as a traceback after
        where = "paths.work_dir" if setting == "auto" else "classifier.cache"
        raise GensynError(
            f"classifier.cache={setting}: cannot use {folder}: {reason}. Point {where} to a "
            "folder you can write, or set classifier.cache=off"
        )
    return folder


def real_folds(cfg: DictConfig, real_train: pd.DataFrame) -> pd.DataFrame:
    """The folds (``image_id, patient_id, fold``) of the ``split == train`` X-rays of ``cfg``.

    Kept in ``<runs_dir>/splits/<prepare_xrays hash>_k<n_folds>_seed<split_seed>.csv``: made
    once, then read by every arm, fold and training seed of ``classify`` and by ``export``, so
    all see one split (the folds are data, drawn with ``split_seed``, not the training seed).
    """
    n_folds, seed = int(cfg.classifier.n_folds), int(cfg.split_seed)
    split_file = (
        Path(cfg.paths.runs_dir)
        / "splits"
        / f"{stage_hash(cfg, 'prepare_xrays')}_k{n_folds}_seed{seed}.csv"
    )
    return load_or_make_folds(split_file, real_train, list(cfg.dataset.findings), n_folds, seed)


def feature_settings(cfg: DictConfig) -> FeatureCacheSettings | None:
    """The frozen-prefix feature cache's settings (``classifier.feature_cache``), or None when
    off. Features that fit in no memory go to ``<classifier.cache>/features/``."""
    from gensyn.classify.features import FeatureCacheSettings  # heavy: keras, jax

    c = cfg.classifier
    if option_str(c.feature_cache) == "off":
        return None
    folder = cache_folder(cfg)
    return FeatureCacheSettings(
        folder=None if folder is None else folder / "features",
        batch_size=int(c.predict_batch_size),
        num_workers=int(cfg.num_workers),
        prefetch_batches=int(c.prefetch),
        decode=option_str(c.decode),
    )


def features_expected(cfg: DictConfig) -> bool:
    """Whether classify will train on stored features: feature_cache on, no augmentation, and
    DenseNet121 with a frozen part (the model's own check has the last word)."""
    c = cfg.classifier
    return (
        option_str(c.feature_cache) != "off"
        and not bool(c.augment)
        and option_str(c.name) == "densenet121"
        and int(c.trainable_tail_layers) >= 0
    )
