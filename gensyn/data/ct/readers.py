"""Readers of CT volumes -> (int16 HU volume, RAS affine): DICOM series, NIfTI, NRRD, RAD-ChestCT NPZ.

Geometry convention: see :mod:`gensyn.data.ct.convert`. Every reader raises
:class:`ConversionError` naming the file and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gensyn.base.bounds import bounded, check_instance

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
AXIS_CODES = {
    "R": (1, 0, 0),
    "L": (-1, 0, 0),
    "A": (0, 1, 0),
    "P": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}
#: never read as DICOM slices (other formats may share a folder with a series)
NON_DICOM_SUFFIXES = {".xml", ".txt", ".json", ".csv", ".md", ".zip", ".md5"} | {
    ".nii",
    ".gz",
    ".nrrd",
    ".nhdr",
    ".npz",
    ".png",
    ".jpg",
    ".jpeg",
}
INT16_MIN, INT16_MAX = -32768, 32767


class ConversionError(ValueError):
    """An input volume cannot be converted; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class NpzOptions:
    """How to read a RAD-ChestCT style NPZ (arrays carry no geometry of their own): the
    ``ct_dataset.convert`` group's ``npz_*`` keys.

    ``npz_spacing_mm`` None means "must come from the file" (arrays ``spacing_mm`` or
    ``spacing``), else the volume fails: never a silent identity affine. ``npz_axis_codes``:
    the world direction each array axis points to, RAS letters (``"IPL"``: axis 0 runs
    head->feet, axis 1 front->back, axis 2 right->left).
    """

    npz_key: str = "ct"  # array name inside each NPZ
    npz_spacing_mm: list[float] | None = bounded(None, gt=0, length=3)  # per array axis, mm
    npz_axis_codes: str = "IPL"  # RAS letters each NPZ array axis points to

    def __post_init__(self) -> None:
        check_instance(self, "ct_dataset.convert.")


# --------------------------------------------------------------------------- helpers
def to_int16_hu(values: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """Round HU values to int16, refusing NaN/inf, out-of-range values and non-numeric data."""
    if (
        values.dtype == np.bool_
        or not np.issubdtype(values.dtype, np.number)
        or np.issubdtype(values.dtype, np.complexfloating)
    ):
        raise ConversionError(
            path, f"wrong dtype {values.dtype}: expected HU as signed integers or floats"
        )
    if np.issubdtype(values.dtype, np.unsignedinteger):
        raise ConversionError(
            path,
            f"wrong dtype {values.dtype}: HU need a signed type (air is -1000 HU); "
            "an unsigned volume is a label map or lacks its rescale offset",
        )
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise ConversionError(path, "volume contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if lo < INT16_MIN or hi > INT16_MAX:
        raise ConversionError(path, f"HU range [{lo:g}, {hi:g}] does not fit int16")
    if values.dtype == np.int16:
        return values
    return (
        np.rint(values).astype(np.int16)
        if np.issubdtype(values.dtype, np.floating)
        else values.astype(np.int16)
    )


def affine_from_codes(
    axis_codes: str, spacing_mm: Sequence[float], shape: Sequence[int]
) -> np.ndarray:
    """RAS affine for an array whose axes point along ``axis_codes``, centred on the origin."""
    codes = axis_codes.upper()
    if (
        len(codes) != 3
        or set(codes) - set(AXIS_CODES)
        or len({c for c in codes.translate(str.maketrans("LPI", "RAS"))}) != 3
    ):
        raise ValueError(
            f"axis_codes must be 3 letters from R/L, A/P, S/I, one of each pair; got {axis_codes!r}"
        )
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm must be 3 positive numbers, got {list(spacing_mm)}")
    affine = np.eye(4)
    for a, c in enumerate(codes):
        affine[:3, a] = np.asarray(AXIS_CODES[c], float) * float(spacing_mm[a])
    centre = (np.asarray(shape, float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


# --------------------------------------------------------------------------- DICOM
def read_dicom_series(folder: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CT series (a folder of single-frame DICOM files) -> (int16 HU[i, j, k], RAS affine).

    Voxel ``(i, j, k)`` is column ``i``, row ``j`` of the ``k``-th slice along the slice
    normal. Checks: one SeriesInstanceUID, one orientation and image size, monochrome
    pixels, evenly spaced slices with no gap (a gap of more than 1.5 x the median spacing
    is reported as missing slices). Per-slice RescaleSlope/Intercept are applied.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() not in NON_DICOM_SUFFIXES
        and not p.name.startswith(".")
        and p.name != "LICENSE"
    )
    if not files:
        raise ConversionError(folder, "no DICOM files in folder")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise ConversionError(f, f"unreadable DICOM file ({exc})") from exc
        if "PixelData" not in ds:
            continue  # e.g. a structured report in the series folder
        slices.append((f, ds))
    if len(slices) < 2:
        raise ConversionError(folder, f"{len(slices)} image slice(s); a CT volume needs at least 2")
    modalities = sorted({str(ds.get("Modality", "")) for _, ds in slices} - {"", "CT"})
    if modalities:  # an MR or PET series has no HU: its "DRRs" would be meaningless
        raise ConversionError(
            folder,
            f"series {folder.name} has Modality {', '.join(modalities)}; only CT series "
            "(Modality CT) can be converted: remove it from ct_dataset.raw_dir",
        )
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in slices})
    if len(uids) > 1:
        raise ConversionError(
            folder, f"mixed series: {len(uids)} SeriesInstanceUIDs ({', '.join(uids[:3])})"
        )
    first_path, first = slices[0]
    for f, ds in slices:
        if ds.get("SamplesPerPixel", 1) != 1 or not str(
            ds.get("PhotometricInterpretation", "MONOCHROME2")
        ).startswith("MONOCHROME"):
            raise ConversionError(
                f,
                f"wrong pixel type {ds.get('PhotometricInterpretation')}: a CT needs monochrome pixels",
            )
        for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if tag not in ds:
                raise ConversionError(f, f"missing {tag}: geometry unknown")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ConversionError(
                f,
                f"image size {ds.Rows}x{ds.Columns} differs from {first.Rows}x{first.Columns} in {first_path.name}",
            )
        if not np.allclose(
            np.asarray(ds.ImageOrientationPatient, float),
            np.asarray(first.ImageOrientationPatient, float),
            atol=1e-4,
        ):
            raise ConversionError(
                f, "ImageOrientationPatient differs between slices (mixed series?)"
            )
    orient = np.asarray(first.ImageOrientationPatient, float)
    row_dir, col_dir = orient[:3], orient[3:]  # direction of increasing column index, row index
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for _, ds in slices])
    order = np.argsort(positions @ normal)
    positions = positions[order]
    slices = [slices[i] for i in order]
    along = positions @ normal
    steps = np.diff(along)
    median = float(np.median(steps))
    if median <= 1e-6:
        raise ConversionError(folder, "duplicate slice positions (two images at the same place)")
    tol = max(0.05 * median, 0.01)
    for n, step in enumerate(steps):
        if step > 1.5 * median:
            missing = round(step / median) - 1
            raise ConversionError(
                folder,
                f"missing slices: gap of {step:.2f} mm between {slices[n][0].name} and "
                f"{slices[n + 1][0].name} (median spacing {median:.2f} mm, about {missing} missing)",
            )
        if abs(step - median) > tol:
            raise ConversionError(
                folder,
                f"uneven slice spacing: {step:.3f} mm next to {slices[n][0].name}, median {median:.3f} mm",
            )
    # The slice step vector from first to last position keeps gantry tilt (a sheared affine).
    step_vec = (positions[-1] - positions[0]) / (len(positions) - 1)
    row_spacing, col_spacing = (
        float(v) for v in first.PixelSpacing
    )  # between rows, between columns
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = step_vec
    affine_lps[:3, 3] = positions[0]
    affine = affine_lps.copy()
    affine[:3, :] = LPS_TO_RAS @ affine_lps[:3, :]
    # Slices are converted one at a time straight into int16 (memory: one volume).
    planes = np.empty((len(slices), int(first.Rows), int(first.Columns)), np.int16)
    for n, (f, ds) in enumerate(slices):
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # decoders raise many types
            raise ConversionError(f, f"cannot decode pixel data ({exc})") from exc
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope == 1.0 and intercept.is_integer() and np.issubdtype(pixels.dtype, np.integer):
            hu: np.ndarray = pixels.astype(np.int32) + int(intercept)
        else:
            hu = np.rint(pixels * slope + intercept)
        lo, hi = float(hu.min()), float(hu.max())
        if lo < INT16_MIN or hi > INT16_MAX:
            raise ConversionError(f, f"HU range [{lo:g}, {hi:g}] does not fit int16")
        planes[n] = hu
    # planes[k, row, col] in C order is voxel (i=col, j=row, k) in Fortran order: the
    # transposed view is what NIfTI stores, without copying 300 MB around.
    return planes.transpose(2, 1, 0), affine


# --------------------------------------------------------------------------- NIfTI
def read_nifti_volume(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI CT (``.nii``/``.nii.gz``) -> (int16 HU, its own RAS affine).

    The affine is nibabel's (the sform if set, else the qform): kept as it is, nothing is
    resampled. ``scl_slope``/``scl_inter`` are applied; a trailing axis of length 1 is dropped.
    """
    import zlib

    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img: Any = nib.load(str(path))
        affine = np.asarray(img.affine, dtype=np.float64)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError) as exc:
        raise ConversionError(path, f"unreadable NIfTI ({exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ConversionError(path, f"shape {data.shape}; expected a 3-D CT volume")
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ConversionError(path, "degenerate or non-finite affine: voxel geometry unknown")
    return to_int16_hu(data, path), affine


# --------------------------------------------------------------------------- NRRD
_NRRD_SPACES = {
    "left-posterior-superior": LPS_TO_RAS,
    "lps": LPS_TO_RAS,
    "right-anterior-superior": np.eye(3),
    "ras": np.eye(3),
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0]),
    "las": np.diag([-1.0, 1.0, 1.0]),
}


def read_nrrd_volume(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NRRD CT -> (int16 HU, RAS affine) from ``space``, ``space directions`` and
    ``space origin``. Without a ``space`` field, ``spacings`` give a diagonal affine (the
    orientation is then reported as unknown by the validation row's ``oriented`` column).
    """
    import nrrd

    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError ...
        raise ConversionError(path, f"unreadable NRRD ({exc})") from exc
    if data.ndim != 3:
        raise ConversionError(path, f"{data.ndim}-D data; expected a 3-D CT volume")
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    if directions is not None and space:
        if space not in _NRRD_SPACES:
            raise ConversionError(
                path, f"unsupported NRRD space {space!r}; allowed: {sorted(_NRRD_SPACES)}"
            )
        dirs = np.asarray(directions, float)
        if dirs.shape != (3, 3) or not np.isfinite(dirs).all():
            raise ConversionError(path, f"space directions {directions!r} is not a 3x3 matrix")
        to_ras = _NRRD_SPACES[space]
        affine = np.eye(4)
        affine[:3, :3] = to_ras @ dirs.T  # NRRD lists one direction vector per axis
        affine[:3, 3] = to_ras @ np.asarray(header.get("space origin", np.zeros(3)), float)
    elif header.get("spacings") is not None:
        spacings = np.asarray(header["spacings"], float)
        if spacings.shape != (3,) or not (np.isfinite(spacings).all() and (spacings > 0).all()):
            raise ConversionError(
                path, f"spacings {header['spacings']!r} are not 3 positive numbers"
            )
        affine = np.diag([*spacings, 1.0])
    else:
        raise ConversionError(path, "no 'space directions' or 'spacings': voxel spacing unknown")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ConversionError(path, "space directions are degenerate (zero volume voxels)")
    return to_int16_hu(data, path), affine


# --------------------------------------------------------------------------- NPZ
def read_npz_volume(
    path: str | os.PathLike[str], options: NpzOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Read a RAD-ChestCT NPZ -> (int16 HU, RAS affine) with spacing from the file or config."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if options.npz_key not in npz.files:
                raise ConversionError(
                    path,
                    f"no array {options.npz_key!r} (has {npz.files}); set "
                    "ct_dataset.convert.npz_key",
                )
            data = npz[options.npz_key]
            spacing = next((npz[k] for k in ("spacing_mm", "spacing") if k in npz.files), None)
    except ConversionError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise ConversionError(path, f"unreadable NPZ ({exc})") from exc
    if data.ndim != 3:
        raise ConversionError(
            path, f"array {options.npz_key!r} has shape {data.shape}; expected 3-D"
        )
    spacing_mm = (
        np.asarray(spacing, float).ravel() if spacing is not None else options.npz_spacing_mm
    )
    if spacing_mm is None:
        raise ConversionError(
            path,
            "voxel spacing unknown: the file has no 'spacing_mm' array and "
            "ct_dataset.convert.npz_spacing_mm is not set",
        )
    return to_int16_hu(data, path), affine_from_codes(
        options.npz_axis_codes, list(spacing_mm), data.shape
    )
