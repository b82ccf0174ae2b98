"""Pose sets for a CT: centre view, angle grids, seeded random poses."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gensyn.drr.geometry import CarmPose

__all__ = ["POSE_MODES", "PoseSettings", "View", "pose_set"]

POSE_MODES = ("center", "grid", "random")


@dataclass(frozen=True)
class View:
    """One view of a CT: its index in the CT's pose list, pose and whether it is the centre view."""

    index: int
    pose: CarmPose
    is_center: bool


@dataclass(frozen=True)
class PoseSettings:
    """Which C-arm poses to render per CT (the ``carm_pose`` group; modes in
    gensyn/config/carm_pose.py). Angles in degrees (docs/conventions.md)."""

    mode: str = "center"  # center | grid | random (POSE_MODES)
    alpha_deg: Sequence[float] = (0.0,)  # center: the one angle; grid: every alpha
    beta_deg: Sequence[float] = (0.0,)  # center: the one angle; grid: every beta
    num_random: int = 9  # random: poses drawn besides the centre view
    alpha_range_deg: Sequence[float] = (-10.0, 10.0)  # random: [low, high] of alpha
    beta_range_deg: Sequence[float] = (-10.0, 10.0)  # random: [low, high] of beta
    seed: int = 0  # random: seeds the draws, with the CT id


def pose_set(settings: PoseSettings, ct_id: str = "") -> list[View]:
    """The views to render for CT ``ct_id`` under ``settings``.

    ``random`` draws are seeded by (seed, crc32(ct_id)), so a CT gets the same poses in
    every run and different CTs get different poses.
    """
    mode, alpha_deg, beta_deg = settings.mode, settings.alpha_deg, settings.beta_deg
    num_random, seed = settings.num_random, settings.seed
    alpha_range_deg, beta_range_deg = settings.alpha_range_deg, settings.beta_range_deg
    if mode not in POSE_MODES:
        raise ValueError(f"carm_pose.mode={mode!r}; allowed: {POSE_MODES}")
    if mode == "center":
        if len(alpha_deg) != 1 or len(beta_deg) != 1:
            raise ValueError(
                "carm_pose.mode=center takes one alpha_deg and one beta_deg; "
                f"got {list(alpha_deg)} and {list(beta_deg)} (use mode=grid for several)"
            )
        a, b = float(alpha_deg[0]), float(beta_deg[0])
        return [View(0, CarmPose(a, b), a == 0.0 and b == 0.0)]
    if mode == "grid":
        pairs = [(float(a), float(b)) for a in alpha_deg for b in beta_deg]
        if len(set(pairs)) != len(pairs):
            raise ValueError(
                f"carm_pose grid has repeated angles: alpha {alpha_deg}, beta {beta_deg}"
            )
        # centre view first, then the angled views in grid order
        pairs.sort(key=lambda p: p != (0.0, 0.0))
        return [View(i, CarmPose(a, b), (a, b) == (0.0, 0.0)) for i, (a, b) in enumerate(pairs)]
    if len(alpha_range_deg) != 2 or len(beta_range_deg) != 2:
        raise ValueError("carm_pose.alpha_range_deg and beta_range_deg need [low, high]")
    if num_random < 0:
        raise ValueError(f"carm_pose.num_random must be >= 0, got {num_random}")
    rng = np.random.default_rng([int(seed), zlib.crc32(str(ct_id).encode())])
    alphas = rng.uniform(alpha_range_deg[0], alpha_range_deg[1], num_random)
    betas = rng.uniform(beta_range_deg[0], beta_range_deg[1], num_random)
    views = [View(0, CarmPose(0.0, 0.0), True)]
    views += [
        View(i + 1, CarmPose(float(a), float(b)), False)
        for i, (a, b) in enumerate(zip(alphas, betas, strict=True))
    ]
    return views
