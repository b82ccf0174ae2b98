"""DICOM chest radiographs (CR, DX) -> display grey values, as the DICOM standard renders them.

The display pipeline of DICOM PS3.3 C.11 in order: stored values -> Modality LUT
(``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence) -> VOI LUT (a VOI LUT
Sequence, else ``WindowCenter``/``WindowWidth`` with ``VOILUTFunction``) -> presentation
(``MONOCHROME1``: the lowest value is white, so it is inverted). pydicom's
``apply_modality_lut`` and ``apply_voi_lut`` do the first two; this module maps their output
range to [0, 1] and inverts MONOCHROME1, so that bone is bright in every output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: X-ray modalities accepted (DR and OT are written by some vendors and scanners of film)
XRAY_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", ""})
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """A ``.dcm``/``.dicom`` file, or any file with DICOM's ``DICM`` marker at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _voi_output_range(ds: Any) -> tuple[float, float]:
    """The value range the VOI transform maps into (PS3.3 C.11.2): the VOI LUT's entries
    (``2**bits - 1``), else, for a window, the modality-rescaled stored range (as pydicom's
    ``apply_windowing``), else the modality LUT's or rescaled stored range."""
    if "VOILUTSequence" in ds and ds.VOILUTSequence:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = -float(2 ** (int(ds.BitsStored) - 1)), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and not ds.get("ModalityLUTSequence"):
        lo, hi = sorted(
            (lo * float(slope) + float(intercept), hi * float(slope) + float(intercept))
        )
    return lo, hi


def read_dicom_xray(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a single-frame grey DICOM radiograph -> float32 [rows, columns] in [0, 1],
    0 black and 1 white as displayed (bone bright). Raises ValueError naming the file."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as exc:  # pydicom and its decoders raise many types
        raise ValueError(f"cannot read DICOM {path}: {type(exc).__name__}: {exc}") from exc
    modality = str(ds.get("Modality", ""))
    if modality not in XRAY_MODALITIES:
        raise ValueError(
            f"DICOM {path} has Modality {modality}; a radiograph is CR or DX "
            "(CTs belong in ct_dataset, not dataset)"
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or stored.ndim != 2:
        raise ValueError(
            f"DICOM {path}: {photometric or 'no PhotometricInterpretation'}, shape "
            f"{stored.shape}; expected one grey (MONOCHROME1/2) frame"
        )
    lo, hi = _voi_output_range(ds)
    lut = ds.get("VOILUTSequence")
    if lut and int(lut[0].LUTDescriptor[2]) == 8:
        # pydicom 3.0 indexes an 8-bit LUT with uint8 indices, which wrap past 255 entries;
        # read as 16-bit entries the same values index correctly (the range is kept above)
        entries, first = lut[0].LUTDescriptor[:2]
        lut[0].LUTDescriptor = [entries, first, 16]
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    display = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if photometric == "MONOCHROME1":  # the lowest value is white
        display = 1.0 - display
    return display.astype(np.float32)
