"""Per-epoch checkpoints hold what training changes: DenseNet121's frozen part is rebuilt from
the weights and checked against a fingerprint, not written every epoch."""

from __future__ import annotations

import numpy as np
import pytest

from gensyn.classify.keras_env import keras
from gensyn.classify.models import ModelSpec, build_model
from gensyn.classify.train import (
    MaskedBinaryCrossentropy,
    _load_checkpoint,
    _save_checkpoint,
    changing_variables,
    frozen_fingerprint,
)


def _densenet(seed: int) -> keras.Model:
    """DenseNet121 at 32², random weights drawn with ``seed``, the study's 9 trainable layers."""
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy("float32")
    model = build_model(ModelSpec(image_size_px=32, weights=None))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=MaskedBinaryCrossentropy())
    return model


@pytest.fixture(scope="module")
def trained():
    """(model, its variables before, after) two optimiser steps in training mode."""
    model = _densenet(0)
    before = [np.array(v) for v in model.variables]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 1)).astype("float32")
    y = rng.integers(0, 2, (16, 5)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    after = [np.array(v) for v in model.variables]
    return model, before, after


def test_the_changing_variables_are_exactly_those_training_changed(trained):
    model, before, after = trained
    changing = set(changing_variables(model))
    changed = {
        i for i, (b, a) in enumerate(zip(before, after, strict=True)) if not np.array_equal(b, a)
    }
    trainable = {id(v) for v in model.trainable_variables}
    trainable_idx = {i for i, v in enumerate(model.variables) if id(v) in trainable}
    # found another way: by training. Every variable that moved is declared changing, and
    # every declared one but the trainable layers' never-moving ones did move
    assert changed <= changing
    assert trainable_idx <= changing
    assert changing - changed == set(), sorted(changing - changed)
    assert 0 < len(changing) < len(model.variables) / 10  # the tail, not DenseNet121
    assert len(trainable_idx) < len(changing)  # the tail's batch-norm statistics move too


def test_checkpoint_round_trip_and_refusal_of_other_frozen_values(trained, tmp_path):
    model, _, after = trained
    changing = changing_variables(model)
    crc = frozen_fingerprint(model, changing)
    path = tmp_path / "checkpoint.npz"
    best = [after[i] * 0 + 1 for i in changing]
    _save_checkpoint(path, model, {"next_epoch": 1}, best, None, changing, crc)
    with np.load(path) as data:
        assert sorted(k for k in data.files if k.startswith("model_")) == sorted(
            f"model_{i}" for i in changing
        )
    full = sum(a.nbytes for a in after)
    assert path.stat().st_size < full / 5  # DenseNet121's frozen part is not written

    fresh = _densenet(0)  # the same frozen values: built from the same weights
    fresh.optimizer.build(fresh.trainable_variables)
    assert frozen_fingerprint(fresh, changing) == crc
    state, got_best = _load_checkpoint(path, fresh, changing, crc)
    assert state == {"next_epoch": 1}
    for i, (v, a) in enumerate(zip(fresh.variables, after, strict=True)):
        np.testing.assert_array_equal(np.asarray(v), a, err_msg=str(i))
    for g, b in zip(got_best or [], best, strict=True):
        np.testing.assert_array_equal(g, b)

    other = _densenet(1)  # frozen layers with other values: another weights file
    with pytest.raises(ValueError, match="frozen layers held other values"):
        _load_checkpoint(path, other, changing, frozen_fingerprint(other, changing))
    with pytest.raises(ValueError, match="another classifier config"):
        _load_checkpoint(path, fresh, changing[:-1], crc)


def test_a_checkpoint_of_every_variable_is_still_read(trained, tmp_path):
    """Checkpoints written before this change hold every model variable and best value."""
    model, _, after = trained
    changing = changing_variables(model)
    path = tmp_path / "old.npz"
    arrays = {f"model_{i}": a for i, a in enumerate(after)}
    arrays.update({f"opt_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    arrays.update({f"best_{i}": a for i, a in enumerate(after)})
    arrays["state_json"] = np.array('{"next_epoch": 2}')
    np.savez(path, **arrays)
    fresh = _densenet(0)
    state, best = _load_checkpoint(path, fresh, changing, frozen_fingerprint(fresh, changing))
    assert state["next_epoch"] == 2 and best is not None and len(best) == len(changing)
    for i, b in zip(changing, best, strict=True):
        np.testing.assert_array_equal(b, after[i])
