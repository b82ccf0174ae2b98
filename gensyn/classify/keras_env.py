"""Import Keras 3 on the JAX backend (the one place that sets ``KERAS_BACKEND``).

``from gensyn.classify.keras_env import keras`` everywhere in :mod:`gensyn.classify`.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
if os.environ["KERAS_BACKEND"] != "jax":
    raise RuntimeError(
        f"GENSYN's classifier needs KERAS_BACKEND=jax, but it is {os.environ['KERAS_BACKEND']!r}; "
        "unset it or set it to jax"
    )

import keras

__all__ = ["keras"]
