"""Skeleton of the procedural chest phantom: spine, ribs, sternum, clavicles, scapulae.

Ribs are placed in an elliptic shell just outside the thoracic cavity (the pleura touches
their inner surface). A voxel of the shell has an elliptic angle ``t`` (0 at the spine,
pi at the sternum) and rib number k occupies a band of height ~12 mm around
``z_k - drop * s(t)``: nearly horizontal at the back, sloping down to the front, as on a
frontal radiograph. This evaluates all 24 ribs on the shell voxels only, with no per-rib
tube painting.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from gensyn.data.phantom.anatomy import Anatomy, AnatomyParams, Tissue
from gensyn.data.phantom.shapes import Grid, paint_tube_label

N_RIBS = 12


@dataclass(frozen=True)
class BoneParams:
    """Per-patient skeleton, lengths in mm."""

    rib_pitch_mm: float  # vertical distance between posterior ribs
    z_rib1_mm: float  # posterior end of the first rib
    rib_drop_mm: float  # how far a rib's front end lies below its back end
    rib_height_mm: float
    rib_thickness_mm: float
    vertebra_height_mm: float
    disc_height_mm: float
    spine_phase: float  # in [0, 1): where the vertebral pattern starts
    clavicle_z_mm: float


def sample_bones(rng: np.random.Generator, p: AnatomyParams) -> BoneParams:
    """Draw one patient's skeleton, scaled with the lung height."""
    scale = (p.z_apex_mm - p.z_dome_right_mm) / 175.0
    return BoneParams(
        rib_pitch_mm=rng.uniform(21.0, 25.0) * scale,
        z_rib1_mm=p.z_apex_mm - rng.uniform(4.0, 14.0),
        rib_drop_mm=rng.uniform(55.0, 80.0) * scale,
        rib_height_mm=rng.uniform(10.0, 13.0),
        rib_thickness_mm=rng.uniform(7.0, 9.0),
        vertebra_height_mm=rng.uniform(20.0, 24.0) * scale,
        disc_height_mm=rng.uniform(4.5, 6.5),
        spine_phase=rng.uniform(0.0, 1.0),
        clavicle_z_mm=p.z_apex_mm - rng.uniform(18.0, 30.0),
    )


def _overwritable() -> np.ndarray:
    """Lookup table of labels that bone may replace (not lung, airways or great vessels)."""
    ok = np.ones(256, dtype=bool)
    ok[[Tissue.LUNG, Tissue.AIRWAY, Tissue.BLOOD, Tissue.AIR]] = False
    return ok


def add_bones(grid: Grid, p: AnatomyParams, b: BoneParams, anat: Anatomy) -> None:
    """Paint spine, ribs and costal cartilage, sternum, clavicles and scapulae into the labels."""
    _paint_spine(grid, b, anat)
    _paint_ribs(grid, p, b, anat)
    _paint_sternum(grid, p, b, anat)
    _paint_clavicles(grid, p, b, anat)


def _paint_spine(grid: Grid, b: BoneParams, anat: Anatomy) -> None:
    ys_all = anat.spine_y_mm
    box = grid.box(
        np.array([-45.0, float(ys_all.min()) - 60.0, -1e4]),
        np.array([45.0, float(ys_all.max()) + 20.0, 1e4]),
    )
    if box is None:
        return
    x, y, z = grid.xyz(box)
    ys = ys_all[box[2]].reshape(1, 1, -1)
    rx, ry = 20.0, 16.0
    period = b.vertebra_height_mm + b.disc_height_mm
    frac = (z / period + b.spine_phase) % 1.0
    disc_frac = b.disc_height_mm / period
    is_disc = frac < disc_frac
    endplate = (frac < disc_frac + grid.spacing_mm[2] / period) | (
        frac > 1 - grid.spacing_mm[2] / period
    )
    dy = y - ys
    body = (x / rx) ** 2 + (dy / ry) ** 2 < 1
    core = (x / (rx - 3.5)) ** 2 + (dy / (ry - 3.5)) ** 2 < 1
    yk = -ry - 9.0  # spinal canal centre, relative to the body centre
    rk2 = x**2 + (dy - yk) ** 2
    canal = rk2 < 8.0**2
    posterior = (frac > disc_frac * 0.5) & (frac < 0.97)
    arch = (rk2 < 14.0**2) & ~canal & (dy < -ry + 4.0) & posterior
    spinous = (np.abs(x) < 4.0) & (dy < yk - 10.0) & (dy > yk - 42.0) & (frac > 0.25) & (frac < 0.7)
    transverse = (
        (np.abs(x) > 8.0)
        & (np.abs(x) < 36.0)
        & (np.abs(dy - yk - 2.0) < 5.5)
        & (frac > 0.45)
        & (frac < 0.85)
    )
    sub = anat.labels[box]
    ok = _overwritable()[sub]
    sub[(arch | spinous | transverse) & ok] = Tissue.BONE_CORTICAL
    sub[canal & ok] = Tissue.SPINAL_CANAL
    sub[body & is_disc & ok] = Tissue.DISC
    sub[body & ~is_disc & ok] = Tissue.BONE_CORTICAL
    sub[core & ~is_disc & ~endplate & ok] = Tissue.BONE_CANCELLOUS


def _shell(
    grid: Grid, anat: Anatomy, yc: float, d0_mm: float, d1_mm: float, z_lo: float, z_hi: float
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray] | None:
    """Voxels between d0 and d1 mm outside the cavity ellipse: indices, t, depth (mm), z."""
    box = grid.box(np.array([-1e4, -1e4, z_lo]), np.array([1e4, 1e4, z_hi]))
    if box is None:
        return None
    x, y, z = grid.xyz(box)
    a = anat.cavity_a_mm[box[2]].reshape(1, 1, -1)
    bb = anat.cavity_b_mm[box[2]].reshape(1, 1, -1)
    inner = (x / (a + d0_mm)) ** 2 + ((y - yc) / (bb + d0_mm)) ** 2
    outer = (x / (a + d1_mm)) ** 2 + ((y - yc) / (bb + d1_mm)) ** 2
    i, j, k = np.nonzero((inner >= 1) & (outer < 1))
    xs, ys, zs = x[i, 0, 0], y[0, j, 0] - yc, z[0, 0, k]
    av, bv = a[0, 0, k], bb[0, 0, k]
    t = np.arctan2(np.abs(xs) / av, -ys / bv)
    rho = np.sqrt((xs / av) ** 2 + (ys / bv) ** 2)
    grad = np.sqrt((xs / av**2) ** 2 + (ys / bv**2) ** 2) / np.maximum(rho, 1e-6)
    depth = (rho - 1.0) / np.maximum(grad, 1e-6)
    idx = (i + box[0].start, j + box[1].start, k + box[2].start)
    return idx, t, depth, zs


def _rib_extent(k: int) -> tuple[float, float]:
    """Elliptic angles where rib k's bone ends and its costal cartilage ends (0 = none)."""
    if k <= 7:
        return 0.80 * np.pi, 0.95 * np.pi
    if k <= 10:
        end = (0.74 - 0.03 * (k - 8)) * np.pi
        return end, end + 0.12 * np.pi
    return (0.58 if k == 11 else 0.46) * np.pi, 0.0


def _paint_ribs(grid: Grid, p: AnatomyParams, b: BoneParams, anat: Anatomy) -> None:
    yc = p.cavity_centre_y_mm
    z_lo = b.z_rib1_mm - (N_RIBS - 1) * b.rib_pitch_mm - b.rib_drop_mm - 20.0
    shell = _shell(grid, anat, yc, 1.0, 1.0 + b.rib_thickness_mm, z_lo, b.z_rib1_mm + 20.0)
    if shell is None:
        return
    idx, t, depth, zs = shell
    t0 = 0.09 * np.pi
    s = np.clip((t - t0) / (np.pi - t0), 0.0, 1.0) ** 1.4
    half_h = 0.5 * b.rib_height_mm
    labels_out = np.full(t.shape, 255, dtype=np.uint8)
    for k in range(1, N_RIBS + 1):
        drop = b.rib_drop_mm * (0.45 if k == 1 else 0.75 if k == 2 else 1.0)
        zc = b.z_rib1_mm - (k - 1) * b.rib_pitch_mm - drop * s
        dz = np.abs(zs - zc)
        bone_end, cart_end = _rib_extent(k)
        band = (dz < half_h) & (t > t0)
        bone = band & (t <= bone_end)
        interior = (dz < half_h - 2.5) & (depth > 3.0) & (depth < b.rib_thickness_mm - 1.5)
        labels_out[bone] = Tissue.BONE_CORTICAL
        labels_out[bone & interior] = Tissue.BONE_CANCELLOUS
        labels_out[band & (t > bone_end) & (t <= cart_end)] = Tissue.CARTILAGE
    hit = labels_out != 255
    sel = tuple(a[hit] for a in idx)
    ok = _overwritable()[anat.labels[sel]]
    anat.labels[tuple(a[ok] for a in sel)] = labels_out[hit][ok]
    # Scapulae: thin plates behind the posterolateral ribs, a triangle narrowing downwards.
    z_top, z_bot = b.z_rib1_mm - 5.0, b.z_rib1_mm - 6.5 * b.rib_pitch_mm
    sc = _shell(grid, anat, yc, b.rib_thickness_mm + 5.0, b.rib_thickness_mm + 10.0, z_bot, z_top)
    if sc is None:
        return
    idx, t, depth, zs = sc
    u = (z_top - zs) / (z_top - z_bot)
    plate = (t > (0.17 + 0.12 * u) * np.pi) & (t < (0.45 - 0.18 * u) * np.pi)
    lateral_border = plate & (t > (0.43 - 0.18 * u) * np.pi)
    sel = tuple(a[plate] for a in idx)
    ok = _overwritable()[anat.labels[sel]]
    vals = np.where(lateral_border[plate], Tissue.BONE_CORTICAL, Tissue.BONE_PLATE).astype(np.uint8)
    anat.labels[tuple(a[ok] for a in sel)] = vals[ok]


def _paint_sternum(grid: Grid, p: AnatomyParams, b: BoneParams, anat: Anatomy) -> None:
    z_top = b.z_rib1_mm - 0.45 * b.rib_drop_mm + 12.0
    z_angle = b.z_rib1_mm - b.rib_pitch_mm - 0.75 * b.rib_drop_mm
    z_xiph = b.z_rib1_mm - 6.0 * b.rib_pitch_mm - b.rib_drop_mm - 10.0
    box = grid.box(np.array([-30.0, -1e4, z_xiph - 25.0]), np.array([30.0, 1e4, z_top]))
    if box is None:
        return
    x, y, z = grid.xyz(box)
    front = (p.cavity_centre_y_mm + anat.cavity_b_mm[box[2]] + 1.0).reshape(1, 1, -1)
    half_w = np.where(z > z_angle, 24.0, np.where(z > z_xiph, 14.0, 7.0))
    dy = y - front
    bone = (np.abs(x) < half_w) & (dy > 0.0) & (dy < 12.0)
    core = (np.abs(x) < half_w - 3.0) & (dy > 3.0) & (dy < 9.0)
    sub = anat.labels[box]
    ok = _overwritable()[sub]
    sub[bone & ok] = Tissue.BONE_CORTICAL
    sub[core & ok & (z > z_xiph)] = Tissue.BONE_CANCELLOUS


def _paint_clavicles(grid: Grid, p: AnatomyParams, b: BoneParams, anat: Anatomy) -> None:
    a, bb, yc = p.cavity_half_width_mm, p.cavity_half_depth_mm, p.cavity_centre_y_mm
    zc = b.clavicle_z_mm
    front = yc + 0.85 * bb + 14.0
    ok = _overwritable()
    ok[Tissue.LUNG] = True  # the clavicle passes over the apex
    for side in (1.0, -1.0):
        path = [
            np.array([side * x_, y_, z_])
            for x_, y_, z_ in (
                (20.0, front, zc),
                (0.38 * a, front + 6.0, zc + 4.0),
                (0.75 * a, yc + 0.45 * bb, zc + 12.0),
                (0.98 * a, yc + 0.05 * bb, zc + 20.0),
                (1.05 * a, yc - 0.25 * bb, zc + 24.0),
            )
        ]
        for q0, q1 in itertools.pairwise(path):
            paint_tube_label(
                grid,
                anat.labels,
                q0,
                q1,
                7.0,
                Tissue.BONE_CORTICAL,
                core_label=Tissue.BONE_CANCELLOUS,
                shell_mm=3.0,
                where=ok,
            )
