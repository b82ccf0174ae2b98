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


@dataclass
class DatasetConfig:
    """A data set. ``name: demo`` is generated; other names are downloaded/converted sources."""

    name: str = "demo"
    modality: str = "ct+xray"  # ct | xray | ct+xray
    raw_dir: str = "${paths.data_dir}/${dataset.name}/raw"
    findings: list[str] = field(default_factory=lambda: list(FINDINGS))
    demo: DemoDataConfig = field(default_factory=DemoDataConfig)
