"""Schema of the ``sampling`` group: which synthetic images join the real training folds.

An arm is (``source``, ``views_per_ct``): ``none`` is the real-only baseline; ``drr`` and
``synthex`` add the centre view plus ``views_per_ct - 1`` angled views of every CT to the
training folds (never to validation or test data). ``source`` is an Enum, so a misspelt
arm (the original study's ``--use-syntex``) fails at start-up instead of silently running
another arm. The options ``sampling=drr_5`` etc. are the thesis grid's arms by name.
"""

from dataclasses import dataclass

from gensyn.base.bounds import bounded
from gensyn.study import SyntheticSource

__all__ = ["SamplingConfig", "SyntheticSource"]


@dataclass
class SamplingConfig:
    """``source``: none | drr | synthex; ``views_per_ct``: 1 (centre) .. n (centre + n-1 angled)."""

    source: SyntheticSource = SyntheticSource.none
    views_per_ct: int = bounded(1, ge=1)  # the study: 1, 2, 5 or 10 (ignored for source=none)
