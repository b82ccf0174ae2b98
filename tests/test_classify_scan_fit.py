"""The scanned training loop on stored features is Keras' ``fit`` on them: same losses,
weights, image counts and validation AUCs, with real and synthetic features in two blocks."""

from __future__ import annotations

import numpy as np
import pytest
from classify_fakes import FINDINGS, make_xray_set

from gensyn.classify import scan_fit, train
from gensyn.classify.features import FeatureCacheSettings, forget_resident
from gensyn.classify.models import ModelSpec
from gensyn.classify.predict import load_classifier
from gensyn.classify.train import TrainSettings, train_classifier

ONE_THREAD = {"num_workers": 1, "decode": "threads"}


@pytest.fixture(autouse=True)
def _no_features_held():
    forget_resident()
    yield
    forget_resident()


def test_scanned_epochs_are_fit_epochs(tmp_path, monkeypatch):
    """DenseNet121 at 32² (random weights), real_epochs with synthetic images in every batch:
    3 epochs of 5 steps in chunks of 2 (the last chunk half skipped), against ``fit``."""
    table = make_xray_set(tmp_path / "img", n_patients=30, size_px=32, seed=3)
    paths, labels = list(table["path"]), table[list(FINDINGS)].to_numpy(float)
    real, synthetic, val = slice(0, 28), slice(28, 40), slice(40, 50)
    train_paths = paths[real] + paths[synthetic]
    train_labels = np.concatenate([labels[real], labels[synthetic]])
    spec = ModelSpec(image_size_px=32, weights=None, seed=0)
    settings = TrainSettings(
        epochs=3, batch_size=8, seed=0, schedule="real_epochs", synthetic_share=0.25,
        learning_rate=3e-3, **ONE_THREAD,
    )  # fmt: skip
    monkeypatch.setattr(scan_fit, "DEFAULT_CHUNK", 2)
    monkeypatch.setattr(scan_fit.ScannedFit.__init__, "__defaults__", (2,))
    runs = {}
    for loop in ("scan", "fit"):
        forget_resident()
        if loop == "fit":
            monkeypatch.setattr(train, "scan_fit_for", lambda *a: "asked for fit")
        result = train_classifier(
            spec, train_paths, train_labels, paths[val], labels[val], tmp_path / loop,
            settings, FINDINGS, n_real_train=28,
            feature_cache=FeatureCacheSettings(batch_size=8, **ONE_THREAD),
        )  # fmt: skip
        runs[loop] = (result, load_classifier(tmp_path / loop / "best.keras"))
    (scan, scan_model), (fit, fit_model) = runs["scan"], runs["fit"]
    assert scan.feature_cache["feature_cache_loop"] == "scan"
    assert fit.feature_cache["feature_cache_loop"] == "fit: asked for fit"
    assert scan.steps_per_epoch == fit.steps_per_epoch == 5  # 28 real / (8 - 2) per batch
    assert scan.synthetic_per_batch == 2
    assert scan.optimizer_steps == fit.optimizer_steps == 15
    assert (scan.real_images_seen, scan.synthetic_images_seen) == (
        fit.real_images_seen,
        fit.synthetic_images_seen,
    ) == (3 * 28, 3 * (5 * 8 - 28))
    losses = [h["loss"] for h in scan.history]
    np.testing.assert_allclose(losses, [h["loss"] for h in fit.history], rtol=1e-5)
    assert len(set(np.round(losses, 6))) == 3  # it trained: every epoch's loss differs
    np.testing.assert_allclose(
        [h["val_macro_auc"] for h in scan.history], [h["val_macro_auc"] for h in fit.history]
    )
    assert scan.best_epoch == fit.best_epoch
    for a, b in zip(scan_model.variables, fit_model.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
