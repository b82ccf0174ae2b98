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
    programs, shared by classify and predict), or None when off; a folder that cannot be made
    or written is a GensynError."""
    from pathlib import Path

    from gensyn.errors import GensynError
    from gensyn.io import unwritable_reason

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
