"""Start-up checks of command-line overrides, run before Hydra composes the config.

Hydra already rejects unknown keys, but its message does not say what is allowed, and it
accepts any new key given with ``+`` (``+use_syntex=true`` would run the baseline arm). This
check composes the config the same way and, for a key that is not in it, with or without
``+``, prints the key, the closest known keys and the keys allowed at that level, then exits
with status 2. Keys below free-form mappings (``extras``) and ``hydra.*`` are left alone.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gensyn.core.confdir import CONF_DIR, rerun_command

__all__ = [
    "CONF_DIR",
    "INTERRUPTED",
    "check_overrides",
    "exit_on_interrupt",
    "main",
    "normalize_argv",
    "rerun_command",
]

#: What Ctrl-C prints (exit status 130): runs resume where they stopped, sweeps skip DONE jobs.
INTERRUPTED = "interrupted; the same command resumes"
#: Exit status of a process stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def exit_on_interrupt(entry: Callable[[], object]) -> None:
    """Call ``entry``; Ctrl-C (KeyboardInterrupt) ends it with one line and exit status 130.

    Stages write atomically and resume per item, so the traceback of an interrupt tells the
    user nothing they need; a local sweep prints its table of jobs before this line.
    """
    try:
        entry()
    except KeyboardInterrupt:
        print(f"\n{INTERRUPTED}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


#: Flags of Hydra's command line that take a value (we leave such invocations to Hydra).
_VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--info",
    "-i",
    "--experimental-rerun",
}


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key!s}"
            keys.append(path)
            keys.extend(_all_keys(node._get_node(key), path + "."))
    return keys


def unknown_key_message(cfg: DictConfig, key: str) -> str:
    """The error text for an override of ``key``, which ``cfg`` does not have."""
    parent_path, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
    where = f"'{parent_path}'" if parent_path else "the top level"
    lines = [f"error: unknown config key '{key}'."]
    candidates = _all_keys(cfg)
    close = [
        c for c in difflib.get_close_matches(key, candidates, n=4, cutoff=0.6) if c != parent_path
    ][:3]
    close += [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c not in close][:3]
    if close:
        lines.append("  Did you mean: " + ", ".join(close) + " ?")
    if isinstance(parent, DictConfig):
        lines.append(f"  Keys allowed at {where}: " + ", ".join(str(k) for k in parent))
    lines.append(
        "  `python launch.py --cfg job` prints the whole config; "
        "`python launch.py stage=list` lists the stages."
    )
    return "\n".join(lines)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Move ``-m``/``--multirun`` before the overrides.

    Hydra's argument parser needs overrides to be contiguous, so
    ``launch.py stage=classify split_idx=0,1 -m hydra/launcher=slurm`` would fail there.
    """
    flags = [a for a in argv if a in ("-m", "--multirun")]
    return flags[:1] + [a for a in argv if a not in ("-m", "--multirun")]


#: The two data-source groups: an option of one given to the other gets a pointed message.
_SOURCE_GROUPS = {"dataset": "ct_dataset", "ct_dataset": "dataset"}


def swapped_source_message(group: str, option: str) -> str | None:
    """The error text for ``dataset=<a CT set>`` or ``ct_dataset=<an X-ray set>``, else None."""
    other = _SOURCE_GROUPS.get(group)
    if other is None or (CONF_DIR / group / f"{option}.yaml").is_file():
        return None
    if not (CONF_DIR / other / f"{option}.yaml").is_file():
        return None
    kinds = {"dataset": "X-ray", "ct_dataset": "CT"}
    here = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
    return (
        f"error: {option} is a {kinds[other]} data set: use {other}={option}.\n"
        f"  `{group}` selects the {kinds[group]} data ({here}); "
        f"`{other}` selects the {kinds[other]} data."
    )


def check_config_dir() -> None:
    """Exit with one line if ``$GENSYN_CONFIG_DIR`` (the user's configs) names no folder."""
    from hydra_plugins.gensyn_site import user_config_dir

    try:
        user_config_dir()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def check_overrides(argv: Sequence[str]) -> None:
    """Exit with a clear message if an override in ``argv`` names a key the config lacks
    (or ``$GENSYN_CONFIG_DIR`` names no folder)."""
    check_config_dir()
    args = [a for a in argv if a not in ("-m", "--multirun")]
    if any(a.split("=", 1)[0] in _VALUE_FLAGS or a.startswith("-") for a in args):
        return  # Hydra's own options: let Hydra handle the command line
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return  # a syntax error: Hydra reports it
    groups = {p.parent.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*.yaml")}
    choices: list[str] = []
    keys: list[str] = []
    for ov in overrides:
        name = ov.key_or_group
        if ov.is_hydra_override() or ov.is_delete() or "/" in name:
            continue  # Hydra's own settings; deletions and group paths: Hydra checks them
        if name in groups:
            value = ov.value()
            for option in getattr(value, "list", [value]):
                message = swapped_source_message(name, str(option))
                if message:
                    print(message, file=sys.stderr)
                    raise SystemExit(2)
            first = getattr(value, "list", [value])[0]
            choices.append(f"{name}={first}")
        else:
            keys.append(name)
    if not keys:
        return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=choices)
    except HydraException:
        return  # e.g. an unknown group option: Hydra lists the available ones
    for key in keys:
        missing = object()
        if OmegaConf.select(cfg, key, default=missing) is missing and not in_free_form(cfg, key):
            print(unknown_key_message(cfg, key), file=sys.stderr)
            raise SystemExit(2)


def in_free_form(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` lies below a free-form mapping of the schema (``extras``, a ``dict`` field).

    Those are the config's extension points: any key may be added there (with or without
    ``+``). Everywhere else the schema fixes the keys, and ``+key`` is as unknown as ``key``.
    """
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        node = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None)
        if isinstance(node, DictConfig):
            return OmegaConf.get_type(node) is dict
    return False


def main() -> None:
    """The ``gensyn`` command: the same as ``python launch.py`` from any folder."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 runs on JAX in GENSYN
    import hydra

    from gensyn.config import register_configs

    sys.argv[1:] = normalize_argv(sys.argv[1:])
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _run(cfg: DictConfig) -> None:
        from gensyn.app.main import run

        run(cfg)

    def _checked() -> None:
        check_overrides(sys.argv[1:])
        _run()

    exit_on_interrupt(_checked)
