"""GENSYN entry point: ``python launch.py [stage=NAME] [group=option] [key=value] [-m]``.

With no arguments it runs the demo pipeline on built-in simulated data.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 runs on JAX in GENSYN

import hydra
from omegaconf import DictConfig

from gensyn.app.cli import check_overrides, exit_on_interrupt, normalize_argv
from gensyn.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the stage named by ``stage=`` (see ``python launch.py stage=list``)."""
    from gensyn.app.main import run

    run(cfg)


def _checked_main() -> None:
    check_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    sys.argv[1:] = normalize_argv(sys.argv[1:])
    exit_on_interrupt(_checked_main)  # Ctrl-C: one line, exit status 130
