"""DRR engine: digital C-arm geometry, X-ray physics and projectors.

Public API: :func:`render_drrs` with :class:`CarmPose`, :class:`CarmGeometry`,
:class:`PhysicsConfig`; helpers :func:`to_uint8`, :func:`to_uint16`,
:func:`window_level`. Conventions: docs/conventions.md.
"""

from gensyn.drr.geometry import GEOMETRY_PRESETS, CarmGeometry, CarmPose, project_points
from gensyn.drr.physics import PhysicsConfig, window_level
from gensyn.drr.render import render_drrs, to_uint8, to_uint16

__all__ = [
    "GEOMETRY_PRESETS",
    "CarmGeometry",
    "CarmPose",
    "PhysicsConfig",
    "project_points",
    "render_drrs",
    "to_uint8",
    "to_uint16",
    "window_level",
]
