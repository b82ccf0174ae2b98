"""The classifiers: the study's DenseNet121 recipe (frozen all but 9 layers), ImageNet weights
from Keras' cache or a local file, and the grey-to-ImageNet input mapping."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gensyn.classify import models
from gensyn.classify.keras_env import keras
from gensyn.classify.models import ModelSpec, build_model


def _base(model):
    return next(layer for layer in model.layers if layer.name == "densenet121")


def test_densenet121_trains_only_the_last_9_layers_of_the_base():
    model = build_model(ModelSpec("densenet121", image_size_px=64, trainable_tail_layers=9))
    base = _base(model)
    assert len(base.layers) == 427  # DenseNet121 without top, as in keras.applications
    trainable = [layer.name for layer in base.layers if layer.trainable]
    assert len(trainable) == 9
    assert trainable[0] == "conv5_block16_0_bn" and trainable[-1] == "relu"
    # trainable weights: 3 BN layers (gamma, beta) + 2 convs (kernel) + the Dense head (w, b)
    assert len(model.trainable_weights) == 3 * 2 + 2 + 2
    head = model.get_layer("findings")
    assert head.units == 5 and head.activation.__name__ == "sigmoid"
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, 64, 64, 1)
    out = model.predict(np.zeros((2, 64, 64, 1), np.uint8), verbose=0)
    assert out.shape == (2, 5) and ((out > 0) & (out < 1)).all()


def test_densenet121_loads_local_weights_file(tmp_path):
    keras.utils.set_random_seed(1)
    first = build_model(ModelSpec("densenet121", image_size_px=32))
    path = tmp_path / "densenet121_notop.weights.h5"
    _base(first).save_weights(path)
    keras.utils.set_random_seed(2)
    second = build_model(ModelSpec("densenet121", image_size_px=32, weights=str(path)))
    for a, b in zip(_base(first).weights, _base(second).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError):
        build_model(ModelSpec("densenet121", image_size_px=32, weights=str(tmp_path / "no.h5")))


def test_small_cnn_and_unknown_name():
    model = build_model(ModelSpec("small_cnn", image_size_px=32, widths=(8, 16)))
    assert model.predict(np.zeros((3, 32, 32, 1), np.uint8), verbose=0).shape == (3, 5)
    with pytest.raises(ValueError, match="densenet121"):
        build_model(ModelSpec("resnet50"))


@pytest.fixture(scope="module")
def notop_file(tmp_path_factory):
    """A stand-in for Keras' ImageNet file: a random DenseNet121 base in the same (legacy h5)
    layout, which keras.applications loads for ``weights=<.h5 path>``; and its weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(7)
    base = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("w") / models.IMAGENET_WEIGHTS_FILE
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, base)
    return path, [np.asarray(w) for w in base.weights]


def test_imagenet_constants_are_keras_own():
    from keras.src.applications import densenet

    assert models.IMAGENET_WEIGHTS_URL == densenet.DENSENET121_WEIGHT_PATH_NO_TOP
    source = inspect.getsource(densenet)
    assert f'"{models.IMAGENET_WEIGHTS_FILE}"' in source
    assert f'file_hash="{models.IMAGENET_WEIGHTS_MD5}"' in source


def test_densenet121_loads_a_local_legacy_h5_file(notop_file):
    path, expected = notop_file
    model = build_model(ModelSpec("densenet121", image_size_px=32, weights=str(path)))
    for got, want in zip(_base(model).weights, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


IMAGENET_SCRIPT = """
import sys
import numpy as np
from gensyn.classify.models import ModelSpec, build_model
from gensyn.base.errors import GensynError
try:
    model = build_model(ModelSpec("densenet121", image_size_px=32, weights="imagenet"))
except GensynError as exc:
    print("GensynError:", exc)
    sys.exit(3)
base = next(layer for layer in model.layers if layer.name == "densenet121")
np.savez(sys.argv[1], *[np.asarray(w) for w in base.weights])
"""


def _build_with_keras_home(keras_home, out):
    """Build the DenseNet121 with weights=imagenet in a fresh process with this KERAS_HOME and
    every download going to a closed local port (no network, whatever the machine has)."""
    env = {
        **os.environ,
        "KERAS_HOME": str(keras_home),
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "no_proxy": "",
    }
    script = textwrap.dedent(IMAGENET_SCRIPT)
    return subprocess.run(
        [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True
    )


def test_imagenet_weights_come_from_keras_cache_without_network(notop_file, tmp_path):
    path, expected = notop_file
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / path.name).write_bytes(path.read_bytes())
    proc = _build_with_keras_home(tmp_path / "keras", tmp_path / "loaded.npz")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    with np.load(tmp_path / "loaded.npz") as loaded:
        got = [loaded[f"arr_{i}"] for i in range(len(loaded.files))]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_imagenet_weights_offline_and_not_cached_is_a_clear_error(tmp_path):
    proc = _build_with_keras_home(tmp_path / "empty", tmp_path / "unused.npz")
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    (message,) = [line for line in proc.stdout.splitlines() if line.startswith("GensynError:")]
    assert models.IMAGENET_WEIGHTS_FILE in message
    assert (
        "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    )
    assert f"{tmp_path / 'empty' / 'models'}/" in message
    assert "classifier.weights=/path/to/file.h5" in message
    assert not (tmp_path / "empty" / "models" / models.IMAGENET_WEIGHTS_FILE).exists()


def test_grey_input_becomes_keras_densenet_preprocessing_of_rgb():
    """The model's first layers = keras.applications.densenet.preprocess_input on grey × 3."""
    model = build_model(ModelSpec("densenet121", image_size_px=32))
    front = keras.Model(model.input, model.get_layer("imagenet_normalise").output)
    grey = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    rgb = np.repeat(grey, 3, axis=-1).astype(np.float32)
    want = keras.applications.densenet.preprocess_input(rgb)
    np.testing.assert_allclose(np.asarray(front.predict(grey, verbose=0)), want, atol=1e-5)


def test_compilation_cache_follows_the_folder_of_each_run(tmp_path):
    """Two runs in one process with different cache folders (a stage run after another, as
    `stage=report` or the tests do): each compiles into its own folder, not only the first."""
    import jax
    import jax.numpy as jnp

    from gensyn.classify.keras_env import use_compilation_cache

    before = getattr(jax.config, "jax_compilation_cache_dir", None)
    try:
        for k, folder in enumerate((tmp_path / "a", tmp_path / "b")):
            use_compilation_cache(folder)
            jax.jit(lambda x, k=k: jnp.sin(x) * (k + 2.5))(jnp.arange(7.0)).block_until_ready()
            assert any(folder.iterdir()), folder
    finally:
        if before:
            use_compilation_cache(before)


def test_a_weights_path_under_home_is_expanded_at_start_up_and_by_the_model(
    compose, tmp_path, monkeypatch
):
    """``classifier.weights=~/w.h5``: start-up and the model read the same file."""
    from gensyn.app.startup import check_classifier_weights
    from gensyn.base.errors import GensynError

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "w.h5").write_bytes(b"checked for existence only")
    check_classifier_weights(compose("classifier=densenet121", "classifier.weights='~/w.h5'"))
    assert models.resolve_weights("~/w.h5") == str(tmp_path / "w.h5")
    missing = compose("classifier=densenet121", "classifier.weights='~/gone.h5'")
    with pytest.raises(GensynError, match=r"classifier.weights=~/gone.h5: no such file"):
        check_classifier_weights(missing)
    with pytest.raises(ValueError, match="is not a file"):
        models.resolve_weights("~/gone.h5")


def test_model_defaults_are_the_classifier_settings():
    """One default per setting: ModelSpec's are ClassifierSettings' (the small CNN's widths
    are the demo config's), and a model built from the settings has them."""
    from pathlib import Path

    import yaml

    from gensyn.classify.settings import ClassifierSettings

    conf = Path(__file__).resolve().parent.parent / "conf"
    demo = yaml.safe_load((conf / "classifier" / "small_cnn.yaml").read_text())
    settings = ClassifierSettings()
    assert tuple(ModelSpec().widths) == settings.small_cnn_widths == tuple(demo["small_cnn_widths"])
    assert ModelSpec().image_size_px == settings.image_size_px == 512
    spec = ModelSpec.of(ClassifierSettings(name="small_cnn", weights=None), n_classes=3, seed=4)
    assert (spec.name, spec.n_classes, spec.seed, spec.weights) == ("small_cnn", 3, 4, None)
    with pytest.raises(
        ValueError, match=r"classifier.name='vgg16'; allowed: densenet121, small_cnn"
    ):
        ModelSpec.of(ClassifierSettings(name="vgg16"), n_classes=5, seed=0)  # type: ignore[arg-type]
