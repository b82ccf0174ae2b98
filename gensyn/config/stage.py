"""Schema of the ``stage`` group: which stage ``launch.py`` runs."""

from dataclasses import dataclass, field
from enum import Enum


@dataclass
class StageConfig:
    """``name`` is a registered stage (``python launch.py stage=list`` shows them)."""

    name: str = "pipeline"
    # Only for stage=pipeline: the stages to run in order (stages that are not registered yet
    # are skipped with a note, so the demo grows as stages land).
    stages: list[str] = field(default_factory=list)
    # Only for stage=pipeline: sampling arms (options of the ``sampling`` group) whose
    # classifier is trained and evaluated on fold ``split_idx`` before the report, so the
    # report compares real-only training with DRR and SyntheX arms.
    arms: list[str] = field(default_factory=list)


class ExportSource(Enum):
    """The image set ``stage=export`` writes: DRRs, SyntheX images or the prepared X-rays."""

    drr = "drr"  # stage drr's manifest
    synthex = "synthex"  # stage gan_translate's manifest
    xrays = "xrays"  # stage prepare_xrays's xrays.csv (its train/test split)


@dataclass
class ExportConfig:
    """``export.source``: which image set ``stage=export`` lists (MONAI JSON + CSV);
    ``export.out_dir``: a folder that also receives the two files (null: the run folder only).
    ``out_dir`` is part of the export run's hash, so another folder is written by a new run."""

    source: ExportSource = ExportSource.drr
    out_dir: str | None = None
