"""Schema of the ``site`` group: settings of the cluster or machine GENSYN runs on.

A site file is a ``# @package _global_`` option of the ``site`` group: it sets ``site.*``
(the SLURM partition, account and QOS that ``hydra/launcher=slurm`` and ``slurm_gpu`` read)
and may set any other key a site shares, such as ``paths.root_dir`` or ``logger.entity``.
GENSYN ships ``site=default`` (nothing set); a folder named by ``$GENSYN_CONFIG_DIR`` is searched
before the packaged configs (:mod:`hydra_plugins.gensyn_site`), so its ``site/default.yaml``
applies to every command and its ``site/<name>.yaml`` is chosen with ``site=<name>``. No site
key is part of any run hash: where a run computes never changes what it computes.
"""

from dataclasses import dataclass


@dataclass
class SiteConfig:
    """``partition``, ``account``, ``qos``: ``sbatch --partition/--account/--qos`` of every
    SLURM job (null: the cluster's default); ``name`` says which site file was used."""

    name: str = "default"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
