"""The text of ``python launch.py --help`` (and ``gensyn --help``).

Hydra prints ``hydra.help.template``; ``conf/config.yaml`` sets it to ``${gensyn_help:}``, a
resolver that builds GENSYN's own usage from the stage registry and the config folders, so
the help never lists a stage or an option that does not exist. Hydra's ``$APP_CONFIG_GROUPS``
would also show the internal ``schema/*`` groups of the ConfigStore; this text leaves them out.
"""

from __future__ import annotations

import sys
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
    "site",
)

#: ``(arguments, what they do)``; the command (``gensyn`` or ``python launch.py``) is prepended.
EXAMPLES = (
    ("", "the whole pipeline on the built-in demo data (CPU, minutes)"),
    ("stage=list", "the stages"),
    ("stage=drr ct_dataset=lidc_idri carm_pose=grid", "DRRs of one CT set"),
    ("-m stage=classify sampling=none,drr_5 split_idx=0,1,2,3,4", "a sweep: arms x folds"),
    (
        "-m experiment=thesis_grid stage=classify hydra/launcher=slurm_gpu "
        "hydra.launcher.dry_run=true",
        "the study's classifier grid (9 arms x 5 folds) on SLURM GPUs: list the 45 jobs first",
    ),
    (
        "-m experiment=thesis_grid stage=classify hydra/launcher=slurm_gpu",
        "... then submit them (partition, account: site=..., docs/cluster.md)",
    ),
)
#: The documentation, online (the installed package has no docs/ folder beside it).
DOCS_URL = "https://github.com/gensyn-project/gensyn/blob/main"


def command_name(argv0: str | None = None) -> str:
    """How the user started GENSYN: ``python launch.py`` from a checkout, else ``gensyn``."""
    name = Path(argv0 if argv0 is not None else sys.argv[0]).name
    return "python launch.py" if name == "launch.py" else "gensyn"


def docs_url() -> str:
    """The documentation's address: the package's ``Documentation`` project URL if installed
    with one (pyproject.toml ``[project.urls]``), else :data:`DOCS_URL`."""
    from importlib import metadata

    try:
        urls = metadata.metadata("gensyn").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation" and url.strip():
            return url.strip().rstrip("/")
    return DOCS_URL


def options(conf_dir: Path, group: str) -> list[str]:
    """The options of config group ``group``: its YAML files in ``conf_dir`` and in the folder
    ``$GENSYN_CONFIG_DIR`` names (the user's own options)."""
    import os

    folders = [conf_dir / group]
    user = os.environ.get("GENSYN_CONFIG_DIR", "").strip()
    if user:
        folders.append(Path(user).expanduser() / group)
    return sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})


def usage_text() -> str:
    """GENSYN's usage: stages with summaries, main groups with options, examples, docs."""
    from gensyn.core.confdir import CONF_DIR
    from gensyn.core.registry import describe_stages

    stages = describe_stages()
    cmd = command_name()
    width = max(len(s["name"]) for s in stages)
    lines = [
        "GENSYN: synthetic chest X-rays from CT (DRR, SyntheX) and the experiments that test",
        "whether they help a chest X-ray classifier.",
        "",
        f"Usage: {cmd} [stage=NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [-m]",
        *(["       (the installed command `gensyn` takes the same arguments)"] * (cmd != "gensyn")),
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
    for args, what in EXAMPLES:
        lines += [f"  # {what}", f"  {cmd} {args}".rstrip()]
    if cmd == "gensyn":
        url = docs_url()
        docs = [
            f"KEY=VALUE (e.g. classifier.epochs=2). Documentation: {url}/README.md",
            f"  the study: {url}/docs/study.md",
            f"  your own data: {url}/docs/data.md",
            f"  SLURM and site settings ($GENSYN_CONFIG_DIR): {url}/docs/cluster.md",
            f"  W&B dashboards: {url}/docs/tracking.md",
        ]
    else:
        docs = [
            "KEY=VALUE (e.g. classifier.epochs=2). Documentation: README.md and docs/ in the",
            "repository (docs/study.md: the study; docs/data.md: your own data; docs/cluster.md:",
            "SLURM and site settings; docs/tracking.md: W&B dashboards).",
        ]
    lines += [
        "",
        f"More: `{cmd} --cfg job` prints the composed config; any key can be set as",
        *docs,
        "",
        f"Hydra's options (--cfg, --multirun, --info ...): {cmd} --hydra-help",
    ]
    # Hydra passes the text through string.Template: a literal dollar sign must be doubled.
    return "\n".join(lines).replace("$", "$$") + "\n"


def register_help_resolver() -> None:
    """Register the ``gensyn_help`` resolver that ``hydra.help.template`` uses."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("gensyn_help"):
        OmegaConf.register_new_resolver("gensyn_help", usage_text)
