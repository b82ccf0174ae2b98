"""One module per stage; each registers itself with :func:`gensyn.core.registry.stage`.

Stage modules are imported at start-up to build the registry, so they keep heavy imports
(torch, keras, jax) inside their ``run`` function.
"""
