"""The installable package (`gensyn` command from any folder), `--help`, W&B credentials."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_folder(tmp_path: Path) -> None:
    wheels, target = tmp_path / "wheels", tmp_path / "target"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("gensyn-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert (target / "gensyn" / "conf" / "config.yaml").is_file()
    assert (target / "hydra_plugins" / "gensyn_launcher" / "__init__.py").is_file()
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{sysconfig.get_paths()['purelib']}"}
    out = subprocess.run(
        [str(target / "bin" / "gensyn"), "stage=list", f"paths.work_dir={tmp_path / 'work'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "carbon_summary" in out.stdout and "classify" in out.stdout


def test_help_is_gensyns_own() -> None:
    out = subprocess.run(
        [sys.executable, "launch.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Stages (stage=NAME):" in text and "carbon_summary" in text
    assert "sampling" in text and "drr_5" in text and "docs/" in text
    assert text.count("python launch.py") >= 5
    assert "schema/" not in text


def test_wandb_login_credentials_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gensyn.tracking.wandb_tracker import wandb_credentials

    for var in (
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_BASE_URL",
        "NETRC",
        "WANDB_CONFIG_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_credentials() is None
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_credentials() == str(netrc)
    netrc.unlink()
    settings = tmp_path / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\napi_key = " + "y" * 40 + "\n")
    assert wandb_credentials() == str(settings)
    monkeypatch.setenv("WANDB_API_KEY", "z" * 40)
    assert wandb_credentials() == "WANDB_API_KEY"
