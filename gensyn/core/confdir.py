"""Where GENSYN's configs live, and how to spell a command that reruns a stage.

Shared by the command line (gensyn/app/cli.py) and the stages, so that no stage imports the CLI.
"""

from __future__ import annotations

from pathlib import Path


def _find_conf_dir() -> Path:
    """The config folder: ``gensyn/conf`` in an installed wheel, else the checkout's ``conf/``."""
    packaged = Path(__file__).resolve().parents[1] / "conf"  # pyproject maps conf/ there in a wheel
    if (packaged / "config.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


CONF_DIR = _find_conf_dir()


def rerun_command(stage: str, *extra: str) -> str:
    """``python launch.py stage=STAGE EXTRA`` with this run's other overrides (shell-quoted).

    Outside a Hydra run (tests, notebooks) only ``stage`` and ``extra`` are given.
    """
    import shlex

    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    replaced = {"stage", "force", "redo", *(e.split("=", 1)[0] for e in extra)}
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in replaced]
    return " ".join(["python launch.py", f"stage={stage}", *map(shlex.quote, [*extra, *kept])])
