"""Overlap a stage's reading, computing and writing: ordered prefetch, bounded writers, timing.

A per-item stage (``drr``, ``gan_translate``, ``predict``) reads an input, prepares it, computes
on the accelerator, then encodes and writes the result. Done strictly in sequence the CPU work
sets the pace and the GPU idles. The pieces here let the stage keep the accelerator on the main
thread while threads do the rest:

* :func:`ordered_map` runs a loader function on ``num_workers`` threads, at most ``max_ahead``
  items ahead of the consumer, and yields the results in input order (a worker's exception is
  raised when its item's turn comes, so what the consumer sees is deterministic).
* :class:`InOrderSlots` lets only the next ``n`` items (in input order) hold a scarce resource,
  e.g. a CT's material volumes on the GPU, while more items are read ahead on the host.
* :class:`BackgroundWriter` encodes and writes results on a thread pool with a bounded number of
  pending jobs and re-raises the first write error.
* :class:`StageTimer` adds up the seconds spent reading, preparing, computing and writing (from
  any thread) and the main thread's waits, and turns them into summary keys.

Threads, not processes: the work they take (gzip inflation, numpy, PNG encoding in PIL, torch)
releases the GIL, and results (CT volumes of hundreds of MB) need no copy between threads.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = [
    "TIME_PARTS",
    "BackgroundWriter",
    "InOrderSlots",
    "SlotsClosed",
    "StageTimer",
    "frozen_heap",
    "ordered_map",
]

T = TypeVar("T")
R = TypeVar("R")

#: The parts of a stage's work that :class:`StageTimer` reports, in pipeline order.
TIME_PARTS = ("read", "prepare", "compute", "write")


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    num_workers: int,
    max_ahead: int | None = None,
    name: str = "loader",
) -> Generator[R, None, None]:
    """``fn(item)`` for each item, computed on ``num_workers`` threads, yielded in input order.

    At most ``max_ahead`` (default ``2 * num_workers``) items are submitted and not yet
    consumed, which bounds memory whatever the number of items. ``num_workers=0`` calls ``fn``
    lazily on the consumer's thread (the sequential reference). An exception raised by ``fn``
    is re-raised by this iterator when that item's turn comes; closing the iterator early
    (``break``, an error in the consumer) cancels the items not started and waits for the
    running ones.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        for item in items:
            yield fn(item)
        return
    ahead = 2 * num_workers if max_ahead is None else max_ahead
    if ahead < 1:
        raise ValueError(f"max_ahead must be >= 1, got {ahead}")
    source = iter(items)
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix=name)
    pending: deque[Future[R]] = deque()
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < ahead:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(pool.submit(fn, item))
            if not pending:
                return
            result = pending.popleft().result()
            yield result
            del result  # hold no reference to a consumed result (a CT volume, a batch)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class SlotsClosed(RuntimeError):
    """Raised in a thread waiting on :class:`InOrderSlots` after the slots were closed."""


class InOrderSlots:
    """``n`` slots taken in input order: item ``i`` may proceed once items ``0 .. i - n`` are done.

    A loader thread calls :meth:`acquire` with its item's position before it takes the scarce
    resource (GPU memory); the consumer calls :meth:`release` after it finished with an item,
    once per position, in order. Because positions, not arrival times, decide, a later item can
    never hold a slot the next item needs (no deadlock). :meth:`close` wakes every waiter with
    :class:`SlotsClosed`, so a stopped pipeline does not hang on its loaders.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"InOrderSlots needs n >= 1, got {n}")
        self.n = n
        self._released = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self, position: int) -> None:
        """Block until item ``position`` (0-based) may hold a slot."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or position < self._released + self.n)
            if self._closed:
                raise SlotsClosed(f"slots closed while item {position} waited")

    def release(self) -> None:
        """The consumer is done with the next item in order: one more may proceed."""
        with self._cond:
            self._released += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop: every current and future :meth:`acquire` raises :class:`SlotsClosed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class BackgroundWriter:
    """Run write jobs (encode + write a file) on ``num_threads`` threads, at most ``max_pending``
    queued or running; ``num_threads=0`` runs each job at once on the caller's thread.

    :meth:`submit` blocks while the queue is full (the main thread then waits for the disk, and
    the time is counted as ``wait_output`` by the timer) and re-raises the error of a finished
    job, so a full disk stops the stage early. Use as a context manager: leaving it waits for
    every job, also when the block raised (files are written atomically, so none is left half).
    """

    def __init__(
        self,
        num_threads: int,
        max_pending: int | None = None,
        timer: StageTimer | None = None,
        name: str = "writer",
    ) -> None:
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {num_threads}")
        self.max_pending = max(1, 4 * num_threads if max_pending is None else max_pending)
        self.timer = timer
        self._pool = (
            ThreadPoolExecutor(num_threads, thread_name_prefix=name) if num_threads else None
        )
        self._pending: deque[Future[Any]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``fn(*args)``; returns its future (already done when there are no threads)."""
        if self._pool is None:
            future: Future[Any] = Future()
            future.set_result(fn(*args))  # inline: an error propagates at once
            return future
        self._collect_done()
        if len(self._pending) >= self.max_pending:
            with self._waiting():
                while len(self._pending) >= self.max_pending:
                    self._pending.popleft().result()
        future = self._pool.submit(fn, *args)
        self._pending.append(future)
        return future

    def drain(self) -> None:
        """Wait for every queued job; re-raise the first error."""
        with self._waiting():
            while self._pending:
                self._pending.popleft().result()

    def _collect_done(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    @contextmanager
    def _waiting(self) -> Iterator[None]:
        if self.timer is None:
            yield
        else:
            with self.timer.time("wait_output"):
                yield

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._pool is None:
            return
        try:
            if exc_type is None:
                self.drain()
        finally:
            self._pool.shutdown(wait=True)  # on an error: let running jobs finish, then stop


class StageTimer:
    """Seconds spent per part of a stage, added from any thread, plus the wall time.

    Parts are :data:`TIME_PARTS` (read, prepare, compute, write) and the main thread's waits
    ``wait_input`` (for the loaders) and ``wait_output`` (for the writers). In a pipelined stage
    read/prepare/write run on worker threads and overlap compute, so their sum can exceed the
    wall time; the waits say which side held the main thread up.
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._marks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._start = time.perf_counter()

    def mark(self, name: str) -> None:
        """Note the wall time of the first call with ``name`` (later calls change nothing);
        the summary has it as ``time_to_<name>_s``."""
        with self._lock:
            self._marks.setdefault(name, time.perf_counter() - self._start)

    def add(self, part: str, seconds: float) -> None:
        """Add ``seconds`` to ``part``."""
        with self._lock:
            self._seconds[part] = self._seconds.get(part, 0.0) + seconds

    @contextmanager
    def time(self, part: str) -> Iterator[None]:
        """Time the ``with`` block and add it to ``part``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - start)

    def timed(self, part: str, iterator: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterator``, adding the time each ``next()`` takes to ``part``."""
        source = iter(iterator)
        while True:
            with self.time(part):
                try:
                    item = next(source)
                except StopIteration:
                    return
            yield item
            del item  # the consumer may free it before asking for the next

    @contextmanager
    def garbage_collections(self) -> Iterator[None]:
        """Add the seconds Python's garbage collector runs inside the block (in any thread:
        a collection holds the GIL, so every thread waits for it) to the part ``gc``."""
        started: dict[int, float] = {}

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[threading.get_ident()] = time.perf_counter()
            elif (t := started.pop(threading.get_ident(), None)) is not None:
                self.add("gc", time.perf_counter() - t)

        gc.callbacks.append(callback)
        try:
            yield
        finally:
            gc.callbacks.remove(callback)

    def seconds(self, part: str) -> float:
        """Seconds added to ``part`` so far."""
        with self._lock:
            return self._seconds.get(part, 0.0)

    @property
    def wall_s(self) -> float:
        """Seconds since the timer was made."""
        return time.perf_counter() - self._start

    def summary(self, n_items: int, unit: str) -> dict[str, float]:
        """Summary keys: ``time_<part>_s`` for each part and wait, ``time_wall_s`` and
        ``<unit>_per_s`` (items handled in this run per wall second); where a ``compile`` part
        was timed, also ``<unit>_per_s_after_compile`` (per wall second less the compilation:
        the rate a larger input approaches, comparable with a kernel measured warm); where
        a ``gpu`` part was timed (the GPU's own seconds, from CUDA events), also
        ``gpu_busy_fraction``: those seconds over the wall time less the compilation."""
        wall = self.wall_s
        with self._lock:
            parts = dict(self._seconds)
            marks = dict(self._marks)
        keys = {f"time_{p}_s": round(parts.pop(p, 0.0), 3) for p in TIME_PARTS}
        keys.update({f"time_{p}_s": round(s, 3) for p, s in sorted(parts.items())})
        keys.update({f"time_to_{m}_s": round(t, 3) for m, t in sorted(marks.items())})
        keys["time_wall_s"] = round(wall, 3)
        keys[f"{unit}_per_s"] = round(n_items / wall, 3) if n_items and wall > 0 else 0.0
        steady = wall - keys.get("time_compile_s", 0.0)
        if "time_compile_s" in keys:
            after = round(n_items / steady, 3) if n_items and steady > 0 else 0.0
            keys[f"{unit}_per_s_after_compile"] = after
        if "time_gpu_s" in keys and steady > 0:  # how much of the time the GPU had work
            keys["gpu_busy_fraction"] = round(min(1.0, keys["time_gpu_s"] / steady), 3)
        return keys

    def log(self, logger: logging.Logger, stage: str, n_items: int, unit: str) -> dict[str, float]:
        """Log the breakdown as one line and return :meth:`summary`."""
        keys = self.summary(n_items, unit)
        parts = ", ".join(
            f"{k[5:-2]} {v:.2f} s"
            for k, v in keys.items()
            if k.startswith("time_") and not k.startswith("time_to_") and k != "time_wall_s" and v
        )
        logger.info(
            "%s: %d %s in %.2f s = %.2f %s/s (%s)",
            stage,
            n_items,
            unit,
            keys["time_wall_s"],
            keys[f"{unit}_per_s"],
            unit,
            parts or "nothing timed",
        )
        return keys


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Inside the block, the garbage collector skips every object that exists when it starts
    (:func:`gc.freeze`); they are unfrozen at the end, unless someone had frozen objects before.

    Compiling a network (``torch.compile``) leaves hundreds of thousands of long-lived Python
    objects; each full collection during the loop that follows walks all of them while every
    thread waits (0.21 s a collection at 402,000 objects on the 2-core development VM, 0.7 ms
    frozen). New objects are still collected as usual.
    """
    if gc.get_freeze_count():  # someone else's freeze: leave it as it is
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
