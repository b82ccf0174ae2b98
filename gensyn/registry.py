"""The one stage registry.

A stage is a function ``run(cfg, ctx)`` in a module under :mod:`gensyn.stages`, registered
with :func:`stage`. The decorator records what the stage's output depends on:

* ``config_keys``: dotted config paths whose values change the result (they are hashed
  into the run-folder name; everything else in the config is ignored for the hash), a tuple
  or a function of the config (e.g. ``drr`` hashes ``seed`` only when it draws noise);
* ``upstream``: the stages whose outputs it reads, either a tuple of names or a function
  of the config (e.g. ``classify`` needs ``drr`` only for ``sampling.source=drr``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.runs import RunContext

StageFunc = Callable[["DictConfig", "RunContext"], None]
UpstreamSpec = Sequence[str] | Callable[["DictConfig"], Sequence[str]]
KeysSpec = Sequence[str] | Callable[["DictConfig"], Sequence[str]]


@dataclass(frozen=True)
class Stage:
    """A registered stage: its name, one-line summary, function and dependencies."""

    name: str
    summary: str
    func: StageFunc
    config_keys: KeysSpec
    upstream_spec: UpstreamSpec
    hashed: bool = True  # False for orchestration stages (pipeline, list) that own no outputs

    def keys(self, cfg: DictConfig) -> tuple[str, ...]:
        """The config keys hashed into this stage's run folder for this config."""
        spec = self.config_keys
        return tuple(spec(cfg) if callable(spec) else spec)

    def upstream(self, cfg: DictConfig) -> tuple[str, ...]:
        """The upstream stage names for this config."""
        spec = self.upstream_spec
        names = spec(cfg) if callable(spec) else spec
        return tuple(names)


_REGISTRY: dict[str, Stage] = {}


def stage(
    name: str,
    summary: str,
    config_keys: KeysSpec = (),
    upstream: UpstreamSpec = (),
    hashed: bool = True,
) -> Callable[[StageFunc], StageFunc]:
    """Register ``func`` as the stage ``name`` (used as ``python launch.py stage=name``)."""

    def decorator(func: StageFunc) -> StageFunc:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f"stage {name!r} is registered twice ({func.__module__})")
        keys = config_keys if callable(config_keys) else tuple(config_keys)
        _REGISTRY[name] = Stage(name, summary, func, keys, upstream, hashed)
        return func

    return decorator


def load_stages() -> dict[str, Stage]:
    """Import every module of :mod:`gensyn.stages` (which registers them) and return the registry."""
    import gensyn.stages as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    return dict(_REGISTRY)


def get_stage(name: str) -> Stage:
    """Return the stage called ``name``; a GensynError lists the known stages otherwise."""
    from gensyn.errors import GensynError

    stages = load_stages()
    if name not in stages:
        known = ", ".join(sorted(stages))
        raise GensynError(f"unknown stage {name!r}; known stages: {known}")
    return stages[name]


def describe_stages() -> list[dict[str, Any]]:
    """One row per stage (name, summary, upstream for the default config) for listings."""
    return [
        {
            "name": s.name,
            "summary": s.summary,
            "config_keys": "depends on the config"
            if callable(s.config_keys)
            else list(s.config_keys),
        }
        for s in sorted(load_stages().values(), key=lambda s: s.name)
    ]
