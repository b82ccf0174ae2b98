"""Schema of the ``projector`` group: the DRR renderer, its X-ray system and physics.

Defaults = the original study (DeepDRR 1.x mobile C-arm: 2250 px at 0.2 mm,
source-to-detector 1020 mm, 90 kV with 4 mm Al, HU thresholds -800 / 350, no noise),
rendered directly at ``image_size_px`` (the detector binned to that size).
"""

from dataclasses import dataclass

from gensyn.base.bounds import bounded


@dataclass
class ProjectorConfig:
    """``name``: torch (GENSYN's own, gensyn/drr). Distances in mm, energies in keV."""

    name: str = "torch"
    image_size_px: int = bounded(512, ge=16)  # smaller DRRs hold too few pixels to window
    # X-ray system: a preset of gensyn.drr.GEOMETRY_PRESETS (mobile_carm | mobile_carm_wide |
    # pa_chest),
    # optionally overridden field by field (null = the preset's value)
    geometry: str = "mobile_carm"
    source_to_detector_mm: float | None = bounded(None, gt=0)
    source_to_isocenter_mm: float | None = bounded(None, gt=0)
    detector_size_mm: float | None = bounded(None, gt=0)
    # central part of the detector kept (then binned to image_size_px)
    crop_fraction: float = bounded(1.0, ge=0.05, le=1)
    # physics (gensyn.drr.PhysicsConfig)
    mode: str = "poly"  # poly | mono
    kvp: float = bounded(90.0, ge=20, le=300)  # tube voltage (SpekPy's tungsten spectra)
    filtration_mm_al: float = bounded(4.0, ge=0, le=20)
    energy_bin_kev: float = bounded(2.0, ge=0.1, le=10)
    mono_energy_kev: float | None = bounded(None, gt=0)  # null = mean energy of the spectrum
    air_max_hu: float = -800.0
    bone_min_hu: float = bounded(350.0, above="air_max_hu")
    photon_count: float = bounded(
        0.0, ge=10, or_zero=True, allowed="0 (noise-free) or 10 or more"
    )  # open-field photons per pixel; 0 = noise-free
    # sampler
    method: str = "auto"  # auto | joseph | trilinear | fused | texture
    step_mm: float | None = bounded(None, gt=0)  # trilinear only; null = smallest voxel spacing
    max_samples: int = bounded(
        8388608, ge=1
    )  # samples per chunk: memory ~ 20 bytes x this (CPU and GPU)
    batch_poses: int = bounded(8, ge=1)
    # images: -ln(I/I0) windowed between percentiles, bone bright
    bit_depth: int = bounded(8, choices=(8, 16))
    window_percentiles: list[float] = bounded(
        factory=lambda: [0.5, 99.5], ge=0, le=100, length=2, order="<"
    )
    save_float: bool = False  # also write the float -ln(I/I0) image as .npy
    # zlib-scale level of the PNGs: 1-3 ISA-L, fast (1) | 0 stored (~2x larger) | 4-9 zlib, slower
    png_compress_level: int = bounded(1, ge=0, le=9, allowed="0 .. 9 (zlib levels)")
    # projector=deepdrr only (gensyn/drr/deepdrr_adapter.py, docs/deepdrr.md): DeepDRR runs
    # out of process in its own environment; spectrum: physics (GENSYN's kvp/filtration via
    # spekpy) | 90KV_AL40 | 60KV_AL35 | 120KV_AL43 (DeepDRR's tables)
    deepdrr_python: str = ".venv-deepdrr/bin/python"
    deepdrr_spectrum: str = "physics"
    deepdrr_step_voxels: float = bounded(0.1, gt=0)  # DeepDRR's ray-marching step (its default)
    deepdrr_threads: int = bounded(8, ge=1)  # CUDA block side
    deepdrr_timeout_s: float = bounded(3600.0, gt=0)
    deepdrr_pythonpath: str = ""  # extra PYTHONPATH of the worker (wheels in a --target folder)
    deepdrr_shims: bool = False  # stand-ins for absent optional imports (docs/deepdrr.md)
