"""Stage ``export``: one image set with its labels, in formats other tools read directly.

``export.source`` picks the set: ``drr`` (stage drr's manifest), ``synthex`` (stage
gan_translate's manifest) or ``xrays`` (stage prepare_xrays's ``xrays.csv``). Writes into
this run folder, and into ``export.out_dir`` when set:

* ``datalist.json``: a MONAI datalist, ``{"label_names": [...], "training": [{"image": path,
  "label": [5 floats], "fold": k}, ...], "test": [...]}`` (read it with
  ``monai.data.load_decathlon_datalist(path, data_list_key="training")``). ``label`` lists the
  five findings of ``gensyn.config.FINDINGS`` in that order: 1.0, 0.0 or ``null`` (unknown).
  A list with no images is left out (MONAI's loader fails on an empty one). X-rays of the
  training split carry ``fold``: their cross-validation fold, the one ``classify`` uses
  (``classifier.n_folds``, ``split_seed``); synthetic images and the test split have none.
* ``images.csv``: a torchxrayvision-style table, ``path`` plus one column per finding
  (1, 0 or empty = NaN, unknown), then ``patient_id``, ``split`` (training | test) and, for
  X-rays, ``fold`` (empty for the test split).

Image paths are **absolute** (the upstream run folder joined with the manifest's relative
path), so both files work from any working directory as long as the run folders stay where
they are. DRR and SyntheX images are synthetic training data: they are all listed under
``training``; X-rays keep prepare_xrays's train/test split. CT labels come from the manifest
(drr and gan_translate write them) or, for manifests written before they did, from the
convert run's ``volumes.csv`` via :func:`gensyn.classify.sampling.ct_findings`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gensyn.base import io
from gensyn.classify.sampling import ct_findings, resolve_paths
from gensyn.config import FINDINGS
from gensyn.core.registry import stage
from gensyn.stages._shared import option_str, real_folds

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)

#: export.source -> (stage whose folder holds the images, its table of images)
SOURCE_TABLES = {
    "drr": ("drr", "manifest.csv"),
    "synthex": ("gan_translate", "manifest.csv"),
    "xrays": ("prepare_xrays", "xrays.csv"),
}


def source_of(cfg: DictConfig) -> str:
    """``export.source`` (an Enum in the schema) as a plain string."""
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
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``path`` (absolute), one float column per finding (NaN = unknown), ``patient_id``,
    ``split``, and ``fold`` when ``folds`` (``image_id, fold``) is given (missing: <NA>).

    ``images``: a manifest or ``xrays.csv`` (``path`` relative to ``root`` or absolute, and
    ``ct_id`` or ``patient_id``); its finding columns are used where present, else the
    ``ct_labels`` table (``ct_id`` + findings, from ``ct_findings``) is joined on ``ct_id``.
    Rows without a ``split`` column are ``training``; ``train`` becomes ``training``.
    """
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
    out = pd.DataFrame(
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
    if folds is not None:
        fold_of = dict(zip(folds["image_id"].astype(str), folds["fold"], strict=True))
        out["fold"] = table["image_id"].astype(str).map(fold_of).astype("Int64")
    return out


def datalist(table: pd.DataFrame, findings: Sequence[str]) -> dict[str, Any]:
    """The MONAI datalist of an :func:`export_table`: image + label list (``None`` = unknown)
    + ``fold`` where the table has one; lists without images are left out."""
    has_fold = "fold" in table.columns

    def item(row: Any) -> dict[str, Any]:
        labels = [float(row[f]) for f in findings]
        entry = {"image": row["path"], "label": [None if math.isnan(v) else v for v in labels]}
        if has_fold and not pd.isna(row["fold"]):
            entry["fold"] = int(row["fold"])
        return entry

    lists: dict[str, list[dict[str, Any]]] = {"training": [], "test": []}
    for _, row in table.iterrows():
        lists["test" if row["split"] == "test" else "training"].append(item(row))
    return {"label_names": list(findings), **{k: v for k, v in lists.items() if v}}


@stage(
    "export",
    summary="write one image set (export.source: drr | synthex | xrays) as a MONAI datalist + CSV",
    config_keys=("export.source", "export.out_dir", "classifier.n_folds", "split_seed"),
    upstream=_upstream,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    """Read the image table, CT labels and folds, write ``datalist.json`` and ``images.csv``."""
    src = source_of(cfg)
    images_stage, table_name = SOURCE_TABLES[src]
    folder = ctx.upstream_dir(images_stage)
    images = io.read_table(folder / table_name)
    ct_labels, folds = None, None
    if src != "xrays" and any(f not in images.columns for f in FINDINGS):
        convert_dir = ctx.upstream_dir("convert")
        volumes = io.read_table(convert_dir / "volumes.csv")
        if "ct_id" not in volumes.columns and "volume_id" in volumes.columns:
            volumes["ct_id"] = volumes["volume_id"]
        ct_labels = ct_findings(volumes, FINDINGS)
    if src == "xrays":  # the folds classify trains on (the same split file)
        folds = real_folds(cfg, images[images["split"] == "train"].reset_index(drop=True))
    table = export_table(images, folder, FINDINGS, ct_labels, folds)
    data = datalist(table, FINDINGS)
    targets = [ctx.out_dir]
    if cfg.export.get("out_dir"):
        targets.append(Path(str(cfg.export.out_dir)).expanduser().resolve())
    for target in targets:
        io.write_table(target / "images.csv", table)
        io.write_json(target / "datalist.json", data)
    counts = {
        "source": src,
        "n_images": len(table),
        "n_test": int((table["split"] == "test").sum()),
    }
    if folds is not None:
        counts["n_folds"] = int(folds["fold"].nunique())
    ctx.summary.update(counts, datalist="datalist.json", table="images.csv")
    if len(targets) > 1:
        ctx.summary["out_dir"] = str(targets[1])
    log.info("export %s: %d images -> %s", src, len(table), " and ".join(map(str, targets)))
