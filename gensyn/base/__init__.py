"""Plain helpers every layer may use: atomic I/O, user errors, pre-emption signals, devices,
threaded pipelines, setting bounds, degenerate-output checks, worker processes. Imports
nothing of gensyn outside gensyn.base."""
