"""Schema of the ``sampling`` group: which synthetic images join the real training folds."""

from dataclasses import dataclass


@dataclass
class SamplingConfig:
    """``source``: none | drr | synthex; ``views_per_ct``: 1 (centre) .. n (centre + n-1 angled)."""

    source: str = "none"
    views_per_ct: int = 1
