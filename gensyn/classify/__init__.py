"""Chest X-ray classification (Keras 3 on JAX): models, streaming data, training, prediction.

``models`` (DenseNet121, small CNN), ``data`` (the one preprocessing, streaming batches),
``train`` (resumable training), ``predict``, ``sampling`` (which synthetic images join the
training folds). Modules that import Keras set ``KERAS_BACKEND=jax`` first (``keras_env``).
"""
