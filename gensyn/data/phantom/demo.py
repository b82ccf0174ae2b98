"""The built-in demo data set: SIMULATED chest CTs and SIMULATED "real" chest X-rays.

Two disjoint groups of phantom patients (:mod:`gensyn.data.phantom.volume`):

* CT patients ``demo-ct-NNNN``: NIfTI volumes (``volumes/``) + ``volumes.csv`` (``ct_id,
  patient_id, path`` and the five labels), what stage ``convert`` produces for real CTs;
* X-ray patients ``demo-xr-NNNN``: one PA radiograph each, projected from their phantom and
  passed through the clinical-look chain of :mod:`gensyn.data.phantom.xray_sim`, as 8-bit PNG +
  ``xrays.csv`` (``image_id, patient_id, view, frontal, path``, labels, ``split``), what
  stage ``prepare_xrays`` produces for real X-ray sources.

:func:`convert` and :func:`prepare_xrays` are the ``dataset=demo`` branches of those stages.

Patient seeds come from ``SeedSequence([seed, group, index])``; a file that already exists
is not made again (a killed run resumes), and the tables are rebuilt from the seeds.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gensyn.base.bounds import bounded
from gensyn.data.phantom.patients import CT_GROUP, XRAY_GROUP, patient_seed
from gensyn.data.phantom.volume import (
    FINDINGS,
    generate_phantom,
    sample_labels,
    save_phantom_nifti,
)

VOLUME_TABLE = "volumes.csv"
XRAY_TABLE = "xrays.csv"
MIN_POOL_CPU_S = 10.0  # estimated work below this runs without worker processes


@dataclass
class DemoSizes:
    """The size of the demo data set, as users set it (``dataset.demo`` / ``ct_dataset.demo``,
    whose schema extends this class); :class:`DemoSpec` takes its defaults from here."""

    num_ct_patients: int = bounded(40, ge=1)  # simulated CT patients (one volume each)
    num_xray_patients: int = bounded(400, ge=1)  # simulated X-ray patients (one PA image each)
    # phantom grid, voxels (x, y, z)
    volume_shape_vox: list[int] = bounded(factory=lambda: [128, 128, 128], ge=1, length=3)
    # phantom voxel size, mm (x, y, z)
    voxel_spacing_mm: list[float] = bounded(factory=lambda: [2.8, 2.8, 2.6], gt=0, length=3)
    xray_size_px: int = bounded(256, ge=1)  # side of the simulated X-rays, pixels
    finding_prevalence: float = bounded(0.3, ge=0, le=1)  # chance of each finding per patient
    # fraction of simulated X-ray patients held out as the test set
    test_fraction: float = bounded(0.3, ge=0, lt=1)


_SIZES = DemoSizes()


@dataclass(frozen=True)
class DemoSpec:
    """Size and seeds of the demo data: :class:`DemoSizes` (its defaults), the seed and the
    rendering internals."""

    num_ct_patients: int = _SIZES.num_ct_patients
    num_xray_patients: int = _SIZES.num_xray_patients
    volume_shape_vox: tuple[int, int, int] = (
        _SIZES.volume_shape_vox[0],
        _SIZES.volume_shape_vox[1],
        _SIZES.volume_shape_vox[2],
    )
    voxel_spacing_mm: tuple[float, float, float] = (
        _SIZES.voxel_spacing_mm[0],
        _SIZES.voxel_spacing_mm[1],
        _SIZES.voxel_spacing_mm[2],
    )
    xray_size_px: int = _SIZES.xray_size_px
    finding_prevalence: float = _SIZES.finding_prevalence
    test_fraction: float = _SIZES.test_fraction
    seed: int = 0
    # X-ray patients are rendered from coarser phantoms (same field of view; None = 5/8 of
    # the CT grid in x and z, 3/8 along the beam) onto a coarser detector (at most
    # ``xray_render_px``), then upsampled to ``xray_size_px``: the clinical chain blurs
    # below this resolution anyway, and it makes 400 patients ~5x cheaper.
    xray_volume_shape_vox: tuple[int, int, int] | None = None
    xray_render_px: int = 128

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], seed: int = 0) -> DemoSpec:
        """Build from a plain mapping (e.g. ``OmegaConf.to_container(cfg.ct_dataset.demo)``)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown demo data keys {sorted(unknown)}; allowed: {sorted(known)}")
        kw = {
            k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in values.items()
        }
        return cls(**{"seed": seed, **kw})  # type: ignore[arg-type]

    @property
    def xray_shape_vox(self) -> tuple[int, int, int]:
        """Grid of the X-ray patients' phantoms."""
        if self.xray_volume_shape_vox is not None:
            return self.xray_volume_shape_vox
        scale = (0.625, 0.375, 0.625)
        shape = [max(16, round(n * f)) for n, f in zip(self.volume_shape_vox, scale, strict=True)]
        return shape[0], shape[1], shape[2]

    @property
    def xray_spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size of the X-ray patients' phantoms: the CT field of view on a coarser grid."""
        sp = [
            s * n / m
            for s, n, m in zip(
                self.voxel_spacing_mm, self.volume_shape_vox, self.xray_shape_vox, strict=True
            )
        ]
        return sp[0], sp[1], sp[2]


def _label_columns(labels: Mapping[str, bool]) -> dict[str, Any]:
    out: dict[str, Any] = {f: int(labels[f]) for f in FINDINGS}
    out["labels"] = "|".join(f for f in FINDINGS if labels[f]) or "No Finding"
    return out


def _make_ct(args: tuple[Path, int, DemoSpec]) -> None:
    path, seed, spec = args
    if path.exists():
        return
    ph = generate_phantom(
        seed,
        sample_labels(seed, spec.finding_prevalence),
        spec.volume_shape_vox,
        spec.voxel_spacing_mm,
    )
    save_phantom_nifti(ph, path)


def write_demo_cts(
    out_dir: str | os.PathLike[str], spec: DemoSpec, workers: int = 1
) -> pd.DataFrame:
    """Write the CT patients' NIfTI volumes under ``out_dir/volumes/`` and ``out_dir/volumes.csv``.

    Returns the table: ``ct_id, patient_id, path`` (relative to ``out_dir``), the five labels
    as 0/1, ``labels`` (names joined by ``|``), ``patient_seed``, ``source``.
    """
    from gensyn.base.io import write_table

    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    rows, jobs = [], []
    for i in range(spec.num_ct_patients):
        seed = patient_seed(spec.seed, CT_GROUP, i)
        ct_id = f"demo-ct-{i:04d}"
        rel = f"volumes/{ct_id}.nii.gz"
        labels = sample_labels(seed, spec.finding_prevalence)
        rows.append(
            {
                "ct_id": ct_id,
                "patient_id": ct_id,
                "path": rel,
                **_label_columns(labels),
                "patient_seed": seed,
                "source": "demo",
            }
        )
        jobs.append((out / rel, seed, spec))
    _run(_make_ct, jobs, workers, 0.3 * np.prod(spec.volume_shape_vox) / 128**3)
    table = pd.DataFrame(rows)
    write_table(out / VOLUME_TABLE, table)
    return table


def _project_pa(hu: np.ndarray, affine: np.ndarray, render_px: int, size_px: int) -> np.ndarray:
    """PA line-integral image rendered at ``render_px``, linearly upsampled to ``size_px``."""
    line = _render_pa(hu, affine, render_px)
    if render_px == size_px:
        return line
    from scipy import ndimage

    return ndimage.zoom(line, size_px / render_px, order=1, grid_mode=True, mode="nearest")


def _render_pa(hu: np.ndarray, affine: np.ndarray, size_px: int) -> np.ndarray:
    """PA line-integral image in gensyn.drr's standing-chest system (``pa_chest`` preset).

    A department chest radiograph: 1.8 m source-detector distance, 120 kVp, 3 mm Al; the
    DRR domain of the study uses a 90 kVp mobile C-arm instead.
    """
    from dataclasses import replace

    from gensyn.drr import CarmPose, preset, render_drrs
    from gensyn.drr.physics import PhysicsMode

    geometry, physics = preset("pa_chest")
    physics = replace(physics, mode=PhysicsMode.poly, output="line_integral", photon_count=0.0)
    return render_drrs(
        hu, affine, [CarmPose()], geometry.resized(size_px), physics, method="joseph"
    )[0]


def _make_xray(args: tuple[Path, int, DemoSpec, dict[str, bool]]) -> dict[str, Any]:
    path, seed, spec, labels = args
    from gensyn.data.phantom.xray_sim import sample_chain_params, simulate_real_radiograph

    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    params = sample_chain_params(rng)
    if not path.exists():
        from gensyn.base.io import write_image

        ph = generate_phantom(seed, labels, spec.xray_shape_vox, spec.xray_spacing_mm)
        render_px = min(spec.xray_render_px, spec.xray_size_px)
        line = _project_pa(ph.hu, ph.affine, render_px, spec.xray_size_px)
        write_image(path, simulate_real_radiograph(line, rng, params))
    return {"marker": params.marker, "rotation_deg": round(params.rotation_deg, 3)}


def write_demo_xrays(
    out_dir: str | os.PathLike[str], spec: DemoSpec, workers: int = 1
) -> pd.DataFrame:
    """Write the X-ray patients' simulated PA radiographs (``images/*.png``) and ``xrays.csv``.

    Columns: ``image_id, patient_id, view (PA), frontal, path`` (relative to ``out_dir``), the
    five labels as 0/1, ``labels``, ``split`` (``train``/``test``, by patient, a seeded
    ``test_fraction``), ``source``, ``marker``, ``rotation_deg``.
    """
    from gensyn.base.io import write_table

    if not 0.0 <= spec.test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {spec.test_fraction}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n = spec.num_xray_patients
    order = np.random.default_rng(np.random.SeedSequence([spec.seed, XRAY_GROUP, 99])).permutation(
        n
    )
    is_test = np.zeros(n, dtype=bool)
    is_test[order[: round(spec.test_fraction * n)]] = True
    rows, jobs = [], []
    for i in range(n):
        seed = patient_seed(spec.seed, XRAY_GROUP, i)
        pid = f"demo-xr-{i:04d}"
        labels = sample_labels(seed, spec.finding_prevalence)
        rel = f"images/{pid}-pa.png"
        rows.append(
            {
                "image_id": f"{pid}-pa",
                "patient_id": pid,
                "view": "PA",
                "frontal": True,
                "path": rel,
                **_label_columns(labels),
                "split": "test" if is_test[i] else "train",
                "source": "demo",
            }
        )
        jobs.append((out / rel, seed, spec, labels))
    extras = _run(_make_xray, jobs, workers, 0.1 * np.prod(spec.xray_shape_vox) / (80 * 48 * 80))
    table = pd.DataFrame([{**r, **e} for r, e in zip(rows, extras, strict=True)])
    write_table(out / XRAY_TABLE, table)
    return table


def _run(fn: Any, jobs: list[Any], workers: int, cpu_s_per_job: float) -> list[Any]:
    """Map ``fn`` over ``jobs`` in order, in ``workers`` processes (1 = in this process).

    Starting a worker costs a few CPU seconds (imports, X-ray spectrum), so work estimated
    below ~10 CPU seconds runs in this process.
    """
    if len(jobs) * cpu_s_per_job < MIN_POOL_CPU_S:
        workers = 1
    if workers <= 1:
        return [fn(j) for j in jobs]
    # spawn, not fork: a parent that already runs torch/OpenMP threads must not be forked.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_one_thread, initargs=(os.getpid(),)
    ) as pool:
        return list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _one_thread(parent_pid: int) -> None:
    """Worker start-up: one BLAS/OpenMP thread per process (torch reads it when imported); the
    worker ends when its parent does (a killed convert leaves no workers behind)."""
    from gensyn.base.processes import init_worker

    init_worker(parent_pid)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)  # numpy's BLAS is already loaded in the worker
    except ImportError:
        pass


def _counts(table: pd.DataFrame) -> dict[str, int]:
    return {f"n_{f}": int(table[f].sum()) for f in FINDINGS}


def convert(spec: DemoSpec, out_dir: str | os.PathLike[str], workers: int = 1) -> dict[str, Any]:
    """``stage=convert ct_dataset=demo``: phantom CTs, ``volumes.csv`` and a slice figure.

    Returns the stage summary (counts per finding, figure paths relative to ``out_dir``).
    """
    from gensyn.data.phantom.demo_figures import ct_slices_figure

    table = write_demo_cts(out_dir, spec, workers)
    first = table.iloc[0]
    ct_slices_figure(
        Path(out_dir) / str(first["path"]),
        Path(out_dir) / "figures" / "phantom_slices.png",
        f"{first['ct_id']}: {first['labels']} (SIMULATED phantom)",
    )
    return {
        "n_volumes": len(table),
        **_counts(table),
        "simulated": True,
        "figures": ["figures/phantom_slices.png"],
    }


def prepare_xrays(
    spec: DemoSpec, out_dir: str | os.PathLike[str], workers: int = 1
) -> dict[str, Any]:
    """``stage=prepare_xrays dataset=demo``: simulated radiographs, ``xrays.csv``, contact sheet."""
    from gensyn.base.io import write_image
    from gensyn.data.xray.prep import contact_sheet

    table = write_demo_xrays(out_dir, spec, workers)
    paths = [str(Path(out_dir) / p) for p in table["path"][:16]]
    sheet = contact_sheet(paths, title=f"simulated X-rays: first {len(paths)} images")
    write_image(Path(out_dir) / "figures" / "examples.png", sheet)
    return {
        "n_images": len(table),
        "n_train": int((table["split"] == "train").sum()),
        "n_test": int((table["split"] == "test").sum()),
        **_counts(table),
        "simulated": True,
        "figures": ["figures/examples.png"],
    }
