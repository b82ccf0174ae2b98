"""Schema of the ``projector`` group: the DRR renderer, its X-ray system and physics.

The fields are :class:`gensyn.drr.settings.ProjectorSettings` (declared once, there, with
their units, allowed values and bounds); the renderer is ``name``: torch (GENSYN's own,
gensyn/drr) or deepdrr. Stages turn ``cfg.projector`` into the plain settings with
:func:`gensyn.config.settings.to_settings`.
"""

from dataclasses import dataclass

from gensyn.drr.settings import ProjectorSettings


@dataclass
class ProjectorConfig(ProjectorSettings):
    """``name``: torch | deepdrr. Distances in mm, energies in keV."""
