"""Split a classifier at the end of its frozen part: a prefix model and a trainable tail model.

The study trains only DenseNet121's last layers; the layers before them are frozen
(BatchNormalization of frozen layers runs in inference mode) and, without augmentation, their
output for an image is the same in every epoch, arm, fold and prediction.
:func:`split_frozen_prefix` finds the *cut*: the output of the latest frozen layer after which
every layer reads only that tensor or tensors computed after it, so the tail's input is a
single tensor. In DenseNet121 with the study's 9 trainable layers that is
``conv5_block15_concat`` (16 × 16 × 992 at 512²): the last dense block's 1×1 and 3×3
convolutions, its concatenation with those features, the final BN and ReLU, pooling and the
head form the tail. Frozen layers between the cut and the first trainable layer (other
``trainable_tail_layers`` counts) simply run in the tail.

Prefix and tail share the full model's layers and variables: training the tail trains the full
model, which is what is saved. Where the prefix is not deterministic in training (augmentation,
a random layer such as Dropout before the cut, no frozen layer with weights), the reason is
returned instead, in one line, and the caller trains the full model as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from gensyn.classify.keras_env import keras

#: Layer types that draw random numbers in training (Keras' random preprocessing layers and
#: any other layer holding a SeedGenerator are caught by :func:`_is_random`).
RANDOM_LAYERS = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
)


@dataclass(frozen=True)
class PrefixSplit:
    """The frozen prefix (image -> features at the cut) and the tail (features -> output).

    ``cut_layer``: the layer whose output is the cut (in the nested base model when there is
    one). ``feature_shape``: one image's features (H, W, C); ``feature_dtype``: their dtype,
    the prefix's compute dtype (bfloat16 under mixed_bfloat16, float32 on CPU).
    """

    prefix: keras.Model
    tail: keras.Model
    cut_layer: str
    feature_shape: tuple[int, ...]
    feature_dtype: str

    @property
    def bytes_per_image(self) -> int:
        """Bytes of one image's features."""
        return int(np.prod(self.feature_shape)) * np.dtype(numpy_dtype(self.feature_dtype)).itemsize


def numpy_dtype(dtype: str) -> Any:
    """The NumPy dtype of a Keras dtype name (bfloat16 through ml_dtypes, as JAX does)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _producers(layer: Any) -> list[Any]:
    """The layers whose outputs ``layer`` reads in its model's graph (its first call)."""
    nodes = layer._inbound_nodes  # Keras 3 keeps a layer's calls here; no public accessor
    if not nodes:
        return []
    return [t._keras_history[0] for t in nodes[0].input_tensors]


def _output_in_graph(model: keras.Model, layer: Any) -> Any:
    """The output tensor of ``layer`` as ``model``'s graph holds it (read off a consumer)."""
    for other in model.layers:
        nodes = other._inbound_nodes
        if nodes:
            for tensor in nodes[0].input_tensors:
                if tensor._keras_history[0] is layer:
                    return tensor
    for tensor in model.outputs:
        if tensor._keras_history[0] is layer:
            return tensor
    raise ValueError(f"layer {layer.name} feeds nothing in {model.name}")


def _one(tensors: list[Any]) -> Any:
    """A single output as itself (not a list of one), so the next piece takes it as is."""
    return tensors[0] if len(tensors) == 1 else tensors


def _trains(layer: Any) -> bool:
    return bool(layer.trainable and layer.trainable_weights)


def _is_random(layer: Any) -> bool:
    if type(layer).__name__ in RANDOM_LAYERS:
        return True
    return any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())


def _single_cut(layers: list[Any], before: int) -> int | None:
    """The largest index j < ``before`` such that every layer after j reads only the outputs
    of layers j.. (so the output of ``layers[j]`` alone feeds the rest); None if none."""
    position = {id(layer): i for i, layer in enumerate(layers)}
    for j in range(before - 1, -1, -1):
        if all(
            position.get(id(p), -1) >= j for layer in layers[j + 1 :] for p in _producers(layer)
        ):
            return j
    return None


def _random_layer(layers: list[Any]) -> str | None:
    for layer in layers:
        if _is_random(layer):
            return f"{layer.name} ({type(layer).__name__})"
        if isinstance(layer, keras.Model) and (inner := _random_layer(layer.layers)):
            return inner
    return None


def split_frozen_prefix(model: keras.Model, augment: bool = False) -> PrefixSplit | str:
    """Split ``model`` at the end of its frozen part, or say in one line why it cannot be.

    The model is a Keras functional model whose first layer with trainable weights is either
    a plain layer or a nested functional model (DenseNet121's base) holding the boundary.
    ``augment``: whether training batches are augmented (then the prefix's output changes
    every epoch and no split is made).
    """
    if augment:
        return "classifier.augment=true: the frozen part sees a new image every epoch"
    if len(model.inputs) != 1:
        return f"{model.name} has {len(model.inputs)} inputs; the feature cache takes one"
    outer = list(model.layers)
    first = next((i for i, layer in enumerate(outer) if _trains(layer)), None)
    if first is None:
        return "no layer trains"
    nested = outer[first] if isinstance(outer[first], keras.Model) else None
    if nested is not None:
        inner = list(nested.layers)
        inner_first = next(i for i, layer in enumerate(inner) if _trains(layer))
        found = (_single_cut(inner, inner_first), _single_cut(outer, first))
        # 0 (the input) or None: no frozen inner layer
        inner_cut, outer_cut = (found[0], found[1]) if found[0] and found[1] is not None else (0, 0)
        frozen = [*outer[: outer_cut + 1], *inner[: inner_cut + 1]] if inner_cut else []
    else:
        cut = _single_cut(outer, first) or 0
        frozen = outer[: cut + 1] if cut else []
    if not any(layer.weights for layer in frozen):
        return (
            "every layer with weights trains (small_cnn, or trainable_tail_layers=-1): "
            "there is no frozen part to compute once"
        )
    if random := _random_layer(frozen):
        return f"layer {random} before the cut is random in training"
    if nested is not None:
        cut_layer = inner[inner_cut]
        inner_out = _output_in_graph(nested, cut_layer)
        outer_in = _output_in_graph(model, outer[outer_cut])
        outer_out = _output_in_graph(model, nested)
        pieces_in = [
            keras.Model(model.inputs, outer_in, name="prefix_outer"),
            keras.Model(nested.inputs, inner_out, name="prefix_inner"),
        ]
        pieces_tail = [
            keras.Model(inner_out, _one(nested.outputs), name="tail_inner"),
            keras.Model(outer_out, _one(model.outputs), name="tail_outer"),
        ]
    else:
        cut_layer = outer[cut]
        inner_out = _output_in_graph(model, cut_layer)
        pieces_in = [keras.Model(model.inputs, inner_out, name="prefix_outer")]
        pieces_tail = [keras.Model(inner_out, _one(model.outputs), name="tail_outer")]
    image = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    x = image
    for piece in pieces_in:
        x = piece(x)
    prefix = keras.Model(image, x, name="frozen_prefix")
    features = keras.Input(inner_out.shape[1:], dtype=inner_out.dtype, name="features")
    y = features
    for piece in pieces_tail:
        y = piece(y)
    tail = keras.Model(features, y, name="trainable_tail")
    if [id(v) for v in tail.trainable_variables] != [id(v) for v in model.trainable_variables]:
        return "the tail's trainable variables are not the model's, in the model's order"
    return PrefixSplit(
        prefix, tail, cut_layer.name, tuple(int(d) for d in inner_out.shape[1:]), inner_out.dtype
    )


def prefix_id(split: PrefixSplit) -> str:
    """A hash of what the prefix computes: its weights' values, the cut, the input shape and
    dtypes, and Keras' and JAX's versions.

    Equal ids give equal features (the ImageNet file's weights are in the values, and so is a
    seeded random initialisation), so every arm, fold and seed of a study shares them.
    """
    import jax

    digest = hashlib.sha256()
    head = [
        split.cut_layer,
        str(split.prefix.inputs[0].shape),
        split.feature_dtype,
        keras.__version__,
        jax.__version__,
    ]
    digest.update("|".join(head).encode())
    for var in split.prefix.weights:
        value = np.ascontiguousarray(np.asarray(var))
        digest.update(f"{var.path}|{value.dtype}|{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:24]
