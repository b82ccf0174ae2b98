"""Hydra's own folders (``hydra.run.dir``, ``hydra.sweep.dir``, both below ``paths.work_dir``).

:class:`CheckFolders` (a Hydra callback, ``hydra.callbacks`` in conf/config.yaml) refuses a
folder that cannot be made with one clear line before Hydra tries to make it.
:func:`discard_hydra_dir` removes a single run's folder when nothing ran (``stage=list``, an
error found at start-up), so such commands leave no folders behind. The resolver
``gensyn_launch_id`` (:func:`launch_id`) makes ``hydra.run.dir`` one folder per launch.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gensyn.base.io import unwritable_reason


def _check(folder: str, key: str) -> None:
    reason = unwritable_reason(folder)
    if reason:
        print(
            f"error: cannot create {key}={folder}: {reason}. Point paths.work_dir (or "
            "paths.root_dir, GENSYN_ROOT) to a folder you can write",
            file=sys.stderr,
        )
        raise SystemExit(1)  # Hydra turns a callback's exceptions into warnings


class CheckFolders(Callback):
    """Check Hydra's run or sweep folder before Hydra makes it (exit 1 with one line)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(str(config.hydra.sweep.dir), "hydra.sweep.dir")


def discard_hydra_dir(cfg: DictConfig) -> None:
    """Remove a single run's Hydra folder (its ``.hydra/`` and an empty or one-line log).

    Empty parents are removed up to ``paths.work_dir``. Nothing happens in a sweep (its
    failure table points to each job's log) or where ``hydra.run.dir`` lies outside
    ``paths.work_dir``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    out = Path(str(HydraConfig.get().runtime.output_dir)).resolve()
    work_dir = Path(str(cfg.paths.work_dir)).resolve()
    if out == work_dir or not out.is_relative_to(work_dir):
        return
    shutil.rmtree(out, ignore_errors=True)
    for parent in out.parents:
        if not parent.is_relative_to(work_dir):
            break
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break


def launch_id() -> str:
    """This process's id: with the start time it names ``hydra.run.dir`` (``<time>_<pid>``).

    Two launches in the same second would otherwise share one folder and mix their
    ``launch.log``; two processes running at once never share a process id.
    """
    import os

    return str(os.getpid())


def register_launch_id_resolver() -> None:
    """Register the ``gensyn_launch_id`` resolver that ``hydra.run.dir`` uses (cached: one
    value a process)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("gensyn_launch_id"):
        OmegaConf.register_new_resolver("gensyn_launch_id", launch_id, use_cache=True)
