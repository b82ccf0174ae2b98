"""Schema of the ``logger`` group: W&B tracking, W&B artifacts and carbontracker energy logs."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoggerConfig:
    """``backend``: wandb | none. ``mode``: offline (files in the run folder) | online | disabled.

    ``artifacts``: which outputs of a finished run are logged as W&B artifacts (with
    ``backend: wandb``): false (none), true or all, ``checkpoints`` (final model weights),
    ``report`` (report pages and figures), or a list such as ``[checkpoints, report]``
    (checked by :func:`gensyn.tracking.artifacts.artifact_kinds`).

    ``name``, ``group``: the W&B run name and group; null derives them from the run
    (``classify/drr_5/fold2 #7141cf``; experiment / arm / swept keys, see
    :mod:`gensyn.tracking.run_labels`). ``tags``: tags added to the derived ones. None of these
    keys is part of any run hash.
    """

    backend: str = "wandb"
    mode: str = "offline"
    project: str = "gensyn"
    entity: str | None = None
    carbontracker: bool = True  # energy / CO2eq log per stage run (carbon_logs/ in the run folder)
    artifacts: Any = False  # false | true | all | checkpoints | report | a list of kinds
    name: str | None = None  # null: <stage>/<arm>/fold<k>[/seed<s>] #<hash>
    group: str | None = None  # null: <experiment>[/<arm>][/<swept key>=<value> ...]
    tags: list[str] = field(default_factory=list)  # added to the derived tags
