"""Garbage outputs are named, never kept (issue 36): the check itself and predict's use of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gensyn.base.degenerate import degenerate_reason
from gensyn.base.errors import GensynError


def test_degenerate_reason() -> None:
    rng = np.random.default_rng(0)
    assert degenerate_reason(rng.random((8, 8))) is None
    assert degenerate_reason(np.zeros((8, 8), np.uint8)) == "constant (every value is 0)"
    values = rng.random(10)
    values[[1, 4]] = np.nan
    values[7] = -np.inf
    assert degenerate_reason(values) == "3 of 10 values are not finite (2 NaN, 1 infinite)"
    assert degenerate_reason(np.full(3, 0.5), constant=False) is None
    assert degenerate_reason(np.array([np.nan]), constant=False) is not None
    assert degenerate_reason(np.array([1.0])) is None  # one value is no evidence
    assert degenerate_reason(np.zeros((0, 4))) is None


def test_predictions_that_ignore_the_image_are_refused() -> None:
    from gensyn.stages.predict import refuse_degenerate

    rng = np.random.default_rng(1)
    probs = rng.random((20, 3))
    refuse_degenerate(probs, ["A", "B", "C"], "demo", Path("/m"))
    probs[:, 1] = 0.25  # one finding the same for every image
    with pytest.raises(GensynError, match=r"probabilities of B on test set demo \(20 images\): "):
        refuse_degenerate(probs, ["A", "B", "C"], "demo", Path("/m"))
    probs[:, 1] = rng.random(20)
    probs[3, 2] = np.nan
    with pytest.raises(GensynError, match=r"of C .* not finite .* not marked DONE"):
        refuse_degenerate(probs, ["A", "B", "C"], "demo", Path("/m"))
