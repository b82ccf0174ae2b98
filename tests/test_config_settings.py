"""Config nodes become science settings through one helper; fields are declared once."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from gensyn.config.generator import GeneratorConfig
from gensyn.config.settings import to_settings
from gensyn.gan.settings import CycleGANSettings


@dataclasses.dataclass
class _Needs:
    size: int
    tags: list[str] = dataclasses.field(default_factory=list)
    scale: float = 1.0


def test_a_config_node_becomes_settings_with_plain_values() -> None:
    node = OmegaConf.create({"size": 4, "tags": ["a", "b"], "name": "ignored", "other": 1})
    got = to_settings(node, _Needs)
    assert got == _Needs(size=4, tags=["a", "b"], scale=1.0)
    assert type(got.tags) is list  # a plain list, not a ListConfig


def test_interpolations_are_resolved_and_extra_values_win() -> None:
    node = OmegaConf.create({"base": 3, "size": "${base}", "scale": 2.0})
    assert to_settings(node, _Needs, scale=0.5) == _Needs(size=3, scale=0.5)
    assert to_settings({"size": 7}, _Needs) == _Needs(size=7)


def test_mistakes_are_errors() -> None:
    with pytest.raises(KeyError, match="scael"):
        to_settings({"size": 1}, _Needs, scael=2.0)
    with pytest.raises(TypeError):
        to_settings({"scale": 2.0}, _Needs)  # size has no default and no value
    with pytest.raises(TypeError, match="not a dataclass"):
        to_settings({"size": 1}, dict)


def test_generator_schema_is_the_gan_settings_plus_its_name() -> None:
    schema = {f.name for f in dataclasses.fields(GeneratorConfig)}
    settings = {f.name for f in dataclasses.fields(CycleGANSettings)}
    assert schema == settings | {"name"}
    cfg = OmegaConf.merge(OmegaConf.structured(GeneratorConfig), {"ngf": 8, "n_epochs": 3})
    opts = to_settings(cfg, CycleGANSettings)
    assert (opts.ngf, opts.n_epochs, opts.arch) == (8, 3, "resnet_9blocks")
