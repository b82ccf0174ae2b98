"""Schemas of the ``dataset`` and ``ct_dataset`` groups: the study's two data sources.

``dataset`` is the X-ray data the classifier learns from and is tested on (PadChest,
ChestX-ray14, the demo's simulated X-rays); ``ct_dataset`` is where the CTs come from that
``download``, ``convert``, ``drr`` and the SyntheX stages use (RAD-ChestCT, LIDC-IDRI,
ImagEng, the demo's phantoms). They are chosen separately: ``dataset=padchest
ct_dataset=radchest`` is the original study.
"""

from dataclasses import dataclass, field

from omegaconf import II

from gensyn.base.bounds import bounded, unhashed
from gensyn.data.ct.readers import NpzOptions
from gensyn.data.phantom.demo import DemoSizes
from gensyn.data.splits import ExternalTestRows, SplitSource
from gensyn.data.xray.prep import PrepOptions
from gensyn.study import FINDINGS


@dataclass
class DemoDataConfig(DemoSizes):
    """Size of the built-in simulated data set (procedural CT phantoms and simulated X-rays;
    the sizes are :class:`gensyn.data.phantom.demo.DemoSizes`, declared once, there)."""

    num_workers: int = unhashed(2, ge=0)  # processes that generate the demo data


@dataclass
class DownloadConfig:
    """Where ``stage=download`` fetches raw data from (gensyn.data.fetch.zenodo / gensyn.data.fetch.nbia).

    Tokens never live in YAML: ``token_env`` names an environment variable and
    ``token_file`` a file holding the token on its first line.
    """

    source: str = "none"  # zenodo | nbia | none (data placed in raw_dir by hand)
    api_url: str = ""  # "" = the public service's default
    record_id: str = ""  # Zenodo record
    collection: str = ""  # NBIA collection, e.g. LIDC-IDRI
    modality: str = "CT"  # NBIA series modality kept ("" = all)
    include: list[str] = field(default_factory=list)  # file-name globs to fetch ([] = all)
    token_env: str = ""  # environment variable holding the access token
    token_file: str | None = None  # or a file with the token on its first line
    attempts: int = bounded(6, ge=1)  # tries per file (5xx, dropped connections, bad checksums)
    unpack: bool = False  # extract verified .zip/.tar(.gz) files into raw_dir/<name>/
    num_workers: int = unhashed(4, ge=1)  # parallel downloads
    # raw_dir already holds the whole data set (the files an earlier download listed, or the
    # files the converter reads): record it without the network. false: ask the server anyway
    # (verified files are still not fetched again)
    reuse_raw_dir: bool = unhashed(True)


@dataclass
class ConvertConfig(NpzOptions):
    """How ``stage=convert`` reads raw CTs (gensyn.data.ct.convert); the ``npz_*`` keys are
    :class:`gensyn.data.ct.readers.NpzOptions` (declared once, there)."""

    # auto (per file/folder) or one of gensyn.data.ct.convert.FORMATS ("" for demo)
    ct_format: str = ""
    label_file: str = ""  # CT label table(s) below raw_dir, a glob; "" = none
    label_source: str = (
        "radchest"  # label_file's format: radchest | folder (ct_id, patient_id, findings)
    )
    metadata_file: str = ""  # RAD-ChestCT scan metadata (patient ids, MRN_DEID); "" = none
    nifti_suffix: str = ".nii.gz"
    num_workers: int = unhashed(II("num_workers"), ge=0)  # parallel conversions; default: the run's


@dataclass
class XrayConfig(PrepOptions):
    """Real chest X-rays for ``stage=prepare_xrays`` (gensyn.data.xray.labels, gensyn.data.xray.prep).

    The image keys (``size_px``, ``bit_depth``, ``window``, ``window_pct``, ``mode``) are
    :class:`gensyn.data.xray.prep.PrepOptions` (declared once, there).
    Every image gets ``split`` train (folds are drawn from it) or test (never trained on):
    ``split_source: official`` takes the data set's own lists (``official_train_list`` and
    ``official_test_list``, one image file name per line, below raw_dir), ``holdout`` holds
    out ``test_fraction`` of the patients (stratified on the findings, seeded by ``seed``;
    0 = all train), ``auto`` is official where both lists are in raw_dir, else holdout.
    ``external_test`` is which rows ``predict`` uses when this data set is another data set's
    external test set (``report.test_datasets``): ``all`` or ``test_split`` (split == test).
    """

    label_source: str = ""  # padchest | chestxray14 | folder ("" for demo)
    label_file: str = ""  # label table below raw_dir
    image_dir: str = "images"  # image root below raw_dir (label relpaths are below it)
    views: list[str] = field(default_factory=lambda: ["PA", "AP"])  # kept views ([] = all)
    split_source: SplitSource = SplitSource.auto  # auto | official | holdout
    official_train_list: str = ""  # below raw_dir, e.g. NIH's train_val_list.txt ("" = none)
    official_test_list: str = ""  # below raw_dir, e.g. NIH's test_list.txt ("" = none)
    test_fraction: float = bounded(
        0.0, ge=0, lt=1
    )  # holdout: fraction of patients held out as split=test, [0, 1)
    # all | test_split: predict's rows (predict hashes it with each external test set's run)
    external_test: ExternalTestRows = unhashed(ExternalTestRows.all)
    num_workers: int = unhashed(
        II("num_workers"), ge=0
    )  # parallel image workers; default: the run's


@dataclass
class DatasetConfig:
    """The X-ray data set (``dataset``). ``name: demo`` is generated; others are prepared files."""

    name: str = "demo"
    # ${.name}: this data set's own name, wherever the node sits (``dataset`` or an external
    # test set's ``report.external.<name>``)
    raw_dir: str = "${paths.data_dir}/${.name}/raw"
    findings: list[str] = field(default_factory=lambda: list(FINDINGS))
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)
    xray: XrayConfig = field(default_factory=XrayConfig)


@dataclass
class CtDatasetConfig:
    """The CT data set (``ct_dataset``) that DRRs are rendered from.

    ``name: demo`` is generated (procedural phantoms); others are downloaded and converted.
    Its labels are mapped to ``dataset.findings`` (docs/data.md, "CT labels"); a finding the
    CT set cannot label is unknown for its DRRs and masked from the classifier's loss.
    """

    name: str = "demo"
    raw_dir: str = "${paths.data_dir}/${ct_dataset.name}/raw"
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
