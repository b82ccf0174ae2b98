"""Outputs that are garbage: non-finite values or one constant value (issue 36).

A bad setting or a broken model does not always fail: NaN angles rendered all-zero DRRs, a
diverged generator writes black SyntheX images, a dead classifier predicts the same
probability for every image. Stages check what they are about to keep with
:func:`degenerate_reason` and stop with :class:`DegenerateOutputError` naming the item and
the reason, so such a run is never marked DONE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DegenerateOutputError", "degenerate_reason"]


class DegenerateOutputError(ValueError):
    """An output that is non-finite or constant: the message names the item and the reason."""


def degenerate_reason(values: Any, constant: bool = True) -> str | None:
    """Why ``values`` (an array or torch tensor) is no usable output, or None.

    Non-finite entries (NaN, +-inf) are always a reason; ``constant``: one value everywhere is
    too (an image without contrast, a prediction that ignores its input). Empty arrays pass.
    """
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().float().cpu().numpy()
    a = np.asarray(values)
    if a.size == 0:
        return None
    if a.dtype.kind in "fc":
        finite = np.isfinite(a)
        if not finite.all():
            n_bad = int(a.size - finite.sum())
            n_nan = int(np.isnan(a).sum())
            return (
                f"{n_bad} of {a.size} values are not finite ({n_nan} NaN, {n_bad - n_nan} infinite)"
            )
    if constant and a.size > 1:
        low, high = a.min(), a.max()
        if low == high:
            return f"constant (every value is {float(low):g})"
    return None
