"""stage=convert: raw CTs (DICOM, NIfTI, NRRD, NPZ) -> NIfTI (int16 HU, true spacing/origin/orientation).

Writes ``volumes/<volume_id><suffix>``, ``volumes.csv`` (one validation row per volume:
shape, spacing, origin, orientation codes, HU range), ``failures.csv`` (volume, file,
reason) and, where the data set has CT labels, ``labels.csv`` (the common label table,
``image_id`` = volume id). ``ct_dataset=demo`` generates phantom CTs instead
(:func:`gensyn.data.phantom.demo.convert`, same outputs). Converted volumes are skipped on a re-run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gensyn.core.registry import stage

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


def _upstream(cfg: DictConfig) -> tuple[str, ...]:
    return ("download",) if cfg.ct_dataset.download.source != "none" else ()


def _hashed_keys(cfg: DictConfig) -> tuple[str, ...]:
    """What a conversion depends on; the demo's phantoms also on their sizes and
    ``split_seed``."""
    keys = ("ct_dataset.name", "ct_dataset.raw_dir", "ct_dataset.convert")
    return (*keys, "ct_dataset.demo", "split_seed") if cfg.ct_dataset.name == "demo" else keys


@stage(
    "convert",
    summary="CT volumes (DICOM, NIfTI, NRRD, NPZ or demo phantoms) -> NIfTI with true geometry",
    config_keys=_hashed_keys,
    upstream=_upstream,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    from pathlib import Path

    import pandas as pd

    from gensyn.base import io
    from gensyn.base.errors import GensynError

    if cfg.ct_dataset.name == "demo":  # phantoms: gensyn.data.phantom.demo writes the same outputs
        from gensyn.data.phantom import demo
        from gensyn.stages._shared import demo_spec

        spec, workers = demo_spec(cfg, "ct_dataset")
        ctx.summary.update(demo.convert(spec, ctx.out_dir, workers) or {})
        return

    import numpy as np

    from gensyn.config.settings import to_settings
    from gensyn.data.ct.convert import (
        FORMATS,
        NpzOptions,
        convert_many,
        coronal_preview,
        discover_sources,
    )
    from gensyn.data.ct.labels import read_ct_label_tables
    from gensyn.data.label_table import STUDY_LABELS

    c = cfg.ct_dataset.convert
    raw = Path(cfg.ct_dataset.raw_dir)
    if c.ct_format not in (*FORMATS, "auto"):
        raise GensynError(
            f"ct_dataset.convert.ct_format={c.ct_format!r}; allowed: auto, {', '.join(FORMATS)}"
        )
    sources = discover_sources(raw, c.ct_format) if raw.is_dir() else []
    if not sources:
        raise GensynError(
            f"no {c.ct_format} volumes found below {raw} (ct_dataset.raw_dir); "
            "run stage=download or copy the data there"
        )
    labels = None
    if c.label_file:  # checked before hours of conversion, not after
        label_paths = sorted(raw.glob(c.label_file))
        if not label_paths:
            raise GensynError(
                f"no CT label table matches {raw / c.label_file} (ct_dataset.convert.label_file); "
                "set it to the table's name (a glob) below raw_dir, or '' for none"
            )
        meta = raw / c.metadata_file if c.metadata_file else None
        try:
            labels = read_ct_label_tables(
                c.label_source,
                list(label_paths),
                meta if meta is not None and meta.is_file() else None,
            )
        except ValueError as exc:
            raise GensynError(f"convert: {exc}") from None
    npz = to_settings(
        c,
        NpzOptions,
        prefix="npz_",
        spacing_mm=tuple(c.npz_spacing_mm) if c.npz_spacing_mm else None,
    )
    rows, failures = convert_many(
        sources,
        ctx.out_dir / "volumes",
        npz=npz,
        workers=int(c.num_workers),
        suffix=c.nifti_suffix,
    )
    volumes = pd.DataFrame(rows)
    if labels is not None and len(volumes):  # patient ids and the five study labels
        study = labels[["image_id", "patient_id", *STUDY_LABELS]].rename(
            columns={"image_id": "volume_id", "patient_id": "listed_patient_id"}
        )
        volumes = volumes.merge(study, on="volume_id", how="left")
        # the label table's patient id wins; else the CT's own (DICOM PatientID, volume id)
        volumes["patient_id"] = volumes.pop("listed_patient_id").fillna(volumes["patient_id"])
        if labels["patient_id"].isna().any():  # labels.csv too, for the classifier's splits
            own = dict(zip(volumes["volume_id"], volumes["patient_id"], strict=True))
            labels["patient_id"] = labels["patient_id"].fillna(labels["image_id"].map(own))
    io.write_table(ctx.path("volumes.csv"), volumes)
    io.write_table(
        ctx.path("failures.csv"), pd.DataFrame(failures, columns=["volume_id", "file", "reason"])
    )
    if labels is not None:
        labels = labels[labels["image_id"].isin({r["volume_id"] for r in rows})]
        io.write_table(ctx.path("labels.csv"), labels)
        ctx.summary["n_labelled"] = len(labels)
    if rows:  # coronal previews: head up, patient right on the left, true aspect
        strip = [coronal_preview(ctx.out_dir / "volumes" / r["nifti"]) for r in rows[:4]]
        io.write_image(ctx.path("figures", "coronal.png"), np.concatenate(strip, axis=1))
        ctx.summary["figures"] = ["figures/coronal.png"]
    # with failures.csv: said at the end and on every later run, retried with redo=failed
    ctx.summary.update(n_volumes=len(rows), n_failed=len(failures), failed_unit="volume")
    ctx.log_metrics({"n_volumes": len(rows), "n_failed": len(failures)})
    for f in failures[:10]:
        log.warning("convert: %s failed: %s", f["volume_id"], f["reason"])
    if not rows:
        reasons = "\n".join(f"  {f['volume_id']}: {f['file']}: {f['reason']}" for f in failures[:5])
        raise GensynError(
            f"convert: all {len(failures)} volume(s) failed; see {ctx.out_dir / 'failures.csv'}:\n"
            f"{reasons}"
        )
