"""The ``projector`` group's settings, declared once: the renderer, its X-ray system, physics,
sampler, images and DeepDRR's options.

:class:`ProjectorSettings` is the whole group, assembled from the parts each module owns
(:class:`~gensyn.drr.geometry.GeometrySettings`, :class:`~gensyn.drr.physics.PhysicsSettings`,
:class:`RenderSettings`, :class:`~gensyn.drr.deepdrr_adapter.DeepDrrSettings`); the Hydra
schema (``gensyn/config/projector.py``) is this class. Defaults = the original study
(DeepDRR 1.x mobile C-arm: 2250 px at 0.2 mm, source-to-detector 1020 mm, 90 kV with 4 mm Al,
HU thresholds -800 / 350, no noise), rendered directly at ``image_size_px`` (the detector
binned to that size). Distances in mm, energies in keV.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gensyn.base.bounds import bounded, unhashed
from gensyn.drr.deepdrr_adapter import DeepDrrSettings
from gensyn.drr.geometry import GeometrySettings
from gensyn.drr.physics import PhysicsSettings
from gensyn.drr.render import RenderMethod

__all__ = ["ProjectorName", "ProjectorSettings", "RenderSettings"]


class ProjectorName(StrEnum):
    """The renderers (``projector.name``): GENSYN's own (gensyn/drr) or DeepDRR's, out of
    process (gensyn/drr/deepdrr_adapter.py, docs/deepdrr.md)."""

    torch = "torch"
    deepdrr = "deepdrr"


@dataclass
class RenderSettings:
    """How rays are sampled and DRRs become images: -ln(I/I0) windowed between percentiles,
    bone bright."""

    method: RenderMethod = RenderMethod.auto  # auto | joseph | trilinear | fused | texture
    step_mm: float | None = bounded(None, gt=0)  # trilinear only; None = smallest voxel spacing
    # samples per chunk: memory ~ 20 bytes x this (CPU and GPU)
    max_samples: int = bounded(8388608, ge=1)
    batch_poses: int = bounded(8, ge=1)  # poses rendered together
    bit_depth: int = bounded(8, choices=(8, 16))  # of the PNGs
    window_percentiles: list[float] = bounded(
        factory=lambda: [0.5, 99.5], ge=0, le=100, length=2, order="<"
    )  # the DRR's percentiles mapped to black and white
    save_float: bool = False  # also write the float -ln(I/I0) image as .npy
    # zlib-scale level of the PNGs: 1-3 ISA-L, fast (1; ~1.5 ms a 512² 16-bit DRR) | 0 stored
    # (~2x larger) | 4-9 zlib, slower (~35 ms at 6, files a few per cent smaller)
    png_compress_level: int = bounded(1, ge=0, le=9, allowed="0 .. 9 (zlib levels)")
    # threads encoding and writing the images, at most num_workers (0: on the rendering thread);
    # more contend for the GIL with the thread that drives the GPU (docs/drr.md, "Throughput");
    # not hashed (it never changes an image)
    write_threads: int = unhashed(8, ge=0)


@dataclass
class ProjectorSettings(DeepDrrSettings, RenderSettings, PhysicsSettings, GeometrySettings):
    """The ``projector`` group: geometry, physics, rendering and ``deepdrr_*`` keys, in that
    order (dataclass fields follow the bases from last to first), then the renderer."""

    name: ProjectorName = ProjectorName.torch  # torch (GENSYN's own) | deepdrr

    # __post_init__: DeepDrrSettings' (the spectrum, then every field's bounds, as projector.*)
