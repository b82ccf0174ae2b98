"""Checks of a composed config that need more than its types, run before any stage starts.

The schemas (gensyn/config/) already refuse unknown keys and wrong types. These checks catch
combinations that are valid YAML but would waste a GPU-week: real data at the demo's sizes,
frozen layers on random weights, ``device=cuda`` without a GPU, and values out of their range:
every numeric setting against the bounds declared on its schema field (:mod:`gensyn.base.bounds`:
sizes >= 1, fractions in [0, 1], C-arm angles within 90 degrees, ordered percentile pairs, and
every float finite), then relations between keys (a shard outside ``num_shards``). Each raises :class:`~gensyn.base.errors.GensynError` with the key, the value and
what is allowed (or the command to use), before any stage runs or any folder is made.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gensyn.base.errors import GensynError

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
    """Frozen DenseNet121 layers need pretrained weights; a local weights file must exist
    (``~`` expanded, as :func:`gensyn.classify.models.resolve_weights` does); the small CNN
    takes none."""
    from gensyn.classify.settings import weights_file

    c = cfg.classifier
    weights = c.get("weights")
    if _option(c.name) != "densenet121":
        if weights is not None:
            raise GensynError(
                f"classifier.weights={weights} with classifier.name={_option(c.name)}; allowed: "
                "null (pretrained weights exist for classifier=densenet121 only)"
            )
        return
    tail = int(c.trainable_tail_layers)
    if weights is None and tail != -1:
        raise GensynError(
            f"classifier.weights=null with classifier.trainable_tail_layers={tail}: all but the "
            f"last {tail} layers would stay frozen at random values, so the classifier would "
            "learn on random features. Use classifier.weights=imagenet (the default), a local "
            ".h5 file, or train every layer from scratch with classifier.trainable_tail_layers=-1"
        )
    if weights not in (None, "imagenet") and not weights_file(str(weights)).is_file():
        raise GensynError(
            f"classifier.weights={weights}: no such file; give a DenseNet121 no-top weights "
            "file (.h5), imagenet, or null"
        )


def check_fold(cfg: DictConfig) -> None:
    """``split_idx`` must name one of the ``classifier.n_folds`` folds (n_folds >= 2: bounds)."""
    n_folds = int(cfg.classifier.n_folds)
    if not 0 <= int(cfg.split_idx) < n_folds:
        raise GensynError(
            f"split_idx={cfg.split_idx}; allowed: 0 .. {n_folds - 1} (classifier.n_folds={n_folds})"
        )


def _number_kind(annotation: Any) -> tuple[type | None, bool]:
    """(int or float, whether a list/tuple of them) for a field's type; (None, False) else."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]  # Optional[X]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (items[0], True) if len(items) == 1 and items[0] in (int, float) else (None, False)
    return (annotation, False) if annotation in (int, float) else (None, False)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_list(value) else value


def _check_fields(cfg: DictConfig, schema: type, prefix: str) -> None:
    from gensyn.base.bounds import Bounds, field_bounds

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            if isinstance(OmegaConf.select(cfg, key), DictConfig):
                _check_fields(cfg, kind, f"{key}.")  # type: ignore[arg-type]
            continue
        number, is_list = _number_kind(kind)
        if number is None:
            continue
        parent = OmegaConf.select(cfg, prefix[:-1]) if prefix else cfg
        if isinstance(parent, DictConfig) and OmegaConf.is_interpolation(parent, f.name):
            continue  # a copy of another key (``${num_workers}``): checked, and named, there
        value = _plain(OmegaConf.select(cfg, key))
        if value is None:
            continue
        bounds = field_bounds(f) or Bounds()
        numbers = list(value) if is_list else [value]
        ok = all(bounds.number_ok(v) for v in numbers)
        if ok and is_list:
            ok = bounds.list_ok(numbers)
        if not ok:
            allowed = bounds.describe(key, is_list, number is int)
            raise GensynError(f"{key}={value}; allowed: {allowed}")
        if bounds.above:
            other = f"{prefix}{bounds.above}"
            floor = OmegaConf.select(cfg, other)
            if floor is not None and not value > floor:
                raise GensynError(f"{key}={value}; allowed: more than {other}={floor}")


def check_bounds(cfg: DictConfig) -> None:
    """Every numeric setting of the schema within the bounds declared on its field.

    Floats must be finite unless declared otherwise (NaN passes every ``<`` check and then
    renders all-zero images); ranges, list lengths and orders come from
    :class:`gensyn.base.bounds.Bounds` in each field's metadata (gensyn/config/, gensyn/gan/settings.py).
    """
    from gensyn.config import Config

    _check_fields(cfg, Config, "")


def check_values(cfg: DictConfig) -> None:
    """Declared bounds (:func:`check_bounds`), then ``crop_size <= load_size`` and the shard."""
    check_bounds(cfg)
    g = cfg.generator
    if g.crop_size > g.load_size:
        raise GensynError(
            f"generator.crop_size={g.crop_size}; allowed: 1 .. generator.load_size={g.load_size} "
            "(images are resized to load_size, then cropped)"
        )
    if not 0 <= cfg.shard < cfg.num_shards:
        raise GensynError(
            f"shard={cfg.shard}; allowed: 0 .. {cfg.num_shards - 1} (num_shards={cfg.num_shards})"
        )


def check_carm_pose(cfg: DictConfig) -> None:
    """One angle pair for ``mode=center`` (angles and ranges: bounds on the fields)."""
    pose = cfg.carm_pose
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
    from gensyn.base.devices import check_device
    from gensyn.tracking.artifacts import artifact_kinds

    check_values(cfg)
    artifact_kinds(OmegaConf.select(cfg, "logger.artifacts", default=False))
    check_carm_pose(cfg)
    check_demo_sizes(cfg)
    check_classifier_weights(cfg)
    check_fold(cfg)
    check_raw_dirs(cfg)
    check_device(str(OmegaConf.select(cfg, "device", default="auto")))
