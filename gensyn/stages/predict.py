"""stage=predict: the trained classifier of one arm and fold on the held-out test sets.

Reads ``best.keras`` of ``classify`` and, through the same preprocessing as training, predicts
the ``split == test`` rows of ``xrays.csv`` of ``prepare_xrays`` for the training data set
and for every data set in ``report.test_datasets`` (external sets, e.g. ChestX-ray14's PA
images for a model trained on PadChest; their ``prepare_xrays`` runs first if needed).
Writes ``predictions.csv``: one row per test image with ``arm, source, views_per_ct, fold,
test_set, image_id, patient_id``, the labels ``y_<finding>`` and probabilities
``p_<finding>``; the summary holds each test set's per-class and macro AUC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gensyn.registry import stage
from gensyn.stages.classify import option_str, source_of, upstream_of

if TYPE_CHECKING:
    from pathlib import Path

    from omegaconf import DictConfig

    from gensyn.runs import RunContext


def with_dataset(cfg: DictConfig, name: str) -> DictConfig:
    """A copy of ``cfg`` whose ``dataset`` is the option ``conf/dataset/<name>.yaml``."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from gensyn.config.dataset import DatasetConfig
    from gensyn.errors import GensynError

    conf = Path(__file__).resolve().parents[2] / "conf" / "dataset"
    path = conf / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in conf.glob("*.yaml"))
        raise GensynError(f"report.test_datasets: no dataset option {name!r}; known: {known}")
    sub = cfg.copy()
    sub.dataset = OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(path))
    return sub


def test_sets(cfg: DictConfig, own_dir: Path) -> list[tuple[str, Path]]:
    """(name, prepare_xrays folder) of the training data set and the external test sets."""
    from gensyn.runs import execute

    sets = [(str(cfg.dataset.name), own_dir)]
    for name in cfg.report.test_datasets:
        if str(name) != str(cfg.dataset.name):
            sets.append((str(name), execute(with_dataset(cfg, str(name)), "prepare_xrays")))
    return sets


@stage(
    "predict",
    summary="per-image probabilities of a trained classifier on the test set(s)",
    # the model and the training data are in the classify / prepare_xrays hashes
    config_keys=("report.test_datasets",),
    upstream=lambda cfg: ["classify", *upstream_of(cfg)],
)
def run(cfg: DictConfig, ctx: RunContext) -> None:
    import pandas as pd

    from gensyn import io
    from gensyn.classify import sampling
    from gensyn.classify.predict import load_classifier, predict_paths
    from gensyn.errors import GensynError
    from gensyn.report.metrics import per_class_auc

    findings = list(cfg.dataset.findings)
    model = load_classifier(ctx.upstream_dir("classify") / "best.keras")
    size_px = int(model.input_shape[1])  # the size the model was trained at, by construction
    src, views = source_of(cfg), int(cfg.sampling.views_per_ct)
    tables, empty = [], []
    for name, xray_dir in test_sets(cfg, ctx.upstream_dir("prepare_xrays")):
        xrays = sampling.resolve_paths(io.read_table(xray_dir / "xrays.csv"), xray_dir)
        test = xrays[xrays["split"] == "test"].reset_index(drop=True)
        if test.empty:
            empty.append(str(xray_dir / "xrays.csv"))
            continue
        probs = predict_paths(
            model,
            list(test["path"]),
            size_px,
            int(cfg.classifier.predict_batch_size),
            int(cfg.num_workers),
            int(cfg.classifier.prefetch),
            option_str(cfg.classifier.decode),
        )
        tables.append(
            pd.DataFrame(
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
                }
            )
        )
        aucs = per_class_auc(test[findings].to_numpy(), probs)
        finite = aucs[~pd.isna(aucs)]
        prefix = "test" if name == cfg.dataset.name else f"{name}"
        metrics = {
            f"{prefix}_macro_auc": float(finite.mean()) if finite.size else float("nan"),
            **{f"{prefix}_auc_{f}": float(a) for f, a in zip(findings, aucs, strict=True)},
        }
        ctx.log_metrics(metrics)
        ctx.summary.update({f"n_{prefix}_images": len(test), **metrics})
    if not tables:
        raise GensynError(
            f"predict: no rows with split == test in {empty}; name an external test set with "
            "report.test_datasets=[...] or give the data set a test split"
        )
    io.write_table(ctx.path("predictions.csv"), pd.concat(tables, ignore_index=True))
