"""Pre-emption and time limits on SLURM: checkpoint at a safe point, then requeue.

SLURM warns a job before it takes its CPUs/GPUs away: submitit asks for ``--signal=USR2@N``
(N = ``hydra.launcher.signal_delay_s`` seconds before the time limit) and the test cluster
sends the same signal at pre-emption; ``scontrol requeue``, ``scancel`` and pre-emption on
other clusters send SIGTERM, then SIGKILL after ``KillWait`` seconds.

A long stage (classify, gan_train, drr) already saves checkpoints into its run folder and
resumes from them. To lose no work, it also calls :func:`checkpoint_point` at safe points
of its loop (after an optimiser step or an epoch)::

    for epoch in range(start_epoch, num_epochs):
        train_one_epoch(...)
        save_checkpoint(ctx.out_dir, epoch)        # the regular checkpoint
        preemption.checkpoint_point()              # stops here if SLURM asked

or, where saving is too costly to do at every safe point::

    preemption.checkpoint_point(save=lambda: save_checkpoint(ctx.out_dir, step))

What happens on a signal (set up by :class:`gensyn.app.launcher.SlurmLauncher` in the job):

* ``USR2`` (time-out or pre-emption): the next :func:`checkpoint_point` saves and raises
  :class:`Preempted`; the launcher then requeues the job through submitit and exits. A stage
  that never called :func:`checkpoint_point`, or does not reach one within
  ``hydra.launcher.checkpoint_grace_s``, is requeued at once and resumes from its last
  regular checkpoint.
* ``SIGTERM`` (SLURM is about to kill the job: it requeues it itself, or it was cancelled):
  the next :func:`checkpoint_point` saves (``save``) and waits, doing no more work, until
  SLURM kills the job (or sends USR2: then as above); nothing is requeued from inside the
  job. Still alive after ``checkpoint_grace_s``, the stage goes on.

Outside SLURM nothing ever sets the flags, so :func:`checkpoint_point` costs one check.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The signal submitit asks SLURM for before the time limit (``--signal=USR2@N``).
STOP_SIGNAL = signal.SIGUSR2
#: The signal SLURM sends before it kills a job.
SAVE_SIGNAL = signal.SIGTERM

SignalHandler = Callable[[int, FrameType | None], Any]


class Preempted(BaseException):  # a request to stop, not an error
    """Raised by :func:`checkpoint_point` after saving: the job is requeued and resumes later.

    A ``BaseException`` so that ``except Exception`` blocks in stages and in Hydra's job
    runner let it through; the launcher catches it.
    """


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stop_requested = False  # USR2: save, stop and requeue
        self.save_requested = False  # SIGTERM: save, then wait for SLURM to kill us
        self.polled = False  # the running stage calls checkpoint_point (it can stop cleanly)
        self.grace_s = 0.0  # set by install(): how long to wait for the end after SIGTERM


_state = _State()


def requested() -> bool:
    """Whether SLURM asked this job to stop (USR2) or warned that it will be killed (SIGTERM)."""
    return _state.stop_requested or _state.save_requested


def checkpoint_point(save: Callable[[], None] | None = None) -> None:
    """Mark a safe point of a long loop: save and stop here if SLURM asked for it.

    ``save`` (optional) writes a checkpoint from which the stage resumes with the same
    result; it is called only when a signal arrived. Raises :class:`Preempted` after a
    stop request (USR2); after a save request (SIGTERM) it waits for the end (see the
    module docstring); otherwise it returns at once.
    """
    _state.polled = True
    if not requested():
        return
    if save is not None:
        log.warning("pre-emption: saving a checkpoint")
        save()
    if _state.save_requested and not _state.stop_requested:
        _state.save_requested = False
        log.warning("SIGTERM: checkpoint saved; waiting up to %.0f s for SLURM", _state.grace_s)
        deadline = time.monotonic() + _state.grace_s
        while time.monotonic() < deadline and not _state.stop_requested:
            time.sleep(0.1)
        if not _state.stop_requested:
            log.warning("still running %.0f s after SIGTERM: going on", _state.grace_s)
            return
    _state.save_requested = False
    log.warning("pre-emption: checkpoint saved, stopping for requeue")
    raise Preempted("stopped at a checkpoint on SLURM's request; the job is requeued")


def install(requeue_now: SignalHandler, grace_s: float) -> None:
    """Install the job-side signal handlers (called by the SLURM launcher inside the job).

    ``requeue_now(signum, frame)`` checkpoints the submission and requeues the job
    (submitit's handler; it exits the process). It runs at once when the stage never
    reached a :func:`checkpoint_point`, or ``grace_s`` seconds after the signal when the
    stage does not reach one in time.
    """
    _state.reset()
    _state.grace_s = grace_s

    def on_stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not _state.polled:
            log.warning(
                "%s: stage has no safe points; requeueing now (resume from its last checkpoint)",
                name,
            )
            requeue_now(signum, frame)
            return
        log.warning("%s: stopping at the next checkpoint_point (at most %.0f s)", name, grace_s)
        _state.stop_requested = True
        signal.signal(signal.SIGALRM, lambda _s, f: _grace_over(requeue_now, signum, f))
        signal.alarm(max(1, round(grace_s)))

    def on_save(signum: int, frame: FrameType | None) -> None:
        log.warning("%s: saving at the next checkpoint_point", signal.Signals(signum).name)
        _state.save_requested = True

    signal.signal(STOP_SIGNAL, on_stop)
    signal.signal(SAVE_SIGNAL, on_save)


def _grace_over(requeue_now: SignalHandler, signum: int, frame: FrameType | None) -> None:
    log.warning(
        "no checkpoint_point reached in time; requeueing now (resume from the last checkpoint)"
    )
    requeue_now(signum, frame)


def cancel_grace_timer() -> None:
    """Stop the grace timer (the stage stopped at a checkpoint, or finished)."""
    signal.alarm(0)


def reset() -> None:
    """Forget requests (a new job in the same process)."""
    cancel_grace_timer()
    _state.reset()
