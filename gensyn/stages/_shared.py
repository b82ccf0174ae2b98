"""Helpers several stages share (not a stage): config values as plain strings, the
sampling arm's source and the stages its images come from, the classifier's cache folder and
feature cache settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from omegaconf import DictConfig

    from gensyn.classify.features import FeatureCacheSettings
    from gensyn.data.phantom.demo import DemoSpec

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


def demo_spec(cfg: DictConfig, group: str) -> tuple[DemoSpec, int]:
    """(DemoSpec, worker processes) of the demo data from ``<group>.demo`` and ``seed``.

    ``group`` is ``ct_dataset`` for the phantom CTs and ``dataset`` for the simulated X-rays.
    """
    from omegaconf import OmegaConf

    from gensyn.data.phantom.demo import DemoSpec

    plain = OmegaConf.to_container(cfg[group].demo, resolve=True)
    assert isinstance(plain, dict)
    values = {str(k): v for k, v in plain.items()}
    workers = int(values.pop("num_workers", 2))
    return DemoSpec.from_mapping(values, seed=int(cfg.seed)), max(1, workers)


#: classifier.cache values that switch the cache off (YAML reads a bare ``off`` as false)
CACHE_OFF = ("off", "false")


def cache_folder(cfg: DictConfig) -> Path | None:
    """The classifier's cache folder (``classifier.cache``: decoded images and JAX's compiled
    programs, shared by classify and predict), or None when off."""
    from pathlib import Path

    setting = str(cfg.classifier.cache)
    if setting.lower() in CACHE_OFF:
        return None
    if setting == "auto":
        return Path(cfg.paths.work_dir) / "cache" / "classify"
    return Path(setting)


def feature_settings(cfg: DictConfig) -> FeatureCacheSettings | None:
    """The frozen-prefix feature cache's settings (``classifier.feature_cache``), or None when
    off. Features that fit in no memory go to ``<classifier.cache>/features/``."""
    from gensyn.classify.features import FeatureCacheSettings

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
