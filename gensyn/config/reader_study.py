"""Schema of the ``reader_study`` group: a blinded real-vs-synthetic study in Label Studio.

Original study: 60 images (20 real, 20 DRR, 20 SyntheX), 3 radiologists, answers real / fake /
uncertain with a reason for fake or uncertain, in Label Studio.
"""

from dataclasses import dataclass, field

from gensyn.base.bounds import bounded


@dataclass
class ReaderSourceConfig:
    """One image source: a folder of images that are all real or all synthetic ("fake").

    Images come from an upstream stage's run folder (``stage`` + ``subdir``) or from an
    explicit ``folder``; ``pattern`` is a glob below it.
    """

    name: str = ""
    truth: str = "real"  # real | fake
    stage: str = ""  # upstream stage whose run folder holds the images ("" = use folder)
    subdir: str = ""  # below the stage's run folder
    folder: str = ""  # an explicit folder (used when stage is "")
    pattern: str = "**/*.png"


@dataclass
class BlindingConfig:
    """How all images are made alike (see gensyn/reader/build.py)."""

    image_size_px: int = bounded(512, ge=1)  # the original study showed 512×512 PNGs
    margin_fraction: float = bounded(
        0.02, ge=0, lt=0.5
    )  # cut from each side after stripping constant borders
    border_std_fraction: float = bounded(0.01, ge=0)
    field_dark_fraction: float = bounded(
        0.05, ge=0, lt=1
    )  # crop black shutters/collimation (0 = off)
    remove_markers: bool = True  # paint over small bright blobs near edges (side markers)
    window_low_percentile: float = bounded(0.5, ge=0, le=100)
    window_high_percentile: float = bounded(99.5, ge=0, le=100, above="window_low_percentile")
    framing: str = "thorax"  # thorax: square around the lungs + margin | centre: centred square
    thorax_margin_fraction: float = bounded(
        0.0, ge=0
    )  # margin around the lung box, share of its side
    match_histograms: bool = True  # every image gets the study's pooled grey-level histogram
    detail_px: int = bounded(0, ge=0)  # box-average each framed square first (0: off)
    # audit (gensyn/reader/audit.py): per real/fake pair of sources, permutation tests of a
    # classifier's CV accuracy and of the worst single feature; a leak stops the build
    # (reader_study.force_blinding). audit_alpha bounds the chance that a build whose
    # sources differ in nothing stops (split over both tests and all real/fake pairs).
    audit_alpha: float = bounded(0.05, gt=0, lt=1)
    audit_permutations: int = bounded(1000, ge=200)  # label shuffles per pair
    audit_min_images_per_source: int = bounded(10, ge=2)  # fewer: the audit is reported, not judged


@dataclass
class ReaderServerConfig:
    """Label Studio servers: started here (one per reader) or run by someone else."""

    mode: str = "start"  # start | connect
    host: str = "127.0.0.1"  # listen address of started servers; never 0.0.0.0 unless intended
    base_port: int = bounded(
        8480, ge=1, le=65535
    )  # reader i (in `readers` order) gets base_port + i
    urls: dict[str, str] = field(default_factory=dict)  # mode=connect: reader id -> server URL
    venv: str = ".venv-reader"  # Label Studio's own environment (scripts/setup_reader_env.sh)
    data_root: str = "${paths.work_dir}/labelstudio"  # databases live here, outside run folders
    startup_timeout_s: float = bounded(300.0, gt=0)
    # credentials are read from these environment variables, never from configs
    admin_email_env: str = "GENSYN_LS_ADMIN_EMAIL"
    admin_password_env: str = "GENSYN_LS_ADMIN_PASSWORD"
    admin_token_env: str = "GENSYN_LS_API_TOKEN"  # mode=connect alternative to the password
    reader_password_env: str = "GENSYN_READER_{reader}_PASSWORD"


@dataclass
class ReaderStudyConfig:
    """The study: sources, readers, how 'uncertain' counts, servers."""

    images_per_source: int = bounded(20, ge=1)  # a source with fewer gives all it has (logged)
    sources: list[ReaderSourceConfig] = field(default_factory=list)
    readers: list[str] = field(default_factory=lambda: ["R1", "R2", "R3"])  # ids, never names
    uncertain_as: str = "wrong"  # wrong | exclude | fake | real
    # cluster intervals of the analysis: seeded 2-way bootstrap draws over readers and images
    bootstrap_replicates: int = bounded(2000, ge=1)
    # analyse answers from here instead of the servers: a CSV (reader_id, image_id, verdict,
    # reason, lead_time_s) or a folder of Label Studio JSON exports named <reader id>.json
    answers_file: str = ""
    blinding: BlindingConfig = field(default_factory=BlindingConfig)
    force_blinding: bool = False  # build even if the audit fails (warning in key/)
    server: ReaderServerConfig = field(default_factory=ReaderServerConfig)
