"""Lung vessels of the procedural chest phantom: hilar trees and small peripheral vessels.

Both write partial-volume fractions (0..1) into float32 fields; the HU step blends them
into lung tissue only, so findings that replace lung (fluid, air, collapse) hide them.
"""

from __future__ import annotations

import numpy as np

from gensyn.data.phantom.shapes import Grid, paint_tube, smooth_noise


def add_small_vessels(
    grid: Grid,
    lung: np.ndarray,
    vessel_frac: np.ndarray,
    a_c: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Peripheral vessels: worm-like tubes where two smooth random fields both cross zero.

    The zero sets of two independent smooth fields are surfaces; their intersection is a
    network of curved lines, which looks like the small vessels a tree of a few hundred
    segments cannot reach. Their contrast fades towards the lung periphery, as on a radiograph.
    """
    nz_any = np.flatnonzero(lung.any(axis=(0, 1)))
    if len(nz_any) == 0:
        return
    ks = slice(int(nz_any[0]), int(nz_any[-1]) + 1)
    sub_shape = (lung.shape[0], lung.shape[1], ks.stop - ks.start)
    n1 = smooth_noise(rng, sub_shape, cell_vox=5.0)
    n2 = smooth_noise(rng, sub_shape, cell_vox=5.0)
    x, _, _ = grid.xyz()
    taper = np.clip(1.2 - 1.1 * np.abs(x + 4.0) / a_c[ks].reshape(1, 1, -1), 0.1, 1.0)
    worm = np.clip(1.0 - (n1 * n1 + n2 * n2) * (1.0 / 0.12), 0.0, 1.0)
    worm *= taper * 0.85
    worm *= lung[:, :, ks]
    np.maximum(vessel_frac[:, :, ks], worm, out=vessel_frac[:, :, ks])


def grow_vessel_tree(
    grid: Grid,
    lung: np.ndarray,
    hilum: np.ndarray,
    vessel_frac: np.ndarray,
    airway_frac: np.ndarray,
    rng: np.random.Generator,
    n_targets: int | None = None,
) -> None:
    """A branching tree from the hilum that fills the lung, radii tapering by Murray's law.

    Target points sampled inside the lung are split recursively along their principal axis;
    each split is a bifurcation half-way towards the targets' centroid. ``n_targets`` None:
    64 for a lung of >= 50k voxels (128³ grid), fewer on coarser grids, where small
    vessels would not be resolved anyway (the tree costs the same at any grid size).
    """
    if n_targets is None:
        n_targets = int(np.clip(round(64 * np.sqrt(np.count_nonzero(lung) / 5e4)), 8, 64))
    picks = rng.integers(0, lung.size, 40 * n_targets)
    inside = picks[lung.ravel()[picks]][:n_targets]
    if len(inside) < 2:
        return
    ijk = np.stack(np.unravel_index(inside, grid.shape_vox), axis=1)
    targets = grid.origin_mm + ijk * np.asarray(grid.spacing_mm)
    stack: list[tuple[np.ndarray, np.ndarray, float]] = [(np.asarray(hilum, float), targets, 6.5)]
    while stack:
        start, pts, radius = stack.pop()
        centre = pts.mean(axis=0)
        end = pts[0] if len(pts) == 1 else start + 0.5 * (centre - start)
        r_end = radius * 0.9
        paint_tube(grid, vessel_frac, start, end, radius, r_end)
        if radius >= 2.2:
            paint_tube(
                grid,
                airway_frac,
                start + np.array([0.0, 0.0, -radius]),
                end + np.array([0.0, 0.0, -radius]),
                0.6 * radius,
                0.6 * r_end,
            )
        if len(pts) == 1:
            continue
        cov = np.cov((pts - centre).T)
        axis = np.linalg.eigh(cov)[1][:, -1]
        order = np.argsort((pts - centre) @ axis)
        half = len(pts) // 2
        child_r = max(radius * 0.79, 0.9)  # Murray: r_child = r_parent / 2^(1/3)
        stack.append((end, pts[order[:half]], child_r))
        stack.append((end, pts[order[half:]], child_r))
