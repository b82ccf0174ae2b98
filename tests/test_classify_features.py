"""Frozen-prefix feature cache: the split, the stored features, and training / prediction on
them against the full model (the same computation, so the same numbers to float tolerance)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from classify_fakes import FINDINGS, make_xray_set

from gensyn.base import io
from gensyn.classify import features as features_module
from gensyn.classify import scan_fit, train
from gensyn.classify.features import (
    FeatureCacheSettings,
    features_for,
    forget_resident,
    predict_features,
)
from gensyn.classify.keras_env import keras
from gensyn.classify.models import ModelSpec, build_model
from gensyn.classify.predict import load_classifier, predict_paths
from gensyn.classify.prefix import split_frozen_prefix
from gensyn.classify.train import TrainSettings, train_classifier

ONE_THREAD = {"num_workers": 1, "decode": "threads"}


@pytest.fixture(autouse=True)
def _no_features_held():
    forget_resident()
    yield
    forget_resident()


@pytest.fixture(scope="module")
def densenet32():
    """DenseNet121 at 32², random weights (seed 0), the study's 9 trainable layers."""
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    return build_model(ModelSpec(image_size_px=32, weights=None))


def _images(n, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def test_densenet121_splits_after_the_last_dense_blocks_input(densenet32):
    split = split_frozen_prefix(densenet32)
    assert not isinstance(split, str), split
    # the tail reads one tensor: the 992 channels the last dense layer concatenates onto
    assert split.cut_layer == "conv5_block15_concat"
    assert split.feature_shape == (1, 1, 992)
    assert split.feature_dtype == "float32"
    assert split.bytes_per_image == 992 * 4
    tail_layers = {
        layer.name for piece in split.tail.layers for layer in getattr(piece, "layers", [])
    }
    assert {"conv5_block16_1_conv", "conv5_block16_2_conv", "conv5_block16_concat", "findings"} <= (
        tail_layers
    )
    x = _images(4, 32, 1)
    whole = np.asarray(densenet32.predict(x, verbose=0))
    parts = np.asarray(split.tail.predict(split.prefix.predict(x, verbose=0), verbose=0))
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    # the tail trains exactly the model's trainable variables, shared, in the model's order
    assert [id(v) for v in split.tail.trainable_variables] == [
        id(v) for v in densenet32.trainable_variables
    ]


def test_more_trainable_layers_move_the_cut_back_to_a_single_tensor():
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(image_size_px=32, weights=None, trainable_tail_layers=12))
    split = split_frozen_prefix(model)
    assert not isinstance(split, str), split
    # conv5_block15's layers are partly trainable now: the cut is the block before them
    assert split.cut_layer == "conv5_block14_concat"
    assert split.feature_shape == (1, 1, 960)
    x = _images(3, 32, 2)
    np.testing.assert_allclose(
        split.tail.predict(split.prefix.predict(x, verbose=0), verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_no_split_where_the_prefix_is_not_deterministic(densenet32):
    assert "augment" in split_frozen_prefix(densenet32, augment=True)
    keras.utils.set_random_seed(0)
    small = build_model(ModelSpec(name="small_cnn", image_size_px=32, widths=(4, 8)))
    assert "no frozen part" in split_frozen_prefix(small)
    # a frozen convolution, then Dropout, then a trainable head: Dropout is random in training
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="frozen_conv", trainable=False)(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Conv2D(4, 3, name="frozen_conv2", trainable=False)(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
    why = split_frozen_prefix(keras.Model(inputs, outputs))
    assert isinstance(why, str) and "drop (Dropout)" in why


def test_features_go_to_a_file_when_memory_is_capped_and_are_found_again(tmp_path, densenet32):
    table = make_xray_set(tmp_path / "img", n_patients=10, size_px=32, seed=3)
    paths = list(table["path"])
    split = split_frozen_prefix(densenet32)
    assert not isinstance(split, str)
    in_ram = features_for(split, [paths], 32, FeatureCacheSettings(batch_size=8, **ONE_THREAD))
    assert {b.where for b in in_ram.blocks} == {"host"} and in_ram.n_computed == len(paths)
    # the same process asks again, with more images: only the new ones are computed
    extra = make_xray_set(tmp_path / "more", n_patients=3, size_px=32, seed=4)
    both = features_for(
        split, [paths, list(extra["path"])], 32, FeatureCacheSettings(batch_size=8, **ONE_THREAD)
    )
    assert (both.n_reused, both.n_computed) == (len(paths), len(extra))
    forget_resident()
    capped = FeatureCacheSettings(
        folder=tmp_path / "features", batch_size=8, max_device_bytes=0, max_host_bytes=0,
        **ONE_THREAD,
    )  # fmt: skip
    on_disk = features_for(split, [paths], 32, capped)
    assert {b.where for b in on_disk.blocks} == {"file"} and on_disk.n_computed == len(paths)
    (file,) = (tmp_path / "features").glob("*.npy")
    assert file.stat().st_size >= len(paths) * split.bytes_per_image
    assert not list((tmp_path / "features").glob("*.partial*"))
    blocks, rows = on_disk.locate(paths)
    np.testing.assert_array_equal(
        np.asarray(on_disk.gather(blocks, rows)),
        np.asarray(in_ram.gather(*in_ram.locate(paths))),
    )
    again = features_for(split, [paths], 32, capped)  # another process would find the file too
    assert (again.n_computed, again.n_reused) == (0, len(paths))
    # a rewritten image is another image: its set's features are computed again
    os.utime(paths[0], ns=(1, 1))
    changed = features_for(split, [paths], 32, capped)
    assert changed.n_computed == len(paths)
    probs = predict_features(split.tail, changed, paths, 8)
    np.testing.assert_allclose(
        probs, predict_paths(densenet32, paths, 32, 8, **ONE_THREAD), rtol=1e-5, atol=1e-6
    )


def test_bfloat16_features_on_the_device_in_ram_and_on_disk_agree(tmp_path):
    """Under mixed_bfloat16 (the GPU's policy) features are bfloat16 wherever they are kept
    (a JAX array filled in place, a NumPy array, a file of 16-bit patterns), the same values,
    and the tail on them predicts what the full model does."""
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(ModelSpec(image_size_px=32, weights=None))
    finally:
        keras.config.set_dtype_policy("float32")
    split = split_frozen_prefix(model)
    assert not isinstance(split, str) and split.feature_dtype == "bfloat16"
    assert split.bytes_per_image == 992 * 2
    table = make_xray_set(tmp_path / "img", n_patients=8, size_px=32, seed=5)
    paths = list(table["path"])  # not a multiple of the batch: the last batch is padded
    places = {
        "device": FeatureCacheSettings(batch_size=8, max_device_bytes=1 << 30, **ONE_THREAD),
        "host": FeatureCacheSettings(batch_size=8, max_device_bytes=0, **ONE_THREAD),
        "file": FeatureCacheSettings(
            folder=tmp_path / "f", batch_size=8, max_device_bytes=0, max_host_bytes=0,
            **ONE_THREAD,
        ),
    }  # fmt: skip
    got = {}
    for where, settings in places.items():
        forget_resident()
        features = features_for(split, [paths[::-1]], 32, settings)
        assert {b.where for b in features.blocks} == {where}
        got[where] = np.asarray(features.gather(*features.locate(paths))).astype(np.float32)
        probs = predict_features(split.tail, features, paths, 8)
        np.testing.assert_allclose(
            probs, predict_paths(model, paths, 32, 8, **ONE_THREAD), rtol=0.02, atol=0.02
        )
    np.testing.assert_array_equal(got["device"], got["host"])
    np.testing.assert_array_equal(got["file"], got["host"])


@pytest.mark.parametrize("where", ["device", "host"])
def test_scanned_prediction_is_keras_predict(tmp_path, monkeypatch, densenet32, where):
    """Several batches per compiled call (2 here, so 23 images take 2 calls of 2 batches of
    8, the last call padded), features from two blocks interleaved: the outputs of Keras'
    ``predict`` on the same features, in the same order, and the full model's."""
    split = split_frozen_prefix(densenet32)
    assert not isinstance(split, str)
    table = make_xray_set(tmp_path / "img", n_patients=12, size_px=32, seed=7)
    paths = list(table["path"])[:23]
    cap = 1 << 30 if where == "device" else 0
    settings = FeatureCacheSettings(batch_size=8, max_device_bytes=cap, **ONE_THREAD)
    features = features_for(split, [paths[:11], paths[11:]], 32, settings)
    assert len(features.blocks) == 2 and {b.where for b in features.blocks} == {where}
    order = paths[::2] + paths[1::2]  # both blocks in every batch
    monkeypatch.setattr(scan_fit, "PREDICT_CALL", 2)
    monkeypatch.setattr(features_module, "PREDICT_BATCH", 8)
    scanned = predict_features(split.tail, features, order, 8)
    (predictor,) = features._predictors.values()
    assert predictor.n_calls == 2  # 16 images, then 7 and 9 of padding
    again = predict_features(split.tail, features, order, 8)  # the compiled predictor kept
    assert features._predictors == {(id(split.tail), 8): predictor}
    assert predictor.n_calls == 4
    monkeypatch.setattr(scan_fit, "scan_fit_for", lambda *a: "asked for Keras' predict")
    keras_way = predict_features(split.tail, features, order, 8)
    assert predictor.n_calls == 4
    assert scanned.shape == (23, len(FINDINGS)) and scanned.dtype == np.float32
    np.testing.assert_array_equal(scanned, again)
    np.testing.assert_allclose(scanned, keras_way, rtol=1e-6, atol=1e-7)
    full = predict_paths(densenet32, order, 32, 8, **ONE_THREAD)
    np.testing.assert_allclose(scanned, full, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_training_on_features_is_training_the_full_model(tmp_path):
    """DenseNet121 (64², random weights, seed 0), 2 epochs of 3 steps: losses, every weight,
    validation AUCs and the saved model's predictions agree with and without the cache."""
    table = make_xray_set(tmp_path / "img", n_patients=24, size_px=64, seed=0)
    paths, labels = list(table["path"]), table[list(FINDINGS)].to_numpy(float)
    spec = ModelSpec(image_size_px=64, weights=None, seed=0)
    settings = TrainSettings(epochs=2, batch_size=8, seed=0, **ONE_THREAD)
    runs = {}
    for mode in ("off", "auto"):
        features = None if mode == "off" else FeatureCacheSettings(batch_size=8, **ONE_THREAD)
        result = train_classifier(
            spec, paths[:24], labels[:24], paths[24:34], labels[24:34], tmp_path / mode,
            settings, FINDINGS, feature_cache=features,
        )  # fmt: skip
        model = load_classifier(tmp_path / mode / "best.keras")
        runs[mode] = (result, model, predict_paths(model, paths[34:], 64, 8, **ONE_THREAD))
    (off, off_model, off_probs), (on, on_model, on_probs) = runs["off"], runs["auto"]
    assert off.feature_cache == {"feature_cache": "off"}
    assert on.feature_cache["feature_cache"] == "used"
    assert on.feature_cache["feature_cache_bytes"] == 34 * 2 * 2 * 992 * 4
    assert on.optimizer_steps == off.optimizer_steps == 6
    np.testing.assert_allclose(
        [h["loss"] for h in on.history], [h["loss"] for h in off.history], rtol=1e-5
    )
    np.testing.assert_allclose(
        [h["val_macro_auc"] for h in on.history], [h["val_macro_auc"] for h in off.history]
    )
    assert len(on_model.variables) == len(off_model.variables)
    for a, b in zip(on_model.variables, off_model.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on_probs, off_probs, rtol=1e-5, atol=1e-6)


def _by_fold(root, stage):
    """The summaries of ``stage``'s runs under ``root``, in fold order."""
    import pandas as pd

    runs = (root / "workdir" / "runs" / stage).glob("*/summary.json")
    fold = (
        (lambda p: io.read_json(p)["split_idx"])
        if stage == "classify"
        else (lambda p: int(pd.read_csv(p.parent / "predictions.csv")["fold"].iloc[0]))
    )
    return [io.read_json(p) for p in sorted(runs, key=fold)]


@pytest.mark.slow
def test_classify_and_predict_give_the_same_aucs_with_and_without_features(launch, tmp_path):
    """Through launch.py (tiny profile, DenseNet121 at 32²): a two-fold sweep of classify +
    predict with feature_cache=auto gives the AUCs of feature_cache=off, and the second fold
    reuses the first fold's features."""
    weights = tmp_path / "densenet121_random_notop.weights.h5"  # the study's frozen layers
    keras.utils.set_random_seed(0)
    keras.applications.DenseNet121(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(weights)
    args = [
        "stage=predict", "split_idx=0,1", "-m", "profile=tiny", "logger=none",
        "classifier=densenet121", "classifier.image_size_px=32", f"classifier.weights={weights}",
        "classifier.epochs=1", "classifier.batch_size=8", "classifier.predict_batch_size=16",
        "num_workers=1",
    ]  # fmt: skip
    summaries = {}
    for mode in ("off", "auto"):
        root = tmp_path / mode
        root.mkdir()
        launch(*args, f"classifier.feature_cache={mode}", env={"GENSYN_ROOT": str(root)})
        summaries[mode] = {stage: _by_fold(root, stage) for stage in ("classify", "predict")}
    off, on = summaries["off"], summaries["auto"]
    assert [s["feature_cache"] for s in off["classify"] + off["predict"]] == ["off"] * 4
    assert [s["feature_cache"] for s in on["classify"] + on["predict"]] == ["used"] * 4
    for a, b in zip(on["classify"], off["classify"], strict=True):
        assert a["best_val_macro_auc"] == pytest.approx(b["best_val_macro_auc"], abs=1e-6)
    for a, b in zip(on["predict"], off["predict"], strict=True):
        for key in [k for k in b if k.startswith("test_auc_") or k == "test_macro_auc"]:
            assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), key
    # the second fold found the real images' features of the first, held in the process
    assert on["classify"][1]["feature_cache_images_reused"] > 0
    assert on["predict"][1]["feature_cache_images_reused"] > 0  # the same test set
    assert all(
        s["time_feature_pass_s"] >= 0 and s["feature_cache_bytes"] > 0 for s in on["classify"]
    )


def test_feature_cache_setting_is_checked_and_not_hashed(compose):
    from gensyn.core.runs import stage_hash
    from gensyn.stages._shared import feature_settings, features_expected

    auto, off = compose("classifier=densenet121"), compose("classifier=densenet121",
                                                           "classifier.feature_cache=off")  # fmt: skip
    assert feature_settings(off) is None and not features_expected(off)
    settings = feature_settings(auto)
    assert settings is not None and settings.folder is not None
    assert settings.folder.parts[-2:] == ("classify", "features")  # beside images/ and jax/
    assert features_expected(auto)
    assert not features_expected(compose("classifier=densenet121", "classifier.augment=true"))
    assert not features_expected(compose("classifier=small_cnn"))
    # the same computation: the same run folders for classify and predict
    for stage in ("classify", "predict"):
        assert stage_hash(auto, stage) == stage_hash(off, stage)
    with pytest.raises(Exception, match="feature_cache"):
        compose("classifier.feature_cache=sometimes")


@pytest.mark.parametrize("unroll", ["1", "2"])
def test_scanned_epochs_are_fit_epochs(tmp_path, monkeypatch, unroll):
    """DenseNet121 at 32² (random weights), real_epochs with synthetic images in every batch:
    3 epochs of 5 steps in chunks of 2 (the last chunk half skipped), against ``fit``, with
    one and two steps per loop iteration."""
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
    monkeypatch.setenv("GENSYN_SCAN_UNROLL", unroll)
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
    assert (
        (scan.real_images_seen, scan.synthetic_images_seen)
        == (
            fit.real_images_seen,
            fit.synthetic_images_seen,
        )
        == (3 * 28, 3 * (5 * 8 - 28))
    )
    losses = [h["loss"] for h in scan.history]
    np.testing.assert_allclose(losses, [h["loss"] for h in fit.history], rtol=1e-5)
    assert len(set(np.round(losses, 6))) == 3  # it trained: every epoch's loss differs
    np.testing.assert_allclose(
        [h["val_macro_auc"] for h in scan.history], [h["val_macro_auc"] for h in fit.history]
    )
    assert scan.best_epoch == fit.best_epoch
    for a, b in zip(scan_model.variables, fit_model.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_predict_reuses_one_architecture_and_reads_each_runs_weights(tmp_path):
    """Two runs of one process save the same architecture (Keras' names restart), so
    ``load_classifier(reuse=True)`` reads the second run's weights into the first's model:
    its predictions are those of the second model loaded anew, to the bit."""
    from gensyn.classify.predict import architecture_key

    table = make_xray_set(tmp_path / "img", n_patients=16, size_px=32, seed=0)
    paths, labels = list(table["path"]), table[list(FINDINGS)].to_numpy(float)
    for seed in (0, 1):  # other initial tails, other weights
        settings = TrainSettings(epochs=1, batch_size=8, seed=seed, **ONE_THREAD)
        train_classifier(
            ModelSpec(image_size_px=32, weights=None, seed=seed), paths[:16], labels[:16],
            paths[16:24], labels[16:24], tmp_path / f"run{seed}", settings, FINDINGS,
        )  # fmt: skip
    files = [tmp_path / f"run{seed}" / "best.keras" for seed in (0, 1)]
    assert architecture_key(files[0]) == architecture_key(files[1])
    anew = predict_paths(load_classifier(files[1]), paths[24:], 32, 8, **ONE_THREAD)
    first = load_classifier(files[0], reuse=True)
    first_probs = predict_paths(first, paths[24:], 32, 8, **ONE_THREAD)
    second = load_classifier(files[1], reuse=True)
    assert second is first
    reused = predict_paths(second, paths[24:], 32, 8, **ONE_THREAD)
    np.testing.assert_array_equal(reused, anew)
    assert not np.allclose(first_probs, anew)  # the weights did change
    # another architecture (another image size) is built, not reused
    train_classifier(
        ModelSpec(image_size_px=48, weights=None, seed=0), paths[:16], labels[:16],
        paths[16:24], labels[16:24], tmp_path / "run48",
        TrainSettings(epochs=1, batch_size=8, seed=0, **ONE_THREAD), FINDINGS,
    )  # fmt: skip
    assert load_classifier(tmp_path / "run48" / "best.keras", reuse=True) is not first


def test_epochs_are_split_into_even_chunks_and_the_unroll_is_checked(monkeypatch):
    assert scan_fit.balanced_chunk(279, 32) == 31  # 9 calls, no padding step
    assert scan_fit.balanced_chunk(419, 32) == 30  # 14 calls, 1 padding step
    assert scan_fit.balanced_chunk(256, 32) == 32
    assert scan_fit.balanced_chunk(5, 2) == 2
    for n in range(1, 700):
        chunk = scan_fit.balanced_chunk(n, 32)
        calls = -(-n // chunk)
        assert chunk <= 32 and calls == -(-n // 32) and calls * chunk - n < calls
    monkeypatch.delenv("GENSYN_SCAN_UNROLL", raising=False)
    assert scan_fit.scan_unroll() == scan_fit.DEFAULT_UNROLL
    monkeypatch.setenv("GENSYN_SCAN_UNROLL", "8")
    assert scan_fit.scan_unroll() == 8
    for bad in ("0", "x", "-2"):
        monkeypatch.setenv("GENSYN_SCAN_UNROLL", bad)
        with pytest.raises(ValueError, match="GENSYN_SCAN_UNROLL"):
            scan_fit.scan_unroll()
