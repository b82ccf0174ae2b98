"""Schema of ``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM settings plus GENSYN's.

Every field of hydra-submitit-launcher's ``SlurmQueueConf`` is available (partition,
gpus_per_node, cpus_per_task, mem_gb, timeout_min, array_parallelism, account, qos,
additional_parameters for any other ``#SBATCH`` option, setup lines run before the job ...);
the fields below are GENSYN's additions, handled by :class:`gensyn.app.launcher.SlurmLauncher`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class GensynSlurmConf(SlurmQueueConf):
    """SLURM launcher settings (see ``conf/hydra/launcher/slurm.yaml`` and docs/cluster.md)."""

    _target_: str = "hydra_plugins.gensyn_launcher.slurm.GensynSlurmLauncher"
    # Python that runs each job; null: the interpreter running launch.py (the project's .venv).
    python: str | None = None
    # List the jobs, their resources and the #SBATCH header without submitting anything.
    dry_run: bool = False
    # Do not submit jobs whose run folder is already DONE (they would only find it done).
    skip_done: bool = True
    # After SLURM's pre-emption/time-out signal, how long a stage that checkpoints at safe
    # points (gensyn.base.preemption.checkpoint_point) gets to reach one before the job is
    # checkpointed and requeued at once (it then resumes from its last saved checkpoint).
    checkpoint_grace_s: int = 60


def register_launcher_configs() -> None:
    """Store the schema as ``hydra/launcher/slurm_schema`` (the base of ``slurm.yaml``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(
        group="hydra/launcher", name="slurm_schema", node=GensynSlurmConf, provider="gensyn"
    )
