"""Experiment tracking: W&B (offline by default) and carbontracker energy logs.

Every stage runs inside :func:`tracking`, which starts the configured W&B run (or none) and
the carbontracker monitor, hands the tracker to the stage's :class:`~gensyn.runs.RunContext`
and closes both however the stage ends. Tracking never stops a stage: a tracker that fails
to start is reported once and replaced by a no-op.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gensyn.tracking.carbon import CarbonMonitor
from gensyn.tracking.wandb_tracker import NullTracker, Tracker, WandbTracker

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.runs import RunContext

log = logging.getLogger(__name__)

__all__ = ["CarbonMonitor", "NullTracker", "Tracker", "WandbTracker", "make_tracker", "tracking"]


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
    """Run the body with W&B and carbontracker active for stage ``ctx``."""
    tracker = make_tracker(cfg, ctx)
    carbon = CarbonMonitor(ctx.out_dir / "carbon_logs", enabled=bool(cfg.logger.carbontracker))
    ctx.tracker = tracker
    carbon.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        energy = carbon.stop()
        if energy:
            ctx.summary.update(energy)
            tracker.log_summary(energy)
        tracker.log_summary({k: v for k, v in ctx.summary.items() if isinstance(v, int | float)})
        tracker.finish(exit_code=0 if ok else 1)
        ctx.tracker = None
