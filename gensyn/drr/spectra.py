"""X-ray tube spectra from spekpy, kept in an on-disk cache.

spekpy takes about a second per spectrum and its wheel is ~160 MB (its physics tables). The
few spectra a study uses (one per kVp / filtration / anode angle / bin width) are written
once to ``$GENSYN_SPECTRUM_CACHE`` (default ``$XDG_CACHE_HOME/gensyn/spectra``, i.e.
``~/.cache/gensyn/spectra``) and read from there afterwards, by every process; a node that
cannot install spekpy can be given the cached files instead (scripts/gpu_carry.sh).
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """Where spectra are cached (``GENSYN_SPECTRUM_CACHE``, else the XDG cache folder)."""
    env = os.environ.get("GENSYN_SPECTRUM_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gensyn" / "spectra"


def cache_file(kvp: float, filtration_mm_al: float, anode_angle_deg: float, dk: float) -> Path:
    """The cache file of one spectrum."""
    return cache_dir() / f"kvp{kvp:g}_al{filtration_mm_al:g}_th{anode_angle_deg:g}_dk{dk:g}.npz"


def _compute(kvp: float, filtration_mm_al: float, anode_angle_deg: float, dk: float):
    try:
        import spekpy
    except ImportError as exc:
        raise ImportError(
            f"spekpy is not installed and no cached spectrum exists at "
            f"{cache_file(kvp, filtration_mm_al, anode_angle_deg, dk)}; install spekpy "
            "(requirements/common.txt) or copy cached spectra there (GENSYN_SPECTRUM_CACHE)"
        ) from exc
    spec = spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=dk)
    if filtration_mm_al > 0:
        spec.filter("Al", filtration_mm_al)
    energies, fluence = spec.get_spectrum()
    return np.asarray(energies, dtype=float), np.asarray(fluence, dtype=float)


@lru_cache(maxsize=16)
def spekpy_spectrum(
    kvp: float, filtration_mm_al: float, anode_angle_deg: float, dk: float
) -> tuple[np.ndarray, np.ndarray]:
    """(energies keV, fluence per bin) of a tungsten tube: from the cache, else spekpy."""
    path = cache_file(kvp, filtration_mm_al, anode_angle_deg, dk)
    if path.is_file():
        with np.load(path) as data:
            return np.asarray(data["energies_kev"]), np.asarray(data["fluence"])
    energies, fluence = _compute(kvp, filtration_mm_al, anode_angle_deg, dk)
    tmp = None
    try:  # atomic: concurrent jobs may write the same spectrum
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".partial.npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, energies_kev=energies, fluence=fluence)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs the recomputation
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return energies, fluence
