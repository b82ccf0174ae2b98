"""Patient anatomy of the procedural chest phantom: sampled sizes, soft tissue, lungs, heart.

All geometry is in world millimetres, RAS+ (+x patient's right, +y anterior, +z superior),
on the :class:`~gensyn.data.phantom.shapes.Grid` of the volume. The anatomy is built as a
label volume (:class:`Tissue` codes); :mod:`gensyn.data.phantom.volume` turns labels into HU.
Sizes are typical adult values (thoracic inner width ~250 mm, heart ~40-47 % of it, domes
of the diaphragm at about the 10th posterior rib, right dome 1-2 cm above the left).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from gensyn.data.phantom.shapes import Grid, ellipse_r2, paint_tube_label
from gensyn.data.phantom.vessels import add_small_vessels, grow_vessel_tree


class Tissue(IntEnum):
    """Label codes of the phantom's tissue volume."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    LUNG = 3
    HEART = 4
    MEDIASTINUM = 5
    BLOOD = 6  # aorta, pulmonary trunk, vena cava
    AIRWAY = 7
    BONE_CORTICAL = 8
    BONE_CANCELLOUS = 9
    DISC = 10
    CARTILAGE = 11
    SPINAL_CANAL = 12
    LIVER = 13
    SPLEEN = 14
    STOMACH = 15
    GAS = 16
    ABDOMEN = 17
    EFFUSION = 18
    PNEUMOTHORAX = 19
    ATELECTASIS = 20
    CONSOLIDATION = 21
    BONE_PLATE = 22  # thin flat bone (scapula blade), partial volume


@dataclass(frozen=True)
class AnatomyParams:
    """Per-patient anatomy, all lengths in mm, world z in mm (RAS+)."""

    cavity_half_width_mm: float  # inner thoracic half width at its widest (ribs inside)
    cavity_half_depth_mm: float  # inner thoracic AP half depth
    cavity_centre_y_mm: float
    wall_lateral_mm: float  # muscle + ribs, lateral
    wall_anterior_mm: float
    wall_posterior_mm: float
    fat_mm: float  # subcutaneous fat thickness
    z_apex_mm: float  # top of the lung apices
    apex_cap_height_mm: float
    z_dome_right_mm: float  # top of the right hemidiaphragm
    z_dome_left_mm: float
    dome_depth_mm: float  # drop from dome top to the lateral costophrenic angle
    recess_depth_mm: float  # extra drop of the posterior recess
    heart_ctr: float  # cardiothoracic ratio of the normal heart
    heart_angle_deg: float  # long axis, from patient's left towards anterior
    heart_aspect: tuple[float, float]  # short/long and height/long ratios
    heart_shift_mm: tuple[float, float]  # centre x, y
    z_carina_mm: float
    aorta_radius_mm: float
    lung_hu: float
    lung_gradient_hu: float  # posterior (dependent) lung is denser in a supine CT
    noise_hu: float  # CT noise standard deviation
    texture_hu: float  # amplitude of smooth tissue texture
    breast_depth_mm: float  # 0 for a male habitus


def sample_anatomy(rng: np.random.Generator) -> AnatomyParams:
    """Draw one patient's anatomy from adult ranges."""
    size = float(np.clip(rng.normal(1.0, 0.05), 0.9, 1.1))
    width = 122.0 * size * rng.uniform(0.95, 1.05)
    z_apex = rng.uniform(118.0, 132.0)
    z_dome_r = rng.uniform(-62.0, -42.0)
    return AnatomyParams(
        cavity_half_width_mm=width,
        cavity_half_depth_mm=width * rng.uniform(0.62, 0.74),
        cavity_centre_y_mm=rng.uniform(0.0, 12.0),
        wall_lateral_mm=rng.uniform(24.0, 32.0),
        wall_anterior_mm=rng.uniform(16.0, 26.0),
        wall_posterior_mm=rng.uniform(44.0, 54.0),
        fat_mm=rng.uniform(4.0, 18.0),
        z_apex_mm=z_apex,
        apex_cap_height_mm=rng.uniform(110.0, 130.0),
        z_dome_right_mm=z_dome_r,
        z_dome_left_mm=z_dome_r - rng.uniform(8.0, 22.0),
        dome_depth_mm=rng.uniform(40.0, 55.0),
        recess_depth_mm=rng.uniform(20.0, 35.0),
        heart_ctr=rng.uniform(0.39, 0.47),
        heart_angle_deg=rng.uniform(28.0, 48.0),
        heart_aspect=(rng.uniform(0.68, 0.82), rng.uniform(0.95, 1.1)),
        heart_shift_mm=(rng.uniform(-26.0, -14.0), rng.uniform(4.0, 18.0)),
        z_carina_mm=z_apex - rng.uniform(62.0, 78.0),
        aorta_radius_mm=rng.uniform(11.0, 15.0),
        lung_hu=rng.uniform(-870.0, -830.0),
        lung_gradient_hu=rng.uniform(25.0, 70.0),
        noise_hu=rng.uniform(8.0, 20.0),
        texture_hu=rng.uniform(0.7, 1.3),
        breast_depth_mm=rng.uniform(20.0, 50.0) if rng.uniform() < 0.5 else 0.0,
    )


@dataclass
class Anatomy:
    """The label volume plus the shape fields that bones and findings are placed with."""

    labels: np.ndarray  # uint8 (nx, ny, nz) Tissue codes
    vessel_frac: np.ndarray  # float32 partial-volume fraction of lung vessels
    airway_frac: np.ndarray  # float32 fraction of intrapulmonary bronchi
    cavity_a_mm: np.ndarray  # (nz,) inner thoracic half width per slice
    cavity_b_mm: np.ndarray  # (nz,) inner thoracic half depth per slice
    diaphragm_z_mm: np.ndarray  # (nx, ny) height of the diaphragm surface
    spine_y_mm: np.ndarray  # (nz,) y of the vertebral body centre per slice
    hila_mm: dict[str, np.ndarray]  # "R"/"L" hilum points
    heart: dict[str, float]  # centre, semi-axes, angle of the heart ellipsoid


def cavity_profile(p: AnatomyParams, z_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner thoracic half width and half depth (mm) per slice: widest at the bases."""
    s = np.clip((z_mm - p.z_dome_right_mm) / (p.z_apex_mm - p.z_dome_right_mm), 0.0, 1.15)
    a = p.cavity_half_width_mm * (1.0 - 0.24 * s**2)
    b = p.cavity_half_depth_mm * (1.0 - 0.12 * s**2)
    return a.astype(np.float32), b.astype(np.float32)


def diaphragm_surface(grid: Grid, p: AnatomyParams) -> np.ndarray:
    """Height z (mm) of the diaphragm over each (x, y) column: two domes, deep posterior recesses."""
    x, y, _ = grid.xyz()
    x2, y2 = x[:, :, 0], y[:, :, 0]
    a, b, yc = p.cavity_half_width_mm, p.cavity_half_depth_mm, p.cavity_centre_y_mm
    domes = []
    for side, z_top in ((1.0, p.z_dome_right_mm), (-1.0, p.z_dome_left_mm)):
        r2 = ellipse_r2(x2, y2, side * 0.45 * a, yc + 0.15 * b, 0.62 * a, 0.95 * b)
        domes.append(z_top - p.dome_depth_mm * r2)
    # Central tendon under the heart, a little below the left dome.
    z_centre = 0.5 * (p.z_dome_right_mm + p.z_dome_left_mm) - 6.0
    domes.append(
        z_centre - p.dome_depth_mm * ellipse_r2(x2, y2, -0.1 * a, yc + 0.25 * b, 0.5 * a, 0.8 * b)
    )
    posterior = np.clip((yc - y2) / b, 0.0, 1.0) ** 2
    top = np.maximum(np.maximum(domes[0], domes[1]), domes[2])
    return (top - p.recess_depth_mm * posterior).astype(np.float32)


def heart_geometry(p: AnatomyParams, ctr: float) -> dict[str, float]:
    """Heart ellipsoid whose transverse diameter is ``ctr`` × the inner thoracic width."""
    alpha = np.deg2rad(p.heart_angle_deg)
    ratio_b, ratio_c = p.heart_aspect
    # Half extent along x of the rotated ellipse is sqrt(a² cos² + b² sin²); solve for a.
    half_width = ctr * p.cavity_half_width_mm
    semi_a = half_width / np.sqrt(np.cos(alpha) ** 2 + (ratio_b * np.sin(alpha)) ** 2)
    semi_c = semi_a * ratio_c
    return {
        "x": p.heart_shift_mm[0],
        "y": p.cavity_centre_y_mm + p.heart_shift_mm[1],
        "z": 0.5 * (p.z_dome_right_mm + p.z_dome_left_mm) - 6.0 + 0.3 * semi_c,
        "a": float(semi_a),
        "b": float(semi_a * ratio_b),
        "c": float(semi_c),
        "angle_rad": float(alpha),
    }


def heart_mask(grid: Grid, h: dict[str, float], scale: float = 1.0) -> np.ndarray:
    """Boolean volume of the heart ellipsoid (lateral semi-axes × ``scale``, height × √scale)."""
    a, b, c = h["a"] * scale, h["b"] * scale, h["c"] * np.sqrt(scale)
    r = max(a, b, c)
    lo = np.array([h["x"] - r, h["y"] - r, h["z"] - c])
    box = grid.box(lo, np.array([h["x"] + r, h["y"] + r, h["z"] + c]))
    mask = np.zeros(grid.shape_vox, dtype=bool)
    if box is None:
        return mask
    x, y, z = grid.xyz(box)
    ca, sa = np.cos(h["angle_rad"]), np.sin(h["angle_rad"])
    u = -(x - h["x"]) * ca + (y - h["y"]) * sa  # long axis towards left-anterior
    v = (x - h["x"]) * sa + (y - h["y"]) * ca
    mask[box] = (u / a) ** 2 + (v / b) ** 2 + ((z - h["z"]) / c) ** 2 < 1.0
    return mask


def build_anatomy(grid: Grid, p: AnatomyParams, rng: np.random.Generator) -> Anatomy:
    """Label volume of body wall, abdomen, mediastinum, lungs, heart, great vessels, airways."""
    x, y, z = grid.xyz()
    zz = z.ravel()
    a_c, b_c = cavity_profile(p, zz)
    yc = p.cavity_centre_y_mm
    # Body outline: constant below the neck, narrowing above the apices.
    neck = np.clip((zz - (p.z_apex_mm + 20.0)) / 40.0, 0.0, 1.0)
    a_body = (p.cavity_half_width_mm + p.wall_lateral_mm + p.fat_mm) * (1.0 - 0.5 * neck)
    half_depth = p.cavity_half_depth_mm + 0.5 * (p.wall_anterior_mm + p.wall_posterior_mm)
    b_body = (half_depth + p.fat_mm) * (1.0 - 0.4 * neck)
    y_body = yc + 0.5 * (p.wall_anterior_mm - p.wall_posterior_mm)
    labels = np.zeros(grid.shape_vox, dtype=np.uint8)
    shape3 = (1, 1, -1)
    labels[ellipse_r2(x, y, 0.0, y_body, a_body.reshape(shape3), b_body.reshape(shape3)) < 1] = (
        Tissue.FAT
    )
    inner = ellipse_r2(
        x, y, 0.0, y_body, (a_body - p.fat_mm).reshape(shape3), (b_body - p.fat_mm).reshape(shape3)
    )
    labels[inner < 1] = Tissue.MUSCLE
    if p.breast_depth_mm > 0:
        _paint_breasts(grid, p, labels, y_body + float(b_body.max()) - 8.0)
    cav = ellipse_r2(x, y, 0.0, yc, a_c.reshape(shape3), b_c.reshape(shape3)) < 1
    cav &= z < p.z_apex_mm + 4.0
    z_d = diaphragm_surface(grid, p)
    above = z > z_d[:, :, None]
    labels[cav & ~above] = Tissue.ABDOMEN
    labels[cav & above] = Tissue.MEDIASTINUM
    _paint_abdomen(grid, p, labels, cav & ~above)

    # Lungs: the cavity minus a central mediastinum, capped by rounded apices per side.
    x_med = -4.0
    w_med = 11.0 + 13.0 / (1.0 + np.exp(-(zz - p.z_carina_mm) / 12.0))
    side_r = x > x_med + w_med.reshape(shape3)
    side_l = x < x_med - w_med.reshape(shape3)
    lung = cav & above & (side_r | side_l)
    z_u = p.z_apex_mm - p.apex_cap_height_mm
    k0 = int(np.searchsorted(zz, z_u))
    for side, sel in ((1.0, side_r), (-1.0, side_l)):
        cap = ellipse_r2(
            x,
            y,
            side * 0.5 * p.cavity_half_width_mm,
            yc - 0.15 * p.cavity_half_depth_mm,
            0.78 * p.cavity_half_width_mm,
            1.2 * p.cavity_half_depth_mm,
        )
        cap = cap + ((z[:, :, k0:] - z_u) / p.apex_cap_height_mm) ** 2
        lung[:, :, k0:] &= ~(sel[:, :, k0:] & (cap >= 1.0))
    # Spine and paravertebral muscle indent the back of the cavity.
    vb_rx, vb_ry = 20.0, 16.0
    spine_y = (yc - b_c + vb_ry + 2.0).astype(np.float32)
    para = (x / (vb_rx + 12.0)) ** 2 + ((y - spine_y.reshape(shape3)) / (vb_ry + 8.0)) ** 2 < 1
    para |= (np.abs(x) < vb_rx + 12.0) & (y < spine_y.reshape(shape3))
    para &= cav
    labels[para] = Tissue.MUSCLE
    lung &= ~para
    labels[lung] = Tissue.LUNG

    heart = heart_geometry(p, p.heart_ctr)
    labels[
        heart_mask(grid, heart) & (cav | (labels == Tissue.ABDOMEN)) & (z > z_d[:, :, None] - 6.0)
    ] = Tissue.HEART
    hila = _paint_mediastinum(grid, p, labels, heart, spine_y, zz)
    vessel_frac = np.zeros(grid.shape_vox, dtype=np.float32)
    airway_frac = np.zeros(grid.shape_vox, dtype=np.float32)
    for key, sign in (("R", 1.0), ("L", -1.0)):
        side_lung = (labels == Tissue.LUNG) & ((x > x_med) if sign > 0 else (x < x_med))
        grow_vessel_tree(grid, side_lung, hila[key], vessel_frac, airway_frac, rng)
    add_small_vessels(grid, labels == Tissue.LUNG, vessel_frac, a_c, rng)
    return Anatomy(labels, vessel_frac, airway_frac, a_c, b_c, z_d, spine_y, hila, heart)


def _paint_breasts(grid: Grid, p: AnatomyParams, labels: np.ndarray, y_front: float) -> None:
    """Two flattened (supine) breasts on the anterior chest wall: fat with a glandular core."""
    z_c = p.z_dome_right_mm + 35.0
    depth = p.breast_depth_mm
    for side in (1.0, -1.0):
        centre = np.array([side * 0.45 * p.cavity_half_width_mm, y_front, z_c])
        semi = np.array([60.0, depth, 55.0])
        box = grid.box(centre - semi, centre + semi)
        if box is None:
            continue
        x, y, z = grid.xyz(box)
        r2 = ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
        r2 = r2 + ((z - centre[2]) / semi[2]) ** 2
        sub = labels[box]
        sub[(r2 < 1) & (sub == Tissue.AIR)] = Tissue.FAT
        sub[(r2 < 0.3) & ((sub == Tissue.FAT) | (sub == Tissue.AIR))] = Tissue.MUSCLE  # glandular


def _paint_abdomen(grid: Grid, p: AnatomyParams, labels: np.ndarray, region: np.ndarray) -> None:
    """Liver under the right dome, stomach with its gas bubble and spleen under the left."""
    x, y, z = grid.xyz()
    a, b, yc = p.cavity_half_width_mm, p.cavity_half_depth_mm, p.cavity_centre_y_mm
    edge = -35.0 + 70.0 * np.clip((p.z_dome_right_mm - z) / 140.0, 0.0, 1.0)
    labels[region & (x > edge)] = Tissue.LIVER
    z_st = p.z_dome_left_mm - 0.35 * p.dome_depth_mm - 25.0
    stomach = region & (
        ellipse_r2(x, y, -0.45 * a, yc + 0.15 * b, 0.38 * a, 0.5 * b) + ((z - z_st) / 45.0) ** 2 < 1
    )
    stomach &= labels != Tissue.LIVER
    labels[stomach] = Tissue.STOMACH
    labels[stomach & (y > yc + 0.3 * b)] = Tissue.GAS  # non-dependent (anterior) when supine
    spleen = region & (
        ellipse_r2(x, y, -0.72 * a, yc - 0.45 * b, 0.2 * a, 0.4 * b)
        + ((z - (z_st - 5.0)) / 50.0) ** 2
        < 1
    )
    labels[spleen & (labels == Tissue.ABDOMEN)] = Tissue.SPLEEN


def _paint_mediastinum(
    grid: Grid,
    p: AnatomyParams,
    labels: np.ndarray,
    heart: dict[str, float],
    spine_y: np.ndarray,
    z_mm: np.ndarray,
) -> dict[str, np.ndarray]:
    """Aorta, pulmonary trunk, superior vena cava, trachea and main bronchi; returns the hila."""
    k_car = int(np.clip(np.searchsorted(z_mm, p.z_carina_mm), 0, len(z_mm) - 1))
    y_spine = float(spine_y[k_car])
    soft = np.zeros(256, dtype=bool)
    soft[[Tissue.LUNG, Tissue.MEDIASTINUM, Tissue.MUSCLE, Tissue.FAT, Tissue.ABDOMEN]] = True
    pt = np.array
    hx, hy, hz, hc = heart["x"], heart["y"], heart["z"], heart["c"]
    r_ao = p.aorta_radius_mm
    z_arch = p.z_carina_mm + 22.0
    y_desc = y_spine + 22.0
    root = pt([hx + 0.35 * heart["a"], hy - 0.1 * heart["b"], hz + 0.35 * hc])
    arch = [pt([8.0, hy - 12.0, z_arch - 12.0])]
    for t in np.linspace(0.0, np.pi, 5)[1:]:
        arch.append(
            pt(
                [
                    8.0 - 30.0 * (1 - np.cos(t)) / 2,
                    hy - 12.0 + (y_desc - hy + 12.0) * (1 - np.cos(t)) / 2,
                    z_arch - 12.0 + 20.0 * np.sin(t),
                ]
            )
        )
    path = [root, *arch, pt([-22.0, y_desc, p.z_dome_left_mm - 40.0])]
    radii = [r_ao] * (len(path) - 2) + [r_ao * 0.8, r_ao * 0.8]
    for i in range(len(path) - 1):
        paint_tube_label(grid, labels, path[i], path[i + 1], radii[i + 1], Tissue.BLOOD, where=soft)
    hila = {
        "R": pt([34.0, y_spine + 36.0, p.z_carina_mm - 22.0]),
        "L": pt([-40.0, y_spine + 34.0, p.z_carina_mm - 16.0]),
    }
    trunk_top = pt([-10.0, hy + 4.0, p.z_carina_mm - 10.0])
    paint_tube_label(
        grid,
        labels,
        pt([hx, hy + 0.4 * heart["b"], hz + 0.4 * hc]),
        trunk_top,
        13.0,
        Tissue.BLOOD,
        where=soft,
    )
    for key in ("R", "L"):
        paint_tube_label(grid, labels, trunk_top, hila[key], 9.0, Tissue.BLOOD, where=soft)
    svc_top = pt([26.0, hy - 8.0, p.z_apex_mm + 30.0])
    paint_tube_label(
        grid, labels, pt([24.0, hy - 4.0, hz + 0.3 * hc]), svc_top, 9.0, Tissue.BLOOD, where=soft
    )
    # Airways: trachea in front of the oesophagus, main bronchi to the hila.
    carina = pt([0.0, y_spine + 30.0, p.z_carina_mm])
    paint_tube_label(
        grid,
        labels,
        pt([0.0, y_spine + 36.0, p.z_apex_mm + 60.0]),
        carina,
        8.5,
        Tissue.AIRWAY,
        where=soft,
    )
    for key, r in (("R", 6.5), ("L", 6.0)):
        paint_tube_label(
            grid,
            labels,
            carina,
            hila[key] + pt([0.0, -6.0, 4.0]),
            r,
            Tissue.AIRWAY,
            where=soft | (np.arange(256) == Tissue.BLOOD),
        )
    return hila
