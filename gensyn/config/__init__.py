"""Typed config schemas, registered with Hydra's ConfigStore.

Each config group has a dataclass schema (one module per group), stored in Hydra's
ConfigStore as ``schema/<group>``; the YAML files in ``conf/<group>/`` hold values only.
The top-level :class:`Config` (stored as ``_config_schema`` and first in
``conf/config.yaml``'s defaults) types every group with its schema, so Hydra checks
every YAML file and command-line override against it: an unknown key (a misspelling) or
a value of the wrong type is an error at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from gensyn.base.bounds import bounded, unhashed
from gensyn.config.carm_pose import CarmPoseConfig
from gensyn.config.classifier import ClassifierConfig
from gensyn.config.dataset import FINDINGS, CtDatasetConfig, DatasetConfig
from gensyn.config.generator import GeneratorConfig
from gensyn.config.logger import LoggerConfig
from gensyn.config.paths import PathsConfig
from gensyn.config.projector import ProjectorConfig
from gensyn.config.reader_study import ReaderStudyConfig
from gensyn.config.report import ReportConfig
from gensyn.config.sampling import SamplingConfig
from gensyn.config.site import SiteConfig
from gensyn.config.stage import ExportConfig, StageConfig

__all__ = ["FINDINGS", "GROUP_SCHEMAS", "Config", "Redo", "register_configs"]

#: Config group name -> schema dataclass.
GROUP_SCHEMAS: dict[str, type] = {
    "stage": StageConfig,
    "dataset": DatasetConfig,
    "ct_dataset": CtDatasetConfig,
    "carm_pose": CarmPoseConfig,
    "projector": ProjectorConfig,
    "generator": GeneratorConfig,
    "classifier": ClassifierConfig,
    "sampling": SamplingConfig,
    "logger": LoggerConfig,
    "paths": PathsConfig,
    "reader_study": ReaderStudyConfig,
}


class Redo(Enum):
    """``redo``: ``none``, or ``failed`` (retry the failed items of a DONE run)."""

    none = "none"
    failed = "failed"


@dataclass
class Config:
    """The whole configuration (``conf/config.yaml``)."""

    stage: StageConfig = MISSING
    dataset: DatasetConfig = MISSING  # X-rays: what the classifier learns and is tested on
    ct_dataset: CtDatasetConfig = MISSING  # CTs: what DRRs and SyntheX images are made from
    carm_pose: CarmPoseConfig = MISSING
    projector: ProjectorConfig = MISSING
    generator: GeneratorConfig = MISSING
    classifier: ClassifierConfig = MISSING
    sampling: SamplingConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    reader_study: ReaderStudyConfig = MISSING
    report: ReportConfig = field(default_factory=ReportConfig)  # stage=report (not a group)
    export: ExportConfig = field(default_factory=ExportConfig)  # stage=export (not a group)
    site: SiteConfig = field(default_factory=SiteConfig)  # set by site=... (a _global_ group)
    experiment_name: str = "default"  # set by experiment=...; groups W&B runs
    profile_name: str = "default"  # set by profile=... (default | tiny)
    seed: int = 0  # the training's random choices (initialisation, batch order) derive from it
    # the data's: the X-ray hold-out, the folds, the views drawn per CT, the demo's data
    split_seed: int = 0
    # false: DRR noise and the SyntheX CycleGAN (domains, training) use split_seed, so every
    # seed of a repeated cross-validation trains on the same synthetic images; true: `seed`
    synthex_per_seed: bool = False
    split_idx: int = 0  # which fold is the validation fold (classify, predict)
    force: bool = False  # recompute the requested stage even if its run folder is DONE
    # failed: run the requested stage again where its DONE run lists failed items (convert's
    # failures.csv); finished items are kept, only the failed ones are tried again
    redo: Redo = Redo.none
    run_upstream: bool = True  # run unfinished upstream stages first (else: error)
    dry_run: bool = False  # stages that support it list what they would do
    shard: int = 0  # this job's share of the work (download, drr) ...
    num_shards: int = bounded(1, ge=1)  # ... out of num_shards
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = unhashed(2, ge=0)  # data-loading workers
    # free-form settings of a user's own stage (hashed where that stage names extras.*)
    extras: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Store the top-level schema and every group schema in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="_config_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=f"schema/{group}", name="base", node=schema)
    from gensyn.config.launcher import register_launcher_configs

    register_launcher_configs()  # hydra/launcher=slurm
    from gensyn.app.help import register_help_resolver

    register_help_resolver()  # hydra.help.template: `python launch.py --help`
    from gensyn.app.hydra_folders import register_launch_id_resolver

    register_launch_id_resolver()  # hydra.run.dir: <time>_<pid>, one folder per launch
