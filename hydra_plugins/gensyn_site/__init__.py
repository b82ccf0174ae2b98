"""``$GENSYN_CONFIG_DIR``: a folder of the user's own config options, searched first.

Hydra finds :class:`GensynSiteSearchPath` here (the ``hydra_plugins`` namespace package) and
puts the folder ``$GENSYN_CONFIG_DIR`` names before GENSYN's packaged configs, so a pip user
adds site settings (``site/default.yaml``, ``site/<name>.yaml``) or options of any group
(``dataset/mydata.yaml``) without editing the installed package. ``--config-dir DIR`` does
the same for one command. See docs/cluster.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: The environment variable naming the user's config folder.
ENV_VAR = "GENSYN_CONFIG_DIR"


def user_config_dir() -> Path | None:
    """The folder ``$GENSYN_CONFIG_DIR`` names (None if unset); a ValueError if it is no folder."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(
            f"{ENV_VAR}={value!r} is not a folder; create it (with e.g. site/default.yaml) "
            f"or unset {ENV_VAR}"
        )
    return folder


class GensynSiteSearchPath(SearchPathPlugin):
    """Search ``$GENSYN_CONFIG_DIR`` before every other config folder."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = user_config_dir()
        if folder is not None:
            search_path.prepend(provider="gensyn-user", path=f"file://{folder}")
