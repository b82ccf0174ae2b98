"""Schema of the ``carm_pose`` group: which C-arm poses the DRR stage renders.

Angles in degrees: alpha = cranial (+) / caudal (-), beta = LAO (+) / RAO (-), about
the volume centre (docs/conventions.md); |alpha|, |beta| <= 90 (checked at start-up).
"""

from dataclasses import dataclass
from enum import Enum
from typing import Any

from gensyn.base.bounds import bounded

#: An angle range: [low, high] with low <= high, both within +-90 degrees.
RANGE_DEG: dict[str, Any] = {
    "ge": -90,
    "le": 90,
    "length": 2,
    "order": "<=",
    "allowed": "[low, high] with low <= high, angles from -90 to 90 degrees, finite",
}


class PoseMode(Enum):
    """Which poses (see :class:`CarmPoseConfig`); a misspelt mode fails when the config is composed."""

    center = "center"
    grid = "grid"
    random = "random"


@dataclass
class CarmPoseConfig:
    """Poses per CT.

    ``mode``:
      * ``center``: one view at (alpha_deg[0], beta_deg[0]) (default 0, 0: the centre
        view); a sweep ``carm_pose.alpha_deg=[-10],[0],[10] -m`` renders one angle per run;
      * ``grid``: every (alpha, beta) of ``alpha_deg`` x ``beta_deg`` (original study:
        -10..10 in 5 degree steps);
      * ``random``: the centre view plus ``num_random`` poses uniform in
        ``alpha_range_deg`` x ``beta_range_deg``, seeded by ``seed`` and the CT id.
    """

    mode: PoseMode = PoseMode.center
    alpha_deg: list[float] = bounded(
        factory=lambda: [0.0],
        ge=-90,
        le=90,
        allowed="angles from -90 to 90 degrees, finite (docs/conventions.md)",
    )
    beta_deg: list[float] = bounded(
        factory=lambda: [0.0],
        ge=-90,
        le=90,
        allowed="angles from -90 to 90 degrees, finite (docs/conventions.md)",
    )
    num_random: int = bounded(9, ge=0)
    alpha_range_deg: list[float] = bounded(factory=lambda: [-10.0, 10.0], **RANGE_DEG)
    beta_range_deg: list[float] = bounded(factory=lambda: [-10.0, 10.0], **RANGE_DEG)
    seed: int = 0
