"""Schema of the ``carm_pose`` group: which C-arm poses the DRR stage renders.

Angles in degrees: alpha = cranial (+) / caudal (-), beta = LAO (+) / RAO (-), about
the volume centre (docs/conventions.md); |alpha|, |beta| <= 90 (checked at start-up).
"""

from dataclasses import dataclass, field
from enum import Enum


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
    alpha_deg: list[float] = field(default_factory=lambda: [0.0])
    beta_deg: list[float] = field(default_factory=lambda: [0.0])
    num_random: int = 9
    alpha_range_deg: list[float] = field(default_factory=lambda: [-10.0, 10.0])
    beta_range_deg: list[float] = field(default_factory=lambda: [-10.0, 10.0])
    seed: int = 0
