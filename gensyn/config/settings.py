"""One way from a config node to a science package's plain settings dataclass.

Science packages (``drr``, ``gan``, ``classify``, ``data``, ``report``, ``reader``) take
plain dataclasses and never import Hydra or OmegaConf; a stage maps its config to them
here, once, instead of copying fields one by one. Fields the settings class does not
declare (a group's ``name``, stage-only keys) are left out; settings fields the node does
not hold keep their defaults, unless ``extra`` gives them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

__all__ = ["to_settings"]

T = TypeVar("T")


def to_settings(
    node: DictConfig | Mapping[str, Any], cls: type[T], prefix: str = "", **extra: Any
) -> T:
    """``cls`` built from the keys of ``node`` that are fields of ``cls``, plus ``extra``.

    With ``prefix``, only keys starting with it count, without it: ``deepdrr_threads`` of the
    ``projector`` group fills the field ``threads`` of ``prefix="deepdrr_"``.

    ``node`` is a config node (resolved) or a plain mapping; values that are config
    containers become plain lists/dicts. ``extra`` overrides or adds values (e.g. a
    setting that comes from another group). Raises ``TypeError`` when ``cls`` is not a
    dataclass or a field without default has no value, and ``KeyError`` for an ``extra``
    key that is not a field (a typo would otherwise pass silently).
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"to_settings: {cls!r} is not a dataclass")
    if isinstance(node, DictConfig):
        plain = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    else:
        plain = dict(node)
    assert isinstance(plain, dict)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(extra) - names)
    if unknown:
        raise KeyError(f"to_settings: {cls.__name__} has no field(s) {unknown}")
    values = {
        str(k)[len(prefix) :]: v
        for k, v in plain.items()
        if str(k).startswith(prefix) and str(k)[len(prefix) :] in names
    }
    values.update(extra)
    return cls(**values)
