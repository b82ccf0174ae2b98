"""Training: it learns, it is reproducible, and a killed run resumes to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from classify_fakes import FINDINGS, make_xray_set

from gensyn.classify.keras_env import keras
from gensyn.classify.models import ModelSpec
from gensyn.classify.predict import load_classifier, predict_paths
from gensyn.classify.train import (
    CHECKPOINT,
    MaskedBinaryCrossentropy,
    TrainSettings,
    known_auc,
    positive_class_weights,
    steps_per_epoch,
    train_classifier,
)
from gensyn.report.metrics import macro_of, per_class_auc

SPEC = ModelSpec("small_cnn", image_size_px=32, widths=(8, 16, 32))
SETTINGS = TrainSettings(epochs=6, batch_size=16, learning_rate=3e-3, num_workers=2)


@pytest.fixture(scope="module")
def xrays(tmp_path_factory):
    return make_xray_set(tmp_path_factory.mktemp("xr"), n_patients=90, size_px=32, seed=0)


def _run(table, out, settings=SETTINGS, **kw):
    tr, te = table[table.split == "train"], table[table.split == "test"]
    return train_classifier(
        SPEC,
        list(tr.path),
        tr[FINDINGS].to_numpy(),
        list(te.path),
        te[FINDINGS].to_numpy(),
        out,
        settings,
        FINDINGS,
        **kw,
    )


def test_learns_and_saves_best_model_used_by_predict(xrays, tmp_path):
    seen = []
    res = _run(xrays, tmp_path, on_epoch=lambda e, m: seen.append((e, m["val_macro_auc"])))
    assert [e for e, _ in seen] == list(range(SETTINGS.epochs))
    assert res.best_val_macro_auc >= 0.9
    assert res.best_val_macro_auc == max(a for _, a in seen)
    te = xrays[xrays.split == "test"]
    model = load_classifier(tmp_path / "best.keras")
    probs = predict_paths(model, list(te.path), SPEC.image_size_px, batch_size=7)
    # the saved best model reproduces the validation AUC of its epoch (same preprocessing)
    macro = macro_of(per_class_auc(te[FINDINGS].to_numpy(), probs))
    assert macro == pytest.approx(res.best_val_macro_auc)
    assert (tmp_path / "history.csv").is_file()


def test_same_seed_same_metrics(xrays, tmp_path):
    short = TrainSettings(epochs=2, batch_size=16, learning_rate=3e-3, num_workers=2, seed=5)
    a = _run(xrays, tmp_path / "a", short).history
    b = _run(xrays, tmp_path / "b", short).history
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == rb["loss"] and ra["val_macro_auc"] == rb["val_macro_auc"]


def test_class_weighting_balanced(xrays, tmp_path):
    w = positive_class_weights(np.array([[1, 0], [0, 0], [0, 0], [1, 0]]))
    np.testing.assert_allclose(w, [1.0, 1.0])
    w = positive_class_weights(np.array([[1, 1], [0, 0], [0, 0], [0, 1]]))
    np.testing.assert_allclose(w, [3.0, 1.0])
    nan = np.nan  # unknown entries count neither as positive nor as negative
    w = positive_class_weights(np.array([[1, nan], [0, 0], [nan, 0], [0, 1], [nan, nan]]))
    np.testing.assert_allclose(w, [2.0, 2.0])
    short = TrainSettings(
        epochs=1, batch_size=16, num_workers=2, class_weighting="balanced", lr_schedule="cosine"
    )
    assert _run(xrays, tmp_path, short).history[0]["loss"] > 0
    with pytest.raises(ValueError, match="class_weighting"):
        _run(xrays, tmp_path, TrainSettings(class_weighting="inverse"))
    with pytest.raises(ValueError, match="lr_schedule"):
        _run(xrays, tmp_path, TrainSettings(batch_size=16, lr_schedule="step"))


NAN = np.nan
Y = np.array([[1, 0, NAN], [0, NAN, 1], [NAN, NAN, NAN], [1, 1, 0]], dtype=np.float32)
P = np.array(
    [[0.9, 0.2, 0.5], [0.3, 0.6, 0.8], [0.1, 0.4, 0.7], [0.6, 0.7, 0.05]], dtype=np.float32
)


def _numpy_masked_bce(y, p, w=(1.0, 1.0, 1.0)):
    """Sum of BCE over the known entries divided by their number, by hand."""
    total, count = 0.0, 0
    for i in range(y.shape[0]):
        for k in range(y.shape[1]):
            if np.isnan(y[i, k]):
                continue
            q = float(np.clip(p[i, k], 1e-7, 1 - 1e-7))
            total -= w[k] * y[i, k] * np.log(q) + (1 - y[i, k]) * np.log(1 - q)
            count += 1
    return total / count


@pytest.mark.parametrize("pos_weight", [None, [2.0, 0.5, 3.0]])
def test_masked_bce_is_the_mean_over_known_entries(pos_weight):
    loss = MaskedBinaryCrossentropy(pos_weight)
    want = _numpy_masked_bce(Y, P, pos_weight or (1.0, 1.0, 1.0))
    assert float(loss(Y, P)) == pytest.approx(want, rel=1e-5)
    # all known: Keras' own BCE (mean over classes, then over the batch)
    known = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    p = P[:2]
    plain = float(keras.losses.BinaryCrossentropy()(known, p))
    assert float(MaskedBinaryCrossentropy()(known, p)) == pytest.approx(plain, rel=1e-5)
    # serialisable with the model (best.keras)
    again = MaskedBinaryCrossentropy.from_config(loss.get_config())
    assert float(again(Y, P)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("pos_weight", [None, [2.0, 0.5, 3.0]])
def test_all_unknown_rows_change_neither_loss_nor_gradient(pos_weight):
    import jax

    loss = MaskedBinaryCrossentropy(pos_weight)
    known_rows = [0, 1, 3]
    assert float(loss(Y, P)) == pytest.approx(float(loss(Y[known_rows], P[known_rows])), rel=1e-6)
    grad = np.asarray(jax.grad(lambda p: loss(Y, p))(P))
    grad_known = np.asarray(jax.grad(lambda p: loss(Y[known_rows], p))(P[known_rows]))
    np.testing.assert_array_equal(grad[2], 0.0)  # the all-unknown row: no gradient
    np.testing.assert_array_equal(grad[np.isnan(Y)], 0.0)  # nor any unknown entry
    np.testing.assert_allclose(grad[known_rows], grad_known, rtol=1e-6)
    # a batch with nothing known: zero, not NaN
    assert float(loss(np.full((2, 3), np.nan, np.float32), P[:2])) == 0.0


def test_known_auc_ignores_unknown_rows():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random((40, 2)) < 0.4).astype(float)
    p = rng.random((40, 2))
    y[::5, 1] = np.nan
    aucs = known_auc(y, p)
    assert aucs[0] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    keep = ~np.isnan(y[:, 1])
    assert aucs[1] == pytest.approx(roc_auc_score(y[keep, 1], p[keep, 1]))


def test_train_settings_come_from_the_classifier_settings():
    """One default and one list of allowed values per setting (ClassifierSettings')."""
    from gensyn.classify.settings import ClassifierSettings, LrSchedule

    assert TrainSettings() == TrainSettings.of(ClassifierSettings(), seed=0, num_workers=4)
    ours = ClassifierSettings(lr_schedule=LrSchedule.cosine, prefetch=7, epochs=3)
    got = TrainSettings.of(ours, seed=3, num_workers=1)
    assert (got.lr_schedule, got.prefetch_batches, got.epochs, got.seed, got.num_workers) == (
        "cosine", 7, 3, 3, 1,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"classifier.lr_schedule='step'; allowed: constant, cos"):
        TrainSettings.of(ClassifierSettings(lr_schedule="step"), seed=0, num_workers=1)  # type: ignore[arg-type]


def test_steps_per_epoch_of_the_two_schedules():
    assert steps_per_epoch("epochs", n_train=100, n_real_train=60, batch_size=8) == 12
    assert steps_per_epoch("steps", n_train=100, n_real_train=60, batch_size=8) == 8  # ceil 7.5
    assert steps_per_epoch("steps", n_train=64, n_real_train=64, batch_size=8) == 8
    with pytest.raises(ValueError, match="schedule"):
        steps_per_epoch("iterations", 100, 60, 8)


def test_steps_schedule_with_unknown_synthetic_labels(xrays, tmp_path):
    """Real images + 'synthetic' copies with all labels unknown: steps = ceil(real / batch)
    per epoch under ``steps``, all images / batch under ``epochs``; the loss stays finite."""
    tr, te = xrays[xrays.split == "train"], xrays[xrays.split == "test"]
    n_real = len(tr)
    paths = [*tr.path, *tr.path[:40]]
    labels = np.vstack([tr[FINDINGS].to_numpy(float), np.full((40, 5), np.nan)])
    done = {}
    for schedule in ("steps", "epochs"):
        settings = TrainSettings(
            epochs=2, batch_size=16, learning_rate=3e-3, num_workers=2, schedule=schedule
        )
        res = train_classifier(
            SPEC,
            paths,
            labels,
            list(te.path),
            te[FINDINGS].to_numpy(),
            tmp_path / schedule,
            settings,
            FINDINGS,
            n_real_train=n_real,
        )
        assert all(np.isfinite(row["loss"]) for row in res.history)
        done[schedule] = res
    assert done["steps"].optimizer_steps == 2 * -(-n_real // 16)
    assert done["epochs"].optimizer_steps == 2 * ((n_real + 40) // 16)
    assert done["epochs"].optimizer_steps > done["steps"].optimizer_steps


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import pandas as pd
from classify_fakes import FINDINGS
from gensyn.classify.models import ModelSpec
from gensyn.classify.train import TrainSettings, train_classifier
table = pd.read_csv({table!r})
tr, te = table[table.split == "train"], table[table.split == "test"]
def hook(epoch, metrics):
    if {pause_after} >= 0 and epoch == {pause_after}:
        print("PAUSED", flush=True)
        time.sleep(600)  # stands in for a long epoch: the test kills us here
res = train_classifier(ModelSpec("small_cnn", image_size_px=32, widths=(8, 16, 32)),
    list(tr.path), tr[FINDINGS].to_numpy(), list(te.path), te[FINDINGS].to_numpy(),
    {out!r}, TrainSettings(epochs=4, batch_size=16, learning_rate=3e-3, num_workers=2,
    schedule={schedule!r}), FINDINGS, on_epoch=hook,
    n_real_train=len(tr) * 2 // 3)  # steps: epochs end mid-pass
print("STEPS", res.optimizer_steps, flush=True)
print("SEEN", res.real_images_seen, res.synthetic_images_seen, res.real_times_seen_min,
      res.real_times_seen_max, flush=True)
print("RESUMED_FROM", res.resumed_from_epoch, flush=True)
"""


def _script(tmp_path, xrays, out, pause_after, schedule="epochs"):
    table = tmp_path / "table.csv"
    xrays.to_csv(table, index=False)
    text = SCRIPT.format(
        tests=str(Path(__file__).parent),
        table=str(table),
        out=str(out),
        pause_after=pause_after,
        schedule=schedule,
    )
    path = tmp_path / f"train_{pause_after}.py"
    path.write_text(textwrap.dedent(text))
    return [sys.executable, str(path)]


def _checkpoint_arrays(folder):
    with np.load(folder / CHECKPOINT) as data:
        return {k: data[k] for k in data.files if k != "state_json"}, str(data["state_json"])


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["epochs", "steps", "real_epochs"])
def test_killed_run_resumes_to_identical_result(xrays, tmp_path, schedule):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(
        _script(tmp_path, xrays, killed, pause_after=1, schedule=schedule),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "PAUSED" in line, line
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up, like a pre-empted job
        proc.wait()
    assert (killed / CHECKPOINT).is_file() and not (killed / "history.csv").exists()
    resumed = subprocess.run(
        _script(tmp_path, xrays, killed, pause_after=-1, schedule=schedule),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "RESUMED_FROM 2" in resumed.stdout
    straight_run = subprocess.run(
        _script(tmp_path, xrays, straight, pause_after=-1, schedule=schedule),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    steps = [line for line in straight_run.stdout.splitlines() if line.startswith("STEPS")]
    assert steps and steps[0] in resumed.stdout  # the optimiser counted the same steps
    seen = [line for line in straight_run.stdout.splitlines() if line.startswith("SEEN")]
    assert seen and seen[0] in resumed.stdout  # and the images fed, across the kill
    a, state_a = _checkpoint_arrays(killed)
    b, state_b = _checkpoint_arrays(straight)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ha, hb = json.loads(state_a).pop("history"), json.loads(state_b).pop("history")
    for row in (*ha, *hb):
        row.pop("train_images_per_s")  # wall-clock timing, the only thing allowed to differ
    assert ha == hb and json.loads(state_a)["best_epoch"] == json.loads(state_b)["best_epoch"]


DP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import pandas as pd
from classify_fakes import FINDINGS
from gensyn.classify.models import ModelSpec
from gensyn.classify.train import TrainSettings, train_classifier
table = pd.read_csv({table!r})
tr, te = table[table.split == "train"], table[table.split == "test"]
res = train_classifier(ModelSpec("small_cnn", image_size_px=32, widths=(8, 16)),
    list(tr.path), tr[FINDINGS].to_numpy(), list(te.path), te[FINDINGS].to_numpy(),
    {out!r}, TrainSettings(epochs=1, batch_size={batch}, num_workers=2), FINDINGS)
print("OK", res.history[0]["loss"])
"""


@pytest.mark.slow
def test_data_parallel_over_two_devices(xrays, tmp_path):
    """keras.distribution.DataParallel path, on two forced CPU devices in a subprocess."""
    table = tmp_path / "table.csv"
    xrays.to_csv(table, index=False)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "GENSYN_DATA_PARALLEL_CPU": "1",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    for batch, ok in ((16, True), (15, False)):
        script = tmp_path / f"dp_{batch}.py"
        script.write_text(
            DP_SCRIPT.format(
                tests=str(Path(__file__).parent),
                table=str(table),
                out=str(tmp_path / f"out{batch}"),
                batch=batch,
            )
        )
        proc = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True
        )
        if ok:
            assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
        else:
            assert proc.returncode != 0 and "divisible by the 2 devices" in proc.stderr


def _weights(path):
    return [np.asarray(v) for v in load_classifier(path).weights]


def test_a_reused_model_trains_as_a_freshly_built_one(xrays, tmp_path):
    """A sweep's next run of the same spec gets the last run's model back, its variables as
    built (train.fresh_model): the run is the one a freshly built model gives, to the bit."""
    from gensyn.classify import train

    short = TrainSettings(epochs=2, batch_size=16, learning_rate=3e-3, num_workers=2, seed=3)
    half = xrays.iloc[: len(xrays) // 2 + 10]
    train._BUILT.clear()
    _run(xrays, tmp_path / "first", short)  # built, then trained: its variables change
    (key, model, _, _) = train._BUILT[0]
    reused = _run(half, tmp_path / "reused", short)
    assert train._BUILT[0][1] is model  # not built again
    train._BUILT.clear()
    fresh = _run(half, tmp_path / "fresh", short)
    assert train._BUILT[0][1] is not model and train._BUILT[0][0] == key

    def results(history):  # every figure but the speed
        return [{k: v for k, v in row.items() if k != "train_images_per_s"} for row in history]

    assert results(reused.history) == results(fresh.history)
    for a, b in zip(_weights(tmp_path / "reused" / "best.keras"),
                    _weights(tmp_path / "fresh" / "best.keras"), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    # another seed is another model: built anew
    _run(half, tmp_path / "seed4", TrainSettings(**{**short.__dict__, "seed": 4}))
    assert train._BUILT[0][1] is not model
