"""GENSYN's SLURM launcher: hydra-submitit-launcher plus skip-done, dry runs, clear failures
and checkpoint-on-signal.

``python launch.py stage=classify split_idx=0,1,2,3,4 -m hydra/launcher=slurm`` sends the
sweep to SLURM as one job array (submitit). On top of hydra-submitit-launcher's
``SlurmLauncher`` this launcher

* does not submit jobs whose run folder is already DONE (``skip_done``), so re-submitting a
  sweep reruns only what failed or never ran;
* lists the jobs, their run folders and the ``#SBATCH`` header without submitting anything
  (``hydra.launcher.dry_run=true``);
* waits for every job, then reports each failed one with its SLURM id, its log files and
  the last lines of its error log, in one error;
* ends with one summary line per array (done, skipped, failed) and the report command to
  run next (:func:`sweep_summary`, shared with the local launcher);
* runs jobs with the interpreter that runs ``launch.py`` (the project's .venv), or
  ``hydra.launcher.python``;
* inside each job, turns SLURM's signals into checkpoint-and-requeue (:mod:`gensyn.base.preemption`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shlex
import shutil
import signal
import sys
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from omegaconf import DictConfig

from gensyn.base import preemption
from gensyn.base.errors import GensynError

log = logging.getLogger(__name__)

#: Launcher fields GENSYN adds to hydra-submitit-launcher's (see gensyn/config/launcher.py).
GENSYN_FIELDS = ("python", "dry_run", "skip_done", "checkpoint_grace_s")
#: Resource fields shown by the dry run, in this order.
RESOURCE_FIELDS = (
    "partition",
    "account",
    "qos",
    "nodes",
    "tasks_per_node",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "timeout_min",
    "array_parallelism",
    "max_num_timeout",
    "signal_delay_s",
    "additional_parameters",
)
LOG_TAIL_LINES = 12


class SlurmJobsFailedError(GensynError, CompactHydraException):
    """Some jobs of a sweep failed; the message lists each with its SLURM id and logs."""


class SlurmSubmitError(GensynError, CompactHydraException):
    """sbatch is missing or refused the job array."""


class SweepConfigMemo:
    """A config loader's ``load_sweep_config`` that composes each job's config once.

    Hydra composes every job of a sweep three times in the launching process: the sweeper
    checks the batch can be composed, :func:`plan_jobs` finds each run folder, and the local
    launcher runs the job (≈ 0.2 s each here, more on a slower host: a 45-job grid spent
    minutes on it). The same master config and overrides compose the same config, so the
    first is kept and each call gets a deep copy of it (the launcher writes job ids into its
    copy). At most ``size`` configs are kept, the least recently used dropped first.
    """

    def __init__(self, load: Callable[..., DictConfig], size: int = 512) -> None:
        self.load = load
        self.size = size
        self.configs: OrderedDict[tuple[int, tuple[str, ...]], DictConfig] = OrderedDict()

    def __call__(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """A copy of the config ``sweep_overrides`` compose on ``master_config``."""
        key = (id(master_config), tuple(sweep_overrides))
        if key in self.configs:
            self.configs.move_to_end(key)
        else:
            self.configs[key] = self.load(
                master_config=master_config, sweep_overrides=list(sweep_overrides)
            )
            while len(self.configs) > self.size:
                self.configs.popitem(last=False)
        return copy.deepcopy(self.configs[key])


def remember_sweep_configs(hydra_context: Any) -> None:
    """Make ``hydra_context``'s config loader compose each sweep job once (:class:`SweepConfigMemo`).

    Called from the local launcher's ``setup``, before the sweeper checks the batch: the
    sweeper, :func:`plan_jobs` and the launcher share the one loader object. (Not for SLURM:
    its launcher is pickled into every job, and the kept configs with it.)"""
    loader = hydra_context.config_loader
    if not isinstance(loader.load_sweep_config, SweepConfigMemo):
        setattr(loader, "load_sweep_config", SweepConfigMemo(loader.load_sweep_config))  # noqa: B010


@dataclass
class PlannedJob:
    """One job of a sweep: its index, overrides and run folder (None: stage owns no folder)."""

    idx: int
    overrides: list[str]
    run_dir: Path | None
    done: bool
    stage: str = ""  # the stage the job runs ("" when its config could not be planned)

    @property
    def label(self) -> str:
        return f"#{self.idx} " + (" ".join(filter_overrides(self.overrides)) or "(no overrides)")


def plan_job(cfg: DictConfig, idx: int, overrides: list[str]) -> PlannedJob:
    """Where job ``idx`` (composed config ``cfg``) writes, and whether that run is DONE."""
    from gensyn.core.registry import get_stage
    from gensyn.core.runs import failed_items, is_done, run_dir

    name = str(cfg.stage.name)
    spec = get_stage(name) if name != "list" else None
    if spec is None or not spec.hashed:
        return PlannedJob(idx, overrides, None, False, name)
    out = run_dir(cfg, name)
    redo = str(getattr(cfg.get("redo"), "value", cfg.get("redo")))
    again = cfg.get("force", False) or (redo == "failed" and failed_items(out)[0] > 0)
    return PlannedJob(idx, overrides, out, is_done(out) and not again, name)


def plan_jobs(
    launcher: Any, job_overrides: Any, initial_job_idx: int, tolerant: bool = False
) -> list[PlannedJob]:
    """:func:`plan_job` for every job of a Hydra launcher's sweep.

    ``tolerant``: a job whose config cannot be planned gets no run folder (its own run then
    reports the error) instead of stopping the whole sweep.
    """
    plans = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        try:
            cfg = launcher.hydra_context.config_loader.load_sweep_config(
                launcher.config, list(overrides)
            )
            plans.append(plan_job(cfg, idx, list(overrides)))
        except Exception:
            if not tolerant:
                raise
            plans.append(PlannedJob(idx, list(overrides), None, False))
    return plans


#: Override keys a sweep's next command leaves out (it is its own stage; shards only split
#: a download, and the stages after it read the whole raw folder).
NOT_FOR_NEXT = ("stage", "stage.name", "force", "redo", "shard", "num_shards")
#: The stage to run after a sweep of each stage (the study's order, docs/study.md); sweeps of
#: trained models and their predictions (and of stages not listed) are compared by the report;
#: None: nothing follows.
NEXT_STAGE: dict[str, str | None] = {
    "download": "convert",
    "convert": "drr",
    "drr": "gan_train",
    "synthex_prep": "gan_train",
    "gan_train": "gan_translate",
    "gan_translate": "classify",
    "prepare_xrays": "classify",
    "classify": "report",
    "predict": "report",
    "reader_study_build": "reader_study_serve",
    "reader_study_serve": "reader_study_analyze",
    "reader_study_analyze": None,
    "report": None,
    "export": None,
    "carbon_summary": None,
    "pipeline": None,
}


def next_command(job_overrides: Any, stage_name: str = "classify") -> str:
    """``python launch.py ... stage=<next>`` with the overrides every job of the sweep shares,
    where ``<next>`` follows ``stage_name`` (:data:`NEXT_STAGE`); "" when nothing follows."""
    after = NEXT_STAGE.get(stage_name, "report")
    if after is None:
        return ""
    jobs = [list(o) for o in job_overrides] or [[]]
    shared = [
        o
        for o in jobs[0]
        if all(o in other for other in jobs[1:])
        and o.split("=", 1)[0].lstrip("+~") not in NOT_FOR_NEXT
    ]
    return shlex.join(["python", "launch.py", *shared, f"stage={after}"])


def report_command(job_overrides: Any) -> str:
    """``python launch.py ... stage=report`` with the overrides every job of the sweep shares."""
    return next_command(job_overrides, "classify")


def sweep_summary(what: str, plans: list[PlannedJob], failed: set[int], job_overrides: Any) -> str:
    """One line: how many jobs of ``what`` finished, were skipped (DONE) or failed; what next."""
    skipped = sum(p.done for p in plans)
    done = len(plans) - skipped - len(failed)
    stages = {p.stage for p in plans if p.stage}
    after = next_command(job_overrides, stages.pop()) if len(stages) == 1 else ""
    if failed:
        then = "the same command again (only the failed jobs run)" + (
            f", then {after}" if after else ""
        )
    else:
        then = after
    return f"{what}: {done} done, {skipped} skipped (already DONE), {len(failed)} failed." + (
        f" Next: {then}" if then else ""
    )


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher with GENSYN's additions (module docstring)."""

    def __init__(self, **params: Any) -> None:
        own = {k: params.pop(k) for k in GENSYN_FIELDS if k in params}
        super().__init__(**params)
        self.python: str = own.get("python") or sys.executable
        self.dry_run = bool(own.get("dry_run", False))
        self.skip_done = bool(own.get("skip_done", True))
        self.checkpoint_grace_s = float(own.get("checkpoint_grace_s", 60))

    # ---- inside the job ------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """Run one sweep job on the node, with checkpoint-and-requeue on SLURM's signals."""
        from gensyn.app.hydra_folders import register_launch_id_resolver

        register_launch_id_resolver()  # the job's config names it in hydra.run.dir
        requeue_now = _guarded(signal.getsignal(preemption.STOP_SIGNAL))
        preemption.install(requeue_now, self.checkpoint_grace_s)
        try:
            ret: JobReturn = super().__call__(*args, **kwargs)
            if ret.status == JobStatus.FAILED:  # Hydra caught it: put it in the job's logs
                exc = ret._return_value
                traceback.print_exception(exc, file=sys.stderr)
                log.error("the job failed", exc_info=(type(exc), exc, exc.__traceback__))
            return ret
        except preemption.Preempted:
            preemption.cancel_grace_timer()
            log.warning("stage stopped at a checkpoint: requeueing the job")
            requeue_now(preemption.STOP_SIGNAL, None)  # dumps this call again, requeues, exits
            raise
        finally:
            preemption.reset()

    # ---- on the submitting machine -------------------------------------------------------
    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        """Submit the sweep as one job array (minus DONE runs), wait, report failures."""
        import submitit

        assert self.config is not None and self.hydra_context is not None
        plans = plan_jobs(self, job_overrides, initial_job_idx)
        to_run = [p for p in plans if not (self.skip_done and p.done)]

        if not self.dry_run and (shutil.which("sbatch") is None or shutil.which("srun") is None):
            raise SlurmSubmitError(
                "hydra/launcher=slurm needs SLURM's sbatch and srun on PATH, and they are not "
                "here. Submit from a SLURM login node, start the single-node test cluster "
                "(sudo scripts/slurm/start.sh, see docs/cluster.md), or add "
                "hydra.launcher.dry_run=true to list the jobs without submitting."
            )
        executor = self._make_executor(submitit)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if self.dry_run:
            print(self.describe(plans, to_run, executor))
            return [_completed(p, None) for p in plans]

        for p in plans:
            if p not in to_run:
                log.info("\t%s : DONE in %s, not submitted", p.label, p.run_dir)
        if not to_run:
            log.info("every job of this sweep is DONE; nothing submitted")
            log.info(sweep_summary("SLURM (no array submitted)", plans, set(), job_overrides))
            return [_completed(p, p.run_dir) for p in plans]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for p in to_run:
            log.info("\t%s", p.label)
        job_args = [
            (p.overrides, "hydra.sweep.dir", p.idx, f"job_id_for_{p.idx}", _singleton_state())
            for p in to_run
        ]
        jobs = self._submit(executor, job_args)
        array_id = str(jobs[0].job_id).split("_")[0]
        log.info(
            "submitted SLURM job array %s (%d tasks); logs in %s",
            array_id,
            len(jobs),
            Path(str(jobs[0].paths.folder)).parent,
        )
        results: dict[int, JobReturn] = {
            p.idx: _completed(p, p.run_dir) for p in plans if p not in to_run
        }
        failures: list[str] = []
        failed: set[int] = set()
        try:
            for plan, job in zip(to_run, jobs, strict=True):
                ret, failure = _collect(plan, job, sweep_dir)
                results[plan.idx] = ret
                if failure:
                    failures.append(failure)
                    failed.add(plan.idx)
        except KeyboardInterrupt:
            log.error("stopped waiting; the jobs keep running (scancel %s stops them)", array_id)
            raise
        summary = sweep_summary(f"SLURM array {array_id}", plans, failed, job_overrides)
        if failures:
            raise SlurmJobsFailedError(
                f"{len(failures)} of {len(jobs)} SLURM jobs of array {array_id} failed "
                f"(sweep folder {sweep_dir.resolve()}):\n"
                + "\n".join(failures)
                + "\nFix the cause and submit the same command again: finished runs are "
                "skipped, only these run again.\n" + summary
            )
        log.info(summary)
        return [results[p.idx] for p in plans]

    def _submit(self, executor: Any, job_args: list[tuple[Any, ...]]) -> list[Any]:
        """Submit the job array; a refusal by sbatch becomes one clear error."""
        from submitit.core.utils import FailedJobError

        try:
            return list(executor.map_array(self, *zip(*job_args, strict=True)))
        except FailedJobError as exc:
            raise SlurmSubmitError(
                f"sbatch refused the job array of {len(job_args)} jobs:\n{str(exc).strip()}\n"
                "Check hydra.launcher.partition / account / qos / gpus_per_node / "
                "additional_parameters; hydra.launcher.dry_run=true prints the #SBATCH header."
            ) from None

    def _make_executor(self, submitit: Any) -> Any:
        params = dict(self.params)
        # The job unpickles this launcher, whose class Hydra requires in hydra_plugins/.
        root = _module_root(type(self).__module__)
        params["setup"] = [
            f'export PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}"',
            *(params.get("setup") or []),
        ]
        from submitit.slurm.slurm import SlurmExecutor  # lazy: Hydra imports plugins at start-up

        with contextlib.ExitStack() as stack:
            if self.dry_run and shutil.which("srun") is None:
                # a dry run only writes the sbatch script: it needs no SLURM on this machine
                stack.enter_context(
                    mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
                )
            executor = submitit.AutoExecutor(
                cluster="slurm",
                folder=params.pop("submitit_folder"),
                slurm_max_num_timeout=params.pop("max_num_timeout"),
                slurm_python=self.python,
            )
        generic = {
            "timeout_min",
            "cpus_per_task",
            "gpus_per_node",
            "tasks_per_node",
            "mem_gb",
            "nodes",
            "name",
            "stderr_to_stdout",
        }
        executor.update_parameters(
            **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
        )
        return executor

    def describe(self, plans: list[PlannedJob], to_run: list[PlannedJob], executor: Any) -> str:
        """The dry-run listing: jobs, run folders, resources and the sbatch header."""
        from submitit.slurm.slurm import _make_sbatch_string

        lines = [
            f"DRY RUN: {len(to_run)} of {len(plans)} jobs would be submitted as one SLURM "
            "job array (nothing submitted)."
        ]
        for p in plans:
            state = "DONE, skipped" if p not in to_run else "submit"
            lines.append(f"  {p.label}\n      [{state}] run folder: {p.run_dir or '(none)'}")
        lines.append("Resources per job:")
        for key in RESOURCE_FIELDS:
            value = self.params.get(key)
            if value not in (None, {}, []):
                lines.append(f"  {key}: {value}")
        lines.append(f"  python: {self.python}")
        if to_run:
            slurm = executor._executor
            header = _make_sbatch_string(
                command=slurm._submitit_command_str,
                folder=slurm.folder,
                map_count=len(to_run),
                **slurm.parameters,
            )
            lines += [
                "sbatch script (per array):",
                *("  " + ln for ln in header.splitlines() if ln),
            ]
        return "\n".join(lines)


def _module_root(module_name: str) -> Path:
    """The sys.path entry that module ``module_name`` was imported from."""
    file = sys.modules[module_name].__file__
    assert file is not None
    return Path(file).resolve().parents[module_name.count(".")]


def _singleton_state() -> Any:
    from hydra.core.singleton import Singleton

    return Singleton.get_state()


def _completed(plan: PlannedJob, value: Any) -> JobReturn:
    ret = JobReturn(overrides=plan.overrides, status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret


def _collect(plan: PlannedJob, job: Any, sweep_dir: Path) -> tuple[JobReturn, str | None]:
    """The job's result, and a failure report (SLURM id, state, logs) if it failed."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        ret: JobReturn = job.results()[0]
    except (UncompletedJobError, FailedJobError) as exc:
        ret = JobReturn(overrides=plan.overrides, status=JobStatus.FAILED)
        ret.return_value = exc
        job.get_info(mode="force")  # refresh the SLURM state from sacct
        if isinstance(exc, FailedJobError):
            reason = f"the job raised an error (SLURM state {job.state})"
        else:
            reason = f"the job ended without a result (SLURM state {job.state})"
    else:
        if ret.status != JobStatus.FAILED:
            return ret, None
        err = ret._return_value
        reason = f"{type(err).__name__}: {err}"
    return ret, _failure_report(plan, job, reason, sweep_dir)


def _failure_report(plan: PlannedJob, job: Any, reason: str, sweep_dir: Path) -> str:
    stderr, stdout = Path(job.paths.stderr), Path(job.paths.stdout)
    tail = _tail(stderr) or _tail(stdout)
    lines = [
        f"- SLURM job {job.job_id} ({plan.label}) failed: {reason.strip().splitlines()[-1]}",
        f"    error log: {stderr}",
        f"    output log: {stdout}",
        f"    hydra log: {_hydra_log(sweep_dir / str(plan.idx))}",
    ]
    if tail:
        lines.append("    last lines of the log:")
        lines += [f"      | {ln}" for ln in tail]
    return "\n".join(lines)


def _hydra_log(job_dir: Path) -> Path:
    """The Hydra log file of a sweep job (``<job name>.log``), else its folder."""
    logs = sorted(job_dir.resolve().glob("*.log"))
    return logs[0] if logs else job_dir.resolve()


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-n:]


def _guarded(requeue_now: Any) -> preemption.SignalHandler:
    """submitit's checkpoint-and-requeue handler, made safe to call from a stage's stop.

    A failing ``scontrol requeue`` (e.g. SLURM already requeues a pre-empted job) must not
    turn into an error result: the job then just exits and SLURM's own requeue restarts it.
    """
    from submitit.core.utils import UncompletedJobError

    def handler(signum: int, frame: Any) -> None:
        if not callable(requeue_now):  # not under submitit: nothing can requeue us
            log.error("signal %s outside a submitit job: exiting", signum)
            sys.exit(1)
        try:
            requeue_now(signum, frame)
        except UncompletedJobError:  # e.g. timed out too often: the job ends as failed
            raise
        except Exception as exc:
            log.error(
                "requeue failed (%s); exiting without a result so that SLURM can requeue the job",
                exc,
            )
            sys.exit(-1)

    return handler


__all__ = [
    "PlannedJob",
    "SlurmJobsFailedError",
    "SlurmLauncher",
    "SlurmSubmitError",
    "SweepConfigMemo",
    "next_command",
    "plan_job",
    "plan_jobs",
    "remember_sweep_configs",
    "report_command",
    "sweep_summary",
]
