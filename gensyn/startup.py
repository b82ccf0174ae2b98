"""Checks of a composed config that need more than its types, run before any stage starts.

The schemas (gensyn/config/) already refuse unknown keys and wrong types. These checks catch
combinations that are valid YAML but would waste a GPU-week: real data at the demo's sizes,
frozen layers on random weights, ``device=cuda`` without a GPU, and values out of their range
(sizes < 1, fractions outside [0, 1], C-arm angles beyond 90 degrees, a shard outside
``num_shards``). Each raises :class:`~gensyn.errors.GensynError` with the key, the value and
what is allowed (or the command to use), before any stage runs or any folder is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gensyn.errors import GensynError

DEMO = "demo"


def _option(value: Any) -> str:
    return str(getattr(value, "value", value))


def check_demo_sizes(cfg: DictConfig) -> None:
    """Refuse a real ``dataset`` or ``ct_dataset`` under ``experiment=demo``.

    The demo experiment shrinks every model (64-px small CNN, 256-px DRRs, an 8-filter
    CycleGAN) to run on a laptop; a real data set with those sizes would give numbers that
    look like results and are not.
    """
    if cfg.get("experiment_name") != DEMO:
        return
    real = [
        f"{group}={cfg[group].name}"
        for group in ("dataset", "ct_dataset")
        if str(cfg[group].name) != DEMO
    ]
    if real:
        raise GensynError(
            f"{' and '.join(real)} with experiment=demo would run the real data at the demo's "
            "laptop sizes (small_cnn at 48 px, 256-px DRRs, a tiny CycleGAN). Add "
            "experiment=thesis (the original study's sizes: PadChest + RAD-ChestCT, "
            "DenseNet121 at 512 px) or experiment=thesis_grid, and override what differs, e.g. "
            f"`python launch.py experiment=thesis {' '.join(real)} ...`"
        )


def check_classifier_weights(cfg: DictConfig) -> None:
    """Frozen DenseNet121 layers need pretrained weights; a local weights file must exist."""
    c = cfg.classifier
    if _option(c.name) != "densenet121":
        return
    weights = c.get("weights")
    tail = int(c.trainable_tail_layers)
    if weights is None and tail != -1:
        raise GensynError(
            f"classifier.weights=null with classifier.trainable_tail_layers={tail}: all but the "
            f"last {tail} layers would stay frozen at random values, so the classifier would "
            "learn on random features. Use classifier.weights=imagenet (the default), a local "
            ".h5 file, or train every layer from scratch with classifier.trainable_tail_layers=-1"
        )
    if weights not in (None, "imagenet") and not Path(str(weights)).expanduser().is_file():
        raise GensynError(
            f"classifier.weights={weights}: no such file; give a DenseNet121 no-top weights "
            "file (.h5), imagenet, or null"
        )


def check_fold(cfg: DictConfig) -> None:
    """``split_idx`` must name one of the ``classifier.n_folds`` folds."""
    n_folds = int(cfg.classifier.n_folds)
    if n_folds < 2:
        raise GensynError(f"classifier.n_folds={n_folds}; allowed: 2 or more")
    if not 0 <= int(cfg.split_idx) < n_folds:
        raise GensynError(
            f"split_idx={cfg.split_idx}; allowed: 0 .. {n_folds - 1} (classifier.n_folds={n_folds})"
        )


#: Sizes and counts that must be at least 1: pixels, items per batch, epochs, shards.
POSITIVE = (
    "projector.image_size_px",
    "projector.batch_poses",
    "classifier.image_size_px",
    "classifier.batch_size",
    "classifier.predict_batch_size",
    "classifier.epochs",
    "generator.load_size",
    "generator.crop_size",
    "generator.batch_size",
    "generator.translate_batch_size",
    "generator.translate_write_threads",
    "dataset.xray.size_px",
    "dataset.demo.xray_size_px",
    "dataset.demo.num_xray_patients",
    "ct_dataset.demo.num_ct_patients",
    "reader_study.blinding.image_size_px",
    "num_shards",
)
#: Fractions and probabilities: key -> (low, high, whether ``high`` itself is allowed).
FRACTIONS: dict[str, tuple[float, float, bool]] = {
    "dataset.xray.test_fraction": (0.0, 1.0, False),
    "dataset.demo.test_fraction": (0.0, 1.0, False),
    "dataset.demo.finding_prevalence": (0.0, 1.0, True),
    "ct_dataset.demo.finding_prevalence": (0.0, 1.0, True),
    "classifier.dropout": (0.0, 1.0, False),
    "report.ci_level": (0.0, 1.0, False),
}
#: Largest |alpha| and |beta| of a C-arm pose, in degrees (docs/conventions.md).
MAX_ANGLE_DEG = 90.0
ANGLE_KEYS = ("alpha_deg", "beta_deg", "alpha_range_deg", "beta_range_deg")


def check_values(cfg: DictConfig) -> None:
    """Sizes >= 1, fractions in their interval, ``crop_size <= load_size``, bit depths, shards."""
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and value < 1:
            raise GensynError(f"{key}={value}; allowed: 1 or more")
    for key, (low, high, closed) in FRACTIONS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and not (low <= value <= high and (closed or value < high)):
            raise GensynError(
                f"{key}={value}; allowed: {low:g} <= {key} {'<=' if closed else '<'} {high:g}"
            )
    g = cfg.generator
    if g.crop_size > g.load_size:
        raise GensynError(
            f"generator.crop_size={g.crop_size}; allowed: 1 .. generator.load_size={g.load_size} "
            "(images are resized to load_size, then cropped)"
        )
    for key in ("projector.bit_depth", "dataset.xray.bit_depth"):
        if OmegaConf.select(cfg, key) not in (8, 16):
            raise GensynError(f"{key}={OmegaConf.select(cfg, key)}; allowed: 8 or 16")
    level = OmegaConf.select(cfg, "projector.png_compress_level")
    if level is not None and not 0 <= level <= 9:
        raise GensynError(f"projector.png_compress_level={level}; allowed: 0 .. 9 (zlib levels)")
    if not 0 <= cfg.shard < cfg.num_shards:
        raise GensynError(
            f"shard={cfg.shard}; allowed: 0 .. {cfg.num_shards - 1} (num_shards={cfg.num_shards})"
        )


def check_carm_pose(cfg: DictConfig) -> None:
    """Angles within +-MAX_ANGLE_DEG, ranges as [low, high], one angle pair for ``center``."""
    pose = cfg.carm_pose
    for name in ANGLE_KEYS:
        angles = list(pose[name])
        if any(abs(a) > MAX_ANGLE_DEG for a in angles):
            raise GensynError(
                f"carm_pose.{name}={angles}; allowed: angles from -{MAX_ANGLE_DEG:g} to "
                f"{MAX_ANGLE_DEG:g} degrees (docs/conventions.md)"
            )
        if name.endswith("range_deg") and (len(angles) != 2 or angles[0] > angles[1]):
            raise GensynError(f"carm_pose.{name}={angles}; allowed: [low, high] with low <= high")
    if pose.num_random < 0:
        raise GensynError(f"carm_pose.num_random={pose.num_random}; allowed: 0 or more")
    if _option(pose.mode) == "center" and (len(pose.alpha_deg) != 1 or len(pose.beta_deg) != 1):
        raise GensynError(
            f"carm_pose.alpha_deg={list(pose.alpha_deg)} carm_pose.beta_deg="
            f"{list(pose.beta_deg)}; allowed with carm_pose.mode=center: one angle each "
            "(carm_pose=grid renders every combination)"
        )


#: Stages that create their raw folder rather than read it.
FETCHING_STAGES = frozenset({"download"})


def command_line_keys() -> set[str]:
    """The keys this run's command line set (``+``/``~`` stripped); empty outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except (ImportError, ValueError):  # no Hydra run: nothing came from a command line
        return set()
    return {str(o).split("=", 1)[0].lstrip("+~") for o in overrides}


def check_raw_dirs(cfg: DictConfig, given: set[str] | None = None) -> None:
    """A ``ct_dataset.raw_dir`` / ``dataset.raw_dir`` named on the command line must exist.

    A folder given by hand that is not there is a typo far more often than a wish to
    download into it; ``stage=download`` (which creates it) is exempt, and so are the demo
    sets (generated, not read). ``given``: the keys set on the command line (default: this
    Hydra run's).
    """
    given = command_line_keys() if given is None else given
    if str(OmegaConf.select(cfg, "stage.name", default="")) in FETCHING_STAGES:
        return
    for group in ("ct_dataset", "dataset"):
        key = f"{group}.raw_dir"
        if key not in given or str(cfg[group].name) == DEMO:
            continue
        folder = Path(str(cfg[group].raw_dir)).expanduser()
        if not folder.is_dir():
            fetch = (
                f", or create it (or run `python launch.py stage=download {key}={folder} ...`) "
                "to download into it"
                if group == "ct_dataset"
                else ""
            )
            raise GensynError(
                f"{key}={folder}: no such folder. Give the folder that holds the "
                f"{cfg[group].name} files (docs/data.md, 'Data you already have'){fetch}"
            )


def check_config(cfg: DictConfig) -> None:
    """Every start-up check, in order; the first problem raises GensynError."""
    from gensyn.devices import check_device
    from gensyn.tracking.artifacts import artifact_kinds

    check_values(cfg)
    artifact_kinds(OmegaConf.select(cfg, "logger.artifacts", default=False))
    check_carm_pose(cfg)
    check_demo_sizes(cfg)
    check_classifier_weights(cfg)
    check_fold(cfg)
    check_raw_dirs(cfg)
    check_device(str(OmegaConf.select(cfg, "device", default="auto")))
