"""Schema of the ``logger`` group: W&B tracking, W&B artifacts and carbontracker energy logs."""

from dataclasses import dataclass
from typing import Any


@dataclass
class LoggerConfig:
    """``backend``: wandb | none. ``mode``: offline (files in the run folder) | online | disabled.

    ``artifacts``: which outputs of a finished run are logged as W&B artifacts (with
    ``backend: wandb``): false (none), true or all, ``checkpoints`` (final model weights),
    ``report`` (report pages and figures), or a list such as ``[checkpoints, report]``
    (checked by :func:`gensyn.tracking.artifacts.artifact_kinds`).
    """

    backend: str = "wandb"
    mode: str = "offline"
    project: str = "gensyn"
    entity: str | None = None
    carbontracker: bool = True  # energy / CO2eq log per stage run (carbon_logs/ in the run folder)
    artifacts: Any = False  # false | true | all | checkpoints | report | a list of kinds
