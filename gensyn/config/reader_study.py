"""Schema of the ``reader_study`` group: a blinded real-vs-synthetic study in Label Studio.

Original study: 60 images (20 real, 20 DRR, 20 SyntheX), 3 radiologists, answers real / fake /
uncertain with a reason for fake or uncertain, in Label Studio. The blinding and audit keys are
:class:`gensyn.reader.blinding.BlindingParams` and :class:`gensyn.reader.audit.AuditParams`
(declared once, there), the servers' keys :class:`gensyn.reader.settings.ServerSettings`; the
allowed values are the reader package's enums.
"""

from dataclasses import dataclass, field

from gensyn.base.bounds import bounded
from gensyn.reader.analyze import UncertainAs
from gensyn.reader.audit import AuditParams
from gensyn.reader.blinding import BlindingParams
from gensyn.reader.build import Truth
from gensyn.reader.settings import ServerSettings


@dataclass
class ReaderSourceConfig:
    """One image source: a folder of images that are all real or all synthetic ("fake").

    Images come from an upstream stage's run folder (``stage`` + ``subdir``) or from an
    explicit ``folder``; ``pattern`` is a glob below it.
    """

    name: str = ""
    truth: Truth = Truth.real  # real | fake
    stage: str = ""  # upstream stage whose run folder holds the images ("" = use folder)
    subdir: str = ""  # below the stage's run folder
    folder: str = ""  # an explicit folder (used when stage is "")
    pattern: str = "**/*.png"


@dataclass
class BlindingConfig(AuditParams, BlindingParams):
    """How all images are made alike (gensyn/reader/blinding.py), then the audit that stops a
    build whose sources still differ (gensyn/reader/audit.py; ``reader_study.force_blinding``)."""


@dataclass
class ReaderServerConfig(ServerSettings):
    """Label Studio servers (:class:`gensyn.reader.settings.ServerSettings`) and where their
    databases live."""

    data_root: str = "${paths.work_dir}/labelstudio"  # databases live here, outside run folders


@dataclass
class ReaderStudyConfig:
    """The study: sources, readers, how 'uncertain' counts, servers."""

    images_per_source: int = bounded(20, ge=1)  # a source with fewer gives all it has (logged)
    sources: list[ReaderSourceConfig] = field(default_factory=list)
    readers: list[str] = field(default_factory=lambda: ["R1", "R2", "R3"])  # ids, never names
    uncertain_as: UncertainAs = UncertainAs.wrong  # wrong | exclude | fake | real
    # cluster intervals of the analysis: seeded 2-way bootstrap draws over readers and images
    bootstrap_replicates: int = bounded(2000, ge=1)
    # analyse answers from here instead of the servers: a CSV (reader_id, image_id, verdict,
    # reason, lead_time_s) or a folder of Label Studio JSON exports named <reader id>.json
    answers_file: str = ""
    blinding: BlindingConfig = field(default_factory=BlindingConfig)
    force_blinding: bool = False  # build even if the audit fails (warning in key/)
    server: ReaderServerConfig = field(default_factory=ReaderServerConfig)
