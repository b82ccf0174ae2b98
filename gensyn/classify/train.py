"""Training loop: Adam, masked BCE, best model by validation macro AUC, resumable checkpoints.

Labels are 1, 0 or NaN (unknown: a CT label table without that finding). The loss is the
binary cross-entropy averaged over the *known* (image, finding) entries of a batch only
(:class:`MaskedBinaryCrossentropy`), so an unknown entry adds no gradient.

``schedule`` sets the optimiser steps per epoch: ``epochs`` (the study) = training images /
batch; ``steps`` = ceil(real training images / batch), the baseline arm's number, drawn from
the shuffled real + synthetic images and continuing through them across epochs;
``real_epochs`` = ceil(real images / (batch - s)): every real image once per epoch, and s
synthetic images in every batch (:func:`synthetic_per_batch`,
:class:`gensyn.classify.data.RealEpochsStream`). The images each run was fed are counted
(:class:`TrainResult`).

Files written to ``out_dir``:

* ``checkpoint.npz``: the model variables training changes (those of the layers left
  trainable; the frozen ones are rebuilt from the weights file and checked against a
  fingerprint), every optimizer variable, the changing variables of the best epoch so far,
  and the loop's state (epoch, best AUC, history), written atomically after each epoch
  (DenseNet121 with 9 trained layers: ≈ 2 MB instead of 57). A killed run started again with the
  same arguments continues from the epoch after the last checkpoint and, on CPU, ends with
  exactly the weights of an uninterrupted run (the batches of an epoch are a function of
  seed, epoch and steps per epoch).
* ``best.keras``: the model of the epoch with the highest validation macro AUC (for predict),
  written once training ends from the best weights the checkpoint carries (saving a
  ``.keras`` file at every improving epoch cost the demo's small CNN ~2 s a run).
* ``history.csv``: per epoch loss, validation per-class and macro AUC, images/s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gensyn.base import io
from gensyn.base.errors import GensynError
from gensyn.classify.data import BatchStream, RealEpochsStream
from gensyn.classify.features import FeatureCacheSettings, FeatureStream, use_feature_cache
from gensyn.classify.keras_env import keras
from gensyn.classify.models import ModelSpec, build_model
from gensyn.classify.predict import predict_paths
from gensyn.classify.scan_fit import ScannedFit, scan_fit_for
from gensyn.classify.settings import (
    ClassifierSettings,
    ClassWeighting,
    DecodeMode,
    LrSchedule,
    Precision,
    Schedule,
    checked,
)
from gensyn.report.metrics import per_class_auc

if TYPE_CHECKING:
    from gensyn.classify.cache import ImageCache

log = logging.getLogger(__name__)

_SETTINGS = ClassifierSettings()  # the defaults
CHECKPOINT = "checkpoint.npz"
BEST_MODEL = "best.keras"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings. Defaults, meanings and allowed values are
    :class:`~gensyn.classify.settings.ClassifierSettings`' (declared there: the study's
    recipe, Adam 1e-5, 30 epochs, batch 128); strings here are the Enums' values."""

    epochs: int = _SETTINGS.epochs
    schedule: str = _SETTINGS.schedule.value
    synthetic_share: float = _SETTINGS.synthetic_share
    batch_size: int = _SETTINGS.batch_size
    learning_rate: float = _SETTINGS.learning_rate
    lr_schedule: str = _SETTINGS.lr_schedule.value
    augment: bool = _SETTINGS.augment
    class_weighting: str = _SETTINGS.class_weighting.value
    precision: str = _SETTINGS.precision.value
    seed: int = 0  # the run's seed (initialisation, batch order)
    num_workers: int = 4  # image-decoding workers (the run's num_workers)
    prefetch_batches: int = _SETTINGS.prefetch
    decode: str = _SETTINGS.decode.value
    verbose: int = 0  # Keras' progress output

    @classmethod
    def of(cls, settings: ClassifierSettings, seed: int, num_workers: int) -> TrainSettings:
        """The optimisation ``settings`` describe, with the run's ``seed`` and ``num_workers``."""
        return cls(
            epochs=settings.epochs,
            schedule=checked(Schedule, settings.schedule, "classifier.schedule"),
            synthetic_share=settings.synthetic_share,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            lr_schedule=checked(LrSchedule, settings.lr_schedule, "classifier.lr_schedule"),
            augment=settings.augment,
            class_weighting=checked(
                ClassWeighting, settings.class_weighting, "classifier.class_weighting"
            ),
            precision=checked(Precision, settings.precision, "classifier.precision"),
            seed=seed,
            num_workers=num_workers,
            prefetch_batches=settings.prefetch,
            decode=checked(DecodeMode, settings.decode, "classifier.decode"),
        )


@dataclass
class TrainResult:
    """What training produced: best epoch (0-based), its validation AUCs, the history, the
    optimiser steps per epoch and in all (as counted by the optimiser), and the real and
    synthetic images the optimiser was fed (counted batch by batch, resumed runs included;
    ``real_times_seen_min/max``: the fewest and most times one real image was fed)."""

    best_epoch: int
    best_val_macro_auc: float
    best_val_auc: dict[str, float]
    resumed_from_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_per_epoch: int = 0
    optimizer_steps: int = 0
    real_images_seen: int = 0
    synthetic_images_seen: int = 0
    real_times_seen_min: int = 0
    real_times_seen_max: int = 0
    synthetic_per_batch: int = 0
    feature_cache: dict[str, object] = field(default_factory=lambda: {"feature_cache": "off"})
    #: seconds spent, by step: ``setup`` (model, weights, features), ``fit`` (the optimiser's
    #: steps), ``validate`` (the validation fold's predictions), ``checkpoint`` (the per-epoch
    #: checkpoint), ``save`` (the best model's file); this call only (not a resumed run's past)
    seconds: dict[str, float] = field(default_factory=dict)


@keras.saving.register_keras_serializable(package="gensyn")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """BCE averaged over the known entries of a batch; NaN labels are unknown and left out.

    Per entry -(w_k y log p + (1 - y) log(1 - p)), ``w_k`` the positive weight of class k
    (``pos_weight``; None: all 1, plain BCE). The batch loss is the sum over known entries
    divided by their number (0 if none is known). Each sample's value is its share of that
    sum, and the reduction is ``sum``, so Keras' total is exactly the known-entry mean.
    """

    def __init__(
        self,
        pos_weight: Sequence[float] | None = None,
        name: str = "masked_bce",
        **kwargs: Any,
    ):
        kwargs["reduction"] = "sum"
        super().__init__(name=name, **kwargs)
        self.pos_weight = None if pos_weight is None else [float(w) for w in pos_weight]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        eps = keras.config.epsilon()
        p = ops.clip(ops.cast(y_pred, "float32"), eps, 1.0 - eps)
        y = ops.cast(y_true, "float32")
        known = ops.logical_not(ops.isnan(y))
        y = ops.where(known, y, 0.0)
        w = 1.0 if self.pos_weight is None else ops.convert_to_tensor(self.pos_weight, "float32")
        bce = -(w * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
        mask = ops.cast(known, "float32")
        n_known = ops.maximum(ops.sum(mask), 1.0)
        return ops.sum(ops.where(known, bce, 0.0), axis=-1) / n_known

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "pos_weight": self.pos_weight}
        config.pop("reduction", None)  # always "sum": part of the definition
        return config


def positive_class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-class positive weight n_neg / n_pos of a (n, C) 1/0/NaN label array, over known
    entries (NaN = unknown); 1 where a class has no known positive."""
    labels = np.asarray(labels, dtype=np.float64)
    n_pos = np.nansum(labels, axis=0)
    n_neg = np.sum(~np.isnan(labels), axis=0) - n_pos
    return np.where(n_pos > 0, n_neg / np.maximum(n_pos, 1), 1.0)


def synthetic_per_batch(n_real: int, n_synthetic: int, batch_size: int, max_share: float) -> int:
    """Synthetic images per batch under ``real_epochs``: round(batch × share), share = the
    arm's natural share n_synthetic / (n_real + n_synthetic) capped at ``max_share``; at least
    1 when the arm has synthetic images, at most batch - 1 (a batch keeps a real image)."""
    if not 0.0 <= max_share < 1.0:
        raise ValueError(f"classifier.synthetic_share must be in [0, 1), got {max_share}")
    if n_synthetic <= 0 or max_share == 0.0:
        return 0
    share = min(n_synthetic / (n_real + n_synthetic), max_share)
    return int(min(max(round(batch_size * share), 1), batch_size - 1))


def steps_per_epoch(
    schedule: str, n_train: int, n_real_train: int, batch_size: int, n_synthetic_batch: int = 0
) -> int:
    """Optimiser steps per epoch: ``epochs``: n_train // batch (full batches of one pass);
    ``steps``: ceil(n_real_train / batch), the baseline arm's number whatever is added;
    ``real_epochs``: ceil(n_real_train / (batch - n_synthetic_batch)), one pass over the
    real images with ``n_synthetic_batch`` synthetic images in each batch."""
    checked(Schedule, schedule, "classifier.schedule")
    if schedule == "epochs":
        return n_train // batch_size
    if schedule == "real_epochs":
        return -(-n_real_train // (batch_size - n_synthetic_batch))
    return -(-n_real_train // batch_size)


def known_auc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-class AUC over the rows whose label of that class is known (not NaN)."""
    labels = np.asarray(labels, dtype=np.float64)
    aucs = []
    for k in range(labels.shape[1]):
        known = ~np.isnan(labels[:, k])
        aucs.append(per_class_auc(labels[known, k : k + 1], probs[known, k : k + 1])[0])
    return np.array(aucs)


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for ``precision`` (``auto`` picks mixed_bfloat16 on GPUs)."""
    checked(Precision, precision, "classifier.precision")
    if precision != "auto":
        return precision
    import jax

    return "mixed_bfloat16" if jax.default_backend() in ("gpu", "cuda", "rocm") else "float32"


def configure_devices(batch_size: int) -> int:
    """Data parallel over all accelerators when there are several; returns their number.

    CPU devices count only when ``GENSYN_DATA_PARALLEL_CPU=1`` (tests force several CPU
    devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``).
    """
    import jax

    devices = jax.devices()
    on_cpu = jax.default_backend() == "cpu"
    if len(devices) > 1 and (not on_cpu or os.environ.get("GENSYN_DATA_PARALLEL_CPU") == "1"):
        if batch_size % len(devices):
            raise ValueError(
                f"classifier.batch_size={batch_size} must be divisible by the {len(devices)} "
                "devices it is split over"
            )
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        log.info("data parallel over %d devices", len(devices))
        return len(devices)
    return 1


def changing_variables(model: keras.Model) -> list[int]:
    """Indices into ``model.variables`` of the variables training can change.

    Those of every layer left trainable: its weights and, for batch normalisation, its moving
    statistics. A frozen layer's variables (DenseNet121's frozen part: weights and statistics,
    the statistics used in inference mode) keep the values the model was built with.
    """
    changing: set[int] = set()

    def visit(layer: Any) -> None:
        children = [c for c in getattr(layer, "layers", []) or [] if c is not layer]
        if children:
            for child in children:
                visit(child)
            own = {id(v) for c in children for v in c.variables}
            if layer.trainable:  # variables the container holds itself
                changing.update(id(v) for v in layer.variables if id(v) not in own)
        elif layer.trainable:
            changing.update(id(v) for v in layer.variables)

    visit(model)
    return [i for i, v in enumerate(model.variables) if id(v) in changing]


def frozen_fingerprint(model: keras.Model, changing: Sequence[int]) -> int:
    """A CRC-32 over the values of the variables training does not change (see
    :func:`changing_variables`): a checkpoint holds only the others, so a resume checks that
    the model it is loaded into was built with the same frozen values."""
    import zlib

    keep = set(changing)
    crc = 0
    for i, var in enumerate(model.variables):
        if i not in keep:
            crc = zlib.crc32(np.ascontiguousarray(np.asarray(var)).tobytes(), crc)
    return crc


def _save_checkpoint(
    path: Path,
    model: keras.Model,
    state: dict[str, Any],
    best: list[np.ndarray] | None,
    times_seen: np.ndarray | None = None,
    changing: Sequence[int] = (),
    frozen_crc: int = 0,
) -> None:
    """The variables training changes (``changing`` of ``model.variables``, with the
    fingerprint of the others), the optimizer's, the best epoch's and the loop's state."""
    variables = model.variables
    arrays = {f"model_{i}": np.asarray(variables[i]) for i in changing}
    arrays["changing"] = np.asarray(changing, dtype=np.int64)
    arrays["n_variables"] = np.asarray(len(variables))
    arrays["frozen_crc"] = np.asarray(frozen_crc, dtype=np.int64)
    if times_seen is not None:
        arrays["times_seen"] = times_seen
    arrays.update({f"opt_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    arrays.update({f"best_{i}": v for i, v in enumerate(best or [])})
    arrays["state_json"] = np.array(json.dumps(state))
    with io.atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _load_checkpoint(
    path: Path, model: keras.Model, changing: Sequence[int], frozen_crc: int
) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """The loop's state and the best epoch's values of the ``changing`` variables (None in a
    checkpoint written before they were kept there); the model and optimizer variables are
    assigned. A checkpoint of an earlier version holds every model variable: read too."""
    variables = model.variables
    with np.load(path) as data:
        if "changing" in data.files:
            stored = [int(i) for i in data["changing"]]
            if int(data["n_variables"]) != len(variables) or stored != list(changing):
                raise ValueError(
                    f"{path} was written for a model of {int(data['n_variables'])} variables, "
                    f"{len(stored)} of them trained, but this one has {len(variables)}, "
                    f"{len(changing)} trained: it was written for another classifier config; "
                    "delete it to start over"
                )
            if int(data["frozen_crc"]) != frozen_crc:
                raise ValueError(
                    f"{path} was written for a model whose frozen layers held other values "
                    "(another weights file?); delete it to start over"
                )
        else:  # every variable
            stored = list(range(sum(k.startswith("model_") for k in data.files)))
            if len(stored) != len(variables):
                raise ValueError(
                    f"{path} holds {len(stored)} model variables but the model has "
                    f"{len(variables)}: it was written for another classifier config; delete "
                    "it to start over"
                )
        for i in stored:
            variables[i].assign(data[f"model_{i}"])
        model.optimizer.build(model.trainable_variables)
        for i, var in enumerate(model.optimizer.variables):
            var.assign(data[f"opt_{i}"])
        n_best = sum(k.startswith("best_") for k in data.files)
        best = [data[f"best_{i}"] for i in range(n_best)] if n_best else None
        if best is not None and len(best) == len(variables) != len(changing):
            best = [best[i] for i in changing]  # an earlier version kept every variable
        return dict(json.loads(str(data["state_json"]))), best


#: The model this process built last: (what it was built from, the model, every variable's
#: value as built, the global seed generator's state after the build).
_BUILT: list[tuple[tuple[object, ...], keras.Model, list[np.ndarray], np.ndarray | None]] = []


def _global_seed_state() -> np.ndarray | None:
    from keras.src.backend.common import global_state

    gen = global_state.get_global_attribute("global_seed_generator")
    return None if gen is None else np.array(gen.state)


def _build_key(spec: ModelSpec, seed: int) -> tuple[object, ...]:
    """What a built model depends on: the spec, the run's seed, the dtype policy, and the
    weights file's size and modification time (a file replaced between runs is read again)."""
    stamp: tuple[int, int] | None = None
    if spec.weights is not None:
        try:
            from gensyn.classify.models import resolve_weights

            stat = Path(str(resolve_weights(spec.weights))).stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
        except (OSError, ValueError, GensynError):
            stamp = None  # build_model then reports the problem
    return (spec, seed, keras.config.dtype_policy().name, stamp)


def fresh_model(spec: ModelSpec, seed: int) -> keras.Model:
    """``build_model(spec)`` as a fresh process builds it after ``set_random_seed(seed)``.

    Where this process built the model of the same spec, seed, dtype policy and weights file
    last (the runs of a local sweep: arms and folds), that model is handed out again with
    every variable set back to its value as built and the global seed generator as the build
    left it: the same model, without building DenseNet121 and reading its weights file again
    (1.5-2 s a run). Under a distribution (data parallel) the model is always built anew.
    Call it right after ``keras.utils.set_random_seed(seed)`` and the dtype policy.
    """
    if keras.distribution.distribution() is not None:
        _BUILT.clear()
        return build_model(spec)
    key = _build_key(spec, seed)
    if _BUILT and _BUILT[0][0] == key:
        _, model, values, seed_state = _BUILT[0]
        for var, value in zip(model.variables, values, strict=True):
            var.assign(value)
        if seed_state is not None:
            from keras.src.random.seed_generator import global_seed_generator

            global_seed_generator().state.assign(seed_state)
        return model
    _BUILT.clear()  # one model kept: the old one's memory goes
    model = build_model(spec)
    _BUILT.append((key, model, [np.array(v) for v in model.variables], _global_seed_state()))
    return model


def train_classifier(
    spec: ModelSpec,
    train_paths: Sequence[str],
    train_labels: np.ndarray,
    val_paths: Sequence[str],
    val_labels: np.ndarray,
    out_dir: str | Path,
    settings: TrainSettings,
    class_names: Sequence[str],
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    n_real_train: int | None = None,
    cache: Sequence[ImageCache] = (),
    feature_cache: FeatureCacheSettings | None = None,
) -> TrainResult:
    """Train ``spec`` on the given images; resume from ``out_dir/checkpoint.npz`` if present.

    ``*_labels`` are (n, C) arrays of 1, 0 or NaN (unknown) in the order of ``class_names``.
    ``n_real_train``: how many of the training images are real, the first ones (default
    all). ``on_epoch(epoch, metrics)`` is called after each epoch (the stage logs to W&B there).
    ``cache``: decode-once image caches (:func:`gensyn.classify.cache.open_or_build`) holding
    training or validation files; results are the same as decoding the files each epoch.
    ``feature_cache``: compute the frozen prefix once per image and train the tail on stored
    features where the prefix is deterministic (:mod:`gensyn.classify.features`; the same
    computation); None runs the full model on every batch. The real images must come first.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    seconds = dict.fromkeys(("setup", "fit", "validate", "checkpoint", "save"), 0.0)
    checked(ClassWeighting, settings.class_weighting, "classifier.class_weighting")
    if len(train_paths) < settings.batch_size:
        raise ValueError(
            f"{len(train_paths)} training images are fewer than one batch ({settings.batch_size})"
        )
    # Keras' global state as in a fresh process: layer names restart (a sweep's models all
    # save the same architecture, which predict then reuses: load_classifier), no settings
    # left by an earlier run of the process
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(settings.seed)
    keras.config.set_dtype_policy(resolve_precision(settings.precision))
    n_devices = configure_devices(settings.batch_size)
    model = fresh_model(spec, settings.seed)
    pos_weight = None
    if settings.class_weighting == "balanced":
        pos_weight = positive_class_weights(train_labels).tolist()
    n_real = len(train_paths) if n_real_train is None else n_real_train
    n_syn_batch = synthetic_per_batch(  # checks synthetic_share whatever the schedule
        n_real, len(train_paths) - n_real, settings.batch_size, settings.synthetic_share
    )
    if settings.schedule != "real_epochs":
        n_syn_batch = 0
    n_steps = steps_per_epoch(
        settings.schedule, len(train_paths), n_real, settings.batch_size, n_syn_batch
    )
    checked(LrSchedule, settings.lr_schedule, "classifier.lr_schedule")
    lr: Any = settings.learning_rate
    if settings.lr_schedule == "cosine":  # a function of the optimizer's step: resume-safe
        lr = keras.optimizers.schedules.CosineDecay(lr, settings.epochs * n_steps)
    loss = MaskedBinaryCrossentropy(pos_weight)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    fit_model, tail = model, None
    features_used: dict[str, object] = {"feature_cache": "off"}
    if feature_cache is not None:
        n_real = len(train_paths) if n_real_train is None else n_real_train
        sets = [[*train_paths[:n_real], *val_paths], train_paths[n_real:]]
        got = use_feature_cache(
            model, settings.augment, sets, spec.image_size_px, feature_cache, cache
        )
        if isinstance(got, str):
            features_used = {"feature_cache": f"not used: {got}"}
        else:  # the tail shares the model's variables and optimizer: training it trains both
            tail = got
            tail.tail.compile(optimizer=model.optimizer, loss=loss)
            fit_model, features_used = tail.tail, tail.features.describe()

    state: dict[str, Any] = {
        "next_epoch": 0,
        "best_epoch": -1,
        "best_auc": -math.inf,
        "best_val_auc": {},
        "history": [],
    }
    resumed_from = None
    # the changing variables' values at the best epoch so far
    best_weights: list[np.ndarray] | None = None
    changing = changing_variables(model)
    frozen_crc = frozen_fingerprint(model, changing)
    ckpt = out_dir / CHECKPOINT
    if ckpt.is_file():
        state, best_weights = _load_checkpoint(ckpt, model, changing, frozen_crc)
        resumed_from = int(state["next_epoch"])
        log.info("resuming training at epoch %d from %s", resumed_from, ckpt)

    stream_options: dict[str, Any] = dict(
        seed=settings.seed,
        num_workers=settings.num_workers,
        prefetch_batches=settings.prefetch_batches,
        augment=settings.augment,
        decode=settings.decode,
        cache=cache,
    )
    train_stream: BatchStream
    if settings.schedule == "real_epochs":
        train_stream = RealEpochsStream(
            train_paths,
            train_labels,
            settings.batch_size,
            spec.image_size_px,
            n_real,
            n_syn_batch,
            shuffle=True,
            **stream_options,
        )
    else:
        train_stream = BatchStream(
            train_paths,
            train_labels,
            settings.batch_size,
            spec.image_size_px,
            shuffle=True,
            drop_remainder=True,
            **stream_options,
        )
    if ckpt.is_file():
        train_stream.times_seen[:] = _times_seen(ckpt, len(train_paths))
    batches = train_stream if tail is None else tail.stream(train_stream)
    scanned: ScannedFit | None = None
    if tail is not None:  # many steps per compiled call, unless the features are elsewhere
        why_not = scan_fit_for(tail.features, n_devices)
        if why_not is None:
            assert isinstance(batches, FeatureStream)
            first = batches.index_plan(0, 1, count=False)[0]  # shapes, to build the loss
            tail.tail._symbolic_build(
                data_batch=(tail.features.gather(first[0], first[1]), first[2])
            )
            scanned = ScannedFit(tail.tail, tail.features)
        features_used["feature_cache_loop"] = "scan" if why_not is None else f"fit: {why_not}"
    seconds["setup"] = time.perf_counter() - clock
    for epoch in range(int(state["next_epoch"]), settings.epochs):
        start = time.perf_counter()
        # epoch e takes global batches e * n .. (e + 1) * n - 1 of the endless shuffled passes:
        # with n = len(train_stream) (schedule epochs) that is exactly pass e
        if scanned is not None:
            assert isinstance(batches, FeatureStream)
            loss_value = scanned.epoch(batches, epoch * n_steps, n_steps)
        else:
            hist = fit_model.fit(
                batches.window(epoch * n_steps, n_steps),
                steps_per_epoch=n_steps,
                epochs=epoch + 1,
                initial_epoch=epoch,
                shuffle=False,
                verbose=settings.verbose,
            )
            loss_value = float(hist.history["loss"][-1])
        train_s = time.perf_counter() - start
        seconds["fit"] += train_s
        if tail is None:
            probs = predict_paths(
                model,
                val_paths,
                spec.image_size_px,
                settings.batch_size,
                settings.num_workers,
                settings.prefetch_batches,
                settings.decode,
                cache,
            )
        else:
            probs = tail.predict(val_paths, settings.batch_size)
        aucs = known_auc(val_labels, probs)
        seconds["validate"] += time.perf_counter() - start - train_s
        macro = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss_value,
            "val_macro_auc": macro,
            **{f"val_auc_{n}": float(a) for n, a in zip(class_names, aucs, strict=True)},
            "train_images_per_s": n_steps * settings.batch_size / train_s,
        }
        state["history"].append(row)
        if macro > state["best_auc"] or state["best_epoch"] < 0:
            state.update(
                best_epoch=epoch,
                best_auc=macro,
                best_val_auc={n: float(a) for n, a in zip(class_names, aucs, strict=True)},
            )
            best_weights = [np.array(model.variables[i]) for i in changing]
        state["next_epoch"] = epoch + 1
        start = time.perf_counter()
        _save_checkpoint(
            ckpt, model, state, best_weights, train_stream.times_seen, changing, frozen_crc
        )
        seconds["checkpoint"] += time.perf_counter() - start
        log.info("epoch %d: loss %.4f, val macro AUC %.4f", epoch, row["loss"], macro)
        if on_epoch is not None:
            on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})

    import pandas as pd

    start = time.perf_counter()
    if best_weights is not None:  # else: a checkpoint of an earlier version wrote best.keras
        variables = [model.variables[i] for i in changing]
        last = [np.array(v) for v in variables]
        for var, value in zip(variables, best_weights, strict=True):
            var.assign(value)
        with io.atomic_write(out_dir / BEST_MODEL) as tmp:  # tmp ends in .keras too
            model.save(tmp)
        for var, value in zip(variables, last, strict=True):
            var.assign(value)
    io.write_table(out_dir / "history.csv", pd.DataFrame(state["history"]))
    seconds["save"] = time.perf_counter() - start
    seen = train_stream.times_seen
    return TrainResult(
        int(state["best_epoch"]),
        float(state["best_auc"]),
        dict(state["best_val_auc"]),
        resumed_from,
        list(state["history"]),
        n_steps,
        int(model.optimizer.iterations),
        real_images_seen=int(seen[:n_real].sum()),
        synthetic_images_seen=int(seen[n_real:].sum()),
        real_times_seen_min=int(seen[:n_real].min()) if n_real else 0,
        real_times_seen_max=int(seen[:n_real].max()) if n_real else 0,
        synthetic_per_batch=n_syn_batch,
        feature_cache=features_used,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def _times_seen(path: Path, n_images: int) -> np.ndarray:
    """The per-image feed counts a checkpoint carries (zeros if it has none: an older one)."""
    with np.load(path) as data:
        if "times_seen" in data.files and data["times_seen"].shape == (n_images,):
            return np.asarray(data["times_seen"])
    log.warning("%s carries no image counts: images seen before the resume are not counted", path)
    return np.zeros(n_images, dtype=np.int64)
