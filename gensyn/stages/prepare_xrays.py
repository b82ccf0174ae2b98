"""stage=prepare_xrays: real chest X-rays -> frontal, windowed, resized PNGs + label table.

Writes ``images/<image_id>.png``, ``xrays.csv`` (the common label table of gensyn.data.labels
plus ``path`` relative to this folder, ``split`` and the source size / stored bits),
``unreadable.csv`` (image, file, reason: listed and skipped) and ``journal.csv`` (one row
per processed image, appended as it happens, so a killed run resumes where it stopped).
``dataset=demo`` simulates real radiographs instead (:func:`gensyn.data.demo.prepare_xrays`,
same outputs).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gensyn.registry import stage

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.runs import RunContext

log = logging.getLogger(__name__)


@stage(
    "prepare_xrays",
    summary="real chest X-rays: labels to the common table, frontal images resized and windowed",
    config_keys=("dataset.name", "dataset.raw_dir", "dataset.xray", "dataset.demo", "seed"),
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    from pathlib import Path

    import pandas as pd

    from gensyn import io
    from gensyn.errors import GensynError

    if cfg.dataset.name == "demo":  # simulated radiographs: gensyn.data.demo writes the same outputs
        from gensyn.data import demo

        ctx.summary.update(demo.prepare_xrays(cfg, ctx.out_dir) or {})
        return

    from gensyn.data.labels import read_label_table
    from gensyn.data.xray_prep import (
        PrepJob,
        PrepOptions,
        contact_sheet,
        locate_images,
        prepare_many,
    )

    x = cfg.dataset.xray
    raw = Path(cfg.dataset.raw_dir)
    label_path = raw / x.label_file
    if not x.label_file or not label_path.is_file():
        raise GensynError(
            f"X-ray label table {label_path} not found (dataset.raw_dir + "
            "dataset.xray.label_file); see docs/data.md for where to get it"
        )
    try:
        options = PrepOptions(
            size_px=int(x.size_px),
            bit_depth=int(x.bit_depth),
            window=x.window,
            window_pct=(float(x.window_pct[0]), float(x.window_pct[1])),
            mode=x.mode,
        )
        table, skipped = read_label_table(x.label_source, label_path)
    except ValueError as exc:
        raise GensynError(f"prepare_xrays: {exc}") from None
    n_listed = len(table)
    if x.views:  # PA / AP (frontal) by default, as the original study
        table = table[table["view"].isin(list(x.views))].reset_index(drop=True)
    table["split"] = x.split
    sources = locate_images(table["relpath"], raw / x.image_dir)
    stems = table["image_id"].map(lambda i: Path(str(i)).stem)
    if stems.duplicated().any():
        raise GensynError(
            f"image ids are not unique in {label_path}: {list(stems[stems.duplicated()][:5])}"
        )
    table["path"] = "images/" + stems + ".png"
    missing = [i for i, s in enumerate(sources) if s is None]
    unreadable = [
        {
            "image_id": table.at[i, "image_id"],
            "file": str(raw / x.image_dir / table.at[i, "relpath"]),
            "reason": "file not found",
        }
        for i in missing
    ]
    unreadable += [
        {"image_id": r.image_id, "file": str(label_path), "reason": r.reason}
        for r in skipped.itertuples()
    ]
    invert = table.get("photometric", pd.Series([""] * len(table))).astype(str).eq("MONOCHROME1")
    ids = table["image_id"].astype(str).tolist()
    dsts = [str(ctx.out_dir / p) for p in table["path"].astype(str)]
    jobs = (
        PrepJob(ids[i], src, dsts[i], bool(invert[i]))
        for i, src in enumerate(sources)
        if src is not None
    )
    status: dict[str, dict] = {}
    for row in prepare_many(
        jobs,
        options,
        ctx.path("journal.csv"),
        workers=int(x.num_workers),
        total=len(sources) - len(missing),
    ):
        status[str(row["image_id"])] = row
        if row["status"] != "ok":
            unreadable.append(
                {"image_id": row["image_id"], "file": row["src"], "reason": row["reason"]}
            )
    ok = table["image_id"].astype(str).map(lambda i: status.get(i, {}).get("status") == "ok")
    table = table[ok].reset_index(drop=True)
    for col in ("width_px", "height_px", "stored_bits"):
        table[col] = [status[str(i)].get(col) for i in table["image_id"]]
    io.write_table(ctx.path("xrays.csv"), table)
    io.write_table(
        ctx.path("unreadable.csv"), pd.DataFrame(unreadable, columns=["image_id", "file", "reason"])
    )
    if len(table):
        io.write_image(
            ctx.path("figures", "examples.png"),
            contact_sheet([str(ctx.out_dir / p) for p in table["path"][:16]]),
        )
        ctx.summary["figures"] = ["figures/examples.png"]
    counts = {f"n_{k}": int(table[k].sum()) for k in cfg.dataset.findings if k in table.columns}
    ctx.summary.update(
        n_listed=n_listed, n_images=len(table), n_unreadable=len(unreadable), **counts
    )
    ctx.log_metrics({"n_images": len(table), "n_unreadable": len(unreadable)})
    if not len(table):
        raise GensynError(
            f"prepare_xrays: no image could be prepared; see {ctx.out_dir / 'unreadable.csv'}"
        )
