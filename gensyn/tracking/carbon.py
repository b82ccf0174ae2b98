"""A carbontracker wrapper any stage can use; safe offline and on machines without RAPL/GPU.

carbontracker counts energy per "epoch". A stage is monitored as one epoch; its logs go to
``<run folder>/carbon_logs`` where ``stage=carbon_summary`` collects them. Start-up runs in a
thread with a time limit, because carbontracker looks up the machine's location over the
network, which must never hang a job on a cluster node without internet.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class CarbonMonitor:
    """Energy and CO2eq monitoring of one stage run with carbontracker."""

    def __init__(self, log_dir: Path, enabled: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._tracker: Any = None

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

                    tracker = CarbonTracker(
                        epochs=1, epochs_before_pred=0, monitor_epochs=1, update_interval=1,
                        log_dir=str(self.log_dir), verbose=0, ignore_errors=True,
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
            log.warning("carbontracker did not start within %.0f s; energy not logged", START_TIMEOUT_S)
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
        return read_energy(self.log_dir)


def read_energy(log_dir: Path) -> dict[str, float]:
    """Parse carbontracker's ``*_output.log`` files in ``log_dir`` for actual energy and CO2eq."""
    energy = co2 = 0.0
    found = False
    for path in sorted(Path(log_dir).glob("*_output.log")):
        text = path.read_text(encoding="utf-8", errors="replace")
        block = text.split("Actual consumption", 1)
        if len(block) < 2:
            continue
        for line in block[1].splitlines():
            parts = line.strip().split()
            if len(parts) >= 2 and parts[0] == "Energy:":
                energy += float(parts[1])
                found = True
            elif len(parts) >= 2 and parts[0] == "CO2eq:":
                co2 += float(parts[1])
    return {"energy_kwh": energy, "co2eq_g": co2} if found else {}
