"""DeepDRR (1.2.x) as an optional projector backend, run out of process.

DeepDRR needs CUDA (CuPy, an EGL context) and pins ``numpy<2``, so it cannot live in
GENSYN's environment. It gets its own (``requirements/deepdrr.txt``, e.g.
``.venv-deepdrr``) and this module talks to it through files: the CT as per-voxel
density and material labels (``.npz``), a JSON job with one camera per pose, and
the images back as ``.npz``. The worker (``gensyn/drr/deepdrr_worker.py``) imports
only numpy and DeepDRR.

Geometry. GENSYN's C-arm pose (alpha, beta about an isocentre, distances in mm,
detector in pixels; see docs/conventions.md) is handed to DeepDRR as the pinhole
camera it uses internally (``CameraProjection = K [R | t]``), not through
``MobileCArm``: the projection matrix is what DeepDRR's kernel consumes, and building
it from GENSYN's own frame makes the two renderers see the same rays by construction
(tested against :func:`gensyn.drr.geometry.project_points`). Camera axes: x along
image columns, y along image rows, z along the beam (source -> detector). DeepDRR
puts the centre of pixel (row r, col c) at index coordinates (c + 0.5, r + 0.5);
GENSYN at (c, r); ``K`` carries that half-pixel shift. The volume: DeepDRR's kernel
reads voxel index p - 1 at its index point p, so the worker pads the arrays and shifts
the affine (``deepdrr_worker.deepdrr_volume_arrays``; docs/deepdrr.md).

Physics. DeepDRR gets GENSYN's density (``density_from_hu``) and GENSYN's material
masks (HU thresholds or a segmentation), and, with ``spectrum="physics"``, GENSYN's
spekpy spectrum (kVp, filtration). What stays DeepDRR's own: its mass attenuation
tables, its ray marching (fixed step in voxels, texture trilinear interpolation)
and its float32 arithmetic. docs/deepdrr.md lists the remaining differences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from gensyn.base.bounds import bounded, check_instance, unhashed
from gensyn.base.errors import GensynError
from gensyn.drr.geometry import (
    CarmGeometry,
    CarmPose,
    carm_frame,
    source_world,
    volume_center_world,
)
from gensyn.drr.physics import PhysicsConfig, density_from_hu, material_masks

__all__ = [
    "DEEPDRR_MATERIALS",
    "DeepDrrCamera",
    "DeepDrrRenderer",
    "DeepDrrSettings",
    "DeepDrrSpectrum",
    "cuda_unavailable_reason",
    "deepdrr_camera",
    "project_points_deepdrr",
    "render_drrs_deepdrr",
]

WORKER = Path(__file__).with_name("deepdrr_worker.py")

#: GENSYN material name -> DeepDRR material name (same NIST compounds).
DEEPDRR_MATERIALS: dict[str, str] = {
    "air": "air",
    "soft_tissue": "soft tissue",
    "bone": "bone",
}
#: ``physics`` = GENSYN's spekpy spectrum for the configured kVp/filtration; the
#: others are DeepDRR's tabulated spectra (the original study used 90KV_AL40). The functional
#: form because DeepDRR's names start with a digit.
DeepDrrSpectrum = StrEnum(
    "DeepDrrSpectrum",
    {
        "physics": "physics",
        "90KV_AL40": "90KV_AL40",
        "60KV_AL35": "60KV_AL35",
        "120KV_AL43": "120KV_AL43",
    },
)

INSTALL_HINT = (
    "build it with: python3 -m venv .venv-deepdrr && "
    ".venv-deepdrr/bin/pip install -r requirements/deepdrr.txt (see docs/deepdrr.md)"
)


@dataclass
class DeepDrrSettings:
    """How to run DeepDRR (the ``projector`` group's ``deepdrr_*`` keys, docs/deepdrr.md).

    Relative paths are taken from the current directory. ``deepdrr_shims``: let the worker
    stand in for optional DeepDRR imports that are absent (pyvista, vtk, open3d;
    ``cuda.cudart`` of cuda-python 12 on 13) and run without an EGL context when the scene
    has no meshes; off for a full ``requirements/deepdrr.txt`` environment.
    """

    # interpreter of DeepDRR's environment on this machine (not hashed)
    deepdrr_python: str = unhashed(".venv-deepdrr/bin/python")
    # physics (GENSYN's kvp/filtration via spekpy) | 90KV_AL40 | 60KV_AL35 | 120KV_AL43
    deepdrr_spectrum: DeepDrrSpectrum = DeepDrrSpectrum["physics"]
    deepdrr_step_voxels: float = bounded(0.1, gt=0, le=2)  # ray-marching step in voxels
    deepdrr_threads: int = bounded(8, ge=1, le=32)  # CUDA block side (threads² per block)
    # wall-clock limit of one worker run (not hashed)
    deepdrr_timeout_s: float = unhashed(3600.0, gt=0)
    # extra PYTHONPATH of the worker (wheels in a --target folder; not hashed)
    deepdrr_pythonpath: str = unhashed("")
    deepdrr_shims: bool = False  # stand-ins for absent optional imports (see above)

    def __post_init__(self) -> None:
        if self.deepdrr_spectrum not in tuple(DeepDrrSpectrum):
            raise ValueError(
                f"projector.deepdrr_spectrum={self.deepdrr_spectrum!r}; allowed: "
                f"{[str(s) for s in DeepDrrSpectrum]}"
            )
        check_instance(self, "projector.")


@dataclass(frozen=True)
class DeepDrrCamera:
    """A pose as DeepDRR's pinhole camera: ``P = K [R | t]`` (world RAS mm -> index).

    Attributes:
        intrinsic: K (3, 3) in pixels; DeepDRR index coordinates (pixel centres at +0.5).
        rotation: R (3, 3), rows = camera x (image columns), y (rows), z (beam) in world.
        translation_mm: t (3,) = -R @ source.
        sensor_wh: detector (width, height) in pixels.
    """

    intrinsic: np.ndarray
    rotation: np.ndarray
    translation_mm: np.ndarray
    sensor_wh: tuple[int, int]

    @property
    def projection(self) -> np.ndarray:
        """P (3, 4): homogeneous world point -> homogeneous DeepDRR index (u, v, w)."""
        extrinsic = np.concatenate([self.rotation, self.translation_mm[:, None]], axis=1)
        return self.intrinsic @ extrinsic

    def to_json(self) -> dict[str, Any]:
        return {
            "K": self.intrinsic.tolist(),
            "R": self.rotation.tolist(),
            "t": self.translation_mm.tolist(),
            "sensor_wh": list(self.sensor_wh),
        }


def deepdrr_camera(
    pose: CarmPose, geometry: CarmGeometry, default_isocenter_mm: np.ndarray | None = None
) -> DeepDrrCamera:
    """DeepDRR camera that sees exactly GENSYN's rays for ``pose`` and ``geometry``."""
    beam, cols, rows = carm_frame(pose)
    source = source_world(pose, geometry, default_isocenter_mm)
    focal_px = geometry.source_to_detector_mm / geometry.pixel_size_mm
    width, height = geometry.detector_cols_px, geometry.detector_rows_px
    # GENSYN's detector centre is at pixel (W-1)/2; DeepDRR's pixel c is at c + 0.5.
    intrinsic = np.array(
        [[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]]
    )
    rotation = np.stack([cols, rows, beam])
    return DeepDrrCamera(intrinsic, rotation, -rotation @ source, (width, height))


def project_points_deepdrr(camera: DeepDrrCamera, points_mm: np.ndarray) -> np.ndarray:
    """World points (N, 3) mm -> GENSYN (row, col) pixel coordinates via DeepDRR's P."""
    pts = np.atleast_2d(np.asarray(points_mm, dtype=float))
    uvw = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ camera.projection.T
    if np.any(uvw[:, 2] <= 0):
        raise ValueError("project_points_deepdrr: a point lies behind the X-ray source")
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    return np.stack([v - 0.5, u - 0.5], axis=1)


def cuda_unavailable_reason() -> str | None:
    """Why DeepDRR cannot run here (no NVIDIA driver / CUDA device), or None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:  # pragma: no cover - torch is a base dependency
        pass
    if Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists():
        return None  # a driver is present; torch may simply be a CPU build
    return "no NVIDIA driver or CUDA device was found on this machine"


def _spectrum_payload(settings: DeepDrrSettings, physics: PhysicsConfig) -> Any:
    if settings.deepdrr_spectrum != "physics":
        return str(settings.deepdrr_spectrum)
    from gensyn.drr.physics import spectrum_table

    table = spectrum_table(physics)
    # DeepDRR weighs bin E by E * pdf(E) (energy-integrating): hand it photon fluence.
    return {
        "energies_kev": table.energies_kev.tolist(),
        "photon_weights": table.photon_weights.tolist(),
    }


def _python_path(settings: DeepDrrSettings) -> Path:
    return Path(settings.deepdrr_python).expanduser()


@dataclass
class DeepDrrRenderer:
    """A CT prepared for DeepDRR: density and material labels written once.

    Args:
        volume_hu: CT in Hounsfield units, (I, J, K), NIfTI voxel order.
        affine: 4x4 NIfTI affine (voxel index -> world RAS mm).
        physics: thresholds, spectrum (kVp, filtration) and output (GENSYN's).
        settings: the DeepDRR environment and its options.
        masks: disjoint boolean material masks replacing the HU thresholds.
        workdir: folder for the exchange files (default: a temporary folder).
    """

    volume_hu: Any
    affine: np.ndarray
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    settings: DeepDrrSettings = field(default_factory=DeepDrrSettings)
    masks: Mapping[str, np.ndarray] | None = None
    workdir: str | os.PathLike[str] | None = None
    last_run: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        hu = np.asarray(self.volume_hu, dtype=np.float32)
        if hu.ndim != 3:
            raise ValueError(f"volume_hu must be 3-D (I, J, K), got shape {hu.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.shape = hu.shape
        masks = (
            material_masks(hu, self.physics.air_max_hu, self.physics.bone_min_hu)
            if self.masks is None
            else {k: np.asarray(v, dtype=bool) for k, v in self.masks.items()}
        )
        names = list(self.physics.materials)
        missing = [m for m in names if m not in masks]
        if missing:
            raise ValueError(f"material masks lack {missing}; expected keys {names}")
        labels = np.zeros(hu.shape, dtype=np.uint8)
        for index, name in enumerate(names):
            labels[masks[name]] = index
        # without a workdir the exchange files live as long as this renderer
        self._tmp = None if self.workdir else tempfile.TemporaryDirectory(prefix="gensyn-deepdrr-")
        self._dir = Path(self.workdir or self._tmp.name)  # type: ignore[union-attr]
        self._dir.mkdir(parents=True, exist_ok=True)
        self.volume_path = self._dir / "volume.npz"
        np.savez(
            self.volume_path,
            density_g_cm3=np.asarray(density_from_hu(hu), dtype=np.float32),
            labels=labels,
            affine=self.affine,
            materials=np.array([DEEPDRR_MATERIALS[m] for m in names]),
        )

    def prepare(
        self, poses: Sequence[CarmPose], geometry: CarmGeometry, method: str | None = None
    ) -> DeepDrrRenderer:
        """Nothing left to prepare: the density and label volumes were written when this
        renderer was made (as :meth:`gensyn.drr.render.DrrRenderer.prepare`; returns ``self``)."""
        return self

    def render(
        self,
        poses: Sequence[CarmPose],
        geometry: CarmGeometry,
        method: str | None = None,
        step_mm: float | None = None,
        max_samples: int | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        as_tensor: bool = False,
        timing_repeats: int = 0,
    ) -> Any:
        """Render one DRR per pose with DeepDRR, in GENSYN's output convention.

        Called like :meth:`gensyn.drr.render.DrrRenderer.render` (the
        :class:`gensyn.drr.renderers.Renderer` interface); ``method``, ``step_mm`` and
        ``max_samples`` belong to GENSYN's projector and are ignored (DeepDRR marches rays
        at ``settings.deepdrr_step_voxels``), as is ``seed``: the images are noise-free.

        Args:
            poses: C-arm poses (isocentre default = volume centre).
            geometry: detector and distances.
            as_tensor: return a CPU torch tensor instead of a numpy array.
            timing_repeats: extra timed renders of all poses (benchmarks); timings
                land in ``self.last_run``.
        Returns:
            float32 (n_poses, H, W): I/I0 (``physics.output = intensity``) or
            -ln(I/I0) (``line_integral``), as :func:`gensyn.drr.render_drrs`.
        """
        if self.physics.photon_count > 0:
            raise GensynError(
                "projector=deepdrr renders noise-free images (DeepDRR's own noise model "
                "differs from GENSYN's); set physics photon_count to 0"
            )
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise GensynError(
                f"projector=deepdrr needs an NVIDIA GPU with CUDA: {reason}. "
                "Use projector=torch (runs on CPU and GPU) on this machine."
            )
        python = _python_path(self.settings)
        if not python.exists():
            raise GensynError(
                f"projector=deepdrr: the DeepDRR environment's python {python} does not "
                f"exist (setting projector.deepdrr_python); {INSTALL_HINT}"
            )
        center = volume_center_world(self.shape, self.affine)
        job = {
            "volume_npz": str(self.volume_path),
            "cameras": [deepdrr_camera(p, geometry, center).to_json() for p in poses],
            "source_to_detector_mm": geometry.source_to_detector_mm,
            "spectrum": _spectrum_payload(self.settings, self.physics),
            "step_voxels": self.settings.deepdrr_step_voxels,
            "threads": self.settings.deepdrr_threads,
            "timing_repeats": int(timing_repeats),
            "shims": self.settings.deepdrr_shims,
            "output_npz": str(self._dir / "images.npz"),
        }
        job_path = self._dir / "job.json"
        job_path.write_text(json.dumps(job))
        self.last_run = _run_worker(python, job_path, self.settings)
        with np.load(job["output_npz"]) as out:
            intensity = out["intensity_kev"] / float(out["open_field_kev"])
        intensity = np.clip(intensity.astype(np.float32), 1e-12, None)
        drrs = -np.log(intensity) if self.physics.output == "line_integral" else intensity
        if as_tensor:
            import torch  # GENSYN's environment has it; the worker's need not

            return torch.from_numpy(drrs)
        return drrs


def _run_worker(python: Path, job_path: Path, settings: DeepDrrSettings) -> dict[str, Any]:
    env = dict(os.environ)
    if settings.deepdrr_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            [settings.deepdrr_pythonpath] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
    env.setdefault("PYOPENGL_PLATFORM", "egl")  # headless OpenGL through EGL, no X server
    env.setdefault("PYGLET_HEADLESS", "true")  # pyrender's viewer imports pyglet windows
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), str(WORKER), str(job_path)],
            capture_output=True,
            text=True,
            timeout=settings.deepdrr_timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GensynError(
            f"projector=deepdrr: the DeepDRR worker ran past {settings.deepdrr_timeout_s} s "
            "(setting projector.deepdrr_timeout_s)"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        if proc.returncode == 3:  # worker: no CUDA device
            raise GensynError(f"projector=deepdrr needs an NVIDIA GPU with CUDA: {tail}")
        raise GensynError(
            f"projector=deepdrr: the DeepDRR worker ({python}) failed with exit code "
            f"{proc.returncode}:\n{tail}"
        )
    report = json.loads(job_path.with_name("images.json").read_text())
    report["wall_s"] = time.perf_counter() - start
    return report


def render_drrs_deepdrr(
    volume_hu,
    affine: np.ndarray,
    poses: Sequence[CarmPose],
    geometry: CarmGeometry,
    physics: PhysicsConfig | None = None,
    settings: DeepDrrSettings | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """:func:`gensyn.drr.render_drrs` through DeepDRR (same arguments and output)."""
    renderer = DeepDrrRenderer(
        volume_hu,
        affine,
        PhysicsConfig() if physics is None else physics,
        DeepDrrSettings() if settings is None else settings,
        masks,
    )
    return renderer.render(poses, geometry)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use gensyn.drr.deepdrr_adapter from Python; the worker is deepdrr_worker.py")
