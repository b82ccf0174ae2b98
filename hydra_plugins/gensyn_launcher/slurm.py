"""The launcher class Hydra instantiates for ``hydra/launcher=slurm`` (see gensyn.app.launcher)."""

from gensyn.app.launcher import SlurmLauncher


class GensynSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher with GENSYN's additions (gensyn.app.launcher)."""
