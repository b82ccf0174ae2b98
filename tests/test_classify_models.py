"""The classifiers: the study's DenseNet121 recipe (frozen all but 9 layers), weights from a file."""

from __future__ import annotations

import numpy as np
import pytest

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
