"""Schema of ``report``: which arms and folds the classification report gathers, and its statistics."""

from dataclasses import dataclass, field

from gensyn.bounds import bounded

#: The original study's nine arms, as names of options of the ``sampling`` group.
THESIS_ARMS = (
    "none",
    "drr_1",
    "drr_2",
    "drr_5",
    "drr_10",
    "synthex_1",
    "synthex_2",
    "synthex_5",
    "synthex_10",
)


@dataclass
class ReportConfig:
    """``arms``: ``sampling`` options to gather (missing runs are listed, not fatal).

    Folds 0 .. classifier.n_folds-1 are gathered for each arm, for every seed in ``seeds``
    (empty: only ``seed``). ``baseline`` is the arm every other arm is compared with (paired
    bootstrap over test patients, DeLong, and the corrected t-test across trained models).
    """

    arms: list[str] = field(default_factory=lambda: list(THESIS_ARMS))
    # Extra held-out test sets for stage=predict: names of ``dataset`` options (conf/dataset)
    # whose prepare_xrays rows with split == test are predicted too, e.g. [chestxray14] for a
    # model trained on PadChest (the original study's external test set).
    test_datasets: list[str] = field(default_factory=list)
    baseline: str = "none"
    # Training seeds to gather (e.g. [0, 1, 2] after `seed=0,1,2 -m`); [] = only cfg.seed.
    # Each seed draws its own fold split, so folds × seeds is repeated cross-validation.
    seeds: list[int] = bounded(factory=list, ge=0)
    n_bootstrap: int = bounded(2000, ge=1)
    ci_level: float = bounded(0.95, ge=0, lt=1)
