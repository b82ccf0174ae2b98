"""Stage ``drr``: render every converted CT at the configured C-arm poses.

Reads ``volumes.csv`` (ct_id, patient_id, path) of stage ``convert``; writes
``images/<ct_id>/<ct_id>_v<view>.png`` (8/16-bit, -ln(I/I0) windowed, bone bright),
optional ``.npy`` floats, and ``manifest.csv`` with one row per image: the CT, its pose
(``view_index, is_center, alpha_deg, beta_deg``), the CT's labels (one column per finding of
``gensyn.config.FINDINGS``: 1, 0 or empty = unknown, from ``volumes.csv`` via
:func:`gensyn.classify.sampling.ct_findings`) and the physics. A CT whose
``images/<ct_id>/views.json`` lists existing files is complete and skipped on resume. A
converted volume that cannot be read (truncated, corrupt) is listed in ``failures.csv`` (ct_id,
file, reason); the other CTs are rendered, then the stage fails with the commands that redo
only those volumes.

Throughput (:func:`gensyn.drr.batch.render_cts`): ``num_workers`` loader threads read and
decompress the next CTs and build their material density volumes while the main thread
renders (at most two CTs prepared on the device at once), and ``projector.write_threads``
writer threads (at most ``num_workers``) encode and write the images (atomically, without an
fsync each; one ``os.sync()`` at the end, timed as ``time_sync_s``); ``num_workers=0`` does
everything in sequence on one thread. The output
is the same byte for byte. The summary holds the time breakdown (``time_read_s`` ... ``time_wall_s``) and
``drrs_per_s`` / ``cts_per_s`` (gensyn.base.pipeline_io.StageTimer), ``time_to_first_ct_s`` (the
pipeline's fill: the first CT read, prepared and rendered) and ``cts_per_s_after_first`` (the
CTs after the first over the time after it: the rate a long run approaches).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from gensyn.base.degenerate import DegenerateOutputError
from gensyn.base.devices import torch_device
from gensyn.base.errors import GensynError
from gensyn.base.io import png_complete, read_json, read_table, write_table
from gensyn.base.pipeline_io import StageTimer
from gensyn.classify.sampling import ct_findings
from gensyn.config import FINDINGS
from gensyn.config.settings import to_settings
from gensyn.core.confdir import rerun_command
from gensyn.core.registry import stage
from gensyn.drr import PhysicsConfig, PoseSettings, pose_set
from gensyn.drr.batch import CtJob, render_cts
from gensyn.drr.geometry import CarmGeometry, GeometrySettings
from gensyn.drr.physics import spectrum_table
from gensyn.drr.settings import ProjectorSettings
from gensyn.stages._shared import synthetic_seed, synthetic_seed_key

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


def _physics(p: DictConfig) -> PhysicsConfig:
    """The projector group's spectrum, materials and noise; images as line integrals."""
    return to_settings(p, PhysicsConfig, output="line_integral")


def projector_geometry(p: DictConfig) -> CarmGeometry:
    """The projector group's C-arm geometry (preset, detector pixels, distances, crop)."""
    return to_settings(p, GeometrySettings).carm_geometry()


def _volume_columns(volumes: Any, where: Path) -> Any:
    """ct_id, patient_id, path (relative to the convert folder) from a convert table."""
    vol = volumes.copy()
    if "ct_id" not in vol.columns and "volume_id" in vol.columns:
        vol["ct_id"] = vol["volume_id"]
    if "path" not in vol.columns and "nifti" in vol.columns:
        vol["path"] = "volumes/" + vol["nifti"].astype(str)
    if "patient_id" not in vol.columns and "ct_id" in vol.columns:
        vol["patient_id"] = vol["ct_id"]
    missing = [c for c in ("ct_id", "patient_id", "path") if c not in vol.columns]
    if missing:
        raise GensynError(f"{where} lacks columns {missing} (has {list(volumes.columns)})")
    return vol


def _complete(ct_dir: Path, expected: list[str]) -> bool:
    """Whether a CT's marker lists ``expected`` and each of them is a whole PNG (the images are
    written without an fsync each: one cut by a machine crash renders the CT again)."""
    marker = ct_dir / "views.json"
    if not marker.is_file():
        return False
    return read_json(marker).get("files") == expected and all(
        png_complete(ct_dir.parent.parent / f) for f in expected
    )


def unreadable_volumes_error(failed: Any, n_cts: int, convert_dir: Path, out_dir: Path) -> Any:
    """The error listing CTs that could not be read, with the commands that redo only them."""
    table = "\n".join(f"  {r.ct_id}: {r.reason.splitlines()[0]}" for r in failed.itertuples())
    files = " ".join(str(f) for f in failed["file"])
    return GensynError(
        f"drr: {len(failed)} of {n_cts} converted CT volume(s) could not be read (truncated or "
        f"corrupt); the other CTs are rendered and kept. Listed in {out_dir / 'failures.csv'}:\n"
        f"{table}\n"
        "Convert only these again (convert skips volumes that exist), then run drr again (it "
        "renders only what is missing):\n"
        f"  rm {files} {convert_dir / 'DONE'}\n"
        f"  {rerun_command('convert')}\n"
        f"  {rerun_command('drr')}\n"
        f"(or `{rerun_command('convert', 'force=true')}` converts every volume anew)"
    )


def _hashed_keys(cfg: DictConfig) -> tuple[str, ...]:
    """Poses and projector; the noise seed too when the DRRs carry Poisson noise
    (``split_seed``, or ``seed`` with ``synthex_per_seed``)."""
    noisy = float(cfg.projector.photon_count) > 0
    return (
        ("carm_pose", "projector", synthetic_seed_key(cfg)) if noisy else ("carm_pose", "projector")
    )


def _physics_columns(
    p: DictConfig, physics: PhysicsConfig, geometry: CarmGeometry
) -> dict[str, Any]:
    """The manifest's physics columns: the same for every image of the run."""
    return {
        "mode": str(physics.mode),
        "kvp": physics.kvp,
        "filtration_mm_al": physics.filtration_mm_al,
        "air_max_hu": physics.air_max_hu,
        "bone_min_hu": physics.bone_min_hu,
        "photon_count": physics.photon_count,
        "projector": str(p.name),
        "geometry": str(p.geometry),
        "source_to_detector_mm": geometry.source_to_detector_mm,
        "source_to_isocenter_mm": geometry.source_to_isocenter_mm,
        "pixel_size_mm": geometry.pixel_size_mm,
        "image_size_px": geometry.detector_rows_px,
        "bit_depth": p.bit_depth,
    }


def _jobs(cfg: DictConfig, volumes: pd.DataFrame, convert_dir: Path) -> list[CtJob]:
    """One job per CT: its views (``carm_pose``) and the image files they go to."""
    poses = to_settings(cfg.carm_pose, PoseSettings)
    jobs: list[CtJob] = []
    for _, vol in volumes.iterrows():
        ct_id = str(vol["ct_id"])
        views = pose_set(poses, ct_id)
        names = [f"images/{ct_id}/{ct_id}_v{v.index:02d}.png" for v in views]
        jobs.append(CtJob(-1, ct_id, convert_dir / str(vol["path"]), views, names))
    return jobs


def _ct_labels(volumes: pd.DataFrame) -> dict[Any, dict[Any, float]]:
    """Each CT's findings (one column per finding of FINDINGS; NaN = unknown), by ct_id."""
    labels = ct_findings(volumes, FINDINGS).drop_duplicates("ct_id").set_index("ct_id")
    return labels.astype(float).to_dict("index")  # type: ignore[no-any-return]


def _manifest(
    jobs: list[CtJob],
    volumes: pd.DataFrame,
    ct_labels: dict[Any, dict[Any, float]],
    columns: dict[str, Any],
) -> pd.DataFrame:
    """One row per image: the CT, its pose, the CT's findings, the physics."""
    rows = [
        {
            "path": name,
            "ct_id": job.ct_id,
            "patient_id": str(vol["patient_id"]),
            "view_index": view.index,
            "is_center": view.is_center,
            "alpha_deg": view.pose.alpha_deg,
            "beta_deg": view.pose.beta_deg,
            **ct_labels[job.ct_id],
            **columns,
        }
        for job, (_, vol) in zip(jobs, volumes.iterrows(), strict=True)
        for view, name in zip(job.views, job.names, strict=True)
    ]
    return pd.DataFrame(rows)


def _timing(timer: StageTimer, rendered: int, n_todo: int) -> dict[str, float]:
    """The time breakdown, CTs per second and, after the first CT, the rate a long run
    approaches (the first CT's read is a latency paid once a run)."""
    timing = timer.log(log, "drr", rendered, "drrs")
    timing["cts_per_s"] = round(n_todo / timing["time_wall_s"], 3) if rendered else 0.0
    first = timing.get("time_to_first_ct_s")
    if rendered and first is not None and n_todo > 1 and timing["time_wall_s"] > first:
        timing["cts_per_s_after_first"] = round((n_todo - 1) / (timing["time_wall_s"] - first), 3)
    return timing


@stage(
    "drr",
    summary="render DRRs of every CT at the configured C-arm poses (carm_pose, projector)",
    config_keys=_hashed_keys,
    upstream=("convert",),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Render, write images + manifest; resumable per CT; unreadable CTs listed, then an error."""
    p = cfg.projector
    convert_dir = ctx.upstream_dir("convert")
    volumes = _volume_columns(read_table(convert_dir / "volumes.csv"), convert_dir / "volumes.csv")
    volumes = volumes.iloc[cfg.shard :: cfg.num_shards] if cfg.num_shards > 1 else volumes
    # the CT's findings travel with each image, so the manifest stands alone
    ct_labels = _ct_labels(volumes)
    geometry, physics = projector_geometry(p), _physics(p)
    device = str(torch_device(str(cfg.device), "drr"))
    jobs = _jobs(cfg, volumes, convert_dir)
    todo = [j for j in jobs if not _complete(ctx.out_dir / "images" / j.ct_id, j.names)]
    for position, job in enumerate(todo):
        job.position = position
    if p.name == "torch" and todo:  # the spectrum once here, not by every loader at once
        spectrum_table(physics)
    settings, timer = to_settings(p, ProjectorSettings), StageTimer()
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="drr", unit="CT") as progress:
        try:
            rendered, failures = render_cts(
                todo, ctx.out_dir, geometry, physics, device, settings, synthetic_seed(cfg),
                int(cfg.num_workers), timer, on_ct=lambda: progress.update(1),
            )  # fmt: skip
        except DegenerateOutputError as exc:  # garbage is never marked DONE
            raise GensynError(
                f"drr: {exc}; the run is not marked DONE (CTs rendered before are kept). Check "
                "the CT's HU values and the projector/carm_pose settings (docs/drr.md)"
            ) from exc
    failed = pd.DataFrame(failures, columns=["ct_id", "file", "reason"])
    write_table(ctx.path("failures.csv"), failed)
    if failures:
        raise unreadable_volumes_error(failed, len(volumes), convert_dir, ctx.out_dir)
    manifest = _manifest(jobs, volumes, ct_labels, _physics_columns(p, physics, geometry))
    write_table(ctx.path("manifest.csv"), manifest)
    timing = _timing(timer, rendered, len(todo))
    if rendered:
        ctx.log_metrics({"drrs_rendered": rendered, **timing})
    ctx.summary.update(
        {
            "n_images": len(manifest),
            "n_cts": len(volumes),
            "device": device,
            "drrs_rendered": rendered,
            "num_workers": int(cfg.num_workers),
            "write_threads": min(int(cfg.num_workers), int(p.write_threads)),
            **timing,
        }
    )
    if len(manifest):
        ctx.log_image("drr_example", ctx.out_dir / manifest["path"].iloc[0], caption="first DRR")
        ctx.summary["figures"] = [manifest["path"].iloc[0]]
