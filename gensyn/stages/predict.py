"""stage=predict: the trained classifier of one arm and fold on the held-out test sets.

Reads ``best.keras`` of ``classify`` and, through the same preprocessing as training, predicts
the ``split == test`` rows of ``xrays.csv`` of ``prepare_xrays`` for the training data set,
and for every data set in ``report.test_datasets`` (external sets, e.g. ChestX-ray14's PA
images for a model trained on PadChest; their ``prepare_xrays`` runs first if needed) the
rows its ``dataset.xray.external_test`` names: ``all`` (every row, whatever its split) or
``test_split`` (``split == test``). Writes ``predictions.csv``: one row per test image with
``arm, source, views_per_ct, fold, test_set, image_id, patient_id``, the labels
``y_<finding>``, probabilities ``p_<finding>`` and the test set's size ``n_test_set_images``,
``n_test_set_patients``; the summary holds each test set's per-class and macro AUC, its
``n_<set>_images`` and ``n_<set>_patients`` and ``<set>_rows`` (which rows were used).

A test image that cannot be read (missing, garbage, truncated) is left out and listed in
``unreadable_images.csv`` (test_set, path, reason); the others are predicted and the summary's
``n_unreadable_images`` says how many were left out. Images are decoded by ``num_workers``
loaders ahead of the model; with ``classifier.cache`` on, the first prediction of a test set
writes each decoded image into the decode-once image cache as it goes (one pass over the
files), and every later prediction of the same test set (other arms and folds) streams from
there. Files are checked only without a cache (before streaming them) or after something failed;
the unreadable ones found are recorded beside the cache, and later predictions check only those.
The summary holds the time breakdown (``time_prepare_s``: reading the test tables and opening
the cache, ``time_read_s``: checking files, ``time_compile_s``:
compiling the prediction step, or loading it from the JAX compilation cache in
``classifier.cache`` that earlier predict runs of the same model and batch size (other arms,
folds) filled, ``time_compute_s``: decoding (and caching) + the model, which overlap,
``time_write_s``), ``images_per_s`` (over the wall time) and ``images_per_s_after_compile``.

With ``classifier.feature_cache=auto`` (the default), the model's frozen part runs once per
test image and its output is kept (:mod:`gensyn.classify.features`): every later prediction of
the same test set in the process (the other arms and folds of a local sweep) runs only the
model's trained last layers. ``time_compute_s`` then includes that feature pass
(``time_feature_pass_s``), and the summary's ``feature_cache`` says ``used``, ``off`` or
``not used: <why>``, with the features' bytes, place and dtype.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gensyn.base import io
from gensyn.base.degenerate import degenerate_reason
from gensyn.base.devices import jax_device
from gensyn.base.errors import GensynError
from gensyn.base.pipeline_io import StageTimer
from gensyn.classify import data as classify_data  # as a module: tests replace its checks
from gensyn.classify import sampling
from gensyn.classify.cache import cache_report, describe, open_existing
from gensyn.config.dataset import DatasetConfig
from gensyn.core.confdir import CONF_DIR
from gensyn.core.registry import stage
from gensyn.core.runs import execute, stage_hash
from gensyn.stages._shared import (
    cache_folder,
    feature_settings,
    option_str,
    source_of,
    upstream_of,
    write_left_out,
)

if TYPE_CHECKING:
    from gensyn.core.run_context import RunContext

log = logging.getLogger(__name__)


def with_dataset(cfg: DictConfig, name: str) -> DictConfig:
    """A copy of ``cfg`` whose ``dataset`` is the external test set ``name``: its settings in
    ``report.external.<name>`` (command-line overrides included), else the option
    ``conf/dataset/<name>.yaml`` as it is."""
    sub = cfg.copy()
    external = OmegaConf.select(cfg, f"report.external.{name}")
    if external is not None:
        sub.dataset = OmegaConf.merge(OmegaConf.structured(DatasetConfig), external)
        return sub
    conf = CONF_DIR / "dataset"
    path = conf / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in conf.glob("*.yaml"))
        raise GensynError(f"report.test_datasets: no dataset option {name!r}; known: {known}")
    sub.dataset = OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(path))
    return sub


def external_test_runs(cfg: DictConfig) -> dict[str, Any]:
    """Each external test set's ``prepare_xrays`` hash and the rows predicted from it.

    Part of ``predict``'s hash: the external set's settings (its YAML, ``report.external``
    overrides, the content of its official lists) and ``external_test`` change predictions.
    """
    runs = {}
    for name in cfg.report.test_datasets:
        if str(name) == str(cfg.dataset.name):
            continue
        ext = with_dataset(cfg, str(name))
        runs[str(name)] = {
            "prepare_xrays": stage_hash(ext, "prepare_xrays"),
            "rows": str(ext.dataset.xray.external_test),
        }
    return {"external_test_sets": runs} if runs else {}


def test_sets(cfg: DictConfig, own_dir: Path) -> list[tuple[str, Path, str]]:
    """(name, prepare_xrays folder, rows) of the training data set and the external test sets.

    ``rows`` is ``test_split`` for the training data set (its other rows trained the model)
    and the set's ``dataset.xray.external_test`` (``all`` | ``test_split``) for an external one.
    """
    sets = [(str(cfg.dataset.name), own_dir, "test_split")]
    for name in cfg.report.test_datasets:
        if str(name) == str(cfg.dataset.name):
            continue
        ext = with_dataset(cfg, str(name))
        rows = str(ext.dataset.xray.external_test)  # one of ExternalTestRows: checked at compose
        sets.append((str(name), execute(ext, "prepare_xrays"), rows))
    return sets


def select_test_rows(xrays: pd.DataFrame, rows: str) -> pd.DataFrame:
    """The rows of an ``xrays.csv`` table to predict: ``all`` or ``test_split`` (split == test)."""
    if rows == "all":
        return xrays.reset_index(drop=True)
    return xrays[xrays["split"] == "test"].reset_index(drop=True)


def undecodable_images(paths: list[str], image_size_px: int, workers: int) -> dict[str, str]:
    """The files of ``paths`` that fail the full decode of the model's preprocessing."""

    def problem(path: str) -> str | None:
        try:
            classify_data.load_image(path, image_size_px)
        except ValueError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        problems = list(pool.map(problem, paths))
    return {p: why for p, why in zip(paths, problems, strict=True) if why is not None}


def _unreadable_record(images: Path, paths: list[str], size_px: int) -> Path:
    """Where a prediction records the unreadable files of the test set ``paths``."""
    listing = "\n".join([str(size_px), *sorted(paths)])
    return images / f"unreadable-{hashlib.sha256(listing.encode()).hexdigest()[:24]}.json"


def find_unreadable(
    paths: list[str], size_px: int, workers: int, decode_all: bool = True
) -> dict[str, str]:
    """The files of ``paths`` that are not readable images, each with the reason: the cheap
    structural check of every file, then the full decode of the model's preprocessing on the
    others; with ``decode_all`` False only where the check found nothing (a whole test set)."""
    bad = classify_data.unreadable_images(paths, max(1, workers))
    rest = [p for p in paths if p not in bad]
    if not rest or (bad and not decode_all):
        return bad
    return {**bad, **undecodable_images(rest, size_px, workers)}


def predict_readable(
    cfg: DictConfig, model: Any, test: pd.DataFrame, size_px: int, timer: StageTimer
) -> tuple[pd.DataFrame, Any, dict[str, str], list[Any]]:
    """(rows predicted, their probabilities, unreadable files with reasons, image caches used)
    of one test set.

    Unreadable images are left out rather than stopping the stage on the first one. With
    ``classifier.cache`` on, the first prediction of a test set decodes each file once, for
    the model and into the decode-once cache together, and every later prediction of it (the
    other arms and folds of a grid) streams the images from there. The files are checked
    (``read``) only where something failed, or without a cache, before streaming them;
    unreadable files found are recorded beside the cache, so later predictions check just
    those again. A cached file decoded when it was cached and is unchanged since.
    """
    from gensyn.classify.predict import predict_and_cache, predict_paths  # heavy: keras, jax

    workers = int(cfg.num_workers)
    decode = option_str(cfg.classifier.decode)
    batch, prefetch = int(cfg.classifier.predict_batch_size), int(cfg.classifier.prefetch)
    folder = cache_folder(cfg)
    images = None if folder is None else folder / "images"
    paths = list(test["path"])
    with timer.time("prepare"):  # the cache's key: every file's size and modification time
        cache = None if images is None else open_existing(images, paths, size_px)
        record = None if images is None else _unreadable_record(images, paths, size_px)
    bad: dict[str, str] = {}
    if cache is None and images is None:
        with timer.time("read"):  # streaming stops at a bad file: check them all first
            bad = classify_data.unreadable_images(paths, max(1, workers))
    elif cache is None and images is not None and record is not None and record.is_file():
        with timer.time("read"):  # the files an earlier prediction of this test set found bad
            listed = set(paths)
            bad = find_unreadable(
                [p for p in io.read_json(record) if p in listed], size_px, workers
            )
        if bad:
            cache = open_existing(images, [p for p in paths if p not in bad], size_px)
    while True:
        keep = test[~test["path"].isin(bad)].reset_index(drop=True)
        try:
            with timer.time("compute"):
                if cache is None and images is not None and len(keep):
                    probs, cache = predict_and_cache(
                        model, list(keep["path"]), size_px, images, batch, workers, prefetch, decode
                    )
                else:
                    probs = predict_paths(
                        model, list(keep["path"]), size_px, batch, workers, prefetch, decode,
                        [] if cache is None else [cache],
                    )  # fmt: skip
            return keep, probs, bad, [] if cache is None else [cache]
        except (OSError, ValueError) as exc:  # a bad file, or no room for the cache
            with timer.time("read"):
                more = find_unreadable(list(keep["path"]), size_px, workers, decode_all=False)
            if more:
                bad = {**bad, **more}
                if record is not None:
                    with contextlib.suppress(OSError):  # only a shortcut for later predictions
                        io.write_json(record, bad)
                continue
            if isinstance(exc, OSError) and cache is None and images is not None:
                log.warning("predict: image cache not written (%s); decoding the files", exc)
                images = None
                continue
            raise


#: The last model split (the model, its split or why not), for a reused model.
_SPLIT: list[tuple[Any, Any]] = []


def frozen_split(cfg: DictConfig, ctx: RunContext, model: Any) -> Any:
    """The model split at its frozen prefix (:func:`gensyn.classify.prefix.split_frozen_prefix`)
    when ``classifier.feature_cache`` is on and the split exists; else None (the reason in the
    summary's ``feature_cache``)."""
    from gensyn.classify.prefix import split_frozen_prefix  # heavy: keras, jax

    if feature_settings(cfg) is None:
        ctx.summary["feature_cache"] = "off"
        return None
    if _SPLIT and _SPLIT[0][0] is model:  # the reused model (load_classifier): its split,
        split = _SPLIT[0][1]  # whose compiled steps read the variables' new values
    else:
        split = split_frozen_prefix(model)  # prediction never augments
        _SPLIT[:] = [(model, split)]
    if isinstance(split, str):
        log.info("predict: feature cache not used: %s", split)
        ctx.summary["feature_cache"] = f"not used: {split}"
        return None
    return split


def predict_test_set(
    cfg: DictConfig, model: Any, split: Any, test: pd.DataFrame, size_px: int, timer: StageTimer
) -> tuple[pd.DataFrame, Any, dict[str, str], list[Any], Any]:
    """:func:`predict_readable`, or from stored features when ``split`` is given: (rows
    predicted, probabilities, unreadable files, image caches used, the Features or None).

    An unreadable image stops the feature pass; the files are then checked, the bad ones left
    out and the pass run again. Features that fit nowhere fall back to the full model.
    """
    from gensyn.classify.features import features_for, predict_features  # heavy: keras, jax

    if split is None:
        return (*predict_readable(cfg, model, test, size_px, timer), None)
    settings = feature_settings(cfg)
    assert settings is not None
    folder = cache_folder(cfg)
    workers = int(cfg.num_workers)
    bad: dict[str, str] = {}
    while True:
        keep = test[~test["path"].isin(bad)].reset_index(drop=True)
        paths = list(keep["path"])
        try:
            with timer.time("compute"):
                found = None if folder is None else open_existing(folder / "images", paths, size_px)
                feats = features_for(
                    split, [paths], size_px, settings, [] if found is None else [found]
                )
                probs = predict_features(split.tail, feats, paths, settings.batch_size)
            return keep, probs, bad, [], feats
        except ValueError:  # an unreadable image stopped the feature pass
            with timer.time("read"):
                more = find_unreadable(paths, size_px, workers, decode_all=False)
            if not more:
                raise
            bad = {**bad, **more}
        except OSError as exc:
            log.warning("predict: feature cache not used (%s); running the full model", exc)
            return (*predict_readable(cfg, model, test, size_px, timer), None)


def features_summary(feature_sets: list[Any]) -> dict[str, object]:
    """The summary fields of the features of a prediction's test sets (bytes and images
    summed, time of the feature passes)."""
    summary = feature_sets[0].describe()
    for key in ("feature_cache_bytes", "feature_cache_images_computed",
                "feature_cache_images_reused"):  # fmt: skip
        summary[key] = sum(f.describe()[key] for f in feature_sets)
    summary["time_feature_pass_s"] = round(sum(f.compute_s for f in feature_sets), 3)
    summary["feature_cache_where"] = ",".join(
        sorted(
            {w for f in feature_sets for w in str(f.describe()["feature_cache_where"]).split(",")}
        )
    )
    return summary


def refuse_degenerate(probs: Any, findings: list[str], test_set: str, model_dir: Path) -> None:
    """A GensynError where a finding's probabilities are not finite, or the same for every
    image of the test set (a classifier that ignores its input): never marked DONE."""
    for k, finding in enumerate(findings):
        reason = degenerate_reason(probs[:, k])
        if reason is not None:
            raise GensynError(
                f"predict: the probabilities of {finding} on test set {test_set} "
                f"({len(probs)} images): {reason}; the classifier "
                f"in {model_dir} gives no usable predictions; the run is not marked DONE. Check "
                "its training metrics (metrics.jsonl) and retrain (docs/classification.md)"
            )


@stage(
    "predict",
    summary="per-image probabilities of a trained classifier on the test set(s)",
    # the model and the training data are in the classify / prepare_xrays hashes
    config_keys=("report.test_datasets",),
    upstream=lambda cfg: ["classify", *upstream_of(cfg)],
    inputs=external_test_runs,
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    from gensyn.classify.features import warm_up_tail  # heavy: keras, jax
    from gensyn.classify.keras_env import use_compilation_cache  # heavy: keras, jax
    from gensyn.classify.predict import load_classifier, warm_up  # heavy: keras, jax

    ctx.summary["jax_backend"] = jax_device(str(cfg.device), "predict")
    folder = cache_folder(cfg)
    if folder is not None:  # another arm's or fold's prediction step: loaded, not compiled
        use_compilation_cache(folder / "jax")
    # the model of the sweep's previous prediction, where it is the same architecture
    model = load_classifier(ctx.upstream_dir("classify") / "best.keras", reuse=True)
    size_px = int(model.input_shape[1])  # the size the model was trained at, by construction
    split = frozen_split(cfg, ctx, model)
    timer = StageTimer()
    with timer.time("compile"):  # the prediction step, timed apart from the images
        if split is None:
            warm_up(model, int(cfg.classifier.predict_batch_size), size_px)
        else:
            warm_up_tail(split, int(cfg.classifier.predict_batch_size))
    tables, empty = [], []
    unreadable: list[dict[str, str]] = []
    caches: list[Any] = []
    feature_sets: list[Any] = []
    for name, xray_dir, rows in test_sets(cfg, ctx.upstream_dir("prepare_xrays")):
        with timer.time("prepare"):  # only the rows predicted: a study's table is large
            test = select_test_rows(io.read_table(xray_dir / "xrays.csv"), rows)
            test = sampling.resolve_paths(test, xray_dir)
        if test.empty:
            empty.append(str(xray_dir / "xrays.csv"))
            continue
        test, probs, bad, used, features = predict_test_set(cfg, model, split, test, size_px, timer)
        refuse_degenerate(probs, list(cfg.dataset.findings), name, ctx.upstream_dir("classify"))
        caches += used
        feature_sets += [] if features is None else [features]
        unreadable += [{"test_set": name, "path": p, "reason": why} for p, why in bad.items()]
        if test.empty:
            empty.append(f"{xray_dir / 'xrays.csv'} (every test image unreadable)")
            continue
        tables.append(prediction_table(cfg, name, test, probs))
        _log_test_set(cfg, ctx, name, rows, test, probs)
    if not tables:
        raise GensynError(
            f"predict: no rows with split == test in {empty}; name an external test set with "
            "report.test_datasets=[...] or give the data set a test split "
            "(dataset.xray.test_fraction or official lists, docs/classification.md 'Test sets')"
        )
    with timer.time("write"):
        predictions = pd.concat(tables, ignore_index=True)
        io.write_table(ctx.path("predictions.csv"), predictions)
        write_left_out(
            log, ctx.path("unreadable_images.csv"), unreadable, ["test_set", "path", "reason"],
            "predict: %d unreadable test image(s)",
        )  # fmt: skip
    # images_per_s_after_compile: the rate a larger test set approaches
    timing = timer.log(log, "predict", len(predictions), "images")
    ctx.log_metrics(timing)
    ctx.summary.update(
        n_unreadable_images=len(unreadable), num_workers=int(cfg.num_workers), **timing
    )
    ctx.summary.update(cache_summary(caches, feature_sets))


def prediction_table(cfg: DictConfig, name: str, test: pd.DataFrame, probs: Any) -> pd.DataFrame:
    """``predictions.csv``'s rows of one test set: the arm and fold, each image's labels
    ``y_<finding>`` and probabilities ``p_<finding>``, the test set's size."""
    findings = list(cfg.dataset.findings)
    src, views = source_of(cfg), int(cfg.sampling.views_per_ct)
    return pd.DataFrame(
        {
            "arm": sampling.arm_name(src, views),
            "source": src,
            "views_per_ct": views,
            "fold": int(cfg.split_idx),
            "test_set": name,
            "image_id": test["image_id"].astype(str),
            "patient_id": test["patient_id"].astype(str),
            **{f"y_{f}": test[f].astype(int) for f in findings},
            **{f"p_{f}": probs[:, k] for k, f in enumerate(findings)},
            "n_test_set_images": len(test),
            "n_test_set_patients": int(test["patient_id"].nunique()),
        }
    )


def _log_test_set(
    cfg: DictConfig, ctx: RunContext, name: str, rows: str, test: pd.DataFrame, probs: Any
) -> None:
    """One test set's per-class and macro AUC (logged and in the summary), its size and rows."""
    from gensyn.report.metrics import per_class_auc  # heavy: scipy

    findings = list(cfg.dataset.findings)
    aucs = per_class_auc(test[findings].to_numpy(), probs)
    finite = aucs[~pd.isna(aucs)]
    prefix = "test" if name == cfg.dataset.name else f"{name}"
    metrics = {
        f"{prefix}_macro_auc": float(finite.mean()) if finite.size else float("nan"),
        **{f"{prefix}_auc_{f}": float(a) for f, a in zip(findings, aucs, strict=True)},
    }
    ctx.log_metrics(metrics)
    ctx.summary.update(
        {
            f"n_{name}_images": len(test),
            f"n_{name}_patients": int(test["patient_id"].nunique()),
            f"{name}_rows": "all" if rows == "all" else "split == test",
            **metrics,
        }
    )


def cache_summary(caches: list[Any], feature_sets: list[Any]) -> dict[str, Any]:
    """The summary fields of the image caches and stored features a prediction used
    (``image_cache: off`` where neither)."""
    summary: dict[str, Any] = {}
    if feature_sets:
        summary.update(features_summary(feature_sets))
    if caches:
        log.info("predict: image cache: %s", cache_report(caches))
        summary.update(describe(caches))
    elif not feature_sets:
        summary["image_cache"] = "off"
    return summary
