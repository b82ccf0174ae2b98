"""GENSYN's local launcher (``hydra/launcher=local``, the default): a failed job never stops
the rest of a sweep.

Hydra's basic launcher runs a sweep's jobs one after another in this process, but a job
that exits (GENSYN's user-fixable errors end in ``SystemExit``) stops every later job, and a
job that crashes is reported with a traceback only after the others. This launcher runs
every job whatever happens to the others (Ctrl-C still stops the sweep), then lists every
failed job in one table (its overrides, the first line of its error, its log file) and
exits with status 1. A crash's traceback goes to that job's log file, not to the console.
Finished runs are DONE, so the same command again reruns only the failed jobs. Two jobs in a
row that fail on the GPU's runtime (out of memory, a failed kernel: the process's GPU context
may stay broken) stop the sweep with the same table and the jobs not started, rather than
failing every later job the same way. Ctrl-C stops
the sweep: the table then lists the failed jobs and the interrupted one, and says how many
jobs did not start; the command exits with status 130 (gensyn.app.cli.exit_on_interrupt).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.errors import CompactHydraException
from omegaconf import open_dict

from gensyn.base.errors import GensynError

log = logging.getLogger(__name__)


class LocalJobsFailedError(GensynError, CompactHydraException):
    """Some jobs of a local sweep failed; the message lists each with its overrides and log."""


class JobExitedError(Exception):
    """A job ended in ``SystemExit`` (a GensynError already logged, or an explicit exit)."""


class JobInterruptedError(Exception):
    """A job was stopped by Ctrl-C; the sweep stops after it."""

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C)")


def contained(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``task`` with ``SystemExit`` turned into an error Hydra records as this job's failure.

    A crash (any other exception) is logged in one line, its traceback in the job's log file.
    """

    def run(cfg: Any) -> Any:
        try:
            return task(cfg)
        except KeyboardInterrupt:
            raise JobInterruptedError from None
        except SystemExit as exc:
            if exc.code in (0, None):
                return None
            # gensyn.app.main chains the GensynError it already logged
            cause = exc.__cause__ or exc.__context__
            raise JobExitedError(str(cause) if cause else f"exit status {exc.code}") from None
        except Exception as exc:
            _traceback_to_log_files(exc)
            log.error("%s (traceback in this job's log)", first_line(exc))
            raise

    return run


def first_line(exc: BaseException) -> str:
    """``exc``'s message in one line; the type is named unless it is a clear GENSYN error."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, GensynError | JobExitedError | JobInterruptedError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _traceback_to_log_files(exc: BaseException) -> None:
    """Write ``exc``'s traceback to the log files only (the console gets one line)."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "the job crashed:", (), None, "contained"
    )
    record.exc_text = "".join(traceback.format_exception(exc)).rstrip()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def job_log(ret: JobReturn) -> Path | None:
    """The Hydra log file of a finished job (``<output dir>/<job name>.log``)."""
    hydra = getattr(ret, "hydra_cfg", None)
    if hydra is None:
        return None
    out = Path(str(hydra.hydra.runtime.output_dir))
    path = out / f"{hydra.hydra.job.name}.log"
    return path if path.is_file() else out


def failure_table(failed: Sequence[tuple[int, JobReturn]]) -> str:
    """One row per failed job: number, overrides, first line of the error, log file."""
    rows = [("job", "overrides", "error", "log")]
    for idx, ret in failed:
        overrides = " ".join(filter_overrides(ret.overrides or [])) or "(no overrides)"
        rows.append((f"#{idx}", overrides, first_line(ret._return_value), str(job_log(ret))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    )


#: Jobs in a row that fail on the accelerator before a local sweep stops (see
#: :func:`accelerator_failure`).
ACCELERATOR_FAILURES_TO_STOP = 2
#: Marks of an accelerator's runtime error in an exception's text (CUDA, cuDNN, cuBLAS, XLA).
_ACCELERATOR_MARKS = ("CUDA_ERROR", "CUDA error", "cudnn status", "CUDNN_STATUS", "CUBLAS_STATUS")


def accelerator_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a failure of the accelerator's runtime rather than of the job's
    inputs: JAX's runtime error (XLA: out of memory, a failed kernel or autotuning), or an
    error naming CUDA, cuDNN or cuBLAS (PyTorch). After such an error the process's GPU
    context may stay broken: every later job of the sweep then fails the same way."""
    if exc is None or isinstance(exc, JobExitedError | JobInterruptedError):
        return False
    if type(exc).__name__ in ("JaxRuntimeError", "XlaRuntimeError"):
        return True
    return any(mark in str(exc) for mark in _ACCELERATOR_MARKS)


class LocalLauncher(BasicLauncher):
    """Hydra's basic launcher that runs every job of the sweep and reports failures together."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        """Hydra's set-up; each job's config is then composed once, not three times
        (:func:`gensyn.app.launcher.remember_sweep_configs`)."""
        from gensyn.app.launcher import remember_sweep_configs

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        remember_sweep_configs(hydra_context)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run every job in turn; raise one error listing the failed ones at the end.

        Ctrl-C stops after the running job: the table (failed, interrupted, not started) is
        logged and KeyboardInterrupt raised again (the command then exits with status 130).
        """
        from gensyn.app.launcher import plan_jobs, sweep_summary

        assert self.task_function is not None and self.config is not None
        # which runs are DONE before the sweep: the summary counts them as skipped
        plans = plan_jobs(self, job_overrides, initial_job_idx, tolerant=True)
        task = self.task_function
        self.task_function = contained(task)
        try:
            results, stopped = self._run_jobs(job_overrides, initial_job_idx)
        finally:
            self.task_function = task
        failed = [
            (initial_job_idx + i, r) for i, r in enumerate(results) if r.status == JobStatus.FAILED
        ]
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        if stopped == "accelerator":
            not_started = len(job_overrides) - len(results)
            raise LocalJobsFailedError(
                f"{len(failed)} of {len(results)} jobs of this sweep failed (sweep folder "
                f"{sweep_dir}); the last {ACCELERATOR_FAILURES_TO_STOP} failed on the GPU one "
                f"after the other, so the sweep stopped: {not_started} of {len(job_overrides)} "
                "jobs did not start:\n"
                + failure_table(failed)
                + "\nAfter an error of the GPU's runtime (out of memory, a failed kernel) this "
                "process's GPU state may stay broken, and every later job would fail the same "
                "way. Check that no other process holds the GPU (nvidia-smi), fix the cause, "
                "and run the same command again: a new process starts a new GPU context, "
                "finished runs are DONE and skipped.\n"
                + sweep_summary(
                    "local sweep", plans[: len(results)], {i for i, _ in failed}, job_overrides
                )
            )
        if stopped == "interrupted":
            not_started = len(job_overrides) - len(results)
            log.warning(
                "%s",
                f"local sweep interrupted (sweep folder {sweep_dir}); {not_started} of "
                f"{len(job_overrides)} jobs did not start"
                + (":\n" + failure_table(failed) if failed else "")
                + "\nThe same command again resumes the interrupted job and runs the rest "
                "(finished runs are DONE and skipped).",
            )
            raise KeyboardInterrupt
        summary = sweep_summary("local sweep", plans, {i for i, _ in failed}, job_overrides)
        if failed:
            raise LocalJobsFailedError(
                f"{len(failed)} of {len(results)} jobs of this sweep failed "
                f"(sweep folder {sweep_dir}):\n"
                + failure_table(failed)
                + "\nFix the cause and run the same command again: finished runs are DONE "
                "and skipped, only these run again.\n" + summary
            )
        log.info(summary)
        return results

    def _run_jobs(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> tuple[list[JobReturn], str | None]:
        """Hydra's basic launcher loop, stopping at Ctrl-C, or after
        :data:`ACCELERATOR_FAILURES_TO_STOP` jobs in a row failed on the accelerator: (results
        so far, why it stopped early: ``"interrupted"``, ``"accelerator"``, or None)."""
        setup_globals()
        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: list[JobReturn] = []
        on_accelerator = 0  # jobs in a row that failed on the accelerator
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            try:
                sweep_config = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = idx
                    sweep_config.hydra.job.num = idx
                ret = run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            except KeyboardInterrupt:  # between jobs, outside the task: nothing of it ran
                return runs, "interrupted"
            runs.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            if isinstance(ret._return_value, JobInterruptedError):
                return runs, "interrupted"
            failed = ret.status == JobStatus.FAILED
            on_accelerator = (
                on_accelerator + 1 if failed and accelerator_failure(ret._return_value) else 0
            )
            if on_accelerator >= ACCELERATOR_FAILURES_TO_STOP and offset + 1 < len(job_overrides):
                return runs, "accelerator"
        return runs, None


__all__ = [
    "ACCELERATOR_FAILURES_TO_STOP",
    "JobInterruptedError",
    "LocalJobsFailedError",
    "LocalLauncher",
    "accelerator_failure",
    "contained",
    "failure_table",
]
