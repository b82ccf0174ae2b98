"""Checks of a composed config that need more than its types, run before any stage starts.

The schemas (gensyn/config/) already refuse unknown keys and wrong types. These checks catch
combinations that are valid YAML but would waste a GPU-week: real data at the demo's sizes,
frozen layers on random weights, ``device=cuda`` without a GPU. Each raises
:class:`~gensyn.errors.GensynError` with the key, the value and the command to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gensyn.errors import GensynError

DEMO = "demo"


def _option(value: Any) -> str:
    return str(getattr(value, "value", value))


def check_demo_sizes(cfg: DictConfig) -> None:
    """Refuse a real ``dataset`` or ``ct_dataset`` under ``experiment=demo``.

    The demo experiment shrinks every model (64-px small CNN, 256-px DRRs, an 8-filter
    CycleGAN) to run on a laptop; a real data set with those sizes would give numbers that
    look like results and are not.
    """
    if cfg.get("experiment_name") != DEMO:
        return
    real = [
        f"{group}={cfg[group].name}"
        for group in ("dataset", "ct_dataset")
        if str(cfg[group].name) != DEMO
    ]
    if real:
        raise GensynError(
            f"{' and '.join(real)} with experiment=demo would run the real data at the demo's "
            "laptop sizes (small_cnn at 64 px, 256-px DRRs, a tiny CycleGAN). Add "
            "experiment=thesis (the original study's sizes: PadChest + RAD-ChestCT, "
            "DenseNet121 at 512 px) or experiment=thesis_grid, and override what differs, e.g. "
            f"`python launch.py experiment=thesis {' '.join(real)} ...`"
        )


def check_classifier_weights(cfg: DictConfig) -> None:
    """Frozen DenseNet121 layers need pretrained weights; a local weights file must exist."""
    c = cfg.classifier
    if _option(c.name) != "densenet121":
        return
    weights = c.get("weights")
    tail = int(c.trainable_tail_layers)
    if weights is None and tail != -1:
        raise GensynError(
            f"classifier.weights=null with classifier.trainable_tail_layers={tail}: all but the "
            f"last {tail} layers would stay frozen at random values, so the classifier would "
            "learn on random features. Use classifier.weights=imagenet (the default), a local "
            ".h5 file, or train every layer from scratch with classifier.trainable_tail_layers=-1"
        )
    if weights not in (None, "imagenet") and not Path(str(weights)).expanduser().is_file():
        raise GensynError(
            f"classifier.weights={weights}: no such file; give a DenseNet121 no-top weights "
            "file (.h5), imagenet, or null"
        )


def check_fold(cfg: DictConfig) -> None:
    """``split_idx`` must name one of the ``classifier.n_folds`` folds."""
    n_folds = int(cfg.classifier.n_folds)
    if n_folds < 2:
        raise GensynError(f"classifier.n_folds={n_folds}; allowed: 2 or more")
    if not 0 <= int(cfg.split_idx) < n_folds:
        raise GensynError(
            f"split_idx={cfg.split_idx}; allowed: 0 .. {n_folds - 1} (classifier.n_folds={n_folds})"
        )


def check_config(cfg: DictConfig) -> None:
    """Every start-up check, in order; the first problem raises GensynError."""
    from gensyn.devices import check_device

    check_demo_sizes(cfg)
    check_classifier_weights(cfg)
    check_fold(cfg)
    check_device(str(OmegaConf.select(cfg, "device", default="auto")))
