"""DRR engine: digital C-arm geometry, X-ray physics and projectors.

Public API: :func:`render_drrs` with :class:`CarmPose`, :class:`CarmGeometry`,
:class:`PhysicsConfig` (or ``preset("pa_chest")``); :class:`DrrRenderer` to
render many pose batches of one CT; :func:`to_image` (8/16-bit), :func:`window_level`,
:func:`pose_set` of :class:`PoseSettings`. Every renderer (GENSYN's, DeepDRR's) offers
:class:`gensyn.drr.renderers.Renderer`; :func:`gensyn.drr.renderers.renderer_for` picks one
by projector name. Conventions: docs/conventions.md.
"""

from gensyn.drr.geometry import GEOMETRY_PRESETS, CarmGeometry, CarmPose, project_points
from gensyn.drr.physics import PhysicsConfig, window_level
from gensyn.drr.poses import PoseSettings, View, pose_set
from gensyn.drr.render import DrrRenderer, preset, render_drrs, to_image

__all__ = [
    "GEOMETRY_PRESETS",
    "CarmGeometry",
    "CarmPose",
    "DrrRenderer",
    "PhysicsConfig",
    "PoseSettings",
    "View",
    "pose_set",
    "preset",
    "project_points",
    "render_drrs",
    "to_image",
    "window_level",
]
