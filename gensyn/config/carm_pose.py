"""Schema of the ``carm_pose`` group: which C-arm poses the DRR stage renders."""

from dataclasses import dataclass, field


@dataclass
class CarmPoseConfig:
    """``mode``: center | grid | random. Angles in degrees (alpha cranial/caudal, beta LAO/RAO)."""

    mode: str = "center"
    alpha_deg: list[float] = field(default_factory=lambda: [0.0])
    beta_deg: list[float] = field(default_factory=lambda: [0.0])
