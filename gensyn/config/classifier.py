"""Schema of the ``classifier`` group: the chest X-ray classifier and how it is trained.

Defaults are the original study's recipe (docs/study.md): DenseNet121 at 512² from ImageNet
weights, all but the last 9 layers frozen, Adam 1e-5, 30 epochs, batch 128, 5 patient-level
folds. ``weights`` is ``imagenet`` (Keras' published no-top file, downloaded once into
``$KERAS_HOME/models/``), ``null`` (random init) or a local path to a DenseNet121 no-top
weights file. Names that must come from a fixed list are Enums, so a misspelling fails when
the config is composed.
"""

from dataclasses import dataclass
from enum import Enum

from gensyn.base.bounds import bounded


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
class ClassifierConfig:
    """The classifier, its input, its optimisation and its cross-validation folds."""

    name: ClassifierName = ClassifierName.densenet121
    image_size_px: int = bounded(
        512, ge=1
    )  # images are resized to image_size_px² by the one preprocessing
    weights: str | None = "imagenet"  # imagenet | null (random init) | a local no-top .h5 file
    trainable_tail_layers: int = bounded(
        9, ge=-1
    )  # DenseNet121 layers left trainable, from the end; -1: all
    small_cnn_widths: tuple[int, ...] = bounded(
        (12, 24, 48, 96), ge=1
    )  # small_cnn channels per stage
    dropout: float = bounded(0.0, ge=0, lt=1)  # before the Dense head
    augment: bool = False  # random shifts and contrast of training batches (host side)
    class_weighting: ClassWeighting = ClassWeighting.none
    epochs: int = bounded(30, ge=1)
    schedule: Schedule = Schedule.epochs  # epochs (the study) | steps | real_epochs
    # real_epochs: synthetic share of each batch = min(the arm's natural share
    # n_synthetic / (n_real + n_synthetic), synthetic_share); 0 <= synthetic_share < 1
    synthetic_share: float = bounded(0.5, ge=0, lt=1)
    batch_size: int = bounded(128, ge=1)  # global batch (split over GPUs when there are several)
    learning_rate: float = bounded(1e-5, gt=0)  # Adam
    lr_schedule: LrSchedule = LrSchedule.constant
    precision: Precision = Precision.auto
    n_folds: int = bounded(
        5, ge=2
    )  # patient-level multilabel-stratified folds; split_idx picks the val fold
    predict_batch_size: int = bounded(128, ge=1)
    prefetch: int = bounded(4, ge=1)  # batches decoded ahead of the accelerator (not hashed)
    decode: DecodeMode = DecodeMode.auto  # threads | processes | auto (not hashed)
    # decode-once image cache (gensyn.classify.cache; not hashed, results are the same):
    # auto = <paths.work_dir>/cache/classify (images/ + jax/) | off | a folder (node-local disk)
    cache: str = "auto"
    # frozen-prefix features computed once per image, the trainable tail trained and run on
    # them (not hashed: the same computation); auto | off
    feature_cache: FeatureCache = FeatureCache.auto
