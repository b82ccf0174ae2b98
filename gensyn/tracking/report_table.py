"""What ``stage=report`` sends to W&B: one table of every model's AUCs, and the report's figures.

The table ``auc_by_model`` has a row per (arm, fold, seed, test set, finding), the finding
``macro`` included (the mean over findings with a defined AUC), so a W&B dashboard groups it
by arm (and test set, finding) and shows the mean ± sd over folds beside the report's CIs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from gensyn.core.run_context import RunContext

#: The W&B key of the table and its columns.
TABLE_KEY = "auc_by_model"
TABLE_COLUMNS = ["arm", "fold", "seed", "test_set", "finding", "auc", "n_images"]
#: The W&B key prefix of the report's figures (``report/roc_demo`` ...).
FIGURE_PREFIX = "report/"


def auc_rows(preds: pd.DataFrame, findings: list[str]) -> list[list[Any]]:
    """One row per model and test set and finding (``macro`` last): ``TABLE_COLUMNS``' values.

    ``preds`` is the report's ``predictions.csv``: ``arm, fold, seed, test_set``, labels
    ``y_<finding>`` and probabilities ``p_<finding>``. An undefined AUC (a finding with only
    one label value in that test set) is None (W&B shows it empty).
    """
    from gensyn.report.metrics import per_class_auc

    keys = ["arm", "fold", "seed", "test_set"]
    rows: list[list[Any]] = []
    for key, part in preds.groupby(keys, sort=True):
        arm, fold, seed, test_set = (str(v) for v in key)
        y = part[[f"y_{f}" for f in findings]].to_numpy()
        p = part[[f"p_{f}" for f in findings]].to_numpy()
        aucs = per_class_auc(y, p)
        finite = aucs[np.isfinite(aucs)]
        values = [*aucs, finite.mean() if finite.size else math.nan]
        for finding, auc in zip([*findings, "macro"], values, strict=True):
            number = None if math.isnan(auc) else round(float(auc), 6)
            rows.append(
                [arm, int(float(fold)), int(float(seed)), test_set, finding, number, len(part)]
            )
    return rows


def log_report(ctx: RunContext, preds: pd.DataFrame, findings: list[str]) -> int:
    """Log the AUC table of ``preds`` and the figures in ``ctx.summary['figures']`` to the
    run's tracker (nothing without one); the number of table rows."""
    tracker = ctx.tracker
    if tracker is None:
        return 0
    rows = auc_rows(preds, findings)
    tracker.log_table(TABLE_KEY, TABLE_COLUMNS, rows)
    for figure in ctx.summary.get("figures", []):
        path = ctx.out_dir / figure
        tracker.log_image(FIGURE_PREFIX + Path(figure).stem, path, caption=Path(figure).name)
    return len(rows)
