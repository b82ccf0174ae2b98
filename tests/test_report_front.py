"""The pipeline report's front page: the answer first (headline, forest plot, per-finding
heatmap), relative links, prose left and numbers right, and the first screen in Chromium."""

from __future__ import annotations

import io as bytes_io
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
from test_report_browser import CHROMIUM, CHROMIUM_FLAGS

from gensyn.base import io
from gensyn.report import render
from gensyn.report.front import domain_gap_note, headline_rows
from gensyn.report.page import is_numeric
from gensyn.stages.pipeline import write_page

CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Nodule", "Pneumonia"]
ARMS = [("baseline", "none", 1, 1.0), ("drr_1", "drr", 1, 1.5), ("synthex_1", "synthex", 1, 0.2)]


def _preds(n: int = 90, folds: int = 3) -> pd.DataFrame:
    """A baseline, a better and a worse arm over ``folds`` folds on one test set."""
    rng = np.random.default_rng(7)
    patients = rng.integers(0, 45, n)
    y = (rng.random((n, len(CLASSES))) < 0.35).astype(int)
    rows = []
    for arm, source, views, strength in ARMS:
        for fold in range(folds):
            p = 1 / (1 + np.exp(-(strength * y + rng.normal(size=y.shape))))
            rows += [
                {
                    "arm": arm,
                    "source": source,
                    "views_per_ct": views,
                    "fold": fold,
                    "test_set": "demo",
                    "image_id": f"i{i}",
                    "patient_id": f"p{patients[i]}",
                    **{f"y_{c}": y[i, k] for k, c in enumerate(CLASSES)},
                    **{f"p_{c}": p[i, k] for k, c in enumerate(CLASSES)},
                }
                for i in range(n)
            ]
    return pd.DataFrame(rows)


def _stage_dirs(runs: Path) -> dict[str, Path]:
    """Finished run folders as the pipeline finds them: GAN, report, carbon summary."""
    gan = runs / "gan_train" / "abc123"
    io.write_json(gan / "summary.json", {"domain_gap_acc_drr": 1.0,
                                         "domain_gap_acc_translated": 1.0, "duration_s": 12.5,
                                         "device": "cpu"})  # fmt: skip
    report = runs / "report" / "20261207-101500"
    render.write_report(report, _preds(), CLASSES, n_boot=200, notes=["three folds"])
    io.write_json(report / "summary.json", {"n_models": 9, "n_missing": 6,
                                            "n_not_scheduled": 6, "reports": ["report.html"]})  # fmt: skip
    carbon = runs / "carbon_summary" / "20261207-101600"
    io.write_json(carbon / "summary.json", {"energy_kwh": 0.0123, "co2eq_g": 4.1})
    return {"gan_train": gan, "report": report, "carbon_summary": carbon}


def test_front_page_answers_first_with_relative_links(tmp_path: Path) -> None:
    dirs = _stage_dirs(tmp_path / "runs")
    page, rows = write_page(tmp_path / "runs" / "pipeline" / "h", "GENSYN pipeline report (demo)",
                            "dataset=demo.", dirs)  # fmt: skip
    assert [r["stage"] for r in rows] == list(dirs)
    md = page.with_suffix(".md").read_text()
    summary = io.read_table(dirs["report"] / "auc_summary.csv")
    heads = headline_rows(summary)
    assert list(heads["arm"]) == ["drr_1", "synthex_1"]
    drr = heads.iloc[0]
    # the headline quotes the summary's Δ and CI, and the answer comes before the stages
    quoted = f"drr_1 {drr.delta:+.3f} [{drr.delta_ci_low:+.3f}, {drr.delta_ci_high:+.3f}]"
    assert quoted in md
    assert md.index(quoted) < md.index("forest_macro_auc.png") < md.index("Stage by stage")
    assert md.index("delta_per_finding.png") < md.index("Stage by stage")
    assert "(better)" in md and "(worse)" in md  # a clearly better and a clearly worse arm
    links = dict(re.findall(r"\[([^\]]+)\]\(([^)]+)\)", md))
    assert links["detailed classification report"] == "../../report/20261207-101500/report.html"
    assert not any(os.path.isabs(target) for target in links.values())
    assert "GAN check:" in md and "did not narrow the gap" in md
    assert "carbontracker" in md and "CodeCarbon" not in md


def test_domain_gap_note_reads_the_two_accuracies() -> None:
    assert domain_gap_note({}) is None
    assert "did not narrow" in str(domain_gap_note({"domain_gap_acc_drr": 1.0,
                                                    "domain_gap_acc_translated": 1.0}))  # fmt: skip
    assert "narrowed the gap" in str(domain_gap_note({"domain_gap_acc_drr": 0.95,
                                                      "domain_gap_acc_translated": 0.8}))  # fmt: skip
    assert "easier to tell" in str(domain_gap_note({"domain_gap_acc_drr": 0.25,
                                                   "domain_gap_acc_translated": 0.75}))  # fmt: skip
    few = domain_gap_note({"domain_gap_acc_drr": 1.0, "domain_gap_acc_translated": 1.0,
                           "heldout_a": 2, "heldout_b": 40})  # fmt: skip
    assert "only 2 held-out images per domain" in str(few)
    assert "held-out" not in str(domain_gap_note({"domain_gap_acc_drr": 1.0,
                                                  "domain_gap_acc_translated": 1.0,
                                                  "heldout_a": 50, "heldout_b": 50}))  # fmt: skip
    assert "look like real" in str(domain_gap_note({"domain_gap_acc_drr": 0.9,
                                                    "domain_gap_acc_translated": 0.55}))  # fmt: skip


def test_numbers_and_prose_are_told_apart() -> None:
    for cell in [0.81, 3, "0.812 ± 0.020 [0.750, 0.860]", "+0.030 [-0.010, +0.070] p = 0.042*",
                 "p < 0.001", "n/a", "−0.03"]:  # fmt: skip
        assert is_numeric(cell), cell
    for cell in ["Effusion", "drr_5", "energy used, kilowatt hours", "baseline", "any", True]:
        assert not is_numeric(cell), cell


def test_first_screen_shows_the_headline_and_the_forest_plot(tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        msg = "Debian chromium missing: run `bash scripts/setup_reader_env.sh`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    pytest.importorskip("playwright")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    dirs = _stage_dirs(tmp_path / "runs")
    page_path, _ = write_page(tmp_path / "runs" / "pipeline" / "h",
                              "GENSYN pipeline report (demo)",
                              "dataset=demo, profile=tiny, seed=0, fold split_idx=0.", dirs)  # fmt: skip
    width, height = 1366, 768
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_FLAGS)  # fmt: skip
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(page_path.resolve().as_uri())
            tab.wait_for_load_state("load")
            headline = tab.locator(".headline").first.bounding_box()
            forest = tab.locator("img[src*='data:image/png']").first
            forest_alt = forest.get_attribute("alt") or ""
            box = forest.bounding_box()
            natural = forest.evaluate("i => i.complete ? i.naturalWidth : 0")
            align: dict[str, Any] = tab.evaluate(
                """() => { const out = {};
                  for (const td of document.querySelectorAll('td')) {
                    out[td.textContent] = getComputedStyle(td).textAlign; }
                  return out; }"""
            )
            href = tab.locator("a", has_text="detailed classification report").evaluate(
                "a => a.href"
            )
            shot = tab.screenshot(full_page=False)
        finally:
            browser.close()
    (tmp_path / "first_screen.png").write_bytes(shot)
    assert headline is not None and box is not None
    assert headline["y"] + headline["height"] <= height  # the answer is on the first screen
    assert forest_alt.startswith("Δ macro AUC") and natural > 0
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, box  # the whole forest plot
    assert box["width"] >= 500
    # numbers right-aligned, prose left-aligned
    assert align["energy_kwh"] == "left" and align["0.0123"] == "right"
    assert align["cpu"] == "left" and align["12.5"] == "right"  # a mixed column: by cell
    assert any(v == "right" for k, v in align.items() if k.startswith(("+", "-")) and "[" in k)
    assert Path(unquote(urlparse(href).path)).resolve() == (dirs["report"] / "report.html")
    pixels = np.asarray(Image.open(bytes_io.BytesIO(shot)).convert("L"), dtype=np.float64)
    assert pixels.shape == (height, width)
    top, left = int(box["y"]), int(box["x"])
    plot = pixels[top : top + int(box["height"]), left : left + int(box["width"])]
    assert plot.std() > 10, "forest plot drawn blank"
