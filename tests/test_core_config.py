"""Config composition and start-up errors of the core framework."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
GROUPS = [
    "dataset",
    "carm_pose",
    "projector",
    "generator",
    "classifier",
    "sampling",
    "stage",
    "logger",
    "paths",
    "experiment",
    "profile",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override", [f"{g}={o}" for g in GROUPS for o in _options(g)], ids=lambda s: s
)
def test_every_group_option_composes(compose, override: str) -> None:
    cfg = compose(override)
    container = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert isinstance(container, dict)
    group = override.split("=")[0]
    if group not in ("experiment", "profile", "paths", "stage", "logger"):
        assert group in container


def test_every_group_has_options_and_a_schema() -> None:
    from gensyn.config import GROUP_SCHEMAS

    for group in GROUPS:
        assert _options(group), f"conf/{group}/ has no options"
    for group in set(GROUPS) - {"experiment", "profile"}:
        assert group in GROUP_SCHEMAS, f"group {group} has no dataclass schema"


def test_unknown_key_is_rejected_by_the_schema(compose) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="use_syntex"):
        compose("use_syntex=true")
    with pytest.raises(ConfigCompositionException, match="sorce"):
        compose("sampling.sorce=drr")


def test_misspelt_key_on_the_command_line(launch) -> None:
    proc = launch("use_syntex=true", check=False, timeout=120)
    assert proc.returncode != 0
    assert "unknown config key 'use_syntex'" in proc.stderr
    assert "Keys allowed at the top level:" in proc.stderr and "sampling" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout

    proc = launch("sampling.sorce=drr", check=False, timeout=120)
    assert proc.returncode != 0
    assert "Did you mean: sampling.source" in proc.stderr
    assert "Keys allowed at 'sampling': source, views_per_ct" in proc.stderr


def test_wrong_type_and_unknown_option_fail_at_start(launch) -> None:
    proc = launch("seed=abc", check=False, timeout=120)
    assert proc.returncode != 0
    assert "seed" in proc.stderr and "Traceback" not in proc.stderr

    proc = launch("sampling=synthexx", check=False, timeout=120)
    assert proc.returncode != 0
    assert "synthexx" in proc.stderr and "Available options" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stage_list_names_every_registered_stage(launch) -> None:
    from gensyn.core.registry import load_stages

    proc = launch("stage=list", timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    names = {line.split()[0] for line in lines}
    registered = {n for n in load_stages() if not n.startswith("_")}  # "_": test-only stages
    assert registered <= names
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # name + one-line summary


def test_unknown_stage_is_a_clear_error(launch) -> None:
    proc = launch("stage=list", "stage.name=nonsense", check=False, timeout=120)
    assert proc.returncode == 1
    assert "unknown stage 'nonsense'" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "override", ["+carm_pose.alpah_deg=5", "+use_syntex=true", "++sampling.sorce=drr"]
)
def test_plus_does_not_skip_the_unknown_key_check(launch, gensyn_root: Path, override: str) -> None:
    proc = launch("stage=list", override, check=False, timeout=120)
    key = override.lstrip("+").split("=")[0]
    assert proc.returncode == 2
    assert f"unknown config key '{key}'" in proc.stderr and "Keys allowed at" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(gensyn_root.iterdir()) == []


def test_free_form_extension_points_take_new_keys(launch, compose) -> None:
    from gensyn.app.cli import in_free_form

    cfg = compose()
    assert in_free_form(cfg, "extras.note") and in_free_form(cfg, "extras.a.b")
    assert in_free_form(cfg, "reader_study.server.urls.R1")  # a dict field of the schema
    assert not in_free_form(cfg, "carm_pose.alpah_deg") and not in_free_form(cfg, "use_syntex")
    proc = launch("stage=list", "+extras.note=rerun", "+hydra.job.env_set.GENSYN_X=1", timeout=120)
    assert "classify" in proc.stdout
