"""GENSYN's Hydra launcher plugin (``hydra/launcher=slurm``).

Hydra only instantiates launchers defined in the ``hydra_plugins`` namespace package, so the
class Hydra sees lives here; its implementation is :class:`gensyn.launcher.SlurmLauncher`.
``hydra_plugins/`` at the repository root has no ``__init__.py`` on purpose (a namespace
package shared with the installed hydra-submitit-launcher). SLURM jobs import it through
the PYTHONPATH that the launcher sets for them.
"""
