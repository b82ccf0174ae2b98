"""A carbontracker wrapper any stage can use; safe offline and on machines without RAPL/GPU.

carbontracker counts energy per "epoch". A stage run is monitored as one epoch by a tracker of
its own; its logs go to ``<run folder>/carbon_logs``, named ``<run id>_...`` so that the
figures of a run are read from its own files only, and ``stage=carbon_summary`` collects them.
When the run ends the tracker's file handlers are closed, so no later stage of the same
process (a pipeline) writes into them. Start-up runs in a
thread with a time limit, because carbontracker looks up the machine's location over the
network, which must never hang a job on a cluster node without internet.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


def cache_cpu_info() -> None:
    """Make py-cpuinfo answer once per process.

    carbontracker identifies the CPU (to look up its TDP) with ``cpuinfo.get_cpu_info()``,
    which runs a Python subprocess each time: ~1.2 s per stage run, 16 times in the demo
    pipeline, while the stage waits. The CPU does not change within a process, so the first
    answer is kept (``functools.cache`` on the function carbontracker calls).
    """
    import functools

    import cpuinfo

    if not hasattr(cpuinfo.get_cpu_info, "cache_info"):
        cpuinfo.get_cpu_info = functools.cache(cpuinfo.get_cpu_info)


class CarbonMonitor:
    """Energy and CO2eq monitoring of one stage run with carbontracker."""

    def __init__(self, log_dir: Path, enabled: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._tracker: Any = None
        self.run_id = f"run-{uuid.uuid4().hex[:12]}"  # prefix of this monitor's log files

    def start(self) -> None:
        """Start monitoring (no-op when disabled or when carbontracker cannot start in time)."""
        if not self.enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = {}

        # carbontracker and geocoder log to the console at INFO/ERROR level; keep that out of
        # the stage's output (carbontracker's own log files in log_dir keep everything).
        logging.getLogger("geocoder").setLevel(logging.CRITICAL)
        logging.getLogger("carbontracker").propagate = False

        def init() -> None:
            try:
                # carbontracker binds console handlers to sys.stdout on import and on start:
                # bind them to a sink so its chatter stays out of the stage's output (its log
                # files in log_dir keep everything).
                with contextlib.redirect_stdout(io.StringIO()):
                    from carbontracker.tracker import CarbonTracker

                    cache_cpu_info()

                    tracker = CarbonTracker(
                        epochs=1,
                        epochs_before_pred=0,
                        monitor_epochs=1,
                        update_interval=1,
                        log_dir=str(self.log_dir),
                        log_file_prefix=self.run_id,
                        verbose=0,
                        ignore_errors=True,
                        decimal_precision=9,
                    )
                    tracker.epoch_start()
                result["tracker"] = tracker
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=init, daemon=True, name="carbontracker-start")
        thread.start()
        thread.join(START_TIMEOUT_S)
        if thread.is_alive():
            log.warning(
                "carbontracker did not start within %.0f s; energy not logged", START_TIMEOUT_S
            )
        elif "error" in result:
            log.warning("carbontracker could not start (%s); energy not logged", result["error"])
        else:
            self._tracker = result["tracker"]

    def stop(self) -> dict[str, float]:
        """Stop monitoring; return ``{"energy_kwh": .., "co2eq_g": ..}`` when measured."""
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return {}
        try:
            tracker.epoch_end()
            tracker.stop()
        except Exception as exc:
            log.warning("carbontracker failed while stopping (%s)", exc)
            return {}
        finally:
            close_log_files(tracker)
        return read_energy(self.log_dir, self.run_id)


def close_log_files(tracker: Any) -> None:
    """Close and detach the file handlers of ``tracker``'s loggers (they outlive the tracker)."""
    wrapper = getattr(tracker, "logger", None)
    for name in ("logger", "logger_output", "logger_err"):
        logger = getattr(wrapper, name, None)
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)  # type: ignore[union-attr]
                handler.close()


def read_energy(log_dir: Path, run_id: str = "") -> dict[str, float]:
    """Actual energy (kWh) and CO2eq (g) of the monitor ``run_id`` from its logs in ``log_dir``."""
    import math

    from gensyn.tracking.carbon_logs import find_log_pairs, parse_log_pair

    energy = co2 = 0.0
    found = False
    for _, out_log, std_log in find_log_pairs(Path(log_dir), run_id):
        row = parse_log_pair(out_log, std_log)
        if row["status"] == "actual" and not math.isnan(row["energy_kwh"]):
            energy += row["energy_kwh"]
            co2 += 0.0 if math.isnan(row["co2eq_g"]) else row["co2eq_g"]
            found = True
    return {"energy_kwh": energy, "co2eq_g": co2} if found else {}
