"""Worker processes that never outlive the process that started them.

A stage killed with SIGKILL (an out-of-memory killer, ``kill -9``, a SLURM job over its time)
gets no chance to stop its worker pools: without care the workers keep converting or
decoding, outside the run folder's lock, and then hang on a queue nobody reads.
:func:`init_worker` is the initializer of every GENSYN process pool: on Linux it asks the
kernel to send the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
elsewhere a daemon thread checks once a second that the parent is still there. Workers
ignore Ctrl-C (SIGINT): the parent handles it, for the whole pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["init_worker"]

#: ``PR_SET_PDEATHSIG`` of <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def _prctl_pdeathsig() -> bool:
    """Ask Linux for SIGKILL when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, period_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(period_s)
    os._exit(1)  # the parent is gone: nothing to clean up that it could still use


def init_worker(parent_pid: int | None = None) -> None:
    """Pool initializer: end this worker as soon as its parent process ends; leave Ctrl-C to
    the parent (a terminal sends SIGINT to every process of the job: the parent stops the pool
    and says so in one line, instead of a traceback from every worker).

    ``parent_pid``: the parent this worker was started by (default: ``os.getppid()`` now). A
    parent that died before this ran (the worker already belongs to another process) ends the
    worker at once. Linux signals the death of the parent *thread* that started the worker, so
    pools must be created on a thread that lives as long as they do (the main thread here).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid() if parent_pid is None else int(parent_pid)
    if not _prctl_pdeathsig():
        threading.Thread(target=_watch_parent, args=(parent, 1.0), daemon=True).start()
    if os.getppid() != parent:  # died between the fork and the prctl call
        os._exit(1)
