"""What each sampling arm's models were fed in training: steps, real and synthetic images.

The report prints it beside the AUCs, so a reader sees whether arms differ only by their
synthetic images (``classifier.schedule=real_epochs``), also by compute (``epochs``), or by
how often the real images were seen (``steps``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: classify summary key -> report column (the mean over the arm's models)
EXPOSURE_COLUMNS = {
    "optimizer_steps": "steps",
    "real_images_seen": "real images seen",
    "synthetic_images_seen": "synthetic images seen",
}
EXPOSURE_CAPTION = (
    "Training exposure per arm: optimiser steps, and real and synthetic images fed to the "
    "optimiser (counted in training; mean over the arm's models)"
)


def exposure_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per arm (in first-seen order): ``models`` and the mean over its models of
    steps, real images seen and synthetic images seen, plus the fewest and most times one
    real image was seen (over the arm's models: ``real image seen (times)``).

    ``runs``: one mapping per trained model with ``arm`` and the classify summary's keys
    (:data:`EXPOSURE_COLUMNS`, ``real_times_seen_min``/``max``); a key a model's summary lacks
    (a run of an older version) is left out of that mean, ``n/a`` where no model has it.
    """
    if not runs:
        return pd.DataFrame(columns=["arm", "models", *EXPOSURE_COLUMNS.values()])
    frame = pd.DataFrame([dict(r) for r in runs])
    rows = []
    for arm, group in frame.groupby("arm", sort=False):
        row: dict[str, Any] = {"arm": arm, "models": len(group)}
        for key, column in EXPOSURE_COLUMNS.items():
            values = pd.to_numeric(group.get(key, pd.Series(dtype=float)), errors="coerce")
            row[column] = f"{values.mean():,.0f}" if values.notna().any() else "n/a"
        lo = pd.to_numeric(group.get("real_times_seen_min", pd.Series(dtype=float)))
        hi = pd.to_numeric(group.get("real_times_seen_max", pd.Series(dtype=float)))
        if lo.notna().any() and hi.notna().any():
            low, high = int(np.nanmin(lo)), int(np.nanmax(hi))
            row["real image seen (times)"] = str(low) if low == high else f"{low}–{high}"
        else:
            row["real image seen (times)"] = "n/a"
        rows.append(row)
    return pd.DataFrame(rows)
