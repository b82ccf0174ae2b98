"""Site settings: ``site`` options from ``$GENSYN_CONFIG_DIR`` (searched before the packaged
configs) reach the SLURM launcher and ``paths``; ``--help`` speaks of the command it was run as."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SITE = """# @package _global_
site:
  name: testsite
  partition: gpu-a100
  account: lab42
paths:
  root_dir: {root}
"""


def _compose_hydra(*overrides: str) -> object:
    """The config with its ``hydra`` node (the launcher's settings), as a multirun sees it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gensyn.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "gensyn-config"
    (folder / "site").mkdir(parents=True)
    (folder / "site" / "default.yaml").write_text(SITE.format(root=tmp_path / "scratch"))
    (folder / "site" / "night.yaml").write_text(
        "# @package _global_\nsite:\n  name: night\n  qos: low\n"
    )
    monkeypatch.setenv("GENSYN_CONFIG_DIR", str(folder))
    return folder


def test_without_a_site_folder_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENSYN_CONFIG_DIR", raising=False)
    cfg = _compose_hydra("hydra/launcher=slurm_gpu")
    assert cfg.site.name == "default" and cfg.hydra.launcher.partition is None  # type: ignore[attr-defined]
    assert cfg.hydra.launcher.account is None  # type: ignore[attr-defined]


def test_site_default_applies_to_every_command(site_dir: Path, tmp_path: Path) -> None:
    cfg = _compose_hydra("hydra/launcher=slurm_gpu", "experiment=thesis_grid", "stage=classify")
    launcher = cfg.hydra.launcher  # type: ignore[attr-defined]
    assert (launcher.partition, launcher.account, launcher.qos) == ("gpu-a100", "lab42", None)
    assert launcher.gpus_per_node == 1  # slurm_gpu's own resources stay
    assert cfg.paths.root_dir == str(tmp_path / "scratch")  # type: ignore[attr-defined]
    # the command line still wins over the site file
    cfg = _compose_hydra("hydra/launcher=slurm", "hydra.launcher.partition=debug")
    assert cfg.hydra.launcher.partition == "debug"  # type: ignore[attr-defined]


def test_a_named_site_option_and_a_misspelt_site_key(site_dir: Path) -> None:
    from hydra.errors import ConfigCompositionException

    cfg = _compose_hydra("hydra/launcher=slurm", "site=night")
    assert cfg.hydra.launcher.qos == "low" and cfg.hydra.launcher.partition is None  # type: ignore[attr-defined]
    (site_dir / "site" / "bad.yaml").write_text("# @package _global_\nsite:\n  partitoin: x\n")
    with pytest.raises(ConfigCompositionException, match="partitoin"):
        _compose_hydra("site=bad")


def test_a_site_folder_that_does_not_exist_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENSYN_CONFIG_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"GENSYN_CONFIG_DIR=.*nowhere.* is not a folder"):
        _compose_hydra()


def test_site_keys_change_no_run_hash(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gensyn.core.runs import stage_hash

    with_site = _compose_hydra("site=night")
    monkeypatch.delenv("GENSYN_CONFIG_DIR")
    without = _compose_hydra()
    for name in ("drr", "classify", "predict"):
        assert stage_hash(with_site, name) == stage_hash(without, name)  # type: ignore[arg-type]


def test_help_names_the_command_it_was_run_as(
    site_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gensyn.app import help as gensyn_help

    monkeypatch.setattr(sys, "argv", ["/venv/bin/gensyn", "--help"])
    text = gensyn_help.usage_text()
    assert "python launch.py" not in text
    assert "gensyn -m experiment=thesis_grid stage=classify hydra/launcher=slurm_gpu" in text
    assert f"{gensyn_help.docs_url()}/docs/cluster.md" in text
    assert "night" in text  # the user's site options are listed
    monkeypatch.setattr(sys, "argv", ["launch.py", "--help"])
    assert "python launch.py stage=list" in gensyn_help.usage_text()


def test_docs_url_matches_the_project_urls() -> None:
    import tomllib

    from gensyn.app.help import DOCS_URL

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Documentation"] == DOCS_URL


def test_a_missing_site_folder_stops_the_command_in_one_line(launch, tmp_path: Path) -> None:
    proc = launch("stage=list", check=False, env={"GENSYN_CONFIG_DIR": str(tmp_path / "gone")})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: GENSYN_CONFIG_DIR=")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
