"""Procedural chest CT phantoms with labelled findings: the demo's SIMULATED CT data.

``generate_phantom(seed, labels)`` builds one patient: body wall, lungs with tapering
vessel trees, heart, mediastinum and great vessels, airways, spine, ribs with costal
cartilage, sternum, clavicles, scapulae, diaphragm domes with liver, stomach gas and spleen,
and inserts the requested findings (pleural effusion, pneumothorax, atelectasis,
cardiomegaly, pneumonia-like consolidation). Same seed and labels -> identical volume.

Orientation: the volume array is indexed ``hu[i, j, k]`` with i along +x (towards the
patient's right), j along +y (anterior), k along +z (superior); the affine maps (i, j, k)
to RAS+ world millimetres with the volume centred on the origin (nibabel axis codes
``('R', 'A', 'S')``). See docs/demo_data.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gensyn.data.phantom.anatomy import (
    Anatomy,
    AnatomyParams,
    Tissue,
    build_anatomy,
    heart_geometry,
    sample_anatomy,
)
from gensyn.data.phantom.bones import add_bones, sample_bones
from gensyn.data.phantom.findings import X_MIDLINE_MM, apply_findings
from gensyn.data.phantom.shapes import Grid, smooth_noise
from gensyn.study import FINDINGS

DEFAULT_SHAPE_VOX = (128, 128, 128)
DEFAULT_SPACING_MM = (2.8, 2.8, 2.6)  # 358 × 358 × 333 mm: a whole adult chest fits

# Mean HU and texture amplitude (HU per unit of the smooth random field) of each tissue.
_HU = {
    Tissue.AIR: (-1000.0, 0.0),
    Tissue.FAT: (-100.0, 12.0),
    Tissue.MUSCLE: (45.0, 10.0),
    Tissue.LUNG: (-850.0, 30.0),
    Tissue.HEART: (40.0, 6.0),
    Tissue.MEDIASTINUM: (-60.0, 25.0),
    Tissue.BLOOD: (42.0, 4.0),
    Tissue.AIRWAY: (-950.0, 15.0),
    Tissue.BONE_CORTICAL: (750.0, 90.0),
    Tissue.BONE_CANCELLOUS: (260.0, 50.0),
    Tissue.DISC: (85.0, 10.0),
    Tissue.CARTILAGE: (130.0, 25.0),
    Tissue.SPINAL_CANAL: (20.0, 5.0),
    Tissue.LIVER: (58.0, 6.0),
    Tissue.SPLEEN: (48.0, 5.0),
    Tissue.STOMACH: (25.0, 15.0),
    Tissue.GAS: (-960.0, 20.0),
    Tissue.ABDOMEN: (0.0, 40.0),
    Tissue.EFFUSION: (15.0, 5.0),
    Tissue.PNEUMOTHORAX: (-1000.0, 3.0),
    Tissue.ATELECTASIS: (35.0, 12.0),
    Tissue.CONSOLIDATION: (20.0, 40.0),
    Tissue.BONE_PLATE: (420.0, 60.0),
}
HU_MEAN = np.zeros(256, dtype=np.float32)
HU_TEXTURE = np.zeros(256, dtype=np.float32)
for _t, (_m, _s) in _HU.items():
    HU_MEAN[_t], HU_TEXTURE[_t] = _m, _s


@dataclass
class Phantom:
    """One simulated chest CT.

    ``hu``: int16 (nx, ny, nz) Hounsfield units; ``affine``: 4×4 voxel → RAS+ mm;
    ``tissue``: uint8 :class:`Tissue` labels; ``labels``: the five finding labels;
    ``finding_masks``: for each present finding the region it was allowed to change;
    ``info``: per-patient measurements (cardiothoracic ratio, finding sides/lobes ...).
    """

    patient_seed: int
    hu: np.ndarray
    affine: np.ndarray
    tissue: np.ndarray
    labels: dict[str, bool]
    finding_masks: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the array axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def mask(self, *tissues: Tissue) -> np.ndarray:
        """Boolean volume of the given tissue labels."""
        return np.isin(self.tissue, [int(t) for t in tissues])


def sample_labels(
    patient_seed: int, prevalence: float | Mapping[str, float] = 0.3
) -> dict[str, bool]:
    """Draw the five finding labels of a patient, independently, deterministic in the seed.

    ``prevalence`` is one probability for all findings or one per finding name (missing
    names are an error, so a typo cannot silently switch a finding off).
    """
    if isinstance(prevalence, Mapping):
        unknown = set(prevalence) - set(FINDINGS)
        missing = set(FINDINGS) - set(prevalence)
        if unknown or missing:
            raise ValueError(
                f"prevalence must name exactly the findings {FINDINGS}; "
                f"unknown: {sorted(unknown)}, missing: {sorted(missing)}"
            )
        probs = [float(prevalence[f]) for f in FINDINGS]
    else:
        probs = [float(prevalence)] * len(FINDINGS)
    if not all(0.0 <= q <= 1.0 for q in probs):
        raise ValueError(f"prevalence values must lie in [0, 1], got {probs}")
    draws = np.random.default_rng(np.random.SeedSequence([patient_seed, 3])).uniform(size=5)
    return {f: bool(u < q) for f, u, q in zip(FINDINGS, draws, probs, strict=True)}


def _check_labels(labels: Mapping[str, bool]) -> dict[str, bool]:
    unknown = set(labels) - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown finding label(s) {sorted(unknown)}; allowed: {FINDINGS}")
    return {f: bool(labels.get(f, False)) for f in FINDINGS}


def generate_phantom(
    patient_seed: int,
    labels: Mapping[str, bool] | None = None,
    shape_vox: tuple[int, int, int] = DEFAULT_SHAPE_VOX,
    spacing_mm: tuple[float, float, float] = DEFAULT_SPACING_MM,
    prevalence: float | Mapping[str, float] = 0.3,
) -> Phantom:
    """Build one simulated chest CT (HU) of patient ``patient_seed`` with the given findings.

    ``labels`` maps finding names (:data:`FINDINGS`) to presence; missing names are False;
    None samples them with ``prevalence`` (:func:`sample_labels`). Anatomy is in millimetres,
    so other shapes/spacings image the same patient (a smaller field of view crops it).
    """
    if len(shape_vox) != 3 or min(shape_vox) < 8:
        raise ValueError(f"shape_vox must be three sizes >= 8, got {shape_vox}")
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm must be three positive sizes, got {spacing_mm}")
    labels = sample_labels(patient_seed, prevalence) if labels is None else _check_labels(labels)
    grid = Grid(tuple(int(n) for n in shape_vox), tuple(float(s) for s in spacing_mm))  # type: ignore[arg-type]
    anat_rng, bone_rng, tree_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([patient_seed, 1]).spawn(4)
    )
    params = sample_anatomy(anat_rng)
    anat = build_anatomy(grid, params, tree_rng)
    add_bones(grid, params, sample_bones(bone_rng, params), anat)

    hu_delta = np.zeros(grid.shape_vox, dtype=np.float32)
    regions, finding_info = apply_findings(
        grid, params, anat, labels, patient_seed, hu_delta, float(HU_MEAN[Tissue.CONSOLIDATION])
    )
    hu = _to_hu(grid, params, anat, hu_delta, noise_rng)
    info: dict[str, object] = {"findings": finding_info}
    info["cardiothoracic_ratio"] = cardiothoracic_ratio(anat.labels)
    info["heart_ctr_normal"] = params.heart_ctr
    info["anatomy"] = asdict(params)
    return Phantom(patient_seed, hu, grid.affine, anat.labels, labels, regions, info)


def _to_hu(
    grid: Grid, p: AnatomyParams, anat: Anatomy, hu_delta: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """HU from labels: tissue means, lung gradient and vessels, findings, texture and noise."""
    _, y, _ = grid.xyz()
    labels = anat.labels
    hu = HU_MEAN[labels]
    lung = labels == Tissue.LUNG
    # Supine: the dependent (posterior) lung is denser; lung vessels blend in partial volume.
    lung_hu = p.lung_hu - p.lung_gradient_hu * (y - p.cavity_centre_y_mm) / p.cavity_half_depth_mm
    lung_hu = lung_hu + anat.vessel_frac * (40.0 - lung_hu)
    lung_hu += anat.airway_frac * 0.3 * (-950.0 - lung_hu)
    np.copyto(hu, lung_hu, where=lung)
    hu += hu_delta
    texture = smooth_noise(rng, grid.shape_vox, cell_vox=2.5)
    texture *= HU_TEXTURE[labels] * p.texture_hu
    hu += texture
    hu += rng.standard_normal(grid.shape_vox, dtype=np.float32) * p.noise_hu
    hu = _reconstruction_blur(hu, weight=0.2)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return np.rint(hu).astype(np.int16)


def _reconstruction_blur(vol: np.ndarray, weight: float) -> np.ndarray:
    """Separable 3-tap [w, 1-2w, w] smoothing (edges replicated): the scanner's point spread.

    w = 0.2 is a Gaussian of about 0.6 voxel sigma; it also gives the noise a CT-like grain.
    """
    for axis in range(3):
        out = vol * (1.0 - 2.0 * weight)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        out[tuple(hi)] += weight * vol[tuple(lo)]
        out[tuple(lo)] += weight * vol[tuple(hi)]
        for edge in (0, -1):
            e = [slice(None)] * 3
            e[axis] = slice(edge, edge + 1) if edge == 0 else slice(-1, None)
            out[tuple(e)] += weight * vol[tuple(e)]
        vol = out
    return vol


def cardiothoracic_ratio(tissue: np.ndarray) -> float:
    """Widest heart extent along x divided by the widest extent of both lungs in one slice.

    The radiographic definition (maximal transverse cardiac diameter over maximal inner
    thoracic diameter) measured along x on the label volume (i along x, as generated).
    """
    heart_cols = np.flatnonzero(np.any(tissue == Tissue.HEART, axis=(1, 2)))
    lung_like = np.isin(
        tissue,
        (
            Tissue.LUNG,
            Tissue.EFFUSION,
            Tissue.PNEUMOTHORAX,
            Tissue.ATELECTASIS,
            Tissue.CONSOLIDATION,
        ),
    )
    per_slice = np.any(lung_like, axis=1)  # (nx, nz)
    widths = [
        np.ptp(np.flatnonzero(per_slice[:, k])) + 1
        for k in range(per_slice.shape[1])
        if per_slice[:, k].any()
    ]
    if len(heart_cols) == 0 or not widths:
        return 0.0
    return float((np.ptp(heart_cols) + 1) / max(widths))


def heart_volume_ml(phantom: Phantom) -> float:
    """Volume of the heart label in millilitres."""
    voxel_ml = float(np.prod(phantom.spacing_mm)) / 1000.0
    return float(np.count_nonzero(phantom.tissue == Tissue.HEART)) * voxel_ml


def save_phantom_nifti(phantom: Phantom, path: str | os.PathLike[str]) -> Path:
    """Write the HU volume as NIfTI (int16, RAS+ affine, qform/sform code 1) atomically."""
    from gensyn.base.io import write_nifti

    return write_nifti(path, phantom.hu, phantom.affine)


__all__ = [
    "DEFAULT_SHAPE_VOX",
    "DEFAULT_SPACING_MM",
    "FINDINGS",
    "X_MIDLINE_MM",
    "Phantom",
    "Tissue",
    "cardiothoracic_ratio",
    "generate_phantom",
    "heart_geometry",
    "heart_volume_ml",
    "sample_labels",
    "save_phantom_nifti",
]
