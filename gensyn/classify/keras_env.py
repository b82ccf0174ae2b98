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

__all__ = ["keras", "use_compilation_cache"]


def use_compilation_cache(folder: str | os.PathLike[str]) -> None:
    """Keep JAX's compiled programs in ``folder`` and reuse them in later runs.

    A classifier of the same architecture and input shape (another arm or fold, or prediction
    after training) then loads its compiled training and prediction steps instead of compiling
    them again (DenseNet121 at 512² takes minutes to compile). JAX keys each entry by the
    program, its compile options and the JAX and device versions, so a reused entry is the
    program that would be compiled. Applies to the whole process from the next compilation on.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    os.makedirs(folder, exist_ok=True)
    if getattr(jax.config, "jax_compilation_cache_dir", None) != os.fspath(folder):
        # JAX opens its cache once a process: another folder (a later stage run in the same
        # process, e.g. from `stage=report` or the tests) takes effect only after a reset
        compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", os.fspath(folder))
    # cache every program: the demo's many small steps add up to more than its big ones
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
