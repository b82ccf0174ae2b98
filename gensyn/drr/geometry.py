"""Digital C-arm geometry: poses, presets, rays and point projection.

Conventions (see docs/conventions.md for the figure):

* World frame = the NIfTI world frame, RAS+ in mm: +x towards the patient's Right,
  +y Anterior, +z Superior. The voxel grid is placed by the NIfTI affine, so any
  voxel axis order or flip is handled.
* At ``alpha_deg = beta_deg = 0`` the source is posterior and the detector anterior
  of the isocentre (beam posterior -> anterior, a PA projection). The detector image
  is shown as a radiologist reads a frontal chest film: patient's right on the image
  left, head at the top. Image column index grows towards the patient's left (-x),
  row index towards the feet (-z).
* ``beta_deg`` (LAO > 0 / RAO < 0) rotates the C-arm about the patient's
  superior axis; LAO moves the detector towards the patient's left-anterior side.
* ``alpha_deg`` (cranial > 0 / caudal < 0) then tilts the detector towards the head.
* The rotation is ``R = R_z(beta) @ R_x(alpha)`` applied to the rest-pose unit
  vectors (detector direction +y, image columns -x, image rows -z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from gensyn.base.bounds import bounded

__all__ = [
    "GEOMETRY_PRESETS",
    "CarmGeometry",
    "CarmPose",
    "GeometryPreset",
    "GeometrySettings",
    "carm_frame",
    "detector_pixels_world",
    "make_geometry",
    "project_points",
    "source_world",
    "volume_center_world",
]


@dataclass(frozen=True)
class CarmGeometry:
    """Intrinsic geometry of an X-ray system (all distances in mm).

    Attributes:
        source_to_detector_mm: distance from focal spot to detector plane (SID).
        source_to_isocenter_mm: distance from focal spot to the rotation centre.
        detector_rows_px, detector_cols_px: detector size in pixels.
        pixel_size_mm: detector pixel pitch (square pixels).
    """

    source_to_detector_mm: float = 1020.0
    source_to_isocenter_mm: float = 530.0
    detector_rows_px: int = 2250
    detector_cols_px: int = 2250
    pixel_size_mm: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.source_to_isocenter_mm < self.source_to_detector_mm:
            raise ValueError(
                "CarmGeometry: need 0 < source_to_isocenter_mm < source_to_detector_mm, got "
                f"{self.source_to_isocenter_mm} and {self.source_to_detector_mm}"
            )
        if self.detector_rows_px < 1 or self.detector_cols_px < 1 or self.pixel_size_mm <= 0:
            raise ValueError("CarmGeometry: detector size and pixel_size_mm must be positive")

    @property
    def detector_width_mm(self) -> float:
        return self.detector_cols_px * self.pixel_size_mm

    @property
    def detector_height_mm(self) -> float:
        return self.detector_rows_px * self.pixel_size_mm

    @property
    def field_of_view_at_isocenter_mm(self) -> float:
        """Side of the square the detector sees in the plane through the isocentre, normal to
        the beam (mm): detector height × source_to_isocenter / source_to_detector."""
        return self.detector_height_mm * self.source_to_isocenter_mm / self.source_to_detector_mm

    def resized(self, rows_px: int, cols_px: int | None = None) -> CarmGeometry:
        """Same detector area sampled with ``rows_px x cols_px`` pixels (binning).

        The pixel size is scaled so that the field of view along the rows is kept;
        with ``cols_px`` different from the aspect-preserving value the columns are
        cropped/extended around the centre.
        """
        cols_px = rows_px if cols_px is None else cols_px
        pixel_size_mm = self.detector_height_mm / rows_px
        return replace(
            self, detector_rows_px=rows_px, detector_cols_px=cols_px, pixel_size_mm=pixel_size_mm
        )

    def cropped(self, fraction: float) -> CarmGeometry:
        """Central crop keeping ``fraction`` of the detector side (same pixel size)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
        return replace(
            self,
            detector_rows_px=max(1, round(self.detector_rows_px * fraction)),
            detector_cols_px=max(1, round(self.detector_cols_px * fraction)),
        )


#: Named geometries. ``mobile_carm`` is the original study's DeepDRR MobileCArm set-up
#: (2250 px at 0.2 mm, SID 1020 mm): 450 mm × 530 / 1020 = 234 mm seen at the isocentre,
#: less than an adult chest, so a DRR can crop the apices and costophrenic angles.
#: ``mobile_carm_wide`` is the same C-arm (distances, so the same magnification and
#: perspective) with a detector 2250 px at 0.36 mm = 810 mm wide: 421 mm at the isocentre,
#: a whole adult chest; no C-arm has that detector, it changes only the field of view (for a
#: study of whether cropping matters). ``pa_chest`` is a standing PA chest radiograph at
#: 1800 mm SID with a 43 cm detector and the patient's chest 150 mm from the detector
#: (393 mm at the isocentre).
class GeometryPreset(StrEnum):
    """The named X-ray systems of :data:`GEOMETRY_PRESETS` (``projector.geometry``)."""

    mobile_carm = "mobile_carm"
    mobile_carm_wide = "mobile_carm_wide"
    pa_chest = "pa_chest"


GEOMETRY_PRESETS: dict[str, CarmGeometry] = {
    GeometryPreset.mobile_carm: CarmGeometry(1020.0, 530.0, 2250, 2250, 0.2),
    GeometryPreset.mobile_carm_wide: CarmGeometry(1020.0, 530.0, 2250, 2250, 0.36),
    GeometryPreset.pa_chest: CarmGeometry(1800.0, 1650.0, 3000, 3000, 0.143),
}


def make_geometry(
    preset: str = "mobile_carm",
    image_size_px: int | None = None,
    source_to_detector_mm: float | None = None,
    source_to_isocenter_mm: float | None = None,
    detector_size_mm: float | None = None,
    crop_fraction: float = 1.0,
) -> CarmGeometry:
    """A preset geometry with optional overrides, cropped and binned to an image size.

    The central ``crop_fraction`` of the (square) detector is kept and sampled with
    ``image_size_px`` pixels per side (None = the preset's pixel pitch).
    """
    if preset not in GEOMETRY_PRESETS:
        raise ValueError(
            f"unknown geometry preset {preset!r}; allowed: {[str(g) for g in GeometryPreset]}"
        )
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    base = GEOMETRY_PRESETS[preset]
    sid = (
        base.source_to_detector_mm
        if source_to_detector_mm is None
        else float(source_to_detector_mm)
    )
    sad = (
        base.source_to_isocenter_mm
        if source_to_isocenter_mm is None
        else float(source_to_isocenter_mm)
    )
    size_mm = base.detector_height_mm if detector_size_mm is None else float(detector_size_mm)
    size_mm *= crop_fraction
    n_px = round(size_mm / base.pixel_size_mm) if image_size_px is None else int(image_size_px)
    return CarmGeometry(sid, sad, n_px, n_px, size_mm / n_px)


@dataclass
class GeometrySettings:
    """The X-ray system of the ``projector`` group: a preset, optionally overridden field by
    field (None = the preset's value), its central ``crop_fraction`` binned to ``image_size_px``.
    Distances in mm."""

    image_size_px: int = bounded(
        512, ge=16
    )  # DRR side in pixels; smaller DRRs hold too few to window
    geometry: GeometryPreset = GeometryPreset.mobile_carm  # the X-ray system (GEOMETRY_PRESETS)
    source_to_detector_mm: float | None = bounded(None, gt=0)  # SID; None = the preset's
    source_to_isocenter_mm: float | None = bounded(None, gt=0)  # None = the preset's
    detector_size_mm: float | None = bounded(None, gt=0)  # detector side; None = the preset's
    crop_fraction: float = bounded(1.0, ge=0.05, le=1)  # central part of the detector kept

    def carm_geometry(self) -> CarmGeometry:
        """The :class:`CarmGeometry` these settings describe (:func:`make_geometry`)."""
        return make_geometry(
            str(self.geometry),
            self.image_size_px,
            self.source_to_detector_mm,
            self.source_to_isocenter_mm,
            self.detector_size_mm,
            self.crop_fraction,
        )


@dataclass(frozen=True)
class CarmPose:
    """Extrinsic pose of the C-arm about an isocentre.

    Attributes:
        alpha_deg: cranial (+) / caudal (-) tilt in degrees.
        beta_deg: LAO (+) / RAO (-) rotation in degrees.
        isocenter_mm: world (RAS, mm) rotation centre; None = volume centre.
    """

    alpha_deg: float = 0.0
    beta_deg: float = 0.0
    isocenter_mm: tuple[float, float, float] | None = field(default=None)


def _rot_x(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


#: rest-pose unit vectors in RAS: beam direction (source -> detector), image column
#: direction (patient's left), image row direction (patient's feet).
_REST_BEAM = np.array([0.0, 1.0, 0.0])
_REST_COLS = np.array([-1.0, 0.0, 0.0])
_REST_ROWS = np.array([0.0, 0.0, -1.0])


def carm_frame(pose: CarmPose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (beam, cols, rows) of the C-arm in world RAS for ``pose``.

    ``beam`` points from source to detector, ``cols`` along increasing image column
    index, ``rows`` along increasing image row index. Each is shape (3,).
    """
    rot = _rot_z(math.radians(pose.beta_deg)) @ _rot_x(math.radians(pose.alpha_deg))
    return rot @ _REST_BEAM, rot @ _REST_COLS, rot @ _REST_ROWS


def volume_center_world(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World position (mm) of the centre of a voxel grid of ``shape`` (3 first dims)."""
    center_ijk = (np.asarray(shape[:3], dtype=float) - 1.0) / 2.0
    return np.asarray(affine, dtype=float)[:3, :3] @ center_ijk + np.asarray(affine)[:3, 3]


def _isocenter(pose: CarmPose, default_isocenter_mm: np.ndarray | None) -> np.ndarray:
    if pose.isocenter_mm is not None:
        return np.asarray(pose.isocenter_mm, dtype=float)
    if default_isocenter_mm is None:
        raise ValueError("CarmPose.isocenter_mm is None and no volume centre was given")
    return np.asarray(default_isocenter_mm, dtype=float)


def source_world(
    pose: CarmPose, geometry: CarmGeometry, default_isocenter_mm: np.ndarray | None = None
) -> np.ndarray:
    """Focal spot position in world mm, shape (3,)."""
    beam, _, _ = carm_frame(pose)
    return _isocenter(pose, default_isocenter_mm) - geometry.source_to_isocenter_mm * beam


def detector_pixels_world(
    pose: CarmPose, geometry: CarmGeometry, default_isocenter_mm: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detector description in world mm.

    Returns:
        (origin, d_col, d_row, source): ``origin`` is the centre of pixel (row 0,
        col 0); pixel (r, c) lies at ``origin + c * d_col + r * d_row``; ``d_col`` and
        ``d_row`` are one-pixel steps (mm); all shape (3,).
    """
    beam, cols, rows = carm_frame(pose)
    source = source_world(pose, geometry, default_isocenter_mm)
    center = source + geometry.source_to_detector_mm * beam
    px = geometry.pixel_size_mm
    origin = (
        center
        - (geometry.detector_cols_px - 1) / 2.0 * px * cols
        - (geometry.detector_rows_px - 1) / 2.0 * px * rows
    )
    return origin, px * cols, px * rows, source


def project_points(
    points_mm: np.ndarray,
    pose: CarmPose,
    geometry: CarmGeometry,
    default_isocenter_mm: np.ndarray | None = None,
) -> np.ndarray:
    """Project world points (N, 3) mm to detector (row, col) pixel coordinates (N, 2).

    Pixel centres have integer coordinates; (0, 0) is the top-left pixel.
    """
    beam, cols, rows = carm_frame(pose)
    source = source_world(pose, geometry, default_isocenter_mm)
    rel = np.atleast_2d(np.asarray(points_mm, dtype=float)) - source
    depth = rel @ beam
    if np.any(depth <= 0):
        raise ValueError("project_points: a point lies behind the X-ray source")
    on_plane = rel * (geometry.source_to_detector_mm / depth)[:, None]
    px = geometry.pixel_size_mm
    col = on_plane @ cols / px + (geometry.detector_cols_px - 1) / 2.0
    row = on_plane @ rows / px + (geometry.detector_rows_px - 1) / 2.0
    return np.stack([row, col], axis=1)
