"""Property-based tests (hypothesis) of the numeric settings of drr, gan and classify (issue 36).

Whatever values are drawn, a setting is either refused at start-up in one line naming the key,
the value and what is allowed, or what the stage makes from it is finite and not constant.
Many draws call the start-up check in-process (DRR settings that pass also render a small
phantom through the stage's own mapping); a handful run the real stages, drr -> gan_train ->
gan_translate -> classify -> predict, on the tiny profile.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st

from gensyn.base.errors import GensynError

#: Values a careless command line gives: specials, signs, extremes, and ordinary numbers.
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-12, 1e12]


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Ordinary values in [low, high], or one of :data:`SPECIAL`."""
    return st.one_of(
        st.floats(low, high, allow_nan=False, allow_infinity=False), st.sampled_from(SPECIAL)
    )


def angles() -> st.SearchStrategy[list[float]]:
    return st.lists(floats(-120, 120), min_size=1, max_size=1)


DRR_KEYS: dict[str, st.SearchStrategy[Any]] = {
    "carm_pose.alpha_deg": angles(),
    "carm_pose.beta_deg": angles(),
    "projector.kvp": floats(-50, 400),
    "projector.filtration_mm_al": floats(-1, 30),
    "projector.energy_bin_kev": floats(-1, 20),
    "projector.air_max_hu": floats(-1200, 500),
    "projector.bone_min_hu": floats(-1200, 2000),
    "projector.photon_count": floats(-10, 1e5),
    "projector.crop_fraction": floats(-0.5, 1.5),
    "projector.window_percentiles": st.lists(floats(-10, 110), min_size=1, max_size=3),
    "projector.image_size_px": st.integers(-4, 24),
}
GAN_KEYS: dict[str, st.SearchStrategy[Any]] = {
    "generator.lr": floats(-1, 1),
    "generator.beta1": floats(-1, 2),
    "generator.beta2": floats(-1, 2),
    "generator.lambda_a": floats(-5, 50),
    "generator.lambda_identity": floats(-5, 5),
    "generator.init_gain": floats(-1, 1),
    "generator.load_size": st.integers(-4, 80),
    "generator.crop_size": st.integers(-4, 80),
    "generator.batch_size": st.integers(-2, 8),
    "generator.pool_size": st.integers(-2, 8),
}
CLASSIFY_KEYS: dict[str, st.SearchStrategy[Any]] = {
    "classifier.learning_rate": floats(-1, 1),
    "classifier.dropout": floats(-1, 2),
    "classifier.batch_size": st.integers(-2, 16),
    "classifier.epochs": st.integers(-2, 3),
    "classifier.image_size_px": st.integers(-4, 48),
    "classifier.n_folds": st.integers(-1, 6),
    "num_workers": st.integers(-3, 4),
}
ALL_KEYS = {**DRR_KEYS, **GAN_KEYS, **CLASSIFY_KEYS}


def overrides(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """One to four of ``keys`` with drawn values."""
    return st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=4, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({k: keys[k] for k in names})
    )


@pytest.fixture(scope="module")
def base_cfg() -> Any:
    """The real config (conf/) on the tiny profile, composed once for all draws."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gensyn.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    root = Path(__file__).resolve().parent.parent
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["profile=tiny", "logger=none"])


def _with(cfg: Any, values: dict[str, Any]) -> Any:
    from omegaconf import OmegaConf

    new = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(new, key, value, merge=False)
    return new


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """A 24³ water ellipsoid with a bone rod, in air (HU), 8 mm voxels."""
    shape, spacing = (24, 24, 24), np.array([8.0, 8.0, 8.0])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    xyz = (ijk - (np.asarray(shape) - 1) / 2) * spacing
    hu = np.full(shape, -1000.0, np.float32)
    hu[((xyz / [80.0, 60.0, 80.0]) ** 2).sum(-1) < 1] = 40.0
    hu[(xyz[..., 0] + 30) ** 2 + xyz[..., 1] ** 2 < 12**2] = 900.0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * spacing
    return hu, affine


def _render(cfg: Any) -> np.ndarray:
    """The stage's DRR images of the phantom under ``cfg`` (its own mapping of the config)."""
    from gensyn.config.settings import to_settings
    from gensyn.drr import PoseSettings, pose_set
    from gensyn.drr.render import render_drrs, to_images
    from gensyn.stages.drr import _physics, projector_geometry

    p = cfg.projector
    geometry = projector_geometry(p)
    views = pose_set(to_settings(cfg.carm_pose, PoseSettings), ct_id="x")
    hu, affine = _phantom()
    drrs = render_drrs(hu, affine, [v.pose for v in views], geometry, _physics(p), seed=0)
    assert np.isfinite(drrs).all()
    return to_images(drrs, int(p.bit_depth), tuple(p.window_percentiles))


def _refused_in_one_line(err: GensynError, values: dict[str, Any]) -> None:
    text = str(err)
    assert "\n" not in text and "; allowed: " in text, text
    key = text.split("=", 1)[0]
    group = key.rsplit(".", 1)[0]  # a key drawn, or one of its group it is compared with
    assert key in values or any(k.rsplit(".", 1)[0] == group for k in values), (text, values)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same draws every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=overrides(ALL_KEYS))
def test_drawn_settings_are_refused_in_one_line_or_render_usable_drrs(
    base_cfg: Any, values: dict[str, Any]
) -> None:
    from gensyn.app.startup import check_config
    from gensyn.base.degenerate import degenerate_reason

    cfg = _with(base_cfg, values)
    try:
        check_config(cfg)
    except GensynError as err:
        _refused_in_one_line(err, values)
        event("refused at start-up")
        return
    for key, value in values.items():  # accepted: every drawn number is finite
        assert all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])), key
    event("accepted")
    if any(k in DRR_KEYS for k in values):
        event("accepted: DRRs rendered")
        images = _render(cfg)
        for image in images:
            assert degenerate_reason(image) is None, values


# ---- a handful through the real stages ------------------------------------------------------
#: Accepted values only: the start-up refusal of the rest is covered above, in-process.
STAGE_DRAWS = st.fixed_dictionaries(
    {
        "carm_pose.alpha_deg": st.lists(st.floats(-30, 30), min_size=1, max_size=1),
        "projector.kvp": st.floats(40, 150),
        "projector.window_percentiles": st.sampled_from([[0.0, 100.0], [0.5, 99.5], [40, 41]]),
        "generator.lr": st.sampled_from([2e-4, 0.5, 5.0]),  # 5.0: a generator that diverges
        "generator.lambda_identity": st.floats(0, 5),
        "classifier.learning_rate": st.sampled_from([1e-3, 10.0]),  # 10: a classifier that dies
        "classifier.dropout": st.floats(0, 0.9),
    }
)


def _csv_list(values: list[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


@pytest.mark.slow
@settings(
    max_examples=1,  # plus the example below: each runs the whole chain (minutes on a CPU)
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure is reported as drawn
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # a generator and a classifier that both diverge: garbage at every step
    values={
        "carm_pose.alpha_deg": [5.0],
        "projector.kvp": 90.0,
        "projector.window_percentiles": [40, 41],
        "generator.lr": 5.0,
        "generator.lambda_identity": 0.5,
        "classifier.learning_rate": 10.0,
        "classifier.dropout": 0.5,
    }
)
@given(values=STAGE_DRAWS)
def test_drawn_settings_through_the_real_stages_give_usable_outputs_or_one_line(
    launch, gensyn_root: Path, values: dict[str, Any]
) -> None:
    """drr -> SyntheX -> classify -> predict: finite, non-constant DRRs, SyntheX images and
    predictions, or a one-line error naming what is garbage (never a DONE run of garbage)."""
    import shutil

    from gensyn.base import io

    shutil.rmtree(gensyn_root / "workdir", ignore_errors=True)  # each draw from scratch
    note(f"values: {values}")
    args = [
        f"{k}={_csv_list(v) if isinstance(v, list) else repr(float(v))}" for k, v in values.items()
    ]
    proc = launch(
        "stage=predict",
        "sampling=synthex_1",
        "profile=tiny",
        "logger=none",
        "logger.carbontracker=false",
        *args,
        check=False,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    runs = gensyn_root / "workdir" / "runs"
    for done in runs.glob("*/*/DONE"):  # every DONE output is usable
        stage = done.parent.parent.name
        if stage in ("drr", "gan_translate"):
            manifest = io.read_table(done.parent / "manifest.csv")
            for rel in manifest["path"].head(8):
                image = io.read_image(done.parent / rel)
                assert image.min() < image.max(), (stage, rel, values)
        if stage == "predict":
            table = io.read_table(done.parent / "predictions.csv")
            probs = table[[c for c in table.columns if c.startswith("p_")]].to_numpy(float)
            assert np.isfinite(probs).all()
            assert (probs.max(axis=0) > probs.min(axis=0)).all(), values
    if proc.returncode != 0:
        errors = [line for line in out.splitlines() if " - predict: " in line or "ERROR" in line]
        assert errors, out[-3000:]
        assert any(w in out for w in ("not finite", "constant", "one grey level")), out[-3000:]
    else:
        assert (next(runs.glob("predict/*")) / "DONE").is_file()
        summary = json.loads(next(runs.glob("predict/*/summary.json")).read_text())
        assert summary["n_unreadable_images"] == 0
