"""Stage ``export``: one image set with its labels, in formats other tools read directly.

``export.source`` picks the set: ``drr`` (stage drr's manifest), ``synthex`` (stage
gan_translate's manifest) or ``xrays`` (stage prepare_xrays's ``xrays.csv``). Writes into
this run folder:

* ``datalist.json``: a MONAI-style datalist, ``{"training": [{"image": path, "label":
  [5 floats]}, ...], "test": [...], "label_names": [...]}`` (read it with
  ``monai.data.load_decathlon_datalist(path, data_list_key="training")``). ``label`` lists the
  five findings of ``gensyn.config.FINDINGS`` in that order: 1.0, 0.0 or ``null`` (unknown).
* ``images.csv``: a torchxrayvision-style table, ``path`` plus one column per finding
  (1, 0 or empty = NaN, unknown), then ``patient_id`` and ``split`` (training | test).

Image paths are **absolute** (the upstream run folder joined with the manifest's relative
path), so both files work from any working directory as long as the run folders stay where
they are. DRR and SyntheX images are synthetic training data: they are all listed under
``training`` (``test`` is empty); X-rays keep prepare_xrays's train/test split. CT labels
come from the manifest (drr and gan_translate write them) or, for manifests written before
they did, from the convert run's ``volumes.csv`` via
:func:`gensyn.classify.sampling.ct_findings`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gensyn.registry import stage

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from gensyn.run_context import RunContext

log = logging.getLogger(__name__)

#: export.source -> (stage whose folder holds the images, its table of images)
SOURCE_TABLES = {
    "drr": ("drr", "manifest.csv"),
    "synthex": ("gan_translate", "manifest.csv"),
    "xrays": ("prepare_xrays", "xrays.csv"),
}


def source_of(cfg: DictConfig) -> str:
    """``export.source`` (an Enum in the schema) as a plain string."""
    from gensyn.stages._shared import option_str

    return option_str(cfg.export.source)


def _upstream(cfg: DictConfig) -> list[str]:
    """The images' stage, plus convert (CT labels) for DRR and SyntheX images."""
    src = source_of(cfg)
    if src not in SOURCE_TABLES:
        raise ValueError(f"export.source must be one of {sorted(SOURCE_TABLES)}, got {src!r}")
    images_stage = SOURCE_TABLES[src][0]
    return [images_stage] if src == "xrays" else ["convert", images_stage]


def export_table(
    images: pd.DataFrame,
    root: str | Path,
    findings: Sequence[str],
    ct_labels: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``path`` (absolute), one float column per finding (NaN = unknown), ``patient_id``, ``split``.

    ``images``: a manifest or ``xrays.csv`` (``path`` relative to ``root`` or absolute, and
    ``ct_id`` or ``patient_id``); its finding columns are used where present, else the
    ``ct_labels`` table (``ct_id`` + findings, from ``ct_findings``) is joined on ``ct_id``.
    Rows without a ``split`` column are ``training``; ``train`` becomes ``training``.
    """
    import numpy as np
    import pandas as pd

    from gensyn.classify.sampling import resolve_paths

    table = resolve_paths(images, root).reset_index(drop=True)
    missing = [f for f in findings if f not in table.columns]
    if missing and ct_labels is not None and "ct_id" in table.columns:
        joined = (
            table[["ct_id"]]
            .astype(str)
            .merge(
                ct_labels.drop_duplicates("ct_id"), on="ct_id", how="left", validate="many_to_one"
            )
        )
        for f in missing:
            table[f] = joined[f].to_numpy()
    patient = table["patient_id"] if "patient_id" in table.columns else table.get("ct_id", "")
    split = table["split"].astype(str) if "split" in table.columns else "training"
    return pd.DataFrame(
        {
            "path": table["path"].astype(str),
            **{
                f: pd.to_numeric(table[f], errors="coerce").astype(float)
                if f in table.columns
                else np.nan
                for f in findings
            },
            "patient_id": patient,
            "split": pd.Series(split, index=table.index).replace({"train": "training"}),
        }
    )


def datalist(table: pd.DataFrame, findings: Sequence[str]) -> dict[str, Any]:
    """The MONAI datalist of an :func:`export_table`: image + label list, ``None`` = unknown."""

    def item(row: Any) -> dict[str, Any]:
        labels = [float(row[f]) for f in findings]
        return {"image": row["path"], "label": [None if math.isnan(v) else v for v in labels]}

    out: dict[str, Any] = {"label_names": list(findings), "training": [], "test": []}
    for _, row in table.iterrows():
        out["test" if row["split"] == "test" else "training"].append(item(row))
    return out


@stage(
    "export",
    summary="write one image set (export.source: drr | synthex | xrays) as a MONAI datalist + CSV",
    config_keys=("export.source",),
    upstream=_upstream,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Read the image table and CT labels, write ``datalist.json`` and ``images.csv``."""
    from gensyn import io
    from gensyn.classify.sampling import ct_findings
    from gensyn.config import FINDINGS

    src = source_of(cfg)
    images_stage, table_name = SOURCE_TABLES[src]
    folder = ctx.upstream_dir(images_stage)
    images = io.read_table(folder / table_name)
    ct_labels = None
    if src != "xrays" and any(f not in images.columns for f in FINDINGS):
        convert_dir = ctx.upstream_dir("convert")
        volumes = io.read_table(convert_dir / "volumes.csv")
        if "ct_id" not in volumes.columns and "volume_id" in volumes.columns:
            volumes["ct_id"] = volumes["volume_id"]
        ct_labels = ct_findings(volumes, FINDINGS)
    table = export_table(images, folder, FINDINGS, ct_labels)
    io.write_table(ctx.path("images.csv"), table)
    io.write_json(ctx.path("datalist.json"), datalist(table, FINDINGS))
    counts = {
        "source": src,
        "n_images": len(table),
        "n_test": int((table["split"] == "test").sum()),
    }
    ctx.summary.update(counts, datalist="datalist.json", table="images.csv")
    log.info("export %s: %d images -> %s", src, len(table), ctx.out_dir / "datalist.json")
