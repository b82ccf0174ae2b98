"""CT volumes (DICOM series, NIfTI, NRRD, RAD-ChestCT NPZ) -> NIfTI, int16 HU, true geometry.

Convention (NIfTI's own): the affine maps voxel indices ``(i, j, k)`` to RAS+ world
coordinates in millimetres, +x towards the patient's Right, +y Anterior, +z Superior.
DICOM and most NRRD files use LPS+ (+x Left, +y Posterior), so their x and y rows are negated.
The affine's columns are the voxel step vectors (spacing times direction), its last column
the world position of voxel (0, 0, 0); no axis is flipped or resampled, so every voxel keeps
the world position the scanner gave it.

Each converter returns ``(hu_int16_volume, affine_ras)`` or raises :class:`ConversionError`
with the file and the reason; :func:`convert_volume` writes the NIfTI atomically and returns
a validation row. :func:`convert_many` converts many volumes in parallel and collects
failures instead of stopping.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gensyn.base.processes import init_worker
from gensyn.data.ct.readers import (
    NON_DICOM_SUFFIXES,
    ConversionError,
    NpzOptions,
    read_dicom_series,
    read_nifti_volume,
    read_npz_volume,
    read_nrrd_volume,
)

__all__ = [
    "ConversionError",
    "NpzOptions",
    "VolumeSource",
    "convert_many",
    "convert_volume",
    "discover_sources",
    "read_dicom_series",
    "read_nifti_volume",
    "read_npz_volume",
    "read_nrrd_volume",
    "read_volume",
    "validation_row",
]


@dataclass(frozen=True)
class VolumeSource:
    """One volume to convert: an id (output name), its format and where it is."""

    volume_id: str
    fmt: str  # "dicom" (a folder of one series), "nifti", "nrrd" or "npz"
    path: str


#: Volume formats, and the file names of the single-file ones (DICOM: a folder per series).
FORMATS = ("dicom", "nifti", "nrrd", "npz")
FILE_SUFFIXES = {"nifti": (".nii.gz", ".nii"), "nrrd": (".nrrd", ".nhdr"), "npz": (".npz",)}


# --------------------------------------------------------------------------- driver
def read_volume(
    source: VolumeSource, npz: NpzOptions | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on ``source.fmt``; returns (int16 HU volume, RAS affine)."""
    if source.fmt == "dicom":
        return read_dicom_series(source.path)
    if source.fmt == "nifti":
        return read_nifti_volume(source.path)
    if source.fmt == "nrrd":
        return read_nrrd_volume(source.path)
    if source.fmt == "npz":
        return read_npz_volume(source.path, npz or NpzOptions())
    raise ValueError(f"unknown volume format {source.fmt!r}; allowed: {', '.join(FORMATS)}")


def validation_row(volume_id: str, volume: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Shape, spacing (mm), origin (mm), orientation codes and HU range of one volume."""
    import nibabel as nib

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return {
        "volume_id": volume_id,
        "shape": "x".join(str(s) for s in volume.shape),
        "spacing_x_mm": round(float(spacing[0]), 6),
        "spacing_y_mm": round(float(spacing[1]), 6),
        "spacing_z_mm": round(float(spacing[2]), 6),
        "origin_x_mm": round(float(affine[0, 3]), 4),
        "origin_y_mm": round(float(affine[1, 3]), 4),
        "origin_z_mm": round(float(affine[2, 3]), 4),
        "orientation": "".join(nib.aff2axcodes(affine)),
        "hu_min": int(volume.min()),
        "hu_max": int(volume.max()),
        "hu_mean": round(float(volume.mean(dtype=np.float64)), 2),
    }


def convert_volume(
    source: VolumeSource,
    out_dir: str | os.PathLike[str],
    npz: NpzOptions | None = None,
    suffix: str = ".nii.gz",
) -> dict[str, Any]:
    """Convert one volume to ``out_dir/<volume_id><suffix>`` (atomic) and return its validation row."""
    from gensyn.base.io import write_nifti

    volume, affine = read_volume(source, npz)
    out = Path(out_dir) / f"{source.volume_id}{suffix}"
    write_nifti(out, volume, affine)
    row = validation_row(source.volume_id, volume, affine)
    row.update(patient_id=patient_id(source), source=source.path, fmt=source.fmt, nifti=out.name)
    return row


def patient_id(source: VolumeSource) -> str:
    """The DICOM PatientID of a series (first file), else the volume id (NIfTI, NRRD, NPZ)."""
    if source.fmt == "dicom":
        import pydicom

        for f in sorted(f for f in Path(source.path).iterdir() if is_dicom_file(f)):
            try:
                value = pydicom.dcmread(f, stop_before_pixels=True).get("PatientID")
            except Exception:  # unreadable files are reported by the converter itself
                continue
            if value:
                return str(value)
    return source.volume_id


def _convert_or_fail(
    args: tuple[VolumeSource, str, NpzOptions | None, str],
) -> tuple[str, dict[str, Any]]:
    source, out_dir, npz, suffix = args
    done = Path(out_dir) / f"{source.volume_id}{suffix}"
    try:
        if done.is_file():  # written atomically by an earlier run: resume
            import nibabel as nib

            img: Any = nib.load(done)
            row = validation_row(source.volume_id, np.asarray(img.dataobj), img.affine)
            row.update(
                patient_id=patient_id(source), source=source.path, fmt=source.fmt, nifti=done.name
            )
            return "ok", row
        return "ok", convert_volume(source, out_dir, npz, suffix)
    except ConversionError as exc:
        return "failed", {"volume_id": source.volume_id, "file": exc.path, "reason": exc.reason}
    except (OSError, ValueError, MemoryError) as exc:
        return "failed", {
            "volume_id": source.volume_id,
            "file": source.path,
            "reason": f"{type(exc).__name__}: {exc}",
        }


def convert_many(
    sources: Sequence[VolumeSource],
    out_dir: str | os.PathLike[str],
    *,
    npz: NpzOptions | None = None,
    workers: int = 1,
    suffix: str = ".nii.gz",
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert volumes in ``workers`` processes. A bad volume becomes a failure row
    ``{volume_id, file, reason}``; the others still convert. Volumes whose NIfTI already
    exists are skipped (resumable). Returns (validation rows, failure rows).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [s.volume_id for s in sources]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"volume ids must be unique; repeated: {dup[:5]}")
    jobs = [(s, str(out), npz, suffix) for s in sources]
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    results: Any
    if workers <= 1:
        results = map(_convert_or_fail, jobs)
        pool = None
    else:
        # spawn, as the other stages' pools: forking a process that may run JAX (the demo
        # pipeline, a test session) can deadlock the child
        ctx = multiprocessing.get_context("spawn")
        # workers end with this process: a killed convert leaves none writing without the lock
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=init_worker,
            initargs=(os.getpid(),),
        )
        results = pool.map(_convert_or_fail, jobs)
    try:
        for status, row in tqdm(
            results, total=len(jobs), unit="volume", disable=not progress, desc="convert"
        ):
            (rows if status == "ok" else failures).append(row)
    except BaseException:  # Ctrl-C or an error: volumes not yet started stay unconverted
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        raise
    if pool is not None:
        pool.shutdown()
    return rows, failures


def file_format(path: Path) -> str | None:
    """``nifti``, ``nrrd`` or ``npz`` from a file name, else None."""
    name = path.name.lower()
    return next((f for f, sfx in FILE_SUFFIXES.items() if name.endswith(sfx)), None)


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or a file of another name with DICOM's ``DICM`` marker at byte 128
    (series from scanners and PACS exports often have no suffix)."""
    from gensyn.data.xray.dicom import DICOM_SUFFIXES, is_dicom

    suffix = path.suffix.lower()
    if suffix not in DICOM_SUFFIXES and (
        suffix in NON_DICOM_SUFFIXES or path.name.startswith(".") or file_format(path)
    ):
        return False
    return is_dicom(path)  # the suffix, else the DICM marker


def _volume_name(path: Path, fmt: str) -> str:
    name = path.name
    for sfx in FILE_SUFFIXES.get(fmt, ()):
        if name.lower().endswith(sfx):
            return name[: -len(sfx)]
    return name


def discover_sources(raw_dir: str | os.PathLike[str], fmt: str) -> list[VolumeSource]:
    """Find volumes under ``raw_dir``: DICOM series folders, ``*.nii(.gz)``, ``*.nrrd``/``*.nhdr``
    or ``*.npz``; ``fmt="auto"`` finds every format, each file or folder by its own kind.

    Volume ids are the file name without its format's suffix, or the folder name (DICOM:
    the SeriesInstanceUID folder the NBIA downloader writes), made unique by their relative
    path if needed.
    """
    if fmt not in (*FORMATS, "auto"):
        raise ValueError(f"unknown volume format {fmt!r}; allowed: auto, {', '.join(FORMATS)}")
    root = Path(raw_dir)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.endswith(".unpacking") for part in p.parts)
    )
    found: list[tuple[str, str, Path]] = []  # (volume name, format, path)
    if fmt in ("dicom", "auto"):
        dirs = sorted({p.parent for p in files if is_dicom_file(p)})
        found += [(d.name, "dicom", d) for d in dirs]
    for p in files:
        kind = file_format(p)
        if kind is not None and fmt in (kind, "auto"):
            found.append((_volume_name(p, kind), kind, p))
    found.sort(key=lambda f: str(f[2]))
    names = [n for n, _, _ in found]
    out = []
    for name, kind, p in found:
        if names.count(name) > 1:
            name = _volume_name(p, kind)
            name = str(p.parent.relative_to(root) / name).replace(os.sep, "__")
        out.append(VolumeSource(volume_id=name, fmt=kind, path=str(p)))
    return out


def coronal_preview(
    nifti: str | os.PathLike[str],
    height_px: int = 256,
    window_hu: tuple[float, float] = (-1000.0, 1000.0),
) -> np.ndarray:
    """A coronal mid-slice of a NIfTI CT as uint8, in radiological display with true aspect.

    The volume is brought to the closest RAS orientation first, so the head is at the top and
    the patient's right on the viewer's left whatever the file's axis order: a quick visual
    check that the geometry survived conversion. Height ``height_px``; width from the
    physical size (mm) of the volume.
    """
    import nibabel as nib
    from PIL import Image

    img: Any = nib.as_closest_canonical(nib.load(nifti))
    data = np.asarray(img.dataobj)
    spacing = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    plane = data[:, data.shape[1] // 2, :].astype(np.float32)  # (x: L->R, z: I->S)
    plane = plane.T[::-1, ::-1]  # rows superior->inferior, columns patient right->left
    lo, hi = window_hu
    grey = (np.clip((plane - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    height_mm, width_mm = plane.shape[0] * spacing[2], plane.shape[1] * spacing[0]
    width_px = max(1, round(height_px * width_mm / height_mm))
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(grey)).resize(
            (width_px, height_px), Image.Resampling.BILINEAR
        )
    )
