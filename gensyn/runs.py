"""The one run-folder helper: config hashing, DONE markers, locking, resume and execution.

A stage's output folder is ``<paths.runs_dir>/<stage>/<hash>``. The hash covers exactly the
config values the stage declared (``config_keys``) plus the hashes of its upstream stages,
so the same config always finds the same folder, and a change upstream changes every
folder downstream. Keys that never change results (worker counts, progress bars) are left
out of the hash wherever they appear.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gensyn import __version__, io
from gensyn.errors import GensynError
from gensyn.registry import Stage, get_stage

log = logging.getLogger(__name__)

DONE = "DONE"
HASH_LENGTH = 12
#: Leaf names that never change a result, wherever they appear in a hashed subtree.
HASH_EXCLUDED_LEAVES = frozenset(
    {"num_workers", "progress_bar", "log_every_n_steps", "prefetch", "decode"}
)


class UpstreamMissingError(GensynError):
    """An upstream stage has not finished and ``run_upstream`` is off."""


def _select(cfg: DictConfig, key: str) -> Any:
    missing = object()
    value = OmegaConf.select(cfg, key, default=missing, throw_on_missing=True)
    if value is missing:
        raise KeyError(f"stage hashes config key {key!r}, which is not in the config")
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    elif isinstance(value, Enum):  # typed choices (e.g. sampling.source) hash by name
        value = value.name
    return value


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in HASH_EXCLUDED_LEAVES}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def stage_identity(cfg: DictConfig, name: str) -> dict[str, Any]:
    """What the hash of stage ``name`` is computed from (config values and upstream hashes)."""
    spec = get_stage(name)
    return {
        "stage": name,
        "config": {key: _strip(_select(cfg, key)) for key in spec.keys(cfg)},
        "upstream": {u: stage_hash(cfg, u) for u in spec.upstream(cfg)},
    }


def stage_hash(cfg: DictConfig, name: str) -> str:
    """The short hex hash naming stage ``name``'s run folder for this config."""
    blob = json.dumps(stage_identity(cfg, name), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LENGTH]


def run_dir(cfg: DictConfig, name: str) -> Path:
    """The run folder of stage ``name`` for this config (it may not exist yet)."""
    return Path(cfg.paths.runs_dir).resolve() / name / stage_hash(cfg, name)


def with_overrides(cfg: DictConfig, overrides: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with dotted keys set, e.g. ``{"split_idx": 2, "sampling.source": "drr"}``.

    Used to locate sibling runs of a grid (other folds or arms) by their hash.
    """
    new = cfg.copy()
    for key, value in overrides.items():
        OmegaConf.update(new, key, value, merge=False)
    return new


def is_done(path: Path) -> bool:
    """Whether ``path`` holds a finished run."""
    return (path / DONE).is_file()


def code_version() -> dict[str, Any]:
    """The package version and, inside a git checkout, the commit and whether it was dirty."""
    info: dict[str, Any] = {"gensyn": __version__}
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


@dataclass
class RunContext:
    """What a stage gets besides the config: its folder, its upstreams and its trackers."""

    name: str
    out_dir: Path
    stage_hash: str
    cfg: DictConfig
    upstream_dirs: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)
    tracker: Any = None  # gensyn.tracking.Tracker; None until tracking starts

    def upstream_dir(self, name: str) -> Path:
        """The finished run folder of upstream stage ``name``."""
        if name not in self.upstream_dirs:
            known = ", ".join(sorted(self.upstream_dirs)) or "none"
            raise KeyError(
                f"stage {self.name!r} did not declare upstream {name!r} (declared: {known})"
            )
        return self.upstream_dirs[name]

    def path(self, *parts: str) -> Path:
        """A path inside the run folder; parent folders are created."""
        p = self.out_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics to the tracker (W&B) and append them to ``metrics.jsonl``."""
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}
        if step is not None:
            row["step"] = step
        with open(self.path("metrics.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log_metrics(dict(metrics), step=step)

    def log_image(self, key: str, image: np.ndarray | Path, caption: str | None = None) -> None:
        """Log an image (uint8/uint16 array or a file) to the tracker."""
        if self.tracker is not None:
            self.tracker.log_image(key, image, caption=caption)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path/.lock`` (other processes on the same run wait)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clear_run(path: Path) -> None:
    """Remove a run folder's contents (used by ``force=true``)."""
    if path.exists():
        for child in path.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def execute(cfg: DictConfig, name: str, force: bool = False) -> Path:
    """Run stage ``name`` (after its upstreams) unless its run folder is already DONE.

    Returns the finished run folder. ``force`` recomputes this stage (not its upstreams).
    Upstreams that are not finished are run first when ``cfg.run_upstream`` is true, else
    :class:`UpstreamMissingError` names the command to run.
    """
    spec: Stage = get_stage(name)
    upstream_dirs: dict[str, Path] = {}
    for up in spec.upstream(cfg):
        up_dir = run_dir(cfg, up)
        if not is_done(up_dir):
            if not cfg.get("run_upstream", True):
                raise UpstreamMissingError(
                    f"stage {name!r} needs stage {up!r}, which has not finished for this config "
                    f"(expected {up_dir}); run `python launch.py stage={up}` with the same "
                    "overrides first, or set run_upstream=true"
                )
            log.info("stage %s needs %s: running it first", name, up)
            execute(cfg, up)
        upstream_dirs[up] = up_dir

    if not spec.hashed:  # collectors (e.g. carbon_summary) always run, in a new folder
        out = Path(cfg.paths.runs_dir).resolve() / name / time.strftime("%Y%m%d-%H%M%S")
        out.mkdir(parents=True, exist_ok=True)
        _run_in(cfg, spec, out, upstream_dirs)
        return out
    out = run_dir(cfg, name)
    if is_done(out) and not force:
        log.info("stage %s: already done in %s (force=true recomputes)", name, out)
        return out
    with _locked(out):
        if is_done(out) and not force:  # another process finished it while we waited
            log.info("stage %s: finished by another process in %s", name, out)
            return out
        if force:
            log.info("stage %s: force=true, clearing %s", name, out)
            clear_run(out)
        elif any(p.name not in (".lock",) for p in out.iterdir()):
            log.info("stage %s: resuming unfinished run in %s", name, out)
        _run_in(cfg, spec, out, upstream_dirs)
    return out


def _run_in(cfg: DictConfig, spec: Stage, out: Path, upstream_dirs: dict[str, Path]) -> None:
    from gensyn.tracking import tracking

    digest = out.name
    io.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    io.write_json(out / "identity.json", stage_identity(cfg, spec.name))
    io.write_json(out / "code_version.json", code_version())
    ctx = RunContext(spec.name, out, digest, cfg, upstream_dirs)
    log.info("stage %s: running in %s", spec.name, out)
    start = time.time()
    with tracking(cfg, ctx):
        spec.func(cfg, ctx)
        duration = time.time() - start
        ctx.summary.setdefault("duration_s", round(duration, 2))
    io.write_json(out / "summary.json", ctx.summary)
    io.write_json(
        out / DONE,
        {
            "stage": spec.name,
            "hash": digest,
            "duration_s": round(duration, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(),
        },
    )
    log.info("stage %s: done in %.1f s -> %s", spec.name, duration, out)
