"""Schema of ``report``: which arms and folds the classification report gathers, and its statistics."""

from dataclasses import dataclass, field

from gensyn.base.bounds import bounded
from gensyn.config.dataset import DatasetConfig
from gensyn.report.multiplicity import PrimaryComparison
from gensyn.study import THESIS_ARMS


@dataclass
class ReportConfig:
    """``arms``: ``sampling`` options to gather (missing runs are listed, not fatal).

    Folds 0 .. classifier.n_folds-1 are gathered for each arm, for every seed in ``seeds``
    (empty: only ``seed``). ``baseline`` is the arm every other arm is compared with (an
    interval over test patients and trained models; docs/classification.md). ``primary`` is
    the comparison declared as the study's question, reported without adjustment; every other
    p-value is Holm-adjusted within its family. None of these keys changes a run hash (the
    report is not hashed; ``predict`` hashes only ``test_datasets``).

    ``sweep`` compares more than arms: the multirun's sweep overrides as typed, e.g.
    ``["carm_pose.alpha_range_deg=[-5,5],[-10,10],[-20,20]"]``. Every arm × combination of
    values × fold × seed is looked up by its run hash (as the arms are); a key that does not
    change an arm's runs (C-arm angles for the baseline) is not compared for that arm. The
    baseline is ``baseline`` at each key's first value.
    """

    arms: list[str] = field(default_factory=lambda: list(THESIS_ARMS))
    # Extra held-out test sets for stage=predict: names of ``dataset`` options (conf/dataset)
    # whose prepare_xrays rows with split == test are predicted too, e.g. [chestxray14] for a
    # model trained on PadChest (the original study's external test set).
    test_datasets: list[str] = field(default_factory=list)
    # The settings of those external test sets, by name: a ``dataset`` option placed here by
    # a defaults list (experiment=thesis: ``- /dataset@report.external.chestxray14:
    # chestxray14``), so the command line reaches them, e.g.
    # report.external.chestxray14.raw_dir=/data/nih or
    # report.external.chestxray14.xray.external_test=test_split. A set named in
    # test_datasets but not here takes conf/dataset/<name>.yaml as it is (add it with
    # +dataset@report.external.<name>=<name> to override its settings).
    external: dict[str, DatasetConfig] = field(default_factory=dict)
    baseline: str = "none"
    # Training seeds to gather (e.g. [0, 1, 2] after `seed=0,1,2 -m`); [] = only cfg.seed.
    # Each seed draws its own fold split, so folds × seeds is repeated cross-validation.
    seeds: list[int] = bounded(factory=list, ge=0)
    # Sweep overrides to compare, as given to the multirun (not hashed: the report only reads
    # runs), e.g. ["carm_pose.alpha_range_deg=[-5,5],[-10,10],[-20,20]", "seed=0,1,2"].
    sweep: list[str] = field(default_factory=list)
    n_bootstrap: int = bounded(2000, ge=1)
    ci_level: float = bounded(0.95, ge=0, lt=1)
    # The primary comparison: metric (macro or a finding), test_set (external | internal |
    # a test set's name), arm (a sampling option). Not in the grid: the nearest is taken.
    primary: PrimaryComparison = field(default_factory=PrimaryComparison)
