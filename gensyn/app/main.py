"""Dispatch a composed config to its stage."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from gensyn.app.hydra_folders import discard_hydra_dir
from gensyn.app.startup import check_config
from gensyn.base.devices import use_compile_caches
from gensyn.base.errors import GensynError
from gensyn.core.registry import describe_stages, get_stage
from gensyn.core.runs import execute

log = logging.getLogger("gensyn")


def list_stages() -> str:
    """The registered stages, one line each."""
    rows = describe_stages()
    width = max(len(r["name"]) for r in rows)
    return "\n".join(f"{r['name']:<{width}}  {r['summary']}" for r in rows)


def run(cfg: DictConfig) -> Path | None:
    """Run ``cfg.stage.name`` and return its run folder (``stage=list`` prints the stages)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    name = cfg.stage.name
    if name == "list":
        print(list_stages())
        discard_hydra_dir(cfg)
        return None
    try:
        try:
            get_stage(name)
            check_config(cfg)
        except GensynError:
            discard_hydra_dir(cfg)  # found before anything ran: nothing to keep
            raise
        # before any stage imports a compiler: where compiled kernels are kept
        use_compile_caches(str(cfg.paths.get("compile_cache_dir", "off")))
        redo = str(getattr(cfg.get("redo"), "value", cfg.get("redo") or "none"))
        out = execute(cfg, name, force=bool(cfg.force), redo=redo)
    except GensynError as exc:  # a user-fixable problem: one clear message, no traceback
        log.error("%s", exc)
        raise SystemExit(1) from exc  # the cause lets a sweep's launcher list the error
    print(f"{name}: {out}")
    return out
