"""The five demo findings, inserted into a finished phantom anatomy.

Each function changes labels (and an additive HU field) only inside the region where the
finding lives, and returns that region as a boolean mask, so tests can check that nothing
else moved. A finding draws its own parameters from its own random stream, so a patient
with and without a finding has the same anatomy everywhere else.

The CT is supine: free fluid layers posteriorly (dependent), free air would rise anteriorly
but is modelled, as requested for the radiograph look, as an apical and lateral rim.
"""

from __future__ import annotations

import numpy as np

from gensyn.data.phantom.anatomy import Anatomy, AnatomyParams, Tissue, heart_geometry, heart_mask
from gensyn.data.phantom.shapes import Grid, smooth_noise

LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
X_MIDLINE_MM = -4.0  # lungs right of this are the right lung


def lung_side_mask(grid: Grid, labels: np.ndarray, side: str) -> np.ndarray:
    """Voxels labelled lung on the patient's ``side`` ("R" = +x or "L")."""
    x, _, _ = grid.xyz()
    half = x > X_MIDLINE_MM if side == "R" else x < X_MIDLINE_MM
    return (labels == Tissue.LUNG) & half


def lobe_map(grid: Grid, p: AnatomyParams) -> dict[str, np.ndarray]:
    """Broadcastable (1, ny, nz) masks of the lobes by fissure planes (x-independent) plus side."""
    _, y, z = grid.xyz()
    yc, b = p.cavity_centre_y_mm, p.cavity_half_depth_mm
    out = {}
    for side in ("R", "L"):
        z_dome = p.z_dome_right_mm if side == "R" else p.z_dome_left_mm
        # Oblique fissure: from high at the back (about T4) down to the anterior diaphragm.
        y_post, z_post = yc - b, p.z_carina_mm + 20.0
        y_ant, z_ant = yc + 0.8 * b, z_dome - 10.0
        z_fissure = z_post + (y - y_post) * (z_ant - z_post) / (y_ant - y_post)
        lower = z < z_fissure
        if side == "R":
            middle = ~lower & (z < p.z_carina_mm - 38.0)
            out["RLL"], out["RML"], out["RUL"] = lower, middle, ~lower & ~middle
        else:
            out["LLL"], out["LUL"] = lower, ~lower
    return out


def _lobe(grid: Grid, p: AnatomyParams, labels: np.ndarray, lobe: str) -> np.ndarray:
    return lung_side_mask(grid, labels, lobe[0]) & lobe_map(grid, p)[lobe]


def add_cardiomegaly(
    grid: Grid, p: AnatomyParams, anat: Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Enlarge the heart about its centre so that the cardiothoracic ratio becomes 0.54-0.64."""
    target_ctr = rng.uniform(0.54, 0.64)
    heart = heart_geometry(p, p.heart_ctr)
    _, _, z = grid.xyz()
    big = heart_mask(grid, heart, scale=target_ctr / p.heart_ctr)
    big &= np.isin(anat.labels, (Tissue.LUNG, Tissue.MEDIASTINUM, Tissue.HEART))
    big &= z > anat.diaphragm_z_mm[:, :, None] - 6.0
    anat.labels[big] = Tissue.HEART
    return big, {"target_ctr": float(target_ctr)}


def add_effusion(
    grid: Grid, p: AnatomyParams, anat: Anatomy, rng: np.random.Generator, hu_delta: np.ndarray
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Free pleural fluid layering posteriorly and basally, with a lateral meniscus."""
    side = str(rng.choice(["R", "L", "RL"], p=[0.45, 0.35, 0.2]))
    depth_mm = rng.uniform(30.0, 70.0)
    z_top = p.z_carina_mm + rng.uniform(-25.0, 10.0)
    meniscus_mm = rng.uniform(10.0, 25.0)
    x, y, z = grid.xyz()
    z_base = min(p.z_dome_right_mm, p.z_dome_left_mm) - p.dome_depth_mm - p.recess_depth_mm
    g = np.clip((z_top - z) / (z_top - z_base), 0.0, 1.0) ** 0.5
    a = anat.cavity_a_mm.reshape(1, 1, -1)
    level = (
        p.cavity_centre_y_mm
        - anat.cavity_b_mm.reshape(1, 1, -1)
        + depth_mm * g
        + meniscus_mm * np.clip(np.abs(x) / a - 0.5, 0.0, 0.5) * 2.0 * g
    )
    region = np.zeros(grid.shape_vox, dtype=bool)
    for s in side:
        lung = lung_side_mask(grid, anat.labels, s)
        fluid = lung & (y < level)
        rim = lung & ~fluid & (y < level + 6.0)  # compressed lung above the fluid
        anat.labels[fluid] = Tissue.EFFUSION
        hu_delta[rim] += 220.0
        region |= fluid | rim
    return region, {"side": side, "depth_mm": float(depth_mm)}


def add_pneumothorax(
    grid: Grid, p: AnatomyParams, anat: Anatomy, rng: np.random.Generator, hu_delta: np.ndarray
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Air between chest wall and a collapsed lung, widest at the apex, no vessels."""
    side = "R" if rng.uniform() < 0.55 else "L"
    rim_mm = rng.uniform(14.0, 32.0)
    collapse_hu = rng.uniform(80.0, 180.0)
    x, y, z = grid.xyz()
    lung = lung_side_mask(grid, anat.labels, side)
    a = anat.cavity_a_mm.reshape(1, 1, -1)
    b = anat.cavity_b_mm.reshape(1, 1, -1)
    yy = y - p.cavity_centre_y_mm
    rho = np.sqrt((x / a) ** 2 + (yy / b) ** 2)
    grad = np.sqrt((x / a**2) ** 2 + (yy / b**2) ** 2) / np.maximum(rho, 1e-6)
    d_wall = (1.0 - rho) / np.maximum(grad, 1e-6)  # distance (mm) to the inner chest wall
    upper = np.clip((z - p.z_dome_right_mm) / (p.z_apex_mm - p.z_dome_right_mm), 0.0, 1.0)
    rim = rim_mm * (0.45 + 0.55 * upper)
    air = lung & ((d_wall < rim) | (p.z_apex_mm - z < 1.3 * rim_mm))
    pleural_line = lung & ~air & (d_wall < rim + 3.5)
    anat.labels[air] = Tissue.PNEUMOTHORAX
    hu_delta[lung & ~air] += collapse_hu
    hu_delta[pleural_line] += 250.0
    return lung, {"side": side, "rim_mm": float(rim_mm)}


def add_atelectasis(
    grid: Grid, p: AnatomyParams, anat: Anatomy, rng: np.random.Generator, hu_delta: np.ndarray
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Collapse of one lobe towards its hilar attachment: dense, with volume loss."""
    lobe = str(rng.choice(LOBES, p=[0.2, 0.2, 0.2, 0.15, 0.25]))
    keep = rng.uniform(0.28, 0.45)
    yc, b = p.cavity_centre_y_mm, p.cavity_half_depth_mm
    heart = heart_geometry(p, p.heart_ctr)
    hinge = {
        "RUL": (30.0, yc, p.z_carina_mm + 35.0),
        "RML": (heart["x"] + heart["a"] * 0.7 + 10.0, yc + 0.35 * b, heart["z"]),
        "RLL": (32.0, yc - 0.65 * b, p.z_dome_right_mm + 5.0),
        "LUL": (-35.0, yc + 0.35 * b, p.z_carina_mm + 15.0),
        "LLL": (-36.0, yc - 0.65 * b, p.z_dome_left_mm + 5.0),
    }[lobe]
    region = _lobe(grid, p, anat.labels, lobe)
    i, j, k = np.nonzero(region)
    if len(i) == 0:
        return region, {"lobe": lobe}
    pos = grid.origin_mm + np.stack([i, j, k], axis=1) * np.asarray(grid.spacing_mm)
    dist = np.linalg.norm(pos - np.asarray(hinge), axis=1)
    collapsed = dist <= np.quantile(dist, keep)
    anat.labels[i[collapsed], j[collapsed], k[collapsed]] = Tissue.ATELECTASIS
    hu_delta[i[~collapsed], j[~collapsed], k[~collapsed]] -= 30.0  # hyper-expanded remainder
    return region, {"lobe": lobe, "collapsed_fraction": float(keep)}


def add_pneumonia(
    grid: Grid,
    p: AnatomyParams,
    anat: Anatomy,
    rng: np.random.Generator,
    hu_delta: np.ndarray,
    consolidation_hu: float,
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Patchy consolidation in one lobe (ground glass to soft tissue) with air bronchograms."""
    lobe = str(rng.choice(LOBES))
    radius_mm = rng.uniform(35.0, 55.0) * rng.uniform(0.85, 1.15, size=3)
    pick = rng.uniform()
    noise = smooth_noise(rng, grid.shape_vox, cell_vox=4.0)
    region = _lobe(grid, p, anat.labels, lobe)
    i, j, k = np.nonzero(region)
    if len(i) == 0:
        return region, {"lobe": lobe}
    c = int(pick * (len(i) - 1))
    centre = grid.origin_mm + np.array([i[c], j[c], k[c]]) * np.asarray(grid.spacing_mm)
    pos = grid.origin_mm + np.stack([i, j, k], axis=1) * np.asarray(grid.spacing_mm)
    s = 1.0 - (((pos - centre) / radius_mm) ** 2).sum(axis=1) + 0.45 * noise[i, j, k]
    cons = s > 0.25
    hu = -650.0 + 700.0 * np.clip((s - 0.25) / 0.35, 0.0, 1.0)
    bronchus = cons & (s > 0.45) & (anat.airway_frac[i, j, k] > 0.4)
    sel = cons & ~bronchus
    anat.labels[i[sel], j[sel], k[sel]] = Tissue.CONSOLIDATION
    hu_delta[i[sel], j[sel], k[sel]] += hu[sel] - consolidation_hu
    anat.labels[i[bronchus], j[bronchus], k[bronchus]] = Tissue.AIRWAY
    return region, {"lobe": lobe}


def apply_findings(
    grid: Grid,
    p: AnatomyParams,
    anat: Anatomy,
    labels: dict[str, bool],
    seed: int,
    hu_delta: np.ndarray,
    consolidation_hu: float,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float | str]]]:
    """Insert every finding whose label is True; returns their regions and parameters."""
    regions: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, float | str]] = {}
    # One independent stream per finding, so adding one never changes another's draw.
    streams = np.random.SeedSequence([seed, 7]).spawn(5)
    order = ("Cardiomegaly", "Effusion", "Pneumothorax", "Atelectasis", "Pneumonia")
    for name, ss in zip(order, streams, strict=True):
        if not labels.get(name, False):
            continue
        rng = np.random.default_rng(ss)
        if name == "Cardiomegaly":
            mask, meta = add_cardiomegaly(grid, p, anat, rng)
        elif name == "Effusion":
            mask, meta = add_effusion(grid, p, anat, rng, hu_delta)
        elif name == "Pneumothorax":
            mask, meta = add_pneumothorax(grid, p, anat, rng, hu_delta)
        elif name == "Atelectasis":
            mask, meta = add_atelectasis(grid, p, anat, rng, hu_delta)
        else:
            mask, meta = add_pneumonia(grid, p, anat, rng, hu_delta, consolidation_hu)
        regions[name] = mask
        info[name] = dict(meta)
    return regions, info
