"""stage=prepare_xrays: real chest X-rays -> frontal, windowed, resized PNGs + label table.

Writes ``images/<image_id>.png``, ``xrays.csv`` (the common label table of gensyn.data.xray.labels
plus ``path`` relative to this folder, ``split`` and the source size / stored bits),
``unreadable.csv`` (image, file, reason: listed and skipped) and ``journal.csv`` (one row
per processed image, appended as it happens, so a killed run resumes where it stopped).

``split`` (train | test) comes from the data set's official lists or from a patient-level,
stratified hold-out of ``dataset.xray.test_fraction`` (``test_split.csv``, made once and
reused on a resumed run): see ``XrayConfig`` and gensyn.data.splits. With official lists,
images in neither list are listed in ``unreadable.csv`` and skipped.

``dataset=demo`` simulates real radiographs instead (:func:`gensyn.data.phantom.demo.prepare_xrays`,
same outputs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gensyn.base import io
from gensyn.base.bounds import hashed_field_names
from gensyn.base.errors import GensynError
from gensyn.config.dataset import XrayConfig
from gensyn.config.settings import to_settings
from gensyn.core.registry import stage
from gensyn.data import splits
from gensyn.data.phantom import demo
from gensyn.data.xray.labels import read_image_list, read_label_table
from gensyn.data.xray.prep import PrepOptions, contact_sheet, locate_images, prepare_table
from gensyn.stages._shared import run_demo, write_left_out

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


def _hashed_keys() -> tuple[str, ...]:
    """The data set, its hashed ``dataset.xray`` fields (``external_test`` steers predict, the
    worker count no result: declared unhashed in gensyn/config/dataset.py), the demo's."""
    xray = [f"dataset.xray.{name}" for name in hashed_field_names(XrayConfig)]
    # split_seed, not seed: every training seed of a repeated cross-validation shares the test set
    return ("dataset.name", "dataset.raw_dir", *xray, "dataset.demo", "split_seed")


def official_list_digests(cfg: DictConfig) -> dict[str, Any]:
    """The official split lists a run would read, each by content (None: not there).

    Hashed with the config, so adding, removing or editing ``train_val_list.txt`` /
    ``test_list.txt`` makes a new run instead of a finished one silently ignoring them. Not
    for the demo or ``split_source: holdout``, which never read them.
    """
    x = cfg.dataset.xray
    names = [str(n) for n in (x.official_train_list, x.official_test_list) if n]
    if cfg.dataset.name == "demo" or str(x.split_source) == "holdout" or not names:
        return {}
    raw = Path(str(cfg.dataset.raw_dir))
    return {"official_lists": {name: io.file_digest(raw / name) for name in names}}


def _label_table(x: DictConfig, label_path: Path) -> tuple[PrepOptions, pd.DataFrame, Any]:
    """(the preparation's options, the label table, the rows it skipped with reasons)."""
    if not x.label_file or not label_path.is_file():
        raise GensynError(
            f"X-ray label table {label_path} not found (dataset.raw_dir + "
            "dataset.xray.label_file); see docs/data.md for where to get it"
        )
    try:
        options = to_settings(x, PrepOptions)
        table, skipped = read_label_table(x.label_source, label_path)
    except ValueError as exc:
        raise GensynError(f"prepare_xrays: {exc}") from None
    return options, table, skipped


def _output_paths(table: pd.DataFrame, label_path: Path) -> pd.Series:
    """``images/<image id stem>.png`` of every row; ids must be unique."""
    stems = table["image_id"].map(lambda i: Path(str(i)).stem)
    if stems.duplicated().any():
        raise GensynError(
            f"image ids are not unique in {label_path}: {list(stems[stems.duplicated()][:5])}"
        )
    return "images/" + stems + ".png"


def _not_prepared(
    table: pd.DataFrame,
    sources: list[str | None],
    image_dir: Path,
    label_path: Path,
    skipped: Any,
    unlisted: list[str],
) -> list[dict[str, Any]]:
    """``image_id, file, reason`` of the listed images left out before preparing: files not
    found, label rows the table reader skipped, images in neither official list."""
    rows = [
        {
            "image_id": table.at[i, "image_id"],
            "file": str(image_dir / str(table.at[i, "relpath"])),
            "reason": "file not found",
        }
        for i, src in enumerate(sources)
        if src is None
    ]
    rows += [
        {"image_id": r.image_id, "file": str(label_path), "reason": r.reason}
        for r in skipped.itertuples()
    ]
    rows += [
        {"image_id": i, "file": str(label_path), "reason": "in neither official split list"}
        for i in unlisted
    ]
    return rows


def _counts(cfg: DictConfig, table: pd.DataFrame) -> dict[str, int]:
    """Images and patients per split, positives per finding."""
    counts = {f"n_{k}": int(table[k].sum()) for k in cfg.dataset.findings if k in table.columns}
    per_split = {
        f"n_{s}_{what}": int(col[table["split"] == s].nunique())
        for s in ("train", "test")
        for what, col in (("images", table["image_id"]), ("patients", table["patient_id"]))
    }
    return {**per_split, **counts}


@stage(
    "prepare_xrays",
    summary="real chest X-rays: labels to the common table, frontal images resized and windowed",
    config_keys=_hashed_keys(),
    inputs=official_list_digests,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    # simulated radiographs: gensyn.data.phantom.demo writes the same outputs
    if cfg.dataset.name == "demo":
        run_demo(cfg, ctx, "dataset", demo.prepare_xrays)
        return
    x = cfg.dataset.xray
    raw = Path(cfg.dataset.raw_dir)
    label_path = raw / x.label_file
    options, table, skipped = _label_table(x, label_path)
    n_listed = len(table)
    if x.views:  # PA / AP (frontal) by default, as the original study
        table = table[table["view"].isin(list(x.views))].reset_index(drop=True)
    try:
        table, split_source, unlisted = _assign_split(cfg, table, raw, ctx)
    except ValueError as exc:
        raise GensynError(f"prepare_xrays: {exc}") from None
    sources = locate_images(table["relpath"], raw / x.image_dir)
    table["path"] = _output_paths(table, label_path)
    unreadable = _not_prepared(table, sources, raw / x.image_dir, label_path, skipped, unlisted)
    table, failed = prepare_table(
        table, sources, ctx.out_dir, options, ctx.path("journal.csv"), int(x.num_workers)
    )
    unreadable += failed
    io.write_table(ctx.path("xrays.csv"), table)
    # said on the console, as convert, classify and predict do
    write_left_out(
        log, ctx.path("unreadable.csv"), unreadable, ["image_id", "file", "reason"],
        "prepare_xrays: %d image(s)",
    )  # fmt: skip
    if len(table):
        io.write_image(
            ctx.path("figures", "examples.png"),
            contact_sheet(
                [str(ctx.out_dir / p) for p in table["path"][:16]],
                title=f"real X-rays: first {min(16, len(table))} prepared images",
            ),
        )
        ctx.summary["figures"] = ["figures/examples.png"]
    ctx.summary.update(
        n_listed=n_listed,
        n_images=len(table),
        n_unreadable=len(unreadable),
        split_source=split_source,
        **_counts(cfg, table),
    )
    ctx.log_metrics({"n_images": len(table), "n_unreadable": len(unreadable)})
    if not len(table):
        raise GensynError(
            f"prepare_xrays: no image could be prepared; see {ctx.out_dir / 'unreadable.csv'}"
        )


def _assign_split(cfg, table, raw, ctx):  # type: ignore[no-untyped-def]
    """(``table`` with ``split``, the split source used, ids of images in neither official list).

    ``official``: the data set's own train / test lists (images in neither are dropped);
    ``holdout``: ``test_fraction`` of the patients, stratified (``test_split.csv``, reused);
    ``auto``: official where both lists are in raw_dir. Patients in both lists are warned
    about here and refused where the split is used for training (classify). Raises ValueError.
    """
    x = cfg.dataset.xray
    source = str(x.split_source)  # a SplitSource: checked when the config was composed
    names = [str(x.official_train_list), str(x.official_test_list)]
    lists = [raw / n for n in names]
    has_lists = all(names) and all(p.is_file() for p in lists)
    if source == "official" and not has_lists:
        raise ValueError(
            "dataset.xray.split_source=official needs both official lists "
            f"(official_train_list, official_test_list) {names} in {raw}"
        )
    if source == "auto":
        source = "official" if has_lists else "holdout"
    if source == "official":
        split = splits.official_split(
            table["image_id"], read_image_list(lists[0]), read_image_list(lists[1])
        ).to_numpy()
        unlisted = table.loc[split == "", "image_id"].astype(str).tolist()
        table = table.assign(split=split)[split != ""].reset_index(drop=True)
        log.info("prepare_xrays: official split lists %s", names)
        leaking = splits.leaking_patients(table)
        ctx.summary["n_patients_in_both_lists"] = len(leaking)
        if leaking:  # checked where the split is used: training on this data set (classify)
            log.warning(
                "prepare_xrays: dataset=%s: %d patient(s) in both official lists %s in %s "
                "(e.g. %s): fine as an external test set, but classify refuses to train on "
                "this split",
                cfg.dataset.name, len(leaking), " and ".join(names), raw, leaking[:5],
            )  # fmt: skip
        return table, source, unlisted
    findings = [f for f in cfg.dataset.findings if f in table.columns]
    held = splits.load_or_make_holdout(
        ctx.path("test_split.csv"), table, findings, float(x.test_fraction), int(cfg.split_seed)
    )
    split_of = dict(zip(held["image_id"].astype(str), held["split"], strict=True))
    return table.assign(split=table["image_id"].astype(str).map(split_of)), source, []
