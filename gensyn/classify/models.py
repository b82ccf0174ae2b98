"""Chest X-ray classifiers (Keras 3): the study's DenseNet121 and a small CPU demo CNN.

Both models take ``uint8`` grey images of shape (S, S, 1), exactly what
:func:`gensyn.classify.data.load_image` returns, and output (5,) sigmoid probabilities
in the order of ``gensyn.config.FINDINGS``. The fixed intensity mapping from 0..255 to the
network's input range is the first layer of the model, so a saved model carries it and
training and prediction cannot normalise differently (the original study did).
Augmentation, when enabled, happens on the host in the training batches only
(:mod:`gensyn.classify.data`), never in prediction.

``weights="imagenet"`` uses Keras' published DenseNet121 no-top file from Keras' cache
(``$KERAS_HOME/models/``), downloading it there first if it is missing; offline, the error
says which file to put where (:func:`imagenet_weights_file`).

Import this module only after ``KERAS_BACKEND`` is set (``gensyn.classify.keras_env``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gensyn.base.errors import GensynError
from gensyn.classify.keras_env import keras
from gensyn.classify.settings import ClassifierName, ClassifierSettings, checked, weights_file
from gensyn.study import FINDINGS

log = logging.getLogger(__name__)
_SETTINGS = ClassifierSettings()  # the defaults

# Keras' DenseNet121 ImageNet no-top weights: file name, URL and md5 exactly as in
# keras/src/applications/densenet.py (a test checks they still agree).
IMAGENET_WEIGHTS_FILE = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/densenet/" + IMAGENET_WEIGHTS_FILE
)
IMAGENET_WEIGHTS_MD5 = "30ee3e1110167f948a6b9946edeeb738"
# ImageNet statistics used by keras.applications.densenet.preprocess_input ("torch" mode);
# the study's DenseNet121 started from ImageNet weights, which expect this input range.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What to build.

    ``image_size_px``: side S of the square input. ``weights``: None (random init),
    ``"imagenet"`` (Keras' published file, see :func:`imagenet_weights_file`) or a local path
    to a DenseNet121 *no-top* weights file (``.h5``/``.weights.h5``).
    ``trainable_tail_layers``: DenseNet121 layers left trainable, counted from the end of the
    convolutional base (the study: 9); -1 trains all. ``widths``: small_cnn channels per stage.
    Defaults are :class:`~gensyn.classify.settings.ClassifierSettings`' (declared there), but
    ``weights``: None, so that building a model never downloads unless asked to.
    """

    name: str = _SETTINGS.name.value
    image_size_px: int = _SETTINGS.image_size_px
    n_classes: int = len(FINDINGS)
    weights: str | None = None
    trainable_tail_layers: int = _SETTINGS.trainable_tail_layers
    dropout: float = _SETTINGS.dropout
    widths: Sequence[int] = _SETTINGS.small_cnn_widths
    seed: int = 0

    @classmethod
    def of(cls, settings: ClassifierSettings, n_classes: int, seed: int) -> ModelSpec:
        """The model ``settings`` describe, with ``n_classes`` outputs and ``seed``."""
        return cls(
            name=checked(ClassifierName, settings.name, "classifier.name"),
            image_size_px=settings.image_size_px,
            n_classes=n_classes,
            weights=settings.weights,
            trainable_tail_layers=settings.trainable_tail_layers,
            dropout=settings.dropout,
            widths=tuple(settings.small_cnn_widths),
            seed=seed,
        )


def _input(spec: ModelSpec) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input((spec.image_size_px, spec.image_size_px, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    return inputs, x


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` (KERAS_HOME default ~/.keras).

    Keras reads ``KERAS_HOME`` once, when it is imported; this is its own answer.
    """
    from keras.src.backend.config import keras_home  # Keras' accessor; no public alias

    return Path(keras_home()).expanduser() / "models"


def imagenet_weights_file() -> Path:
    """Keras' DenseNet121 ImageNet no-top weights in Keras' cache, downloaded if missing.

    Download and cache are Keras' own (``keras.utils.get_file``, the URL and md5 of
    ``keras.applications.DenseNet121``), so a file Keras already cached is used as is. A file
    put there by hand whose md5 differs is used with a warning (Keras would silently try to
    download it again). Raises GensynError naming the file, the URL, the folder and
    ``classifier.weights=/path/to/file.h5`` when the download fails (e.g. offline).
    """
    path = keras_cache_dir() / IMAGENET_WEIGHTS_FILE
    if path.is_file():
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        if md5 != IMAGENET_WEIGHTS_MD5:
            log.warning(
                "%s has md5 %s, not Keras' %s: using it anyway", path, md5, IMAGENET_WEIGHTS_MD5
            )
        return path
    log.info("downloading ImageNet weights %s into %s", IMAGENET_WEIGHTS_URL, path.parent)
    try:
        got = keras.utils.get_file(
            IMAGENET_WEIGHTS_FILE,
            IMAGENET_WEIGHTS_URL,
            cache_subdir="models",
            file_hash=IMAGENET_WEIGHTS_MD5,
        )
    except Exception as exc:  # Keras wraps network errors in a bare Exception
        raise GensynError(
            f"classifier.weights=imagenet needs {IMAGENET_WEIGHTS_FILE} and downloading it "
            f"from {IMAGENET_WEIGHTS_URL} failed ({exc}). Download it elsewhere and put it in "
            f"{path.parent}/ (Keras' cache, $KERAS_HOME/models), or set "
            "classifier.weights=/path/to/file.h5 (or classifier.weights=null: random init)"
        ) from exc
    return Path(got)


def resolve_weights(weights: str | None) -> str | None:
    """The weights argument for ``keras.applications.DenseNet121``: None, or a local file.

    ``"imagenet"`` becomes Keras' cached file (:func:`imagenet_weights_file`); a path
    (``~`` expanded, as the start-up check does) must exist.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        return str(imagenet_weights_file())
    path = weights_file(weights)
    if not path.is_file():
        raise ValueError(
            f"classifier.weights={weights!r} is not a file; use imagenet, null or a local "
            "DenseNet121 no-top weights file (.h5)"
        )
    return str(path)


def densenet121(spec: ModelSpec) -> keras.Model:
    """DenseNet121 base, all but the last ``trainable_tail_layers`` frozen, GAP, Dense(5, sigmoid)."""
    inputs, x = _input(spec)
    x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    x = keras.layers.Rescaling(
        [1.0 / s for s in IMAGENET_STD],
        [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)],
        name="imagenet_normalise",
    )(x)
    base = keras.applications.DenseNet121(
        include_top=False,
        weights=resolve_weights(spec.weights),
        input_shape=(spec.image_size_px, spec.image_size_px, 3),
    )
    set_trainable_tail(base, spec.trainable_tail_layers)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if spec.dropout > 0:
        x = keras.layers.Dropout(spec.dropout, seed=spec.seed)(x)
    # float32 output even under a mixed-precision policy, so the loss is computed in float32
    outputs = keras.layers.Dense(
        spec.n_classes, activation="sigmoid", dtype="float32", name="findings"
    )(x)
    return keras.Model(inputs, outputs, name="densenet121_classifier")


def set_trainable_tail(base: keras.Model, n_tail: int) -> None:
    """Freeze all layers of ``base`` except the last ``n_tail`` (all trainable if n_tail < 0).

    Frozen BatchNormalization layers run in inference mode (Keras 3), as in the study.
    """
    layers = base.layers
    if n_tail < 0 or n_tail >= len(layers):
        for layer in layers:
            layer.trainable = True
        return
    for i, layer in enumerate(layers):
        layer.trainable = i >= len(layers) - n_tail


def small_cnn(spec: ModelSpec) -> keras.Model:
    """A small CNN for CPU demos: per stage conv-BN-ReLU twice, then 2x2 max-pool; GAP; Dense."""
    inputs, x = _input(spec)
    x = keras.layers.Rescaling(2.0, -1.0, name="to_symmetric_range")(x)
    for i, width in enumerate(spec.widths):
        for j in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}_{j}")(
                x
            )
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}_{j}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    # max and mean pooling: a small bright finding is visible in the max, a big one in the mean
    x = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(x), keras.layers.GlobalMaxPooling2D()(x)]
    )
    if spec.dropout > 0:
        x = keras.layers.Dropout(spec.dropout, seed=spec.seed)(x)
    outputs = keras.layers.Dense(
        spec.n_classes, activation="sigmoid", dtype="float32", name="findings"
    )(x)
    return keras.Model(inputs, outputs, name="small_cnn_classifier")


def build_model(spec: ModelSpec) -> keras.Model:
    """Build the model named by ``spec.name`` (a :class:`ClassifierName`)."""
    if checked(ClassifierName, spec.name, "classifier.name") == ClassifierName.densenet121.value:
        return densenet121(spec)
    if spec.weights is not None:
        raise ValueError("classifier.weights applies to densenet121 only; set it to null")
    return small_cnn(spec)
