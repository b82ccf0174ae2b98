"""The installable package: declared dependencies vs the tested pins, a real resolution, the
wheel in a fresh environment (`gensyn` command from any folder), `--help`, site settings from
``$GENSYN_CONFIG_DIR``, W&B credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

import gensyn

ROOT = Path(__file__).resolve().parent.parent


def _requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file, following ``-r`` includes."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r"):
            lines += _requirement_lines(path.parent / line[2:].strip())
        elif line:
            lines.append(line)
    return lines


def pins(name: str) -> dict[str, str]:
    """``{canonical project name: pinned version}`` of ``requirements/<name>.txt``."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = {}
    for line in _requirement_lines(ROOT / "requirements" / f"{name}.txt"):
        req = Requirement(line)
        (spec,) = req.specifier  # every line is one == pin
        assert spec.operator == "==", line
        out[canonicalize_name(req.name)] = spec.version
    return out


def declared(extra: str | None = None) -> dict[str, Any]:
    """``{canonical name: Requirement}`` of pyproject.toml's dependencies (or an extra's)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


@pytest.mark.parametrize(("extra", "pinned"), [(None, "base"), ("dev", "dev"), ("gpu", "gpu")])
def test_declared_ranges_hold_the_tested_pins(extra: str | None, pinned: str) -> None:
    ranges, tested = declared(extra), pins(pinned)
    missing = sorted(set(ranges) - set(tested))
    assert not missing, f"declared without a pin in requirements/{pinned}.txt: {missing}"
    outside = {
        n: (str(r.specifier), tested[n])
        for n, r in ranges.items()
        if not r.specifier.contains(tested[n])
    }
    assert not outside, f"pins outside the declared range: {outside}"
    if extra is None:  # every pinned runtime package is declared (jax[cpu] is jax)
        assert set(tested) == set(ranges)


def _fresh_venv(path: Path) -> Path:
    """A new virtual environment without pip (the test's pip installs into it); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.mark.slow
def test_pip_install_resolves_every_dependency_to_its_pin(tmp_path: Path) -> None:
    """``pip install -c requirements/common.txt .`` in an empty environment resolves to the
    tested pins. base.txt's PyTorch / JAX pins are constraints too, so torch is the tested
    2.13.0 (here the CPU wheel on this machine's disk). A dry run reads the packages'
    metadata (PyPI serves it apart from the wheels), so no multi-GB wheel is downloaded."""
    python = _fresh_venv(tmp_path / "venv")
    extra_pins = tmp_path / "torch_jax.txt"
    common = pins("common")
    base_only = {n: v for n, v in pins("base").items() if n not in common}
    assert {"torch", "jax", "jaxlib"} <= set(base_only)
    extra_pins.write_text("".join(f"{n}=={v}\n" for n, v in base_only.items()))
    report = tmp_path / "report.json"
    subprocess.run(
        [
            *PIP,
            "--python",
            str(python),
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--report",
            str(report),
            "-c",
            str(ROOT / "requirements" / "common.txt"),
            "-c",
            str(extra_pins),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
        timeout=900,
    )
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved.pop("gensyn") == gensyn.__version__
    tested = pins("base")
    for name, req in declared().items():
        assert name in resolved, f"{name} did not resolve"
        assert req.specifier.contains(resolved[name]), (name, resolved[name], str(req))
        assert SpecifierSet(f"=={tested[name]}").contains(resolved[name]), (name, resolved[name])


@pytest.mark.slow
def test_wheel_installs_fresh_and_runs_from_another_folder(tmp_path: Path) -> None:
    """The built wheel in a new environment: configs, plugin and licence inside, and the
    ``gensyn`` command working from a folder that is not the checkout.

    The dependencies (a full install takes over 10 minutes on a loaded 2-core machine) come
    from this test's environment through a ``.pth`` line; GENSYN itself, its data files and
    its command come only from the wheel.
    """
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            *PIP,
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    (wheel,) = wheels.glob("gensyn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    confs = {
        f"gensyn/conf/{p.relative_to(ROOT / 'conf').as_posix()}"
        for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert len(confs) > 40 and confs <= names, sorted(confs - names)
    assert "hydra_plugins/gensyn_launcher/__init__.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no LICENSE"
    assert not any(n.startswith(("tests/", "conf/")) for n in names)

    python = _fresh_venv(tmp_path / "venv")
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "tested_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # without PYTHONPATH: a checkout on it (its gensyn.egg-info from the build) would count as
    # gensyn already installed, and pip would skip the wheel
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
        env=env,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["GENSYN_ROOT"] = str(tmp_path / "root")

    def gensyn_command(*args: str) -> str:
        out = subprocess.run(
            [str(python.parent / "gensyn"), *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import gensyn.core.confdir as c; print(c.__file__); print(c.CONF_DIR)",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # not the checkout
    listed = gensyn_command("stage=list")
    stages = {p.stem for p in (ROOT / "conf" / "stage").glob("*.yaml")} - {"list"}
    assert {line.split()[0] for line in listed.splitlines() if line.strip()} == stages
    help_text = gensyn_command("--help")
    assert "Stages (stage=NAME):" in help_text and "carbon_summary" in help_text
    # the installed command speaks of itself and links the documentation by its address
    assert "python launch.py" not in help_text and "docs/ in the" not in help_text
    assert "gensyn -m experiment=thesis_grid stage=classify hydra/launcher=slurm_gpu" in help_text
    assert "https://" in help_text and "/docs/cluster.md" in help_text
    assert not list(elsewhere.iterdir()), list(elsewhere.iterdir())  # nothing written here

    # a pip user's site settings: a site file in $GENSYN_CONFIG_DIR sets the SLURM partition,
    # account and output root of the study's GPU grid (a dry run submits nothing)
    site_dir = tmp_path / "site-config"
    (site_dir / "site").mkdir(parents=True)
    scratch = tmp_path / "scratch"
    (site_dir / "site" / "default.yaml").write_text(
        "# @package _global_\nsite:\n  partition: gpu-h100\n  account: lab42\n"
        f"paths:\n  root_dir: {scratch}\n"
    )
    env["GENSYN_CONFIG_DIR"] = str(site_dir)
    grid = ("-m", "experiment=thesis_grid", "stage=classify", "hydra/launcher=slurm_gpu")
    dry = gensyn_command(*grid, "hydra.launcher.dry_run=true")
    assert "DRY RUN: 45 of 45 jobs" in dry, dry[-2000:]
    assert "#SBATCH --partition=gpu-h100" in dry and "#SBATCH --account=lab42" in dry
    assert "#SBATCH --gpus-per-node=1" in dry
    assert f"run folder: {scratch}/workdir/runs/classify/" in dry
    del env["GENSYN_CONFIG_DIR"]
    dry = gensyn_command(*grid, "hydra.launcher.dry_run=true")
    assert "--partition" not in dry and "--account" not in dry


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
