"""GENSYN's Hydra launcher plugins (``hydra/launcher=local``, the default, and ``slurm``).

Hydra only instantiates launchers defined in the ``hydra_plugins`` namespace package, so the
classes Hydra sees live here; their implementations are
:class:`gensyn.app.local_launcher.LocalLauncher` and :class:`gensyn.app.launcher.SlurmLauncher`.
``hydra_plugins/`` at the repository root has no ``__init__.py`` on purpose (a namespace
package shared with the installed hydra-submitit-launcher). SLURM jobs import it through
the PYTHONPATH that the launcher sets for them.
"""
