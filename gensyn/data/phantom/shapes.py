"""Geometry helpers for the procedural chest phantom: voxel grid, tubes, smooth noise.

Everything works in world millimetres (RAS+: +x towards the patient's right, +y anterior,
+z superior) on a regular grid whose voxel axes (i, j, k) run along +x, +y, +z. Shapes are
evaluated only inside their bounding box, on broadcast coordinate vectors, so that a tube
of a few millimetres costs a few thousand voxel operations rather than a full volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BoxSlices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid centred on the world origin.

    ``shape_vox`` = (nx, ny, nz) voxels along (+x R, +y A, +z S); ``spacing_mm`` = voxel
    size along the same axes. Voxel (i, j, k) has its centre at
    ``origin_mm + (i, j, k) * spacing_mm`` with ``origin_mm = -(shape - 1) / 2 * spacing``.
    """

    shape_vox: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        axes = tuple(
            ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
            for n, s in zip(self.shape_vox, self.spacing_mm, strict=True)
        )
        object.__setattr__(self, "axes_mm", axes)

    @property
    def origin_mm(self) -> np.ndarray:
        """World position (mm) of the centre of voxel (0, 0, 0)."""
        return np.array([float(a[0]) for a in self.axes_mm])

    @property
    def affine(self) -> np.ndarray:
        """4×4 voxel-index → RAS+ millimetre matrix (diagonal spacing, origin as above)."""
        aff = np.diag([*map(float, self.spacing_mm), 1.0])
        aff[:3, 3] = self.origin_mm
        return aff

    def xyz(self, box: BoxSlices | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinate vectors (nx,1,1), (1,ny,1), (1,1,nz) in mm, optionally cropped."""
        box = box or (slice(None), slice(None), slice(None))
        x, y, z = (a[s] for a, s in zip(self.axes_mm, box, strict=True))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> BoxSlices | None:
        """Index slices of the voxels whose centres lie in [lo_mm, hi_mm]; None if empty."""
        out = []
        for axis in range(3):
            a = self.axes_mm[axis]
            step = self.spacing_mm[axis]
            i0 = max(int(np.ceil((lo_mm[axis] - a[0]) / step)), 0)
            i1 = min(int(np.floor((hi_mm[axis] - a[0]) / step)) + 1, len(a))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return out[0], out[1], out[2]


def segment_distance(
    grid: Grid, p0_mm: np.ndarray, p1_mm: np.ndarray, pad_mm: float
) -> tuple[BoxSlices, np.ndarray, np.ndarray] | None:
    """Distance (mm) from each voxel centre near a segment to the segment p0→p1.

    Only voxels within ``pad_mm`` of the segment's bounding box are evaluated. Returns the box
    slices, the distance array over that box and the position ``t`` in [0, 1] of the nearest
    point along the segment, or None when the box misses the grid.
    """
    p0 = np.asarray(p0_mm, dtype=np.float32)
    p1 = np.asarray(p1_mm, dtype=np.float32)
    box = grid.box(np.minimum(p0, p1) - pad_mm, np.maximum(p0, p1) + pad_mm)
    if box is None:
        return None
    x, y, z = grid.xyz(box)
    d = p1 - p0
    length2 = max(float(d @ d), 1e-6)
    px, py, pz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) * (1.0 / length2), 0.0, 1.0)
    dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2
    return box, np.sqrt(dist2), t


def paint_tube(
    grid: Grid,
    field_out: np.ndarray,
    p0_mm: np.ndarray,
    p1_mm: np.ndarray,
    r0_mm: float,
    r1_mm: float,
) -> None:
    """Max-composite a partial-volume tube (fraction in [0, 1]) into ``field_out`` in place.

    The radius tapers linearly from ``r0_mm`` at p0 to ``r1_mm`` at p1. A voxel's fraction
    ramps from 1 to 0 over one voxel width around the tube wall, so tubes thinner than a voxel
    still show with reduced contrast, as in a real reconstruction.
    """
    width_mm = float(min(grid.spacing_mm))
    hit = segment_distance(grid, p0_mm, p1_mm, max(r0_mm, r1_mm) + width_mm)
    if hit is None:
        return
    box, dist, t = hit
    radius = r0_mm + t * (r1_mm - r0_mm)
    # A tube thinner than the voxel: scale the fraction down to keep the area (volume) right.
    frac = np.clip((radius - dist) / width_mm + 0.5, 0.0, 1.0)
    frac *= np.minimum(1.0, (2.0 * radius / width_mm)) ** 2
    np.maximum(field_out[box], frac, out=field_out[box])


def paint_tube_label(
    grid: Grid,
    labels: np.ndarray,
    p0_mm: np.ndarray,
    p1_mm: np.ndarray,
    radius_mm: float,
    label: int,
    core_label: int | None = None,
    shell_mm: float = 0.0,
    where: np.ndarray | None = None,
) -> None:
    """Set ``labels`` to ``label`` inside a round tube; optionally ``core_label`` deeper than ``shell_mm``.

    ``where`` is an optional lookup table (bool per label value) of labels that may be overwritten.
    """
    hit = segment_distance(grid, p0_mm, p1_mm, radius_mm + 1.0)
    if hit is None:
        return
    box, dist, _ = hit
    sub = labels[box]
    inside = dist <= radius_mm
    if where is not None:
        inside &= where[sub]
    sub[inside] = label
    if core_label is not None:
        sub[inside & (dist <= radius_mm - shell_mm)] = core_label


def _interp_matrix(n_out: int, n_low: int, cell: float) -> np.ndarray:
    """(n_out, n_low) Gaussian interpolation weights, rows normalised to unit sum of squares."""
    pos = np.arange(n_out, dtype=np.float32)[:, None] / cell + 1.0
    knots = np.arange(n_low, dtype=np.float32)[None, :]
    w = np.exp(-0.5 * ((pos - knots) / 0.6) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_noise(
    rng: np.random.Generator, shape_vox: tuple[int, int, int], cell_vox: float
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ~``cell_vox`` voxels.

    White noise on a coarse lattice (one knot per ``cell_vox`` voxels) is interpolated with
    separable Gaussian weights, three small matrix products instead of a 3-D convolution.
    Returns float32 of ``shape_vox``.
    """
    nx = shape_vox[0]
    lows = [int(np.ceil(n / cell_vox)) + 3 for n in shape_vox]
    low = rng.standard_normal(lows, dtype=np.float32)
    mx, my, mz = (_interp_matrix(n, m, cell_vox) for n, m in zip(shape_vox, lows, strict=True))
    f = (mx @ low.reshape(lows[0], -1)).reshape(nx, lows[1], lows[2])
    f = my @ f  # (ny, ly) @ (nx, ly, lz) -> (nx, ny, lz)
    return np.ascontiguousarray(f @ mz.T)


def ellipse_r2(
    x: np.ndarray,
    y: np.ndarray,
    cx: float | np.ndarray,
    cy: float | np.ndarray,
    ax: float | np.ndarray,
    ay: float | np.ndarray,
) -> np.ndarray:
    """Squared normalised elliptic radius ((x-cx)/ax)² + ((y-cy)/ay)² (inside the ellipse < 1)."""
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
