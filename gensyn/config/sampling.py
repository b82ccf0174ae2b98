"""Schema of the ``sampling`` group: which synthetic images join the real training folds.

An arm is (``source``, ``views_per_ct``): ``none`` is the real-only baseline; ``drr`` and
``synthex`` add the centre view plus ``views_per_ct - 1`` angled views of every CT to the
training folds (never to validation or test data). ``source`` is an Enum, so a misspelt
arm (the original study's ``--use-syntex``) fails at start-up instead of silently running
another arm. The options ``sampling=drr_5`` etc. are the thesis grid's arms by name.
"""

from dataclasses import dataclass
from enum import Enum

from gensyn.base.bounds import bounded


class SyntheticSource(Enum):
    """Where the added images come from."""

    none = "none"  # baseline: real images only
    drr = "drr"  # stage drr's manifest
    synthex = "synthex"  # stage gan_translate's manifest (DRRs translated to the real domain)


@dataclass
class SamplingConfig:
    """``source``: none | drr | synthex; ``views_per_ct``: 1 (centre) .. n (centre + n-1 angled)."""

    source: SyntheticSource = SyntheticSource.none
    views_per_ct: int = bounded(1, ge=1)  # the study: 1, 2, 5 or 10 (ignored for source=none)
