"""Experiment tracking: W&B (offline by default), artifacts, and carbontracker energy logs.

Every stage runs inside :func:`tracking`, which starts the configured W&B run (or none) and
the carbontracker monitor, hands the tracker to the stage's
:class:`~gensyn.core.run_context.RunContext` and closes both however the stage ends; a stage that
succeeds has its checkpoints and report logged as W&B artifacts when ``logger.artifacts``
asks for them (:mod:`gensyn.tracking.artifacts`). Tracking never stops a stage: a tracker
that fails to start is reported once and replaced by a no-op. Tracking knows a run only by
its plain facts (:class:`~gensyn.core.run_context.RunContext`), never by :mod:`gensyn.core.runs`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gensyn.tracking.artifacts import ARTIFACT_TYPES, artifact_files, artifact_kinds
from gensyn.tracking.carbon import CarbonMonitor
from gensyn.tracking.wandb_tracker import NullTracker, Tracker, WandbTracker

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)

__all__ = [
    "CarbonMonitor",
    "NullTracker",
    "Tracker",
    "WandbTracker",
    "log_artifacts",
    "make_tracker",
    "tracking",
]


def make_tracker(cfg: DictConfig, ctx: RunContext) -> Tracker:
    """The tracker selected by ``cfg.logger.backend`` (``wandb`` or ``none``)."""
    backend = cfg.logger.backend
    if backend == "none":
        return NullTracker()
    if backend == "wandb":
        try:
            return WandbTracker.start(cfg, ctx)
        except Exception as exc:  # tracking must never take a stage down
            log.warning("W&B could not start (%s); continuing without it", exc)
            return NullTracker()
    raise ValueError(f"logger.backend must be 'wandb' or 'none', got {backend!r}")


@contextlib.contextmanager
def tracking(cfg: DictConfig, ctx: RunContext) -> Iterator[None]:
    """Run the body with W&B and carbontracker active for stage ``ctx``.

    A bad ``logger.artifacts`` value is a GensynError here, before the stage starts.
    """
    kinds = artifact_kinds(cfg.logger.get("artifacts", False))
    tracker = make_tracker(cfg, ctx)
    carbon = CarbonMonitor(ctx.out_dir / "carbon_logs", enabled=bool(cfg.logger.carbontracker))
    ctx.tracker = tracker
    carbon.start()
    ok = False
    try:
        yield
        ok = True
        log_artifacts(tracker, ctx, kinds)
    finally:
        energy = carbon.stop()
        if energy:
            ctx.summary.update(energy)
            tracker.log_summary(energy)
        tracker.log_summary({k: v for k, v in ctx.summary.items() if isinstance(v, int | float)})
        tracker.finish(exit_code=0 if ok else 1)
        ctx.tracker = None


def log_artifacts(tracker: Tracker, ctx: RunContext, kinds: tuple[str, ...]) -> int:
    """Log each artifact kind of the finished run ``ctx`` that has files; their number.

    Metadata: ``run_id`` (``<stage>-<hash>``, also the W&B run id), ``stage``,
    ``config_hash`` (the run folder's name) and ``experiment``.
    """
    logged = 0
    for kind in kinds:
        files = artifact_files(kind, ctx.out_dir, ctx.summary)
        if not files:
            continue
        metadata = {
            "run_id": f"{ctx.name}-{ctx.stage_hash}",
            "stage": ctx.name,
            "config_hash": ctx.stage_hash,
            "experiment": str(ctx.cfg.get("experiment_name", "")),
        }
        tracker.log_artifact(
            f"{ctx.name}-{kind}", ARTIFACT_TYPES[kind], files, ctx.out_dir, metadata
        )
        logged += 1
    return logged
