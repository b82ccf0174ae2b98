"""The demo's SIMULATED "real" chest radiographs: a deliberately different image chain.

A DRR is a clean projection. A clinical radiograph is not: scattered photons add a
low-frequency glow, the detector blurs (finite MTF) and adds quantum and electronic noise,
the collimator leaves unexposed borders, a lead side marker is burnt in, the patient is
never perfectly straight, and the vendor's processing (unsharp-mask equalisation and a
sigmoid tone curve) gives the familiar high-contrast "CR/DR look". This module applies such
a chain to any line-integral image, so that the demo's DRR -> real translator has a real
domain gap to learn, while the anatomy and labels come from phantoms of *other* patients.

Images are in radiological display orientation: rows from head to feet, columns from the
patient's right to the patient's left (a PA film as read), as in gensyn.drr.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

MU_WATER_PER_MM = 0.019  # linear attenuation of water near 70 keV effective energy


@dataclass(frozen=True)
class ChainParams:
    """One radiograph's acquisition and processing settings (sizes in output pixels)."""

    rotation_deg: float
    scale: float
    shift_px: tuple[float, float]
    photons_per_px: float  # unattenuated quanta per pixel
    electronic_noise: float  # std of additive detector noise, in quanta
    scatter_to_primary: float  # mean scatter / mean primary inside the body
    scatter_sigma_frac: float  # glow kernel width as a fraction of the image size
    detector_blur_px: float
    unsharp_gain: float
    unsharp_sigma_frac: float
    detail_gain: float
    tone_gamma: float  # > 1 darkens the mid-tones (lungs) before the sigmoid
    tone_gain: float
    tone_centre: float
    collimation_frac: tuple[float, float, float, float]  # top, bottom, left, right margins
    marker: str  # "L", "R" or "" (none)

    def as_dict(self) -> dict[str, object]:
        """Plain dict for manifests."""
        return asdict(self)


def sample_chain_params(rng: np.random.Generator) -> ChainParams:
    """Draw one radiograph's settings from the ranges of typical bedside/department images."""
    return ChainParams(
        rotation_deg=float(rng.uniform(-4.0, 4.0)),
        scale=float(rng.uniform(0.92, 1.06)),
        shift_px=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
        photons_per_px=float(rng.uniform(2.0e4, 1.0e5)),
        electronic_noise=float(rng.uniform(3.0, 12.0)),
        scatter_to_primary=float(rng.uniform(0.35, 0.9)),
        scatter_sigma_frac=float(rng.uniform(0.08, 0.16)),
        detector_blur_px=float(rng.uniform(0.9, 1.6)),
        unsharp_gain=float(rng.uniform(0.5, 1.1)),
        unsharp_sigma_frac=float(rng.uniform(0.05, 0.1)),
        detail_gain=float(rng.uniform(0.3, 0.7)),
        tone_gamma=float(rng.uniform(1.3, 2.0)),
        tone_gain=float(rng.uniform(4.5, 7.5)),
        tone_centre=float(rng.uniform(0.42, 0.55)),
        collimation_frac=tuple(float(v) for v in rng.uniform(0.01, 0.07, size=4)),  # type: ignore[arg-type]
        marker=str(rng.choice(["L", "R"])),
    )


def pa_line_integral(
    hu: np.ndarray,
    affine: np.ndarray,
    size_px: int = 256,
    mu_water_per_mm: float = MU_WATER_PER_MM,
) -> np.ndarray:
    """Parallel-beam PA projection of a CT: ∫ mu dl (dimensionless), (size_px, size_px) float32.

    HU -> mu with mu = mu_water * (1 + HU/1000), clipped at 0 (air). The volume is first
    brought to RAS+ axis order with nibabel's orientation tools, so any affine works. The
    square image covers the larger of the volume's width (x) and height (z), centred, and is
    shown as a PA film is read (patient's right on the image left, head at the top).
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(np.asarray(hu), ornt)
    spacing = np.empty(3)
    for in_axis, norm in enumerate(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)):
        spacing[int(ornt[in_axis, 0])] = norm  # voxel size along world axis x, y, z
    mu = np.clip(ras.astype(np.float32) * (mu_water_per_mm / 1000.0) + mu_water_per_mm, 0.0, None)
    line = mu.sum(axis=1) * float(spacing[1])  # (nx, nz), sum along anterior-posterior
    film = line[::-1, ::-1].T  # rows: head -> feet; columns: patient's right -> left
    height_mm = film.shape[0] * spacing[2]
    width_mm = film.shape[1] * spacing[0]
    pixel_mm = max(height_mm, width_mm) / size_px
    centre = (np.array(film.shape) - 1) / 2.0
    out_c = (size_px - 1) / 2.0
    rows = (np.arange(size_px) - out_c) * pixel_mm / spacing[2] + centre[0]
    cols = (np.arange(size_px) - out_c) * pixel_mm / spacing[0] + centre[1]
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(film, [rr, cc], order=1, mode="constant", cval=0.0).astype(
        np.float32
    )


def _marker_mask(
    size_px: int, letter: str, top_px: int, left_px: int, height_px: int
) -> np.ndarray:
    """Boolean mask of a block letter rendered with Pillow's built-in scalable font."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (size_px, size_px), 0)
    font = ImageFont.load_default(size=height_px)
    ImageDraw.Draw(canvas).text((left_px, top_px), letter, fill=255, font=font, stroke_width=1)
    return np.asarray(canvas) > 127


def acquire(line_integral: np.ndarray, params: ChainParams, rng: np.random.Generator) -> np.ndarray:
    """Detector side of the chain: the measured density -ln(quanta / quanta_unattenuated).

    Pose jitter (content mapped by ``p -> c + shift + scale * R(-rotation) (p - c)`` in
    (row, col) pixels about the centre c), collimated primary exp(-line), scatter glow (a
    broad blur of the primary scaled to ``scatter_to_primary`` of the mean primary behind
    the body), a lead marker on the detector (stops primary and scatter), Gaussian detector
    blur, Poisson quanta and electronic noise.
    Returns float32 of the input shape; unexposed regions have high density.
    """
    img = np.asarray(line_integral, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"line_integral must be a 2-D image of at least 16×16, got {img.shape}")
    p = params
    h, w = img.shape
    size = float(max(h, w))
    theta = np.deg2rad(p.rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / p.scale
    centre = (np.array([h, w]) - 1) / 2.0
    offset = centre - rot @ (centre + np.array(p.shift_px) * size)
    line = ndimage.affine_transform(img, rot, offset=offset, order=1, mode="constant", cval=0.0)

    primary = np.exp(-line)
    top, bottom, left, right = (round(f * size) for f in p.collimation_frac)
    field = np.full((h, w), 1e-4, dtype=np.float32)  # leakage outside the collimator
    field[top : h - bottom, left : w - right] = 1.0
    field = ndimage.gaussian_filter(field, 1.2, mode="nearest")  # penumbra
    primary = primary * field

    glow = ndimage.gaussian_filter(primary, p.scatter_sigma_frac * size, mode="nearest")
    body = line > 0.5
    if not body.any():
        body = np.ones_like(body)
    glow *= (
        p.scatter_to_primary * float(primary[body].mean()) / max(float(glow[body].mean()), 1e-12)
    )
    exposure = primary + glow
    if p.marker:  # lead on the detector face: it stops scattered photons as well
        letter_h = max(int(0.07 * size), 8)
        # A PA film: the patient's right is on the image left; "R" is placed on that side.
        col = (
            left + int(0.04 * size) if p.marker == "R" else w - right - int(0.04 * size) - letter_h
        )
        marker = _marker_mask(int(size), p.marker, top + int(0.04 * size), col, letter_h)[:h, :w]
        exposure[marker] *= 0.003
    signal = ndimage.gaussian_filter(exposure, p.detector_blur_px, mode="nearest")
    quanta = rng.poisson(np.clip(signal, 0.0, None) * p.photons_per_px).astype(np.float32)
    quanta += rng.normal(0.0, p.electronic_noise, size=quanta.shape).astype(np.float32)
    return -np.log(np.clip(quanta, 0.5, None) / p.photons_per_px).astype(np.float32)


def process(density: np.ndarray, params: ChainParams, bit_depth: int = 8) -> np.ndarray:
    """Vendor processing: unsharp-mask equalisation, detail boost, percentile window, sigmoid.

    The window is taken inside the collimated field. Returns uint8 or uint16 (``bit_depth``).
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    p = params
    h, w = density.shape
    size = float(max(h, w))
    coarse = ndimage.gaussian_filter(density, p.unsharp_sigma_frac * size, mode="nearest")
    fine = ndimage.gaussian_filter(density, 2.0, mode="nearest")
    processed = density + p.unsharp_gain * (density - coarse) + p.detail_gain * (density - fine)
    top, bottom, left, right = (round(f * size) for f in p.collimation_frac)
    lo, hi = np.percentile(processed[top : h - bottom, left : w - right], [1.0, 99.5])
    x = np.clip((processed - lo) / max(hi - lo, 1e-6), 0.0, 1.2) ** p.tone_gamma
    curve = 1.0 / (1.0 + np.exp(-p.tone_gain * (x - p.tone_centre)))
    c0 = 1.0 / (1.0 + np.exp(p.tone_gain * p.tone_centre))
    c1 = 1.0 / (1.0 + np.exp(-p.tone_gain * (1.0 - p.tone_centre)))
    out = np.clip((curve - c0) / (c1 - c0), 0.0, 1.0)
    top_val = 255.0 if bit_depth == 8 else 65535.0
    return np.round(out * top_val).astype(np.uint8 if bit_depth == 8 else np.uint16)


def simulate_real_radiograph(
    line_integral: np.ndarray,
    rng: np.random.Generator,
    params: ChainParams | None = None,
    bit_depth: int = 8,
) -> np.ndarray:
    """Turn a line-integral image (∫ mu dl, H×W, display orientation) into a "clinical" radiograph.

    :func:`acquire` (pose jitter, collimation, marker, scatter, detector blur and noise) then
    :func:`process` (equalisation, detail boost, window, tone curve). ``params`` None draws
    them from ``rng`` (:func:`sample_chain_params`); the same generator state gives the same
    image. Returns uint8 (``bit_depth=8``) or uint16 (16) of the input shape; bone and
    unexposed borders bright, air dark.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    p = params or sample_chain_params(rng)
    return process(acquire(line_integral, p, rng), p, bit_depth)
