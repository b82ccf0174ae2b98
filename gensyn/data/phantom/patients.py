"""Seeds of the demo's simulated patients: one stream per group (CTs, X-rays) and index."""

from __future__ import annotations

import numpy as np

__all__ = ["CT_GROUP", "XRAY_GROUP", "patient_seed"]

CT_GROUP, XRAY_GROUP = 0, 1


def patient_seed(seed: int, group: int, index: int) -> int:
    """Seed of patient ``index`` of a group (CT or X-ray); groups never share a seed stream."""
    return int(np.random.SeedSequence([seed, group, index]).generate_state(1, np.uint32)[0])
