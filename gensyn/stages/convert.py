"""stage=convert: raw CTs (DICOM, NIfTI, NRRD, NPZ) -> NIfTI (int16 HU, true spacing/origin/orientation).

Writes ``volumes/<volume_id><suffix>``, ``volumes.csv`` (one validation row per volume:
shape, spacing, origin, orientation codes, HU range), ``failures.csv`` (volume, file,
reason) and, where the data set has CT labels, ``labels.csv`` (the common label table,
``image_id`` = volume id). ``ct_dataset=demo`` generates phantom CTs instead
(:func:`gensyn.data.phantom.demo.convert`, same outputs). Converted volumes are skipped on a re-run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.config.settings import to_settings
from gensyn.core.registry import stage
from gensyn.data.ct.convert import (
    FORMATS,
    NpzOptions,
    VolumeSource,
    convert_many,
    coronal_preview,
    discover_sources,
)
from gensyn.data.ct.labels import attach_ct_labels, read_ct_label_tables
from gensyn.data.phantom import demo
from gensyn.stages._shared import run_demo

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


def _sources(c: DictConfig, raw: Path) -> list[VolumeSource]:
    """The CT volumes below ``raw`` of ``c.ct_format``; none is a GensynError."""
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
    return sources


def _label_table(c: DictConfig, raw: Path) -> pd.DataFrame | None:
    """The CT label tables of ``c.label_file`` (a glob below ``raw``) as the common table, or
    None without one; checked before hours of conversion, not after."""
    if not c.label_file:
        return None
    label_paths = sorted(raw.glob(c.label_file))
    if not label_paths:
        raise GensynError(
            f"no CT label table matches {raw / c.label_file} (ct_dataset.convert.label_file); "
            "set it to the table's name (a glob) below raw_dir, or '' for none"
        )
    meta = raw / c.metadata_file if c.metadata_file else None
    try:
        return read_ct_label_tables(
            c.label_source,
            list(label_paths),
            meta if meta is not None and meta.is_file() else None,
        )
    except ValueError as exc:
        raise GensynError(f"convert: {exc}") from None


def _report_failures(ctx: RunContext, rows: list[Any], failures: list[dict[str, Any]]) -> None:
    """Log the failed volumes (listed in failures.csv); none converted is a GensynError."""
    for f in failures[:10]:
        log.warning("convert: %s failed: %s", f["volume_id"], f["reason"])
    if not rows:
        reasons = "\n".join(f"  {f['volume_id']}: {f['file']}: {f['reason']}" for f in failures[:5])
        raise GensynError(
            f"convert: all {len(failures)} volume(s) failed; see {ctx.out_dir / 'failures.csv'}:\n"
            f"{reasons}"
        )


@stage(
    "convert",
    summary="CT volumes (DICOM, NIfTI, NRRD, NPZ or demo phantoms) -> NIfTI with true geometry",
    config_keys=_hashed_keys,
    upstream=_upstream,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    if cfg.ct_dataset.name == "demo":  # phantoms: gensyn.data.phantom.demo writes the same outputs
        run_demo(cfg, ctx, "ct_dataset", demo.convert)
        return
    c = cfg.ct_dataset.convert
    raw = Path(cfg.ct_dataset.raw_dir)
    sources = _sources(c, raw)
    labels = _label_table(c, raw)
    npz = to_settings(c, NpzOptions)
    rows, failures = convert_many(
        sources,
        ctx.out_dir / "volumes",
        npz=npz,
        workers=int(c.num_workers),
        suffix=c.nifti_suffix,
    )
    volumes = pd.DataFrame(rows)
    if labels is not None:  # patient ids and the five study labels, in both tables
        volumes, labels = attach_ct_labels(volumes, labels)
    io.write_table(ctx.path("volumes.csv"), volumes)
    io.write_table(
        ctx.path("failures.csv"), pd.DataFrame(failures, columns=["volume_id", "file", "reason"])
    )
    if labels is not None:
        io.write_table(ctx.path("labels.csv"), labels)
        ctx.summary["n_labelled"] = len(labels)
    if rows:  # coronal previews: head up, patient right on the left, true aspect
        strip = [coronal_preview(ctx.out_dir / "volumes" / r["nifti"]) for r in rows[:4]]
        io.write_image(ctx.path("figures", "coronal.png"), np.concatenate(strip, axis=1))
        ctx.summary["figures"] = ["figures/coronal.png"]
    # with failures.csv: said at the end and on every later run, retried with redo=failed
    ctx.summary.update(n_volumes=len(rows), n_failed=len(failures), failed_unit="volume")
    ctx.log_metrics({"n_volumes": len(rows), "n_failed": len(failures)})
    _report_failures(ctx, rows, failures)
