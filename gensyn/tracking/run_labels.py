"""What a W&B run is called and how it groups: name, group, job type, tags and config labels.

A sweep's runs should group themselves: ``group`` is the experiment, the sampling arm (for
the runs of one arm's model: ``classify`` and ``predict``) and every other key the command
line or the sweep set, except those a comparison runs *across* (the fold ``split_idx`` and
the ``seed``) and those that never change a result (``stage``, ``logger.*``, ``paths.*`` ...).
So W&B's "group by Group" shows one row per arm, with its folds (and seeds) inside, and the
``classify`` and ``predict`` runs of an arm share the group (``job_type`` tells them apart).
``logger.name``, ``logger.group`` and ``logger.tags`` override or extend what is derived.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: The stages whose run belongs to one arm's model (arm and fold in the name and the group).
MODEL_STAGES = ("classify", "predict")
#: Override keys (and their sub-keys) that are not part of a comparison: they pick the stage,
#: name the experiment (already the group's first part), or never change a result.
NOT_COMPARED = (
    "stage",
    "experiment",
    "logger",
    "paths",
    "site",
    "report",
    "force",
    "run_upstream",
    "device",
    "dry_run",
    "num_workers",
    "shard",
    "num_shards",
)
#: W&B's limits: a tag is at most 64 characters, a group at most 128.
MAX_TAG = 64
MAX_GROUP = 128


@dataclass
class RunLabels:
    """How one stage run appears in W&B.

    ``labels`` go into the run's config next to the resolved config (``arm``, ``fold``,
    ``test_sets``, ``swept``: the overrides of this job as ``{key: value}``).
    """

    name: str
    group: str
    job_type: str
    tags: list[str]
    labels: dict[str, Any] = field(default_factory=dict)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``{key: value}`` of Hydra override strings (``+key=v`` as ``key``; deletions dropped)."""
    out: dict[str, str] = {}
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or key.startswith("~"):
            continue
        out[key.lstrip("+")] = value
    return out


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((f"{p}.", f"{p}/")) for p in prefixes)


def arm_of(cfg: DictConfig) -> str:
    """The sampling arm of ``cfg``: ``baseline``, ``drr_5``, ``synthex_10`` ..."""
    source = cfg.sampling.source
    source = str(getattr(source, "value", source))
    return "baseline" if source == "none" else f"{source}_{int(cfg.sampling.views_per_ct)}"


def test_sets_of(cfg: DictConfig) -> list[str]:
    """The test sets a model of ``cfg`` is evaluated on: its own data set, then the external ones."""
    external = OmegaConf.select(cfg, "report.test_datasets", default=None) or []
    names = [str(cfg.dataset.name), *(str(n) for n in external)]
    return list(dict.fromkeys(names))


def _short(text: str, limit: int) -> str:
    """``text``, or its first characters and a digest of the whole when it is too long."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9]}~{digest}"


def run_labels(cfg: DictConfig, stage: str, stage_hash: str, overrides: list[str]) -> RunLabels:
    """The W&B name, group, job type, tags and config labels of stage run ``stage``.

    ``overrides`` are this Hydra job's task overrides (in a multirun: the swept values and
    the rest of the command line). Names read ``classify/synthex_5/fold2 #7141cf``, with
    ``/seed1`` after the fold when the seed is not 0 or is swept, and ``drr #7141cf`` for a
    run that belongs to no single arm.
    """
    swept = parse_overrides(overrides)
    experiment = str(cfg.get("experiment_name", "default"))
    seed = int(cfg.get("seed", 0))
    report_seeds = OmegaConf.select(cfg, "report.seeds", default=None) or []
    seed_varies = seed != 0 or "seed" in swept or len(report_seeds) > 1
    model_run = stage in MODEL_STAGES
    labels: dict[str, Any] = {}
    name_parts = [stage]
    tags = [stage, experiment]
    if model_run:
        arm, fold = arm_of(cfg), int(cfg.split_idx)
        labels.update(arm=arm, fold=fold)
        name_parts += [arm, f"fold{fold}"]
        tags += [f"arm:{arm}", f"fold:{fold}"]
    if model_run and seed_varies:
        name_parts.append(f"seed{seed}")
    tags.append(f"seed:{seed}")
    if model_run or stage == "report":
        labels["test_sets"] = test_sets_of(cfg)
        tags += [f"test:{t}" for t in labels["test_sets"]]
    # the arm, fold and seed are named above from the run's own config (a pipeline's or a
    # report's sub-runs set them themselves); the job's other overrides are listed as given
    by_key = {
        k: v for k, v in swept.items() if not _under(k, ("sampling", "split_idx", "seed", "stage"))
    }
    labels["swept"] = by_key
    tags += [f"{k}={v}" for k, v in sorted(by_key.items())]
    compared = [f"{k}={v}" for k, v in sorted(by_key.items()) if not _under(k, NOT_COMPARED)]
    group = "/".join([experiment, *([labels["arm"]] if model_run else []), *compared])

    logger = cfg.get("logger") or {}
    name = logger.get("name") or f"{'/'.join(name_parts)} #{stage_hash[:6]}"
    group = logger.get("group") or group
    tags += [str(t) for t in (logger.get("tags") or [])]
    tags = list(dict.fromkeys(_short(t, MAX_TAG) for t in tags))[:64]
    return RunLabels(str(name), _short(str(group), MAX_GROUP), stage, tags, labels)
