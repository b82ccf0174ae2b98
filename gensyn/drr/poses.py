"""Pose sets for a CT: centre view, angle grids, seeded random poses.

:class:`PoseSettings` is the ``carm_pose`` group (declared once, here; the Hydra schema
``gensyn/config/carm_pose.py`` is this class). Angles in degrees: alpha = cranial (+) /
caudal (-), beta = LAO (+) / RAO (-), about the volume centre (docs/conventions.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from gensyn.base.bounds import bounded
from gensyn.drr.geometry import CarmPose

__all__ = ["PoseMode", "PoseSettings", "View", "pose_set"]

#: An angle range: [low, high] with low <= high, both within +-90 degrees.
RANGE_DEG: dict[str, Any] = {
    "ge": -90,
    "le": 90,
    "length": 2,
    "order": "<=",
    "allowed": "[low, high] with low <= high, angles from -90 to 90 degrees, finite",
}
#: One angle of a list: within +-90 degrees.
ANGLE_DEG: dict[str, Any] = {
    "ge": -90,
    "le": 90,
    "allowed": "angles from -90 to 90 degrees, finite (docs/conventions.md)",
}


class PoseMode(Enum):
    """Which poses (see :class:`PoseSettings`); a misspelt mode fails when the config is composed.

    A plain Enum, not a StrEnum: a member named ``center`` would hide ``str.center``."""

    center = "center"
    grid = "grid"
    random = "random"


@dataclass
class PoseSettings:
    """Poses per CT.

    ``mode``:
      * ``center``: one view at (alpha_deg[0], beta_deg[0]) (default 0, 0: the centre
        view); a sweep ``carm_pose.alpha_deg=[-10],[0],[10] -m`` renders one angle per run;
      * ``grid``: every (alpha, beta) of ``alpha_deg`` x ``beta_deg`` (original study:
        -10..10 in 5 degree steps);
      * ``random``: the centre view plus ``num_random`` poses uniform in
        ``alpha_range_deg`` x ``beta_range_deg``, seeded by ``seed`` and the CT id.
    """

    mode: PoseMode = PoseMode.center  # center | grid | random
    alpha_deg: list[float] = bounded(factory=lambda: [0.0], **ANGLE_DEG)  # cranial + / caudal -
    beta_deg: list[float] = bounded(factory=lambda: [0.0], **ANGLE_DEG)  # LAO + / RAO -
    num_random: int = bounded(9, ge=0)  # random: poses besides the centre view
    alpha_range_deg: list[float] = bounded(factory=lambda: [-10.0, 10.0], **RANGE_DEG)  # random
    beta_range_deg: list[float] = bounded(factory=lambda: [-10.0, 10.0], **RANGE_DEG)  # random
    seed: int = 0  # random: with the CT id, seeds the draws


@dataclass(frozen=True)
class View:
    """One view of a CT: its index in the CT's pose list, pose and whether it is the centre view."""

    index: int
    pose: CarmPose
    is_center: bool


def pose_set(settings: PoseSettings, ct_id: str = "") -> list[View]:
    """The views to render for CT ``ct_id`` (see :class:`PoseSettings` for the modes).

    ``random`` draws are seeded by (seed, crc32(ct_id)), so a CT gets the same poses in
    every run and different CTs get different poses.
    """
    s = settings
    alpha_deg, beta_deg = list(s.alpha_deg), list(s.beta_deg)
    names = [m.value for m in PoseMode]
    if str(getattr(s.mode, "value", s.mode)) not in names:
        raise ValueError(f"carm_pose.mode={s.mode!r}; allowed: {names}")
    mode = PoseMode(getattr(s.mode, "value", s.mode))  # a member, or its name from a config
    if mode == PoseMode.center:
        if len(alpha_deg) != 1 or len(beta_deg) != 1:
            raise ValueError(
                "carm_pose.mode=center takes one alpha_deg and one beta_deg; "
                f"got {alpha_deg} and {beta_deg} (use mode=grid for several)"
            )
        a, b = float(alpha_deg[0]), float(beta_deg[0])
        return [View(0, CarmPose(a, b), a == 0.0 and b == 0.0)]
    if mode == PoseMode.grid:
        pairs = [(float(a), float(b)) for a in alpha_deg for b in beta_deg]
        if len(set(pairs)) != len(pairs):
            raise ValueError(
                f"carm_pose grid has repeated angles: alpha {alpha_deg}, beta {beta_deg}"
            )
        # centre view first, then the angled views in grid order
        pairs.sort(key=lambda p: p != (0.0, 0.0))
        return [View(i, CarmPose(a, b), (a, b) == (0.0, 0.0)) for i, (a, b) in enumerate(pairs)]
    alpha_range, beta_range = list(s.alpha_range_deg), list(s.beta_range_deg)
    if len(alpha_range) != 2 or len(beta_range) != 2:
        raise ValueError("carm_pose.alpha_range_deg and beta_range_deg need [low, high]")
    if s.num_random < 0:
        raise ValueError(f"carm_pose.num_random must be >= 0, got {s.num_random}")
    rng = np.random.default_rng([int(s.seed), zlib.crc32(str(ct_id).encode())])
    alphas = rng.uniform(alpha_range[0], alpha_range[1], s.num_random)
    betas = rng.uniform(beta_range[0], beta_range[1], s.num_random)
    views = [View(0, CarmPose(0.0, 0.0), True)]
    views += [
        View(i + 1, CarmPose(float(a), float(b)), False)
        for i, (a, b) in enumerate(zip(alphas, betas, strict=True))
    ]
    return views
