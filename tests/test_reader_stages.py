"""The reader-study stages end to end through launch.py, and the study CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gensyn.base.errors import GensynError
from gensyn.reader.labelstudio import LabelStudioClient, free_port, port_is_free
from gensyn.reader.serve import image_id_of, reader_email, submit_answer
from gensyn.reader.sites import credentials_from_env, server_pids

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "GENSYN_LS_ADMIN_EMAIL": "coordinator@gensyn.local",
    "GENSYN_LS_ADMIN_PASSWORD": "Coord-Pass-2026",
    "GENSYN_READER_R1_PASSWORD": "Reader-One-pass-9",
    "GENSYN_READER_R2_PASSWORD": "Reader-Two-pass-9",
}


def test_missing_credentials_name_every_variable() -> None:
    with pytest.raises(GensynError) as err:
        credentials_from_env(
            ["R1", "R2"], "A_MAIL", "A_PASS", "PW_{reader}", env={"PW_R1": "x" * 9}
        )
    assert "A_MAIL" in str(err.value) and "A_PASS" in str(err.value) and "PW_R2" in str(err.value)
    assert "PW_R1" not in str(err.value)
    with pytest.raises(ValueError, match="not a name"):
        credentials_from_env(["Dr Jane Doe"], "A", "B", "PW_{reader}", env={})
    token_only = credentials_from_env(
        ["R1"], "A", "B", "PW_{reader}", "TOK", env={"TOK": "t", "PW_R1": "p"}
    )
    assert token_only.admin_token == "t" and token_only.reader_passwords == {"R1": "p"}


def _sources(root: Path) -> str:
    rng = np.random.default_rng(3)
    items = []
    for name, truth in (("xa", "real"), ("xb", "real"), ("syn", "fake")):
        folder = root / "src" / name
        folder.mkdir(parents=True)
        for i in range(4):
            pix = (rng.random((10, 12)) * 255).astype(np.uint8)
            Image.fromarray(pix).resize((60, 72)).save(folder / f"{name}{i}.png")
        items.append(f"{{name:'{name}',truth:'{truth}',folder:'{folder}',pattern:'*.png'}}")
    return "reader_study.sources=[" + ",".join(items) + "]"


def test_build_and_analyze_an_answers_file_without_servers(
    gensyn_root: Path, launch: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """reader_study_build -> an answers CSV -> reader_study_analyze through launch.py: the
    audit's p-values in the build summary, cluster intervals in the analysis outputs."""
    common = [_sources(gensyn_root), "reader_study.images_per_source=4",
              "reader_study.readers=[R1,R2]", "reader_study.blinding.image_size_px=32"]  # fmt: skip
    launch("stage=reader_study_build", *common)
    build = next((gensyn_root / "workdir" / "runs" / "reader_study_build").glob("*/key"))
    audit = pd.read_csv(build / "blinding_audit.csv")
    assert {"cv_p", "worst_p", "threshold"} <= set(audit.columns) and not audit["judged"].any()
    summary = json.loads((build.parent / "summary.json").read_text())["blinding_audit"]
    assert summary.startswith(("xa vs syn", "xb vs syn")) and "(too few to judge)" in summary
    key = pd.read_csv(build / "answer_key.csv", dtype={"image_id": str})
    flip = {"real": "fake", "fake": "real"}
    rows = [
        (r, i, t if (r == "R1" or n % 3) else flip[t], "x", 3.0)
        for r in ("R1", "R2")
        for n, (i, t) in enumerate(zip(key["image_id"], key["truth"], strict=True))
    ]
    answers = gensyn_root / "answers.csv"
    pd.DataFrame(
        rows, columns=["reader_id", "image_id", "verdict", "reason", "lead_time_s"]
    ).to_csv(answers, index=False)
    launch("stage=reader_study_analyze", *common, f"reader_study.answers_file={answers}",
           "reader_study.bootstrap_replicates=300")  # fmt: skip
    out = next((gensyn_root / "workdir" / "runs" / "reader_study_analyze").iterdir())
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    assert results["bootstrap_replicates"] == 300 and overall["accuracy_n"] == 24
    assert (
        overall["accuracy_cluster_ci_low"]
        <= overall["accuracy"]
        <= overall["accuracy_cluster_ci_high"]
    )
    assert "said_fake_share_cluster_ci_low" in pd.read_csv(out / "sources.csv").columns
    report = (out / "report.md").read_text()
    assert "cluster intervals" in report and "design effect" in report


@pytest.mark.slow
def test_build_serve_answer_analyze_export_stop(
    gensyn_root: Path, launch: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    if not (ROOT / ".venv-reader" / "bin" / "label-studio").is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must provide .venv-reader: bash scripts/setup_reader_env.sh")
        pytest.skip(".venv-reader missing: run `bash scripts/setup_reader_env.sh`")
    port = free_port()
    while not port_is_free(port + 1):
        port = free_port()
    common = [_sources(gensyn_root), "reader_study.images_per_source=3", "reader_study.readers=[R1,R2]",
              "reader_study.blinding.image_size_px=64", f"reader_study.server.base_port={port}"]  # fmt: skip

    missing = launch("stage=reader_study_serve", *common, check=False)
    assert missing.returncode != 0 and "GENSYN_LS_ADMIN_PASSWORD" in missing.stdout + missing.stderr

    launch("stage=reader_study_serve", *common, env=ENV)
    sites_file = next(
        (gensyn_root / "workdir" / "runs" / "reader_study_serve").glob("*/sites.json")
    )
    sites = json.loads(sites_file.read_text())
    assert [s["reader_id"] for s in sites] == ["R1", "R2"]
    assert all(s["url"].startswith("http://127.0.0.1:") for s in sites)
    try:
        key_file = next(
            (gensyn_root / "workdir" / "runs" / "reader_study_build").glob("*/key/answer_key.csv")
        )
        truth = dict(line.split(",")[:3:2] for line in key_file.read_text().splitlines()[1:])
        for site in sites:  # R1 gets all right; R2 calls everything real
            reader = LabelStudioClient.login(site["url"], reader_email(site["reader_id"]),
                                             ENV[f"GENSYN_READER_{site['reader_id']}_PASSWORD"])  # fmt: skip
            for _ in range(9):
                task = reader.get(f"/api/projects/{site['project_id']}/next/")
                image_id = image_id_of(task)
                verdict = truth[image_id] if site["reader_id"] == "R1" else "real"
                submit_answer(
                    reader, task["id"], verdict, "looks generated" if verdict == "fake" else "", 2.0
                )

        launch("stage=reader_study_analyze", *common, env=ENV)
        out = sorted((gensyn_root / "workdir" / "runs" / "reader_study_analyze").iterdir())[-1]
        results = json.loads((out / "results.json").read_text())
        assert results["overall"]["accuracy_k"] == 9 + 6 and results["overall"]["accuracy_n"] == 18
        assert (
            results["overall"]["sensitivity_k"] == 3 and results["overall"]["specificity_k"] == 12
        )
        assert (out / "report.html").is_file() and (out / "figures" / "readers.png").is_file()
        assert "uncertain_as=wrong" in (out / "report.md").read_text()

        cli = [sys.executable, "-m", "gensyn.reader"]
        env = {**os.environ, **ENV}
        exports = gensyn_root / "exports"
        subprocess.run(
            [*cli, "export", str(sites_file), str(exports)], env=env, check=True, cwd=ROOT
        )
        launch(
            "stage=reader_study_analyze", *common, f"reader_study.answers_file={exports}", env=ENV
        )
        out2 = sorted((gensyn_root / "workdir" / "runs" / "reader_study_analyze").iterdir())[-1]
        again = json.loads((out2 / "results.json").read_text())
        assert again["overall"] == results["overall"] and out2 != out
    finally:
        stop = subprocess.run([sys.executable, "-m", "gensyn.reader", "stop", str(sites_file)],
                              env={**os.environ, **ENV}, cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert "R1" in stop.stdout and "R2" in stop.stdout
    for site in sites:
        for _ in range(40):
            if not server_pids(site["data_dir"]):
                break
            time.sleep(0.5)
        assert not server_pids(site["data_dir"])
