"""What a stage gets besides its config: :class:`RunContext`, the plain facts of one run.

This module imports nothing from the rest of GENSYN (only the standard library and NumPy),
so the registry, the run-folder helper (:mod:`gensyn.core.runs`) and the trackers
(:mod:`gensyn.tracking`) can all name it without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: The metrics file of every run folder (one JSON row per ``RunContext.log_metrics`` call).
METRICS_FILE = "metrics.jsonl"


class RunTracker(Protocol):
    """What a run hands its metrics and images to (W&B or nothing: :mod:`gensyn.tracking`)."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log scalar metrics at ``step``."""

    def log_image(self, key: str, image: np.ndarray | Path, caption: str | None = None) -> None:
        """Log an image array or an image file."""

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Log a table (``rows`` of values in the order of ``columns``)."""


@dataclass
class RunContext:
    """One stage run: its name, folder, hash, config, finished upstream folders and tracker.

    ``summary`` collects what the run reports (numbers, and the ``figures`` and ``reports``
    it wrote, as paths relative to ``out_dir``); it is written to ``summary.json``.
    """

    name: str
    out_dir: Path
    stage_hash: str
    cfg: DictConfig
    upstream_dirs: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)
    tracker: RunTracker | None = None  # set while tracking runs (gensyn.tracking.tracking)

    def upstream_dir(self, name: str) -> Path:
        """The finished run folder of upstream stage ``name``."""
        if name not in self.upstream_dirs:
            known = ", ".join(sorted(self.upstream_dirs)) or "none"
            raise KeyError(
                f"stage {self.name!r} did not declare upstream {name!r} (declared: {known})"
            )
        return self.upstream_dirs[name]

    def path(self, *parts: str) -> Path:
        """A path inside the run folder; parent folders are created."""
        p = self.out_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics to the tracker (W&B) and append them to ``metrics.jsonl``."""
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}
        if step is not None:
            row["step"] = step
        with open(self.path(METRICS_FILE), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log_metrics(dict(metrics), step=step)

    def log_image(self, key: str, image: np.ndarray | Path, caption: str | None = None) -> None:
        """Log an image (uint8/uint16 array or a file) to the tracker."""
        if self.tracker is not None:
            self.tracker.log_image(key, image, caption=caption)
