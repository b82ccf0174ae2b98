"""The chest X-ray classifier's settings: a plain dataclass, no Hydra.

Defaults are the original study's recipe (docs/study.md): DenseNet121 at 512² from ImageNet
weights, all but the last 9 layers frozen, Adam 1e-5, 30 epochs, batch 128, 5 patient-level
folds. ``weights`` is ``imagenet`` (Keras' published no-top file, downloaded once into
``$KERAS_HOME/models/``), None (``null`` in YAML: random init) or a local path to a
DenseNet121 no-top weights file (``~`` is expanded). Names that must come from a fixed list
are Enums, so a misspelling fails when the config is composed; :func:`checked` holds a plain
string to the same Enum. The ``classifier`` config group's schema
(:class:`gensyn.config.classifier.ClassifierConfig`) is this class, so each field is
declared here only; fields declared :func:`~gensyn.base.bounds.unhashed` change no result and are
left out of the run hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

from gensyn.base.bounds import bounded, unhashed

__all__ = [
    "ClassWeighting",
    "ClassifierName",
    "ClassifierSettings",
    "DecodeMode",
    "FeatureCache",
    "LrSchedule",
    "Precision",
    "Schedule",
    "checked",
    "weights_file",
]

E = TypeVar("E", bound=Enum)


class ClassifierName(Enum):
    """Which network: the study's DenseNet121, or a small CNN for CPU demos."""

    densenet121 = "densenet121"
    small_cnn = "small_cnn"


class Precision(Enum):
    """Keras dtype policy; ``auto`` = mixed_bfloat16 on GPUs, float32 on CPU."""

    auto = "auto"
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


class LrSchedule(Enum):
    """``constant`` (the study) or ``cosine`` decay to zero over all training steps."""

    constant = "constant"
    cosine = "cosine"


class ClassWeighting(Enum):
    """``balanced`` weights each class's positive term by n_negative / n_positive."""

    none = "none"
    balanced = "balanced"


class Schedule(Enum):
    """How many optimiser steps an epoch has.

    ``epochs`` (the study): one pass over all training images, so arms with more synthetic
    images take more steps. ``steps``: every arm takes ceil(real training images / batch)
    steps per epoch, as many as the baseline arm of the same fold, drawn from the shuffled
    real + synthetic set and continuing through it across epochs. ``real_epochs``: every arm
    sees each real image exactly once per epoch, and synthetic images fill a fixed share of
    every batch (the arm's natural share, capped at ``synthetic_share``), so arms differ only
    by the synthetic images added on top.
    """

    epochs = "epochs"
    steps = "steps"
    real_epochs = "real_epochs"


class FeatureCache(Enum):
    """Frozen-prefix feature cache (gensyn.classify.features): ``auto`` computes the frozen
    part once per image where it is deterministic (else says why and trains the full model);
    ``off`` runs the full model on every batch."""

    auto = "auto"
    off = "off"


class DecodeMode(Enum):
    """How training and prediction decode images: a thread pool or worker processes.

    ``auto`` uses processes from 4 workers (``num_workers``) on, threads below.
    """

    auto = "auto"
    threads = "threads"
    processes = "processes"


@dataclass
class ClassifierSettings:
    """The classifier, its input, its optimisation and its cross-validation folds."""

    name: ClassifierName = ClassifierName.densenet121  # the network
    image_size_px: int = bounded(512, ge=1)  # side of the square input, px (images resized to it)
    weights: str | None = "imagenet"  # imagenet | None (random init) | a local no-top .h5 file
    trainable_tail_layers: int = bounded(
        9, ge=-1
    )  # DenseNet121 layers trained, from the end; -1 all
    small_cnn_widths: tuple[int, ...] = bounded(
        (12, 24, 48, 96), ge=1
    )  # small_cnn channels per stage
    dropout: float = bounded(0.0, ge=0, lt=1)  # dropout rate before the Dense head
    augment: bool = False  # random shifts and contrast of training batches (host side)
    class_weighting: ClassWeighting = ClassWeighting.none  # positive-term weight per class
    epochs: int = bounded(30, ge=1)  # training epochs
    schedule: Schedule = Schedule.epochs  # optimiser steps per epoch: epochs | steps | real_epochs
    # real_epochs: synthetic share of each batch = min(the arm's natural share
    # n_synthetic / (n_real + n_synthetic), synthetic_share)
    synthetic_share: float = bounded(0.5, ge=0, lt=1)
    batch_size: int = bounded(128, ge=1)  # global batch, images (split over GPUs when several)
    learning_rate: float = bounded(1e-5, gt=0)  # Adam's learning rate
    lr_schedule: LrSchedule = LrSchedule.constant  # constant | cosine decay to 0
    precision: Precision = Precision.auto  # Keras dtype policy
    n_folds: int = bounded(5, ge=2)  # patient-level multilabel-stratified folds (split_idx: val)
    predict_batch_size: int = bounded(128, ge=1)  # images per prediction batch
    prefetch: int = unhashed(4, ge=1)  # batches decoded ahead of the accelerator
    decode: DecodeMode = unhashed(DecodeMode.auto)  # image decoding: threads | processes | auto
    # decode-once image cache (gensyn.classify.cache; results are the same):
    # auto = <paths.work_dir>/cache/classify (images/ + jax/) | off | a folder (node-local disk)
    cache: str = unhashed("auto")
    # frozen-prefix features computed once per image, the trainable tail trained and run on
    # them (the same computation); auto | off
    feature_cache: FeatureCache = unhashed(FeatureCache.auto)


def checked(kind: type[E], value: str | Enum, key: str) -> str:
    """``value`` (a member of Enum ``kind`` or its string) as the member's plain string.

    A value that is none of ``kind``'s is a ValueError naming ``key``, the value and the
    allowed ones, e.g. ``classifier.lr_schedule='step'; allowed: constant, cosine``.
    """
    plain = value.value if isinstance(value, Enum) else value
    allowed = [str(member.value) for member in kind]
    if plain not in allowed:
        raise ValueError(f"{key}={plain!r}; allowed: {', '.join(allowed)}")
    return str(plain)


def weights_file(weights: str) -> Path:
    """The local file a ``weights`` path names, ``~`` expanded (whether it exists is not
    checked here)."""
    return Path(weights).expanduser()
