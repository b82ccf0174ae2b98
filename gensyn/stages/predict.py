"""stage=predict: the trained classifier of one arm and fold on the held-out test images.

Reads ``best.keras`` of ``classify`` and the ``split == test`` rows of ``prepare_xrays``'s
``xrays.csv``, through the same preprocessing as training. Writes ``predictions.csv``: one
row per test image with ``arm, source, views_per_ct, fold, test_set, image_id, patient_id``,
the labels ``y_<finding>`` and probabilities ``p_<finding>``; the summary holds the
test set's per-class and macro AUC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gensyn.registry import stage
from gensyn.stages.classify import source_of, upstream_of

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from gensyn.runs import RunContext


@stage(
    "predict",
    summary="per-image probabilities of a trained classifier on the test set(s)",
    config_keys=(),  # everything that matters is in the classify and prepare_xrays hashes
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
    xray_dir = ctx.upstream_dir("prepare_xrays")
    xrays = sampling.resolve_paths(io.read_table(xray_dir / "xrays.csv"), xray_dir)
    test = xrays[xrays["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise GensynError(f"{xray_dir / 'xrays.csv'} has no rows with split == test")
    model = load_classifier(ctx.upstream_dir("classify") / "best.keras")
    size_px = int(model.input_shape[1])  # the size the model was trained at, by construction
    probs = predict_paths(
        model,
        list(test["path"]),
        size_px,
        int(cfg.classifier.predict_batch_size),
        int(cfg.num_workers),
    )
    src, views = source_of(cfg), int(cfg.sampling.views_per_ct)
    table = pd.DataFrame(
        {
            "arm": sampling.arm_name(src, views),
            "source": src,
            "views_per_ct": views,
            "fold": int(cfg.split_idx),
            "test_set": str(cfg.dataset.name),
            "image_id": test["image_id"].astype(str),
            "patient_id": test["patient_id"].astype(str),
            **{f"y_{f}": test[f].astype(int) for f in findings},
            **{f"p_{f}": probs[:, k] for k, f in enumerate(findings)},
        }
    )
    io.write_table(ctx.path("predictions.csv"), table)
    aucs = per_class_auc(test[findings].to_numpy(), probs)
    finite = aucs[~pd.isna(aucs)]
    macro = float(finite.mean()) if finite.size else float("nan")
    metrics = {
        "test_macro_auc": macro,
        **{f"test_auc_{f}": float(a) for f, a in zip(findings, aucs, strict=True)},
    }
    ctx.log_metrics(metrics)
    ctx.summary.update(n_test_images=len(test), **metrics)
