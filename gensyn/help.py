"""The text of ``python launch.py --help`` (and ``gensyn --help``).

Hydra prints ``hydra.help.template``; ``conf/config.yaml`` sets it to ``${gensyn_help:}``, a
resolver that builds GENSYN's own usage from the stage registry and the config folders, so
the help never lists a stage or an option that does not exist. Hydra's ``$APP_CONFIG_GROUPS``
would also show the internal ``schema/*`` groups of the ConfigStore; this text leaves them out.
"""

from __future__ import annotations

from pathlib import Path

#: Config groups shown with their options, in pipeline order (``hydra/`` and ``schema/`` hidden).
MAIN_GROUPS = (
    "stage",
    "experiment",
    "dataset",
    "ct_dataset",
    "carm_pose",
    "projector",
    "generator",
    "classifier",
    "sampling",
    "profile",
    "logger",
)

EXAMPLES = (
    ("python launch.py", "the whole pipeline on the built-in demo data (CPU, minutes)"),
    ("python launch.py stage=list", "the stages"),
    ("python launch.py stage=drr ct_dataset=lidc_idri carm_pose=grid", "DRRs of one CT set"),
    (
        "python launch.py -m stage=classify sampling=none,drr_5 split_idx=0,1,2,3,4",
        "a sweep: arms x folds",
    ),
    ("python launch.py experiment=thesis hydra/launcher=slurm -m", "the study on a SLURM cluster"),
)


def options(conf_dir: Path, group: str) -> list[str]:
    """The options of config group ``group`` (its YAML file names)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def usage_text() -> str:
    """GENSYN's usage: stages with summaries, main groups with options, examples, docs."""
    from gensyn.confdir import CONF_DIR
    from gensyn.registry import describe_stages

    stages = describe_stages()
    width = max(len(s["name"]) for s in stages)
    lines = [
        "GENSYN: synthetic chest X-rays from CT (DRR, SyntheX) and the experiments that test",
        "whether they help a chest X-ray classifier.",
        "",
        "Usage: python launch.py [stage=NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [-m]",
        "       (the installed command `gensyn` takes the same arguments)",
        "",
        "Stages (stage=NAME):",
        *(f"  {s['name']:<{width}}  {s['summary']}" for s in stages),
        "",
        "Config groups (GROUP=OPTION):",
    ]
    groups = [g for g in MAIN_GROUPS if g != "stage" and (CONF_DIR / g).is_dir()]
    gwidth = max(len(g) for g in groups)
    lines += [f"  {g:<{gwidth}}  {', '.join(options(CONF_DIR, g))}" for g in groups]
    lines += ["", "Examples:"]
    for cmd, what in EXAMPLES:
        lines += [f"  # {what}", f"  {cmd}"]
    lines += [
        "",
        "More: `python launch.py --cfg job` prints the composed config; any key can be set as",
        "KEY=VALUE (e.g. classifier.epochs=2). Documentation: README.md and docs/ in the",
        "repository (docs/study.md: the study; docs/data.md: your own data; docs/cluster.md:",
        "SLURM).",
        "",
        "Hydra's options (--cfg, --multirun, --info ...): python launch.py --hydra-help",
    ]
    # Hydra passes the text through string.Template: a literal dollar sign must be doubled.
    return "\n".join(lines).replace("$", "$$") + "\n"


def register_help_resolver() -> None:
    """Register the ``gensyn_help`` resolver that ``hydra.help.template`` uses."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("gensyn_help"):
        OmegaConf.register_new_resolver("gensyn_help", usage_text)
