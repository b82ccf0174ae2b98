"""Public DRR API: HU volume + affine + poses -> images.

``render_drrs`` is the stable entry point used by ``stage=drr`` and by the demo's
simulated X-ray domain (gensyn/data/phantom/xray_sim.py); docs/conventions.md documents it.
``DrrRenderer`` keeps the prepared volume for rendering many pose batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import Any

import numpy as np

from gensyn.drr.geometry import (
    GEOMETRY_PRESETS,
    CarmGeometry,
    CarmPose,
    GeometryPreset,
    detector_pixels_world,
    volume_center_world,
)
from gensyn.drr.physics import (
    PhysicsConfig,
    add_poisson_noise,
    density_from_hu,
    intensity_from_line_integrals,
    spectrum_table,
    window_level,
)

__all__ = [
    "DrrRenderer",
    "RenderMethod",
    "make_rays",
    "preset",
    "render_drrs",
    "to_image",
    "to_images",
]

#: Spectra of the named X-ray systems (geometry: gensyn.drr.geometry.GEOMETRY_PRESETS).
PHYSICS_PRESETS: dict[str, PhysicsConfig] = {
    GeometryPreset.mobile_carm: PhysicsConfig(kvp=90.0, filtration_mm_al=4.0),
    GeometryPreset.mobile_carm_wide: PhysicsConfig(kvp=90.0, filtration_mm_al=4.0),
    GeometryPreset.pa_chest: PhysicsConfig(kvp=120.0, filtration_mm_al=3.0),
}


class RenderMethod(StrEnum):
    """How rays sample the volume (``projector.method``, docs/drr.md): ``auto`` picks the
    fastest available here (:meth:`DrrRenderer.resolve_method`)."""

    auto = "auto"
    joseph = "joseph"
    trilinear = "trilinear"
    fused = "fused"
    texture = "texture"


def make_rays(poses: Sequence[CarmPose], geometry: CarmGeometry, volume_shape, affine):
    """RaySet for ``poses`` (isocentre defaults to the volume centre)."""
    from gensyn.drr.projector import RaySet

    center = volume_center_world(tuple(volume_shape), affine)
    parts = [detector_pixels_world(p, geometry, center) for p in poses]
    origin, d_col, d_row, source = (np.stack(x) for x in zip(*parts, strict=True))
    return RaySet(
        source, origin, d_col, d_row, geometry.detector_rows_px, geometry.detector_cols_px
    )


class DrrRenderer:
    """A CT prepared for rendering: per-material density volumes on ``device``.

    Args:
        volume_hu: CT in Hounsfield units, (I, J, K) array or tensor, NIfTI voxel order.
        affine: 4x4 NIfTI affine (voxel index -> world RAS mm).
        physics: materials, spectrum, noise, output.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        masks: disjoint boolean volumes keyed by material name (e.g. from a
            segmentation model) replacing the HU thresholds.
    """

    def __init__(
        self,
        volume_hu,
        affine: np.ndarray,
        physics: PhysicsConfig | None = None,
        device: str = "cpu",
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        import torch

        from gensyn.drr.projector import ChannelVolume

        self.physics = PhysicsConfig() if physics is None else physics
        hu = torch.as_tensor(
            np.asarray(volume_hu) if not isinstance(volume_hu, torch.Tensor) else volume_hu
        )
        if hu.ndim != 3:
            raise ValueError(f"volume_hu must be 3-D (I, J, K), got shape {tuple(hu.shape)}")
        # integer HU (e.g. int16 from read_nifti(dtype=None)) moves as is and is cast there
        self.hu = hu.to(device=device).to(torch.float32)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.masks = (
            None if masks is None else {k: torch.as_tensor(v).to(device) for k, v in masks.items()}
        )
        if self.masks is not None:
            missing = [m for m in self.physics.materials if m not in self.masks]
            if missing:
                raise ValueError(
                    f"material masks lack {missing}; expected keys {self.physics.materials}"
                )
        self.table = spectrum_table(self.physics)
        self.volume = ChannelVolume(self._build, tuple(self.hu.shape), len(self.physics.materials))

    def with_physics(self, physics: PhysicsConfig) -> DrrRenderer:
        """The same CT with other physics; shares the material volumes if they are unchanged."""
        same = (physics.air_max_hu, physics.bone_min_hu) == (
            self.physics.air_max_hu,
            self.physics.bone_min_hu,
        )
        other = object.__new__(DrrRenderer)
        other.__dict__.update(self.__dict__)
        other.physics = physics
        other.table = spectrum_table(physics)
        if not same:
            from gensyn.drr.projector import ChannelVolume

            other.volume = ChannelVolume(other._build, tuple(self.hu.shape), len(physics.materials))
        return other

    def _build(self, perm: tuple[int, int, int]):
        """Density volumes (g/cm^3) with voxel axes ``perm``: (n0, M, n1, n2)."""
        import torch

        hu = self.hu.permute(*perm).contiguous()
        rho = density_from_hu(hu)
        p = self.physics
        out = torch.empty(hu.shape[0], len(p.materials), *hu.shape[1:], device=hu.device)
        for i, material in enumerate(p.materials):
            if self.masks is not None:
                mask = self.masks[material].permute(*perm)
            elif material == "air":
                mask = hu <= p.air_max_hu
            elif material == "bone":
                mask = hu > p.bone_min_hu
            else:
                mask = (hu > p.air_max_hu) & (hu <= p.bone_min_hu)
            torch.mul(rho, mask, out=out[:, i])
        return out

    def material_line_integrals(
        self, poses, geometry, method="joseph", step_mm=None, max_samples=1 << 23
    ):
        """Per-material density line integrals (B, H, W, M) in g/cm^2 (torch)."""
        from gensyn.drr.projector import line_integrals

        rays = make_rays(poses, geometry, self.hu.shape, self.affine)
        lint = line_integrals(self.volume, self.affine, rays, method, step_mm, max_samples)
        return lint / 10.0  # g/cm^3 * mm -> g/cm^2

    def resolve_method(self, method: str = "auto") -> str:
        """The projector ``method`` stands for here: ``auto`` is ``texture`` on CUDA when CuPy
        is importable (and the volume fits the GPU's layered textures), else ``fused`` when
        Triton is, else ``joseph``; other names are checked and returned."""
        import gensyn.drr.fused as fused
        import gensyn.drr.texture as texture

        if method not in tuple(RenderMethod):
            raise ValueError(f"render method {method!r}; allowed: {[str(m) for m in RenderMethod]}")
        if method == "auto":
            if self.hu.is_cuda and texture.available():
                index = self.hu.device.index or 0
                if texture.fits(tuple(self.hu.shape), self.volume.channels, index):
                    return "texture"
            return "fused" if self.hu.is_cuda and fused.available() else "joseph"
        if method == "texture" and not (self.hu.is_cuda and texture.available()):
            raise ValueError(
                "render method 'texture' needs a CUDA device and CuPy (pip install "
                f"cupy-cuda12x); this renderer is on {self.hu.device}"
            )
        return method

    def prepare(
        self, poses: Sequence[CarmPose], geometry: CarmGeometry, method: str = "auto"
    ) -> DrrRenderer:
        """Build now the material density volumes that :meth:`render` of ``poses`` will read.

        Rendering builds them on first use anyway; calling this first (e.g. on a loader thread
        while the previous CT renders) moves the segmentation and density conversion out of
        the render call. Only the slice layouts the poses need are built (one per dominant
        voxel axis; the fused kernel's packed half-precision copy too). Returns ``self``.
        """
        import gensyn.drr.fused as fused
        import gensyn.drr.texture as texture
        from gensyn.drr.projector import poses_by_axis, rays_in_voxels

        method = self.resolve_method(method)
        if len(poses) == 0:
            return self
        if method == "trilinear":
            self.volume.layout((0, 1, 2))
            return self
        rays = make_rays(poses, geometry, self.hu.shape, self.affine)
        if method == "fused":
            fused.prepare(self.volume, self.affine, rays)
            return self
        if method == "texture":
            texture.prepare(self.volume, self.affine, rays)
            return self
        for axis, p_ax, q_ax, _ in poses_by_axis(rays, *rays_in_voxels(rays, self.affine)):
            self.volume.layout((axis, p_ax, q_ax))
        return self

    def render(
        self,
        poses: Sequence[CarmPose],
        geometry: CarmGeometry,
        method: str = "auto",
        step_mm: float | None = None,
        max_samples: int = 1 << 23,
        seed: int | Sequence[int] | None = None,
        as_tensor: bool = False,
    ) -> Any:
        """Render one DRR per pose; see :func:`render_drrs`. ``as_tensor``: return the float32
        torch tensor on the renderer's device (e.g. for :func:`to_images` there) instead of a
        numpy array."""
        import torch

        import gensyn.drr.fused as fused
        import gensyn.drr.texture as texture

        method = self.resolve_method(method)
        if len(poses) == 0:
            empty = np.zeros((0, geometry.detector_rows_px, geometry.detector_cols_px), np.float32)
            return torch.from_numpy(empty).to(self.hu.device) if as_tensor else empty
        physics = self.physics
        if method in ("fused", "texture"):
            if physics.photon_count > 0:
                raise ValueError(
                    f"method {method!r} is noise-free; use 'joseph' with photon_count > 0"
                )
            rays = make_rays(poses, geometry, self.hu.shape, self.affine)
            kernel = fused if method == "fused" else texture
            intensity = kernel.render(self.volume, self.affine, rays, self.table)
        else:
            lint = self.material_line_integrals(poses, geometry, method, step_mm, max_samples)
            intensity = intensity_from_line_integrals(lint, self.table)
            if physics.photon_count > 0:
                seeds = _noise_seeds(seed, len(poses))
                noisy = []
                for i, view_seed in enumerate(seeds):  # one stream per view: order-independent
                    gen = torch.Generator(device=lint.device)
                    gen.manual_seed(view_seed)
                    noisy.append(
                        add_poisson_noise(
                            intensity[i : i + 1],
                            lint[i : i + 1],
                            self.table,
                            physics.photon_count,
                            gen,
                        )
                    )
                intensity = torch.cat(noisy)
        if physics.output == "line_integral":
            intensity = -torch.log(intensity.clamp_min(1e-12))
        return intensity.float() if as_tensor else intensity.float().cpu().numpy()


def _noise_seeds(seed: int | Sequence[int] | None, n_poses: int) -> list[int]:
    """One noise seed per pose: given per pose, or derived from one seed and the pose index."""
    if seed is None or isinstance(seed, int | np.integer):
        base = 0 if seed is None else int(seed)
        return [view_noise_seed(base, "", i) for i in range(n_poses)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n_poses:
        raise ValueError(f"{len(seeds)} noise seeds for {n_poses} poses; give one per pose")
    return seeds


def view_noise_seed(seed: int, ct_id: str, view_index: int) -> int:
    """The Poisson-noise seed of view ``view_index`` of CT ``ct_id`` under run seed ``seed``.

    Every (seed, CT, view) gets its own stream, independent of batching and of which
    CTs are rendered in the same run, so a resumed or sharded run draws the same noise.
    """
    import zlib

    state = np.random.SeedSequence([int(seed), zlib.crc32(ct_id.encode()), int(view_index)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> 1)


def render_drrs(
    volume_hu,
    affine: np.ndarray,
    poses: Sequence[CarmPose],
    geometry: CarmGeometry,
    physics: PhysicsConfig | None = None,
    device: str = "cpu",
    method: str = "auto",
    step_mm: float | None = None,
    max_samples: int = 1 << 23,
    masks: Mapping[str, np.ndarray] | None = None,
    seed: int | Sequence[int] | None = None,
) -> np.ndarray:
    """Render one DRR per pose.

    Args:
        volume_hu: CT in Hounsfield units, (I, J, K) array or tensor, NIfTI voxel order.
        affine: 4x4 NIfTI affine (voxel index -> world RAS mm).
        poses: C-arm poses (alpha/beta in degrees, isocentre default = volume centre).
        geometry: detector and distances; its pixel count is the image size.
        physics: spectrum, materials, noise, output; default ``PhysicsConfig()``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        method: ``auto`` (on CUDA ``texture`` when CuPy is importable, else ``fused`` when
            Triton is; on the CPU ``joseph``), ``joseph``, ``trilinear`` (torch, any device), ``fused``
            (Triton kernel, CUDA only, noise-free) or ``texture`` (CUDA C through CuPy,
            bilinear taps by the texture units: faster, blends with 8-bit weights; CUDA
            only, noise-free, at most 4 materials).
        step_mm: sample spacing of ``trilinear``.
        max_samples: memory bound of the projector (samples per chunk).
        masks: material masks replacing HU thresholds.
        seed: seed of the Poisson noise: one int (each pose then gets a stream derived from
            it and its index) or one seed per pose (see :func:`view_noise_seed`).
    Returns:
        float32 array (n_poses, H, W): I/I0 in (0, 1] for ``output=intensity`` or
        -ln(I/I0) (bone bright) for ``output=line_integral``.
    """
    renderer = DrrRenderer(volume_hu, affine, physics, device, masks)
    return renderer.render(poses, geometry, method, step_mm, max_samples, seed)


def to_image(
    drr: np.ndarray, bit_depth: int = 8, percentiles=(0.5, 99.5), low=None, high=None
) -> np.ndarray:
    """A DRR (H, W) as a uint8/uint16 image: linear window between ``low`` and ``high``.

    ``low``/``high`` default to the image's ``percentiles``. For ``-ln(I/I0)`` DRRs
    (``output=line_integral``) bone is bright, as on a radiograph.
    """
    from gensyn.base.io import to_uint

    return to_uint(window_level(drr, low, high, tuple(percentiles)), bit_depth, 0.0, 1.0)


def to_images(drrs: Any, bit_depth: int = 8, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Many DRRs at once as uint8/uint16 images, windowed where they lie (e.g. on the GPU).

    ``drrs``: a (B, H, W) float torch tensor or array. Each image gets its own window between
    its ``percentiles`` (linear interpolation, as :func:`to_image`, which it matches to within
    one grey level: it rounds in float32, :func:`to_image` in float64). Only the integer images
    travel to the host: the window, scaling and rounding of a batch of 512² DRRs cost the GPU
    well under a millisecond and the CPU ~10 ms an image.
    """
    import torch

    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    x = torch.as_tensor(drrs).float()
    if x.ndim != 3:
        raise ValueError(f"to_images expects a (B, H, W) stack, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        return np.zeros(tuple(x.shape), np.uint8 if bit_depth == 8 else np.uint16)
    q = torch.tensor([p / 100.0 for p in percentiles[:2]], device=x.device)
    flat = x.flatten(1)
    rows = max(1, (1 << 24) // flat.shape[1])  # torch.quantile takes at most 2^24 values a call
    # (2, B): numpy's "linear" percentile of each image
    bounds = torch.cat([torch.quantile(c, q, dim=1) for c in flat.split(rows)], dim=1)
    lo, hi = bounds[0][:, None, None], bounds[1][:, None, None]
    hi = torch.where(hi <= lo, lo + 1e-6, hi)
    unit = ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)
    top = 255 if bit_depth == 8 else 65535
    # cast where they lie: 1 or 2 bytes a pixel cross to the host (not int32's 4), no host pass
    ints = torch.round(unit * top).to(torch.uint8 if bit_depth == 8 else torch.uint16)
    return ints.cpu().numpy()


def preset(name: str) -> tuple[CarmGeometry, PhysicsConfig]:
    """Geometry and physics of a named X-ray system (a :class:`GeometryPreset`); the physics
    is a copy, so changing it leaves the preset as it is."""
    if name not in GEOMETRY_PRESETS:
        raise ValueError(
            f"unknown X-ray system preset {name!r}; allowed: {[str(g) for g in GeometryPreset]}"
        )
    return GEOMETRY_PRESETS[name], replace(PHYSICS_PRESETS[name])
