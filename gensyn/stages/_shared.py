"""Helpers several stages share (not a stage): config values as plain strings, the
sampling arm's source and the stages its images come from, the classifier's cache folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from omegaconf import DictConfig

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
    from omegaconf import OmegaConf

    from gensyn.data.phantom.demo import DemoSpec

    plain = OmegaConf.to_container(cfg[group].demo, resolve=True)
    assert isinstance(plain, dict)
    values = {str(k): v for k, v in plain.items()}
    workers = int(values.pop("num_workers", 2))
    return DemoSpec.from_mapping(values, seed=int(cfg.split_seed)), max(1, workers)


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
