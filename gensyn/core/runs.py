"""The one run-folder helper: config hashing, DONE markers, locking, resume and execution.

A stage's output folder is ``<paths.runs_dir>/<stage>/<hash>``. The hash covers exactly the
config values the stage declared (``config_keys``) plus the hashes of its upstream stages,
so the same config always finds the same folder, and a change upstream changes every
folder downstream. Settings that never change results (worker counts, caches) or only
describe this machine (interpreter paths, time-outs) are declared with
:func:`gensyn.base.bounds.unhashed` on their schema field and left out of the hash wherever their
group appears (the config's nodes carry their schema). A hashed path below one of the ``paths`` folders is hashed relative to that folder
(``${paths.data_dir}/demo/raw``), so moving the data or the output root keeps every hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from gensyn import __version__
from gensyn.base import io
from gensyn.base.bounds import unhashed_field_names
from gensyn.base.errors import GensynError
from gensyn.core.registry import Stage, get_stage
from gensyn.core.run_context import METRICS_FILE, RunContext

__all__ = [  # RunContext and METRICS_FILE live in gensyn.core.run_context; named here as before
    "DONE",
    "METRICS_FILE",
    "RunContext",
    "UpstreamMissingError",
    "clear_run",
    "code_version",
    "execute",
    "is_done",
    "make_run_dir",
    "run_dir",
    "stage_hash",
    "stage_identity",
    "with_overrides",
]

log = logging.getLogger(__name__)

DONE = "DONE"
HASH_LENGTH = 12


class UpstreamMissingError(GensynError):
    """An upstream stage has not finished and ``run_upstream`` is off."""


def _schema(node: Any) -> type | None:
    """The dataclass schema of a config node (None: an untyped node or a leaf)."""
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return kind if kind is not None and dataclasses.is_dataclass(kind) else None


def _unhashed_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key``'s own schema field is declared :func:`~gensyn.base.bounds.unhashed`."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    schema = _schema(parent)
    return schema is not None and leaf in unhashed_field_names(schema)


def _select(cfg: DictConfig, key: str, anchors: list[tuple[str, str]]) -> Any:
    """The value of ``key`` as hashed (see :func:`_strip`)."""
    missing = object()
    value = OmegaConf.select(cfg, key, default=missing, throw_on_missing=True)
    if value is missing:
        raise KeyError(f"stage hashes config key {key!r}, which is not in the config")
    if _unhashed_key(cfg, key):
        raise KeyError(
            f"stage hashes config key {key!r}, which its schema declares unhashed "
            "(gensyn.base.bounds.unhashed); leave it out of the stage's config_keys"
        )
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        plain = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        return _strip(plain, value, anchors)
    if isinstance(value, Enum):  # typed choices (e.g. sampling.source) hash by name
        return value.name
    return _strip(value, None, anchors)


def _path_anchors(cfg: DictConfig) -> list[tuple[str, str]]:
    """(``${paths.KEY}``, absolute folder) of every ``paths`` folder, the deepest first."""
    paths = cfg.get("paths") or {}
    anchors = [
        (f"${{paths.{key}}}", os.path.abspath(str(value)))
        for key, value in paths.items()
        if isinstance(value, str) and value
    ]
    return sorted(anchors, key=lambda a: len(a[1]), reverse=True)


def _relocatable(value: str, anchors: list[tuple[str, str]]) -> str:
    """``value`` relative to the deepest ``paths`` folder holding it; other strings unchanged.

    Only absolute or ``./``-relative strings are paths here, so names such as ``imagenet``
    are never mistaken for files in the current folder.
    """
    if not (os.path.isabs(value) or value in (".", "..") or value.startswith(("./", "../"))):
        return value
    absolute = os.path.abspath(value)
    for name, folder in anchors:
        if absolute == folder or absolute.startswith(folder.rstrip(os.sep) + os.sep):
            rel = os.path.relpath(absolute, folder)
            return name if rel == "." else f"{name}/{Path(rel).as_posix()}"
    return value


def _child(node: Any, key: str | int, value: Any) -> Any:
    """The config node of ``node[key]`` where ``value`` (its plain copy) is a container."""
    if isinstance(value, dict | list) and isinstance(node, DictConfig):
        return node[key]
    if isinstance(value, dict | list) and isinstance(node, ListConfig) and isinstance(key, int):
        return node[key]
    return None


def _strip(value: Any, node: Any, anchors: list[tuple[str, str]]) -> Any:
    """``value`` (the plain copy of config ``node``) as hashed: the fields its schema declares
    unhashed dropped at every depth, paths made relative to ``paths``."""
    if isinstance(value, dict):
        schema = _schema(node)
        skip = unhashed_field_names(schema) if schema is not None else frozenset()
        return {
            k: _strip(v, _child(node, k, v), anchors) for k, v in value.items() if k not in skip
        }
    if isinstance(value, list):
        return [_strip(v, _child(node, i, v), anchors) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _relocatable(value, anchors)
    return value


class _HashMemo:
    """One hash computation's shared work: the ``paths`` anchors (resolving them costs ~10 ms
    of OmegaConf interpolation) and each upstream stage's hash, found once however many
    stages downstream of it the identity reaches (a grid's predict reaches prepare_xrays by
    several paths). Never kept beyond one call: the config may change between calls."""

    def __init__(self, cfg: DictConfig) -> None:
        self.anchors = _path_anchors(cfg)
        self.hashes: dict[str, str] = {}


def stage_identity(cfg: DictConfig, name: str, _memo: _HashMemo | None = None) -> dict[str, Any]:
    """What the hash of stage ``name`` is computed from (config values and upstream hashes).

    Folders are hashed by where they sit below ``paths.root_dir`` / ``data_dir`` / ... (e.g.
    ``ct_dataset.raw_dir`` as ``${paths.data_dir}/radchest/raw``), never by the machine's
    absolute path, so a moved root or data folder keeps its runs (DESIGN principle 3).
    A stage's ``inputs`` (file contents, other configurations' runs) are added when not empty.
    """
    memo = _HashMemo(cfg) if _memo is None else _memo
    spec = get_stage(name)
    identity = {
        "stage": name,
        "config": {key: _select(cfg, key, memo.anchors) for key in spec.keys(cfg)},
        "upstream": {u: _stage_hash(cfg, u, memo) for u in spec.upstream(cfg)},
    }
    inputs = spec.inputs(cfg) if spec.inputs is not None else {}
    if inputs:  # only when there are any: other stages' hashes stay as they were
        identity["inputs"] = inputs
    return identity


def _stage_hash(cfg: DictConfig, name: str, memo: _HashMemo) -> str:
    if name not in memo.hashes:
        identity = stage_identity(cfg, name, memo)
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        memo.hashes[name] = hashlib.sha256(blob.encode()).hexdigest()[:HASH_LENGTH]
    return memo.hashes[name]


def stage_hash(cfg: DictConfig, name: str) -> str:
    """The short hex hash naming stage ``name``'s run folder for this config."""
    return _stage_hash(cfg, name, _HashMemo(cfg))


def run_dir(cfg: DictConfig, name: str, _memo: _HashMemo | None = None) -> Path:
    """The run folder of stage ``name`` for this config (it may not exist yet)."""
    memo = _HashMemo(cfg) if _memo is None else _memo
    return Path(cfg.paths.runs_dir).resolve() / name / _stage_hash(cfg, name, memo)


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
    root = Path(__file__).resolve().parents[2]  # the checkout holding gensyn/core/
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


def make_run_dir(path: Path) -> None:
    """Create run folder ``path``; a folder that cannot be made or written is a GensynError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    except OSError as exc:
        raise GensynError(_folder_error(path, exc)) from exc


def _folder_error(path: Path, exc: OSError) -> str:
    """Why run folder ``path`` cannot be used, and the fix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_full_message(path, exc)
    why = io.unwritable_reason(path) or f"{exc.strerror} ({exc.filename})"
    return (
        f"cannot create or write the run folder {path}: {why}. Point paths.runs_dir (or "
        "paths.work_dir, paths.root_dir, GENSYN_ROOT) to a folder you can write"
    )


def _disk_full_message(out: Path, exc: OSError) -> str:
    where = Path(exc.filename).parent if exc.filename else out
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left on the device holding {where} ({free}; {exc.strerror}) while writing "
        f"{exc.filename or 'into ' + str(out)}. Free space there, or point paths.runs_dir "
        "(or paths.work_dir) to a larger disk; the same command then resumes the unfinished run"
    )


@contextlib.contextmanager
def _disk_full_named(out: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) during a run into one error naming the folder."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise GensynError(_disk_full_message(out, exc)) from exc


def _lock_holder() -> str:
    """Who holds a lock: process, host, start time and command (written into the lock file)."""
    job = os.environ.get("SLURM_JOB_ID")
    return (
        f"pid {os.getpid()} on {socket.gethostname()}"
        + (f" (SLURM job {job})" if job else "")
        + f" since {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path/.lock`` (other processes on the same run wait).

    The holder writes who it is into the lock file, so a process that has to wait logs whom
    it waits for.
    """
    make_run_dir(path)
    with open(path / ".lock", "a+") as fh:  # a+: never truncate the holder's note
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            log.info("waiting for %s, which %s is running (lock %s)", path, holder, fh.name)
            fcntl.flock(fh, fcntl.LOCK_EX)
            log.info("got the lock on %s", path)
        fh.seek(0)
        fh.truncate()
        fh.write(_lock_holder() + "\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
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


#: A finished run's table of the items that failed (one row each); ``redo=failed`` retries them.
FAILURES = "failures.csv"


def failed_items(out: Path) -> tuple[int, str]:
    """(number of failed items, their noun) of a run folder, from its ``summary.json``
    (``n_failed``, ``failed_unit``) and ``failures.csv``; (0, "") when none failed."""
    summary = out / "summary.json"
    if not (summary.is_file() and (out / FAILURES).is_file()):
        return 0, ""
    info = io.read_json(summary)
    return int(info.get("n_failed") or 0), str(info.get("failed_unit") or "item")


def _say_failed(name: str, out: Path) -> None:
    """Warn that a DONE run left items out, where they are listed and how to retry them."""
    n_failed, unit = failed_items(out)
    if n_failed:
        log.warning(
            "stage %s: %d %s%s failed, listed in %s; fix them and run the same command with "
            "redo=failed",
            name,
            n_failed,
            unit,
            "" if n_failed == 1 else "s",
            out / FAILURES,
        )


def execute(cfg: DictConfig, name: str, force: bool = False, redo: str = "none") -> Path:
    """Run stage ``name`` (after its upstreams) unless its run folder is already DONE.

    Returns the finished run folder. ``force`` recomputes this stage (not its upstreams);
    ``redo="failed"`` runs it again where its DONE run lists failed items (the stage resumes:
    finished items are kept). A DONE run with failed items says so, with the command that
    retries them. Upstreams that are not finished are run first when ``cfg.run_upstream`` is
    true, else :class:`UpstreamMissingError` names the command to run.
    """
    spec: Stage = get_stage(name)
    memo = _HashMemo(cfg)  # the stage's and its upstreams' folders share their hashing
    upstream_dirs: dict[str, Path] = {}
    for up in spec.upstream(cfg):
        up_dir = run_dir(cfg, up, memo)
        if not is_done(up_dir):
            if not cfg.get("run_upstream", True):
                raise UpstreamMissingError(
                    f"stage {name!r} needs stage {up!r}, which has not finished for this config "
                    f"(expected {up_dir}); run `python launch.py stage={up}` with the same "
                    "overrides first, or set run_upstream=true"
                )
            log.info("stage %s needs %s: running it first", name, up)
            up_dir = execute(cfg, up)  # its folder as hashed once its own upstreams ran
            # a stage run may write what a hash reads (a stage's ``inputs``): hash afresh
            memo = _HashMemo(cfg)
        upstream_dirs[up] = up_dir

    if not spec.hashed:  # collectors (e.g. carbon_summary) always run, in a new folder
        out = Path(cfg.paths.runs_dir).resolve() / name / time.strftime("%Y%m%d-%H%M%S")
        make_run_dir(out)
        with _disk_full_named(out):
            _run_in(cfg, spec, out, upstream_dirs)
        return out
    out = run_dir(cfg, name, memo)
    retry = redo == "failed" and failed_items(out)[0] > 0
    if redo == "failed" and is_done(out) and not retry:
        log.info("stage %s: redo=failed, but no item failed in %s", name, out)
    if is_done(out) and not force and not retry:
        log.info("stage %s: already done in %s (force=true recomputes)", name, out)
        _say_failed(name, out)
        return out
    with _locked(out):
        if is_done(out) and not force and not retry:  # finished by another process meanwhile
            log.info("stage %s: finished by another process in %s", name, out)
            return out
        if force:
            log.info("stage %s: force=true, clearing %s", name, out)
            clear_run(out)
        elif retry:
            n_failed, unit = failed_items(out)
            log.info(
                "stage %s: redo=failed: trying the %d failed %s(s) again", name, n_failed, unit
            )
            (out / DONE).unlink(missing_ok=True)
        elif any(p.name not in (".lock",) for p in out.iterdir()):
            log.info("stage %s: resuming unfinished run in %s", name, out)
        with _disk_full_named(out):
            _run_in(cfg, spec, out, upstream_dirs, memo)
    _say_failed(name, out)
    return out


def _run_in(
    cfg: DictConfig,
    spec: Stage,
    out: Path,
    upstream_dirs: dict[str, Path],
    memo: _HashMemo | None = None,
) -> None:
    from gensyn.tracking import tracking

    digest = out.name
    io.write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    io.write_json(out / "identity.json", stage_identity(cfg, spec.name, memo))
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
