"""The self-contained report.html in headless Chromium: drawn, figures embedded, nothing fetched.

Uses Debian's /usr/bin/chromium through Playwright (never ``playwright install``), like
tests/test_reader_labelstudio.py; skipped where Chromium is missing, failed under CI.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


CLASSES = ["Effusion", "Cardiomegaly"]


def _preds(n: int = 60) -> pd.DataFrame:
    """Synthetic predictions of a baseline and two DRR arms, three folds, one test set."""
    rng = np.random.default_rng(0)
    patients = rng.integers(0, 30, n)
    y = (rng.random((n, 2)) < 0.4).astype(int)
    rows = []
    for arm, source, views, strength in [("baseline", "none", 1, 1.0), ("drr_2", "drr", 2, 1.6),
                                         ("drr_5", "drr", 5, 2.2)]:  # fmt: skip
        for fold in range(3):
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


def test_report_html_renders_with_embedded_images(tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        msg = "Debian chromium missing: run `bash scripts/setup_reader_env.sh`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    pytest.importorskip("playwright")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from gensyn.report import render

    report, _ = render.write_report(tmp_path / "report", _preds(), CLASSES, n_boot=50)
    outside: list[str] = []

    def only_files(route: Any) -> None:  # a self-contained page needs nothing but itself
        if route.request.url.startswith(("file://", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_FLAGS)  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.route("**/*", only_files)
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
            )
            shot = page.screenshot(full_page=False)
        finally:
            browser.close()
    assert len(widths) >= 2  # ROC and AUC-vs-views figures
    assert all(w > 0 for w in widths), widths
    assert not outside, outside
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1366)
    assert pixels.std() > 10, "blank page"  # text and tables on white: well above 10
