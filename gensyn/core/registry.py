"""The one stage registry.

A stage is a function ``run(cfg, ctx)`` in a module under :mod:`gensyn.stages`, registered
with :func:`stage`. The decorator records what the stage's output depends on:

* ``config_keys``: dotted config paths whose values change the result (they are hashed
  into the run-folder name; everything else in the config is ignored for the hash), a tuple
  or a function of the config (e.g. ``drr`` hashes ``seed`` only when it draws noise);
* ``upstream``: the stages whose outputs it reads, either a tuple of names or a function
  of the config (e.g. ``classify`` needs ``drr`` only for ``sampling.source=drr``);
* ``inputs`` (optional): a function of the config giving what else the result depends on
  that is no config value of this stage, e.g. the content of a data set's official split
  lists (``prepare_xrays``) or the runs of external test sets (``predict``); hashed too
  when not empty.

Every registered stage has its ``conf/stage/<name>.yaml`` and every such file names a
registered stage: :func:`load_stages` checks both directions once, so a stage cannot be
added, renamed or removed on one side only.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gensyn.core.confdir import CONF_DIR

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

StageFunc = Callable[["DictConfig", "RunContext"], None]
UpstreamSpec = Sequence[str] | Callable[["DictConfig"], Sequence[str]]
KeysSpec = Sequence[str] | Callable[["DictConfig"], Sequence[str]]
InputsSpec = Callable[["DictConfig"], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """A registered stage: its name, one-line summary, function and dependencies."""

    name: str
    summary: str
    func: StageFunc
    config_keys: KeysSpec
    upstream_spec: UpstreamSpec
    hashed: bool = True  # False for orchestration stages (pipeline, list) that own no outputs
    inputs: InputsSpec | None = None  # what else the result depends on (hashed when not empty)

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
#: ``stage=`` choices that are commands of the entry point, not registered stages.
BUILTIN_STAGES = frozenset({"list"})
_checked_conf_dirs: set[Path] = set()


def stage(
    name: str,
    summary: str,
    config_keys: KeysSpec = (),
    upstream: UpstreamSpec = (),
    hashed: bool = True,
    inputs: InputsSpec | None = None,
) -> Callable[[StageFunc], StageFunc]:
    """Register ``func`` as the stage ``name`` (used as ``python launch.py stage=name``)."""

    def decorator(func: StageFunc) -> StageFunc:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise ValueError(f"stage {name!r} is registered twice ({func.__module__})")
        keys = config_keys if callable(config_keys) else tuple(config_keys)
        _REGISTRY[name] = Stage(name, summary, func, keys, upstream, hashed, inputs)
        return func

    return decorator


def load_stages() -> dict[str, Stage]:
    """Import every module of :mod:`gensyn.stages` (which registers them) and return the registry.

    The first call checks the registry against the ``stage`` config group
    (:func:`check_stage_configs`).
    """
    import gensyn.stages as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    stages = dict(_REGISTRY)
    stage_dir = CONF_DIR / "stage"
    if stage_dir not in _checked_conf_dirs:
        check_stage_configs(stages, stage_dir)
        _checked_conf_dirs.add(stage_dir)
    return stages


def stage_config_names(stage_dir: Path) -> dict[str, str]:
    """``{file stem: its name value}`` of every ``*.yaml`` in ``stage_dir`` (the stage group)."""
    import yaml

    names = {}
    for path in sorted(Path(stage_dir).glob("*.yaml")):
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        names[path.stem] = str(values.get("name", "")) if isinstance(values, dict) else ""
    return names


def check_stage_configs(
    stages: Mapping[str, Stage], stage_dir: Path, package: str = "gensyn.stages"
) -> None:
    """Every stage of ``package`` in ``stages`` has ``stage_dir/<name>.yaml`` holding
    ``name: <name>``, and every YAML file there names a stage (or a command in
    :data:`BUILTIN_STAGES`).

    A mismatch is a GensynError naming the files and the stages on both sides. Stages
    registered outside ``package`` (tests calling :func:`gensyn.core.runs.execute`) need no file;
    a missing ``stage_dir`` (the package used as a library, without configs) is not checked.
    """
    from gensyn.base.errors import GensynError

    if not Path(stage_dir).is_dir():
        return
    own = {n: s for n, s in stages.items() if s.func.__module__.startswith(package + ".")}
    files = stage_config_names(stage_dir)
    problems = [
        f"{stage_dir}/{stem}.yaml has name: {name or '(none)'}; it must be name: {stem}"
        for stem, name in files.items()
        if name != stem
    ]
    orphans = sorted(set(files) - set(stages) - BUILTIN_STAGES)
    problems += [
        f"{stage_dir}/{stem}.yaml names no registered stage (registered: "
        f"{', '.join(sorted(own))}); register it with @stage({stem!r}, ...) in a module "
        "of gensyn/stages/, or delete the file"
        for stem in orphans
    ]
    problems += [
        f"stage {name!r} (registered in {spec.func.__module__}) has no config "
        f"{stage_dir}/{name}.yaml; add one holding `name: {name}`"
        for name, spec in sorted(own.items())
        if name not in files
    ]
    if problems:
        raise GensynError(
            "the stage configs and the stage registry disagree: " + "; ".join(problems)
        )


def get_stage(name: str) -> Stage:
    """Return the stage called ``name``; a GensynError lists the known stages otherwise."""
    from gensyn.base.errors import GensynError

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
