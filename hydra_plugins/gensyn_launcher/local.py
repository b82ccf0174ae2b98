"""The launcher class Hydra instantiates for ``hydra/launcher=local`` (see gensyn.app.local_launcher)."""

from gensyn.app.local_launcher import LocalLauncher


class GensynLocalLauncher(LocalLauncher):
    """Hydra's basic launcher, run to the end of the sweep with one failure table."""
