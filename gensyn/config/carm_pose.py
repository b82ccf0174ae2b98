"""Schema of the ``carm_pose`` group: which C-arm poses the DRR stage renders.

The fields are :class:`gensyn.drr.poses.PoseSettings` (declared once, there: the modes, the
angles in degrees and their bounds, |alpha|, |beta| <= 90, checked at start-up). Stages turn
``cfg.carm_pose`` into the plain settings with :func:`gensyn.config.settings.to_settings`.
"""

from dataclasses import dataclass

from gensyn.drr.poses import PoseSettings


@dataclass
class CarmPoseConfig(PoseSettings):
    """Poses per CT (modes: :class:`gensyn.drr.poses.PoseSettings`)."""
