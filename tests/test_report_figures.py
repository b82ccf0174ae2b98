"""Report figures: titled image grids, captions that say what a figure shows, embedded HTML."""

from __future__ import annotations

import numpy as np


def test_page_html_embeds_figures(tmp_path):
    from gensyn.base.io import write_image
    from gensyn.report.page import Page

    figure = write_image(tmp_path / "runs" / "drr" / "abc" / "fig.png", np.zeros((8, 8), np.uint8))
    page = Page("t")
    page.figure(figure, caption="a figure")
    html = page.write(tmp_path / "runs" / "pipeline" / "xyz").read_text()
    assert "data:image/png;base64," in html
    assert "../" not in html and "a figure" in html
    markdown = (tmp_path / "runs" / "pipeline" / "xyz" / "report.md").read_text()
    assert "../../drr/abc/fig.png" in markdown  # the Markdown still links the file


def test_titled_grid_has_a_header_row(tmp_path):
    from gensyn.base.io import write_image
    from gensyn.data.xray.prep import contact_sheet
    from gensyn.gan.checks import image_grid

    rng = np.random.default_rng(0)
    rows = [[rng.random((32, 32)) for _ in range(3)] for _ in range(2)]
    plain = image_grid(rows)
    titled = image_grid(rows, titles=("DRR", "SyntheX", "real"))
    header_px = titled.shape[0] - plain.shape[0]
    assert header_px > 8 and titled.shape[1] == plain.shape[1]
    np.testing.assert_array_equal(titled[header_px:], plain)
    header = titled[:header_px]
    assert header.min() < 128 and header.max() == 255  # dark text on white
    # each column's title is drawn over its own column
    assert all((part < 128).any() for part in np.array_split(header, 3, axis=1))

    paths = [
        str(write_image(tmp_path / f"{i}.png", (rng.random((40, 40)) * 255).astype(np.uint8)))
        for i in range(3)
    ]
    sheet, titled_sheet = contact_sheet(paths, 32), contact_sheet(paths, 32, title="real X-rays")
    assert titled_sheet.shape[0] > sheet.shape[0]
    assert (titled_sheet[: titled_sheet.shape[0] - sheet.shape[0]] < 128).any()


def test_figure_captions_say_what_is_shown():
    from gensyn.stages.pipeline import figure_caption

    assert "SyntheX" in figure_caption("gan_translate", "figures/drr_vs_synthex.png")
    assert figure_caption("report", "figures/roc_test.png").startswith("ROC curves")
    assert "/" not in figure_caption("drr", "images/ct0/ct0_v00.png")
    assert figure_caption("x", "figures/some_plot.png") == "x: some plot"


def test_pipeline_summary_rows_explain_keys():
    from gensyn.stages.pipeline import summary_rows

    rows = summary_rows(
        {"domain_gap_acc_translated": 0.61, "macro_auc_demo_drr_5": 0.7, "n_images": 3,
         "figures": ["a.png"]}
    )  # fmt: skip
    meaning = {r["key"]: r["meaning"] for r in rows}
    assert set(meaning) == {"domain_gap_acc_translated", "macro_auc_demo_drr_5", "n_images"}
    assert "translated" in meaning["domain_gap_acc_translated"]
    assert "0.5 = indistinguishable" in meaning["domain_gap_acc_translated"]
    assert meaning["macro_auc_demo_drr_5"].startswith("macro AUC")
    assert meaning["n_images"] == ""  # obvious keys carry no text
