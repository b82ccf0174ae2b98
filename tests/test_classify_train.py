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

from gensyn.classify.models import ModelSpec
from gensyn.classify.predict import load_classifier, predict_paths
from gensyn.classify.train import (
    CHECKPOINT,
    TrainSettings,
    positive_class_weights,
    train_classifier,
)
from gensyn.report.metrics import macro_auc

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
    assert macro_auc(te[FINDINGS].to_numpy(), probs) == pytest.approx(res.best_val_macro_auc)
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
    short = TrainSettings(
        epochs=1, batch_size=16, num_workers=2, class_weighting="balanced", lr_schedule="cosine"
    )
    assert _run(xrays, tmp_path, short).history[0]["loss"] > 0
    with pytest.raises(ValueError, match="class_weighting"):
        _run(xrays, tmp_path, TrainSettings(class_weighting="inverse"))
    with pytest.raises(ValueError, match="lr_schedule"):
        _run(xrays, tmp_path, TrainSettings(batch_size=16, lr_schedule="step"))


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
    {out!r}, TrainSettings(epochs=4, batch_size=16, learning_rate=3e-3, num_workers=2),
    FINDINGS, on_epoch=hook)
print("RESUMED_FROM", res.resumed_from_epoch, flush=True)
"""


def _script(tmp_path, xrays, out, pause_after):
    table = tmp_path / "table.csv"
    xrays.to_csv(table, index=False)
    text = SCRIPT.format(
        tests=str(Path(__file__).parent), table=str(table), out=str(out), pause_after=pause_after
    )
    path = tmp_path / f"train_{pause_after}.py"
    path.write_text(textwrap.dedent(text))
    return [sys.executable, str(path)]


def _checkpoint_arrays(folder):
    with np.load(folder / CHECKPOINT) as data:
        return {k: data[k] for k in data.files if k != "state_json"}, str(data["state_json"])


@pytest.mark.slow
def test_killed_run_resumes_to_identical_result(xrays, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(
        _script(tmp_path, xrays, killed, pause_after=1), env=env, stdout=subprocess.PIPE, text=True
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
        _script(tmp_path, xrays, killed, pause_after=-1),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "RESUMED_FROM 2" in resumed.stdout
    subprocess.run(
        _script(tmp_path, xrays, straight, pause_after=-1), env=env, check=True, capture_output=True
    )
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
