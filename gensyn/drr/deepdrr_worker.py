"""Render a GENSYN job with DeepDRR; run by the DeepDRR environment's python.

    <deepdrr-env>/bin/python gensyn/drr/deepdrr_worker.py JOB.json

Standalone on purpose: it imports numpy and DeepDRR only (never ``gensyn``), so it
runs in DeepDRR's own environment (numpy < 2, CuPy, CUDA). The job (written by
``gensyn/drr/deepdrr_adapter.py``) names a volume ``.npz`` (density in g/cm^3,
material labels, affine, material names) and one pinhole camera per pose; the
worker writes ``images.npz`` (``intensity_kev`` (B, H, W): DeepDRR's detector
signal, energy per unit photon; ``open_field_kev``: the same with nothing in the
beam) next to the job and a report ``images.json`` (versions, timings).

Exit codes: 0 done, 3 no CUDA device, 1 anything else (message on stderr).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

NO_CUDA_EXIT = 3

#: DeepDRR 1.2's kernel (``projector/project_kernel.cu``) maps a world point x to
#: p = IJK_from_world @ x, then samples its textures at p - 1 (``px = sx_ijk + alpha *
#: rx_ijk - 1.0f``; density ``tex3D(px + 0.5)`` with linear filtering, labels
#: ``tex3D(floor(px) + d)`` with point filtering), i.e. at voxel index p - 1, while it
#: clips rays to the box p in [-0.5, n - 0.5]. Handing it the NIfTI affine as is would
#: draw voxel i at affine @ (i + 1): one voxel off along every axis.
KERNEL_INDEX_OFFSET = 1
#: Zero-density voxels added before / after each axis so that DeepDRR's ray box covers
#: GENSYN's volume model (trilinear, falling to zero one voxel beyond the edge voxels).
PAD_BEFORE, PAD_AFTER = 1, 2


class _Absent:
    """Stand-in for a class of an optional package that is not installed."""

    def __init__(self, *args, **kwargs):
        raise ImportError(f"{type(self).__name__}: this optional DeepDRR dependency is absent")


class _AbsentModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "DeprecationError":  # pyvista's, raised by DeepDRR for removed features
            return DeprecationWarning
        if name == "options":  # pyglet.options[...] = ... in pyrender's viewer
            return {}
        if name[:1].islower():  # a submodule (pyglet.window, pyglet.clock)
            return importlib.import_module(f"{self.__name__}.{name}")
        return type(name, (_Absent,), {})


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``_AbsentModule`` for packages that DeepDRR imports but never uses for DRRs."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _AbsentModule(spec.name)

    def exec_module(self, module):
        return None


def install_shims() -> list[str]:
    """Stand-ins for optional imports of DeepDRR that are not installed; returns their names.

    pyvista/vtk/open3d serve meshes and surfaces only; cuda-python 13 dropped the
    ``cuda.cudart`` alias of ``cuda.bindings.runtime``.
    """
    used = []
    absent = {n for n in ("pyvista", "vtk", "open3d") if importlib.util.find_spec(n) is None}
    if absent:
        sys.meta_path.append(_AbsentFinder(absent))
        used += sorted(absent)
    try:
        import cuda.cudart
    except ImportError:
        import cuda
        import cuda.bindings.runtime as runtime

        sys.modules["cuda.cudart"] = runtime
        cuda.cudart = runtime  # type: ignore[attr-defined]
        used.append("cuda.cudart->cuda.bindings.runtime")
    if _accept_reshape_newshape():
        used.append("numpy.reshape(newshape=) (removed in NumPy 2.5)")
    try:  # pyrender imports pyglet windows at import time; DRRs of volumes never open one
        import pyrender  # noqa: F401
    except Exception as exc:
        for name in [m for m in sys.modules if m.split(".")[0] in ("pyglet", "pyrender")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _AbsentFinder({"pyglet"}))
        used.append(f"pyglet ({type(exc).__name__}: {str(exc)[:80]})")
    return used


def _accept_reshape_newshape() -> bool:
    """DeepDRR 1.2 calls ``reshape(a, newshape=...)`` (it pins numpy < 2); NumPy 2.5 dropped
    that keyword. Where it is gone, accept it again as the ``shape`` argument."""
    import inspect

    original = np.reshape
    try:
        if "newshape" in inspect.signature(original).parameters:
            return False
    except (TypeError, ValueError):
        return False

    def reshape(a, *args, newshape=None, **kwargs):
        if newshape is not None:
            args = (newshape, *args)
        return original(a, *args, **kwargs)

    reshape.__doc__ = original.__doc__
    np.reshape = reshape  # type: ignore[assignment]
    return True


def _without_egl(projector_module) -> None:
    """Let ``Projector.initialize`` run without an OpenGL context (volumes only, no meshes)."""

    class _NoContext:
        def __init__(self, *args, **kwargs):
            pass

        def init_context(self):
            pass

        def make_current(self):
            pass

        def delete_context(self):
            pass

    projector_module.egl = types.SimpleNamespace(
        get_device_by_index=lambda index: None, EGLPlatform=_NoContext
    )


def deepdrr_volume_arrays(
    density_g_cm3: np.ndarray, labels: np.ndarray, affine: np.ndarray, pad_label: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density, labels and ``anatomical_from_IJK`` for ``deepdrr.Volume``, such that
    DeepDRR's kernel sees voxel i (NIfTI index) at ``affine @ i``, as GENSYN does.

    Args:
        density_g_cm3: (I, J, K) density.
        labels: (I, J, K) material index per voxel.
        affine: 4x4 voxel index -> world (RAS) mm, voxel centres at integer indices.
        pad_label: material index of the padding voxels (air; their density is 0).
    Returns:
        density (I + 3, J + 3, K + 3) float32, labels of the same shape, and the 4x4
        transform ``affine @ translate(-(PAD_BEFORE + KERNEL_INDEX_OFFSET))``: DeepDRR's
        index p of a world point is then the padded index + 1, which its kernel
        samples at p - 1 = padded index = NIfTI index + PAD_BEFORE.
    """
    pad = ((PAD_BEFORE, PAD_AFTER),) * 3
    density = np.pad(np.asarray(density_g_cm3, dtype=np.float32), pad, constant_values=0.0)
    padded_labels = np.pad(np.asarray(labels), pad, constant_values=pad_label)
    shift = np.eye(4)
    shift[:3, 3] = -(PAD_BEFORE + KERNEL_INDEX_OFFSET)
    return density, padded_labels, np.asarray(affine, dtype=np.float64) @ shift


def _spectrum(spec) -> object:
    if isinstance(spec, str):
        return spec
    energies_ev = np.asarray(spec["energies_kev"], dtype=np.float64) * 1000.0
    return np.stack([energies_ev, np.asarray(spec["photon_weights"], dtype=np.float64)], axis=1)


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    shims = install_shims() if job.get("shims") else []
    try:
        import cupy

        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        print(f"DeepDRR needs a CUDA GPU; CuPy found none ({exc})", file=sys.stderr)
        return NO_CUDA_EXIT
    if n_gpus < 1:
        print("DeepDRR needs a CUDA GPU; CuPy found none", file=sys.stderr)
        return NO_CUDA_EXIT

    import deepdrr
    from deepdrr import geo
    from deepdrr.projector import projector as projector_module

    vol_npz = np.load(job["volume_npz"])
    names = [str(n) for n in vol_npz["materials"]]
    density, labels, anatomical_from_ijk = deepdrr_volume_arrays(
        vol_npz["density_g_cm3"],
        vol_npz["labels"],
        vol_npz["affine"],
        pad_label=names.index("air") if "air" in names else 0,
    )
    volume = deepdrr.Volume(
        data=density,
        materials=({name: i for i, name in enumerate(names)}, labels),
        anatomical_from_IJK=geo.FrameTransform(anatomical_from_ijk),
        anatomical_coordinate_system="RAS",
    )
    cams = job["cameras"]
    width, height = cams[0]["sensor_wh"]
    intrinsic = geo.CameraIntrinsicTransform(
        np.asarray(cams[0]["K"]), sensor_height=height, sensor_width=width
    )
    projections = [
        geo.CameraProjection(
            geo.CameraIntrinsicTransform(
                np.asarray(c["K"]), sensor_height=height, sensor_width=width
            ),
            geo.FrameTransform.from_rt(np.asarray(c["R"]), np.asarray(c["t"])),
        )
        for c in cams
    ]
    spectrum = _spectrum(job["spectrum"])

    def make_projector():
        return deepdrr.Projector(
            volume,
            camera_intrinsics=intrinsic,
            step=float(job["step_voxels"]),
            spectrum=spectrum,
            threads=int(job["threads"]),
            neglog=False,
            source_to_detector_distance=float(job["source_to_detector_mm"]),
        )

    egl_mode = "egl"
    t0 = time.perf_counter()
    projector = make_projector()
    try:
        projector.initialize()
    except Exception as exc:
        # DeepDRR makes its EGL context current before it first touches CUDA
        # (``cupy_device``); only a failure before that point is an EGL failure.
        if not job.get("shims") or hasattr(projector, "cupy_device"):
            raise
        print(f"EGL context failed ({type(exc).__name__}: {exc}); running without", file=sys.stderr)
        _without_egl(projector_module)
        egl_mode = f"none ({type(exc).__name__})"
        projector = make_projector()
        projector.initialize()
    init_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        images = np.asarray(projector.project(*projections), dtype=np.float32)
        first_s = time.perf_counter() - t0
        render_s = []
        for _ in range(int(job.get("timing_repeats", 0))):
            t0 = time.perf_counter()
            projector.project(*projections)
            render_s.append(time.perf_counter() - t0)
        spec = projector.spectrum_arr
        pdf = spec[:, 1] / spec[:, 1].sum()
        open_field_kev = float(np.sum(spec[:, 0] / 1000.0 * pdf))
    finally:
        try:
            projector.free()
        except Exception as exc:  # the images are what matters; the process ends anyway
            print(f"Projector.free failed ({type(exc).__name__}: {exc})", file=sys.stderr)
    images = images.reshape(len(projections), height, width)
    out = Path(job["output_npz"])
    np.savez(out, intensity_kev=images, open_field_kev=np.float64(open_field_kev))
    report = {
        "deepdrr_version": getattr(deepdrr, "__version__", None) or _dist_version("deepdrr"),
        "numpy_version": np.__version__,
        "cupy_version": cupy.__version__,
        "gpu": _text(cupy.cuda.runtime.getDeviceProperties(0)["name"]),
        "shims": shims,
        "egl": egl_mode,
        "n_poses": len(projections),
        "sensor_wh": [width, height],
        "init_s": init_s,
        "first_render_s": first_s,
        "render_s": render_s,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} JOB.json")
    sys.exit(main(sys.argv[1]))
