"""X-ray physics: materials from HU, densities, spectra, attenuation, detector signal.

The projector integrates one density volume per material along each ray
(``L_m`` in g/cm^2). Everything spectral happens per pixel on those few numbers:

    I / I0 = sum_E w(E) exp(-sum_m (mu/rho)_m(E) L_m) / sum_E w(E)

with ``w(E) = phi(E) * E`` for an energy-integrating detector (``phi`` = photon
fluence per energy bin from spekpy) and ``(mu/rho)_m`` the NIST total mass
attenuation (with coherent scattering, narrow beam) from xraylib.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import numpy as np

from gensyn.base.bounds import bounded
from gensyn.drr.spectra import spekpy_spectrum

__all__ = [
    "MATERIALS",
    "PhysicsConfig",
    "PhysicsMode",
    "PhysicsSettings",
    "SpectrumTable",
    "add_poisson_noise",
    "density_from_hu",
    "intensity_from_line_integrals",
    "mass_attenuation_cm2_per_g",
    "material_masks",
    "spectrum_table",
    "window_level",
]

#: Material name -> NIST compound name in xraylib.
MATERIALS: dict[str, str] = {
    "air": "Air, Dry (near sea level)",
    "soft_tissue": "Tissue, Soft (ICRP)",
    "bone": "Bone, Cortical (ICRP)",
    "water": "Water, Liquid",
}

#: Piecewise-linear HU -> mass density (g/cm^3) calibration (air, lung, fat, water,
#: muscle, trabecular and cortical bone); linear extrapolation above the last knot.
DENSITY_KNOTS_HU = (-1000.0, -100.0, 0.0, 100.0, 1500.0, 3000.0)
DENSITY_KNOTS_G_CM3 = (0.0012, 0.93, 1.0, 1.10, 1.85, 2.8)

OUTPUTS = ("intensity", "line_integral")


class PhysicsMode(StrEnum):
    """``poly``: the tube's spectrum, energy-integrating detector; ``mono``: one energy."""

    poly = "poly"
    mono = "mono"


@dataclass
class PhysicsSettings:
    """The ``projector`` group's physics (defaults = the original study, DeepDRR 1.x)."""

    mode: PhysicsMode = PhysicsMode.poly  # poly (spectrum) | mono (one energy)
    kvp: float = bounded(90.0, ge=20, le=300)  # tube voltage in kV (SpekPy's tungsten spectra)
    filtration_mm_al: float = bounded(4.0, ge=0, le=20)  # added aluminium filtration, mm
    energy_bin_kev: float = bounded(2.0, ge=0.1, le=10)  # width of the spectrum's energy bins
    mono_energy_kev: float | None = bounded(None, gt=0)  # mono's energy; None = spectrum's mean
    air_max_hu: float = -800.0  # voxels <= this are air
    bone_min_hu: float = bounded(350.0, above="air_max_hu")  # voxels > this are bone
    photon_count: float = bounded(
        0.0, ge=10, or_zero=True, allowed="0 (noise-free) or 10 or more"
    )  # open-field photons per pixel for Poisson noise; 0 = noise-free


@dataclass
class PhysicsConfig(PhysicsSettings):
    """Physics of a DRR: the ``projector`` group's :class:`PhysicsSettings`, plus

    Attributes:
        anode_angle_deg: anode angle for spekpy.
        output: ``intensity`` (I/I0 in (0, 1]) or ``line_integral`` (-ln I/I0).
    """

    anode_angle_deg: float = 12.0
    output: str = "line_integral"

    def __post_init__(self) -> None:
        if self.mode not in tuple(PhysicsMode):
            raise ValueError(
                f"PhysicsConfig.mode={self.mode!r}; allowed: {[str(m) for m in PhysicsMode]}"
            )
        self.mode = PhysicsMode(self.mode)
        if self.output not in OUTPUTS:
            raise ValueError(f"PhysicsConfig.output={self.output!r}; allowed: {OUTPUTS}")
        if self.air_max_hu >= self.bone_min_hu:
            raise ValueError("PhysicsConfig: air_max_hu must be below bone_min_hu")
        if self.kvp <= 10 or self.energy_bin_kev <= 0:
            raise ValueError("PhysicsConfig: kvp must be > 10 and energy_bin_kev > 0")

    @property
    def materials(self) -> tuple[str, ...]:
        return ("air", "soft_tissue", "bone")


def density_from_hu(hu):
    """Mass density in g/cm^3 from Hounsfield units (piecewise linear, >= 0).

    Accepts a numpy array (returns numpy float32) or a torch tensor (same device).
    """
    import torch

    is_numpy = not isinstance(hu, torch.Tensor)
    hu_t = torch.as_tensor(np.asarray(hu, dtype=np.float32)) if is_numpy else hu.float()
    knots_hu, knots_rho = DENSITY_KNOTS_HU, DENSITY_KNOTS_G_CM3
    # f(x) = f0 + sum_i slope_i * clamp(x - k_i, 0, k_(i+1) - k_i), the last segment open:
    # elementwise passes only (no index tensors), so memory stays ~2 volumes on the GPU
    rho = torch.full_like(hu_t, knots_rho[0])
    for i in range(len(knots_hu) - 1):
        slope = (knots_rho[i + 1] - knots_rho[i]) / (knots_hu[i + 1] - knots_hu[i])
        upper = knots_hu[i + 1] - knots_hu[i] if i < len(knots_hu) - 2 else None
        rho.add_((hu_t - knots_hu[i]).clamp_(0.0, upper), alpha=slope)
    rho.clamp_(min=0.0)
    return rho.numpy() if is_numpy else rho


def material_masks(
    hu: np.ndarray, air_max_hu: float = -800.0, bone_min_hu: float = 350.0
) -> dict[str, np.ndarray]:
    """Threshold segmentation into air / soft_tissue / bone boolean masks.

    A segmentation model can replace this: any dict of disjoint boolean masks with
    keys from :data:`MATERIALS` is accepted by the renderer.
    """
    hu = np.asarray(hu)
    air = hu <= air_max_hu
    bone = hu > bone_min_hu
    return {"air": air, "soft_tissue": ~(air | bone), "bone": bone}


def mass_attenuation_cm2_per_g(material: str, energies_kev: np.ndarray) -> np.ndarray:
    """NIST total mass attenuation coefficient (cm^2/g) of ``material`` at energies."""
    if material not in MATERIALS:
        raise ValueError(f"unknown material {material!r}; allowed: {sorted(MATERIALS)}")
    return _mass_attenuation(material, tuple(float(e) for e in np.atleast_1d(energies_kev)))


@lru_cache(maxsize=64)
def _mass_attenuation(material: str, energies_kev: tuple[float, ...]) -> np.ndarray:
    import xraylib

    name = MATERIALS[material]
    return np.array([xraylib.CS_Total_CP(name, e) for e in energies_kev])


@dataclass(frozen=True)
class SpectrumTable:
    """Energy bins and weights of a detector signal model.

    Attributes:
        energies_kev: bin centres, shape (E,).
        photon_weights: normalised photon fluence per bin (sums to 1), shape (E,).
        signal_weights: normalised detector signal per bin (sums to 1), shape (E,).
        mu_cm2_per_g: mass attenuation per material and bin, shape (M, E).
        materials: material names in the order of ``mu_cm2_per_g`` rows.
    """

    energies_kev: np.ndarray
    photon_weights: np.ndarray
    signal_weights: np.ndarray
    mu_cm2_per_g: np.ndarray
    materials: tuple[str, ...]


def spectrum_table(
    physics: PhysicsConfig, materials: tuple[str, ...] | None = None
) -> SpectrumTable:
    """Energy bins, weights and attenuation for ``physics`` (one bin in ``mono`` mode)."""
    materials = physics.materials if materials is None else materials
    energies, fluence = spekpy_spectrum(
        float(physics.kvp),
        float(physics.filtration_mm_al),
        float(physics.anode_angle_deg),
        float(physics.energy_bin_kev),
    )
    keep = fluence > fluence.max() * 1e-6
    energies, fluence = energies[keep], fluence[keep]
    if physics.mode == "mono":
        mean_kev = float((energies * fluence).sum() / fluence.sum())
        e0 = physics.mono_energy_kev if physics.mono_energy_kev is not None else mean_kev
        energies, fluence = np.array([e0]), np.array([1.0])
    photons = fluence / fluence.sum()
    signal = photons * energies
    signal = signal / signal.sum()
    mu = np.stack([mass_attenuation_cm2_per_g(m, energies) for m in materials])
    return SpectrumTable(energies, photons, signal, mu, tuple(materials))


def intensity_from_line_integrals(
    line_integrals_g_cm2, table: SpectrumTable, weights: str = "signal"
):
    """Transmitted fraction I/I0 from per-material line integrals.

    Args:
        line_integrals_g_cm2: torch tensor (..., M) of density line integrals.
        table: spectrum and attenuation (materials in the same order as M).
        weights: ``signal`` (energy-integrating) or ``photons`` (photon counting).
    Returns:
        torch tensor (...) of I/I0.
    """
    import torch

    lint = line_integrals_g_cm2
    mu = torch.as_tensor(table.mu_cm2_per_g, dtype=lint.dtype, device=lint.device)
    w_np = table.signal_weights if weights == "signal" else table.photon_weights
    w = torch.as_tensor(w_np, dtype=lint.dtype, device=lint.device)
    if mu.shape[1] == 1:
        return torch.exp(-(lint @ mu)[..., 0])
    return torch.exp(-(lint @ mu)) @ w


def add_poisson_noise(
    intensity, line_integrals_g_cm2, table: SpectrumTable, photon_count: float, generator=None
):
    """Quantum noise: Poisson photon counts at ``photon_count`` open-field photons/pixel.

    Photons are counted with the photon-weighted transmission; each detected photon
    carries the mean energy of the transmitted spectrum (energy-integrating signal).
    """
    import torch

    if photon_count <= 0:
        return intensity
    photon_fraction = intensity_from_line_integrals(line_integrals_g_cm2, table, "photons")
    counts = torch.poisson(photon_fraction * photon_count, generator=generator)
    return counts / photon_count * (intensity / photon_fraction.clamp_min(1e-30))


def window_level(
    image: np.ndarray, low: float | None = None, high: float | None = None, percentiles=(0.5, 99.5)
) -> np.ndarray:
    """Map ``image`` (H, W) to [0, 1] linearly between ``low`` and ``high``.

    With ``low``/``high`` None they are taken from the image's ``percentiles``.
    """
    image = np.asarray(image, dtype=np.float32)
    lo = float(np.percentile(image, percentiles[0])) if low is None else float(low)
    hi = float(np.percentile(image, percentiles[1])) if high is None else float(high)
    if hi <= lo:
        hi = lo + 1e-6
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)
