"""Helpers several stages share (not a stage): config values as plain strings, the
sampling arm's source and the stages its images come from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

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
