"""W&B artifacts (``logger.artifacts``): which files, and what an offline run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wandb_offline import wandb_records

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.core.registry import _REGISTRY, stage
from gensyn.core.runs import execute, run_dir
from gensyn.tracking.artifacts import (
    ARTIFACT_KINDS,
    artifact_kinds,
    checkpoint_files,
    report_files,
)


@stage("_test_artifacts", summary="test stage leaving weights and a report", config_keys=("seed",))
def _writer(cfg, ctx) -> None:
    io.write_text(ctx.path("best.keras"), f"weights {cfg.seed}")
    io.write_text(ctx.path("checkpoint.npz"), "resume state")  # not final: never an artifact
    io.write_text(ctx.path("train", "generator.pt"), "in a sub-folder: not final")
    io.write_text(ctx.path("report.md"), "# report")
    io.write_text(ctx.path("report.html"), "<h1>report</h1>")
    io.write_text(ctx.path("figures", "roc.png"), "png")
    io.write_text(ctx.path("predictions.csv"), "a,b")
    ctx.summary["reports"] = ["report.html"]
    ctx.summary["figures"] = ["figures/roc.png"]


def teardown_module() -> None:
    _REGISTRY.pop("_test_artifacts", None)


def test_artifact_kinds_from_the_config_value() -> None:
    assert artifact_kinds(False) == artifact_kinds(None) == artifact_kinds([]) == ()
    assert artifact_kinds(True) == artifact_kinds("all") == ARTIFACT_KINDS
    assert artifact_kinds("report") == ("report",)
    assert artifact_kinds(["report", "checkpoints"]) == ("checkpoints", "report")
    for bad in ("reports", ["checkpoints", "weights"], 1, {"report": True}):
        with pytest.raises(GensynError, match=r"logger.artifacts=.*allowed: false, true, all"):
            artifact_kinds(bad)


def test_final_weights_and_report_files_are_chosen(tmp_path: Path) -> None:
    for name in ("best.keras", "generator_a2b.pt", "checkpoint.pt", "checkpoint.npz", "a.csv"):
        io.write_text(tmp_path / name, "x")
    io.write_text(tmp_path / "train" / "generator.pt", "x")
    assert [p.name for p in checkpoint_files(tmp_path)] == ["best.keras", "generator_a2b.pt"]

    summary = {"figures": ["figures/roc.png", "figures/gone.png", "../outside.png"]}
    io.write_text(tmp_path / "figures" / "roc.png", "x")
    io.write_text(tmp_path.parent / "outside.png", "x")
    assert report_files(tmp_path, summary) == []  # figures without a report page: no report
    io.write_text(tmp_path / "report.html", "x")
    io.write_text(tmp_path / "report.md", "x")
    files = report_files(tmp_path, {**summary, "reports": ["report.html"]})
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "report.html",
        "report.md",
        "figures/roc.png",
    ]


def _manifests(out: Path) -> dict[str, tuple[str, dict, dict[str, str]]]:
    """``{artifact name: (type, metadata, {path in artifact: local path})}`` of a run folder."""
    return {
        a.name: (
            a.type,
            json.loads(a.metadata),
            {entry.path: entry.local_path for entry in a.manifest.contents},
        )
        for a in wandb_records(out, "artifact")
    }


def test_offline_run_records_checkpoint_and_report_artifacts(compose) -> None:
    cfg = compose("seed=3", "logger=wandb", "logger.artifacts=true")
    out = execute(cfg, "_test_artifacts")
    manifests = _manifests(out)
    assert set(manifests) == {"_test_artifacts-checkpoints", "_test_artifacts-report"}
    kind, metadata, files = manifests["_test_artifacts-checkpoints"]
    assert kind == "model"
    assert metadata == {
        "run_id": f"_test_artifacts-{out.name}",
        "stage": "_test_artifacts",
        "config_hash": out.name,
        "experiment": cfg.experiment_name,
    }
    assert files == {"best.keras": str(out / "best.keras")}  # read from the run folder by sync
    kind, metadata, files = manifests["_test_artifacts-report"]
    assert kind == "report" and metadata["config_hash"] == out.name
    assert files == {p: str(out / p) for p in ("report.html", "report.md", "figures/roc.png")}
    (run,) = wandb_records(out, "run")
    assert run.run_id == metadata["run_id"]  # the metadata's run id is the W&B run's


def test_artifacts_follow_the_config(compose) -> None:
    out = execute(compose("seed=4", "logger=wandb", "logger.artifacts=[report]"), "_test_artifacts")
    assert set(_manifests(out)) == {"_test_artifacts-report"}
    out = execute(compose("seed=5", "logger=wandb"), "_test_artifacts")  # default: off
    assert (out / "wandb").is_dir() and _manifests(out) == {}


def test_a_bad_artifacts_value_stops_before_the_stage_runs(compose) -> None:
    cfg = compose("seed=6", "logger=wandb", "logger.artifacts=weights")
    with pytest.raises(GensynError, match=r"logger\.artifacts='weights'"):
        execute(cfg, "_test_artifacts")
    out = run_dir(cfg, "_test_artifacts")
    assert not (out / "best.keras").exists() and not (out / "wandb").exists()
