"""Schema of the ``dataset`` group: which CT and X-ray data a study uses."""

from dataclasses import dataclass, field

FINDINGS = ("Effusion", "Pneumothorax", "Atelectasis", "Cardiomegaly", "Pneumonia")


@dataclass
class DemoDataConfig:
    """Size of the built-in simulated data set (procedural CT phantoms and simulated X-rays)."""

    num_ct_patients: int = 40
    num_xray_patients: int = 400
    volume_shape_vox: list[int] = field(default_factory=lambda: [128, 128, 128])
    voxel_spacing_mm: list[float] = field(default_factory=lambda: [2.8, 2.8, 2.6])
    xray_size_px: int = 256
    finding_prevalence: float = 0.3
    test_fraction: float = 0.3  # fraction of simulated X-ray patients held out as the test set
    num_workers: int = 2  # processes that generate the demo data (not part of the run hash)


@dataclass
class DownloadConfig:
    """Where ``stage=download`` fetches raw data from (gensyn.data.zenodo / gensyn.data.nbia).

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
    attempts: int = 6  # tries per file (5xx, dropped connections, bad checksums)
    unpack: bool = False  # extract verified .zip/.tar(.gz) files into raw_dir/<name>/
    num_workers: int = 4  # parallel downloads (not hashed)


@dataclass
class ConvertConfig:
    """How ``stage=convert`` reads raw CTs (gensyn.data.convert)."""

    ct_format: str = ""  # dicom | nrrd | npz ("" for demo)
    npz_key: str = "ct"  # array name inside each NPZ
    npz_spacing_mm: list[float] | None = None  # per array axis; None = from the file or fail
    npz_axis_codes: str = "IPL"  # RAS letters each NPZ array axis points to
    label_file: str = ""  # CT label table(s) below raw_dir, a glob (RAD-ChestCT); "" = none
    metadata_file: str = ""  # RAD-ChestCT scan metadata (patient ids, MRN_DEID); "" = none
    nifti_suffix: str = ".nii.gz"
    num_workers: int = 2  # parallel conversions (not hashed)


@dataclass
class XrayConfig:
    """Real chest X-rays for ``stage=prepare_xrays`` (gensyn.data.labels, gensyn.data.xray_prep)."""

    label_source: str = ""  # padchest | chestxray14 ("" for demo)
    label_file: str = ""  # label table below raw_dir
    image_dir: str = "images"  # image root below raw_dir (label relpaths are below it)
    views: list[str] = field(default_factory=lambda: ["PA", "AP"])  # kept views ([] = all)
    split: str = "train"  # train (folds are drawn from it) | test (held-out test set)
    size_px: int = 512
    bit_depth: int = 8
    window: str = "percentile"  # percentile | minmax | bits
    window_pct: list[float] = field(default_factory=lambda: [0.5, 99.5])
    mode: str = "squash"  # squash (stretch to square, as the original) | pad
    num_workers: int = 2  # parallel image workers (not hashed)


@dataclass
class DatasetConfig:
    """A data set. ``name: demo`` is generated; other names are downloaded/converted sources."""

    name: str = "demo"
    modality: str = "ct+xray"  # ct | xray | ct+xray
    raw_dir: str = "${paths.data_dir}/${dataset.name}/raw"
    findings: list[str] = field(default_factory=lambda: list(FINDINGS))
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    xray: XrayConfig = field(default_factory=XrayConfig)
