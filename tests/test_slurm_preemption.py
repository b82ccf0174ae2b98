"""gensyn.base.preemption with real signals sent to this process (no SLURM needed).

``requeue_now`` stands for submitit's checkpoint-and-requeue handler; here it records the
call instead of requeueing (there is no job to requeue), which is all the module decides.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from gensyn.base import preemption


@pytest.fixture
def requeues() -> Iterator[list[int]]:
    """Install the handlers with a recording requeue; restore the previous handlers after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGALRM)}
    calls: list[int] = []
    preemption.install(lambda signum, frame: calls.append(signum), grace_s=1.0)
    yield calls
    preemption.reset()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _send(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs in the main thread at the next bytecode


def test_nothing_happens_without_a_signal(requeues: list[int]) -> None:
    saves: list[int] = []
    preemption.checkpoint_point(save=lambda: saves.append(1))
    assert not preemption.requested() and saves == [] and requeues == []


def test_usr2_saves_and_stops_at_the_next_safe_point(requeues: list[int]) -> None:
    saves: list[int] = []
    preemption.checkpoint_point()  # the stage has safe points
    _send(signal.SIGUSR2)
    assert preemption.requested() and requeues == []  # waits for the safe point
    with pytest.raises(preemption.Preempted):
        preemption.checkpoint_point(save=lambda: saves.append(1))
    assert saves == [1]


def test_usr2_requeues_at_once_a_stage_without_safe_points(requeues: list[int]) -> None:
    _send(signal.SIGUSR2)
    assert requeues == [signal.SIGUSR2]


def test_usr2_requeues_when_no_safe_point_comes_within_the_grace_time(
    requeues: list[int],
) -> None:
    preemption.checkpoint_point()
    _send(signal.SIGUSR2)
    time.sleep(1.5)  # grace_s = 1: the alarm fires while the "stage" is busy elsewhere
    assert requeues == [signal.SIGUSR2]


def test_sigterm_saves_then_waits_then_goes_on(requeues: list[int]) -> None:
    saves: list[int] = []
    _send(signal.SIGTERM)
    start = time.monotonic()
    preemption.checkpoint_point(save=lambda: saves.append(1))  # waits grace_s, not killed
    assert saves == [1] and time.monotonic() - start >= 0.9
    assert requeues == [] and not preemption.requested()
    preemption.checkpoint_point(save=lambda: saves.append(2))  # nothing new: no save
    assert saves == [1]


def test_usr2_during_the_sigterm_wait_stops_the_stage(requeues: list[int]) -> None:
    preemption.checkpoint_point()
    _send(signal.SIGTERM)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR2)).start()
    with pytest.raises(preemption.Preempted):
        preemption.checkpoint_point()
    preemption.cancel_grace_timer()
    assert requeues == []  # the launcher requeues after catching Preempted
