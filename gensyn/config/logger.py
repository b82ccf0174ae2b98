"""Schema of the ``logger`` group: W&B tracking and carbontracker energy logs."""

from dataclasses import dataclass


@dataclass
class LoggerConfig:
    """``backend``: wandb | none. ``mode``: offline (files in the run folder) | online | disabled."""

    backend: str = "wandb"
    mode: str = "offline"
    project: str = "gensyn"
    entity: str | None = None
    carbontracker: bool = True  # energy / CO2eq log per stage run (carbon_logs/ in the run folder)
