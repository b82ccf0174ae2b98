"""The import structure of gensyn: no cycles anywhere (the core on its own too); science
packages never import config, run folders, the registry, the CLI or a stage.

The graph is read from the source with :mod:`ast` (nothing is imported): every ``import
gensyn...`` and ``from gensyn... import ...`` at module or function level is an edge; imports
under ``if TYPE_CHECKING:`` are not (they never run). Importing ``gensyn.a.b`` also runs the
package ``gensyn.a``, so that is an edge too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gensyn"
CORE = ("gensyn.registry", "gensyn.runs", "gensyn.run_context", "gensyn.tracking")


def module_name(path: Path) -> str:
    """``gensyn/tracking/carbon.py`` -> ``gensyn.tracking.carbon`` (a package: its folder)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, here: str, is_package: bool) -> set[str]:
    """Every module name an import statement in ``tree`` names (TYPE_CHECKING blocks skipped)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = here.split(".") if is_package else here.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: gensyn modules it imports}`` for every module of ``package``."""
    # A name `from gensyn.x import y` brings in is an edge only where gensyn.x.y is a module.
    files = {module_name(p): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for target in _imported(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            # the module itself and every package above it (importing a.b.c runs a and a.b),
            # except packages holding the importer: those are already being imported
            for i in range(2, len(parts) + 1):
                candidate = ".".join(parts[:i])
                implied = i < len(parts) and name.startswith(candidate + ".")
                if candidate in files and candidate != name and not implied:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def cycles_through(graph: dict[str, set[str]], nodes: set[str]) -> list[list[str]]:
    """One shortest import cycle through each node of ``nodes`` that lies on a cycle."""
    found = []
    for start in sorted(nodes):
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for node in frontier:
                for target in sorted(graph.get(node, ())):
                    if target == start:
                        cycle = [*paths[node], start]
                        break
                    if target not in paths:
                        paths[target] = [*paths[node], target]
                        nxt.append(target)
                if cycle:
                    break
            frontier = nxt
        if cycle:
            found.append(cycle)
    return found


def _core_modules(graph: dict[str, set[str]]) -> set[str]:
    return {m for m in graph if any(m == c or m.startswith(c + ".") for c in CORE)}


def test_graph_reader_sees_real_imports() -> None:
    graph = import_graph()
    assert "gensyn.registry" in graph["gensyn.runs"]  # module level
    assert "gensyn.tracking" in graph["gensyn.runs"]  # inside _run_in
    assert "gensyn.io" in graph["gensyn.runs"]  # `from gensyn import io`
    # TYPE_CHECKING imports are not edges: the registry names RunContext only for typing
    assert "gensyn.run_context" not in graph["gensyn.registry"]


def test_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "gensyn"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from gensyn.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gensyn import a\n"
    )
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        graph = import_graph(pkg)
    finally:
        ROOT = old
    assert graph["gensyn.c"] == set()
    assert cycles_through(graph, {"gensyn.a"}) == [["gensyn.a", "gensyn.sub.b", "gensyn.a"]]


def test_no_import_cycle_through_the_core() -> None:
    graph = import_graph()
    core = _core_modules(graph)
    assert {"gensyn.registry", "gensyn.runs", "gensyn.run_context", "gensyn.tracking"} <= core
    cycles = cycles_through(graph, core)
    assert not cycles, "import cycles through the core: " + "; ".join(
        " -> ".join(c) for c in cycles
    )


def test_no_import_cycle_anywhere_in_gensyn() -> None:
    graph = import_graph()
    cycles = cycles_through(graph, set(graph))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


SCIENCE = (
    "gensyn.drr",
    "gensyn.gan",
    "gensyn.classify",
    "gensyn.data",
    "gensyn.report",
    "gensyn.reader",
)
SCIENCE_NEVER = ("gensyn.config", "gensyn.runs", "gensyn.registry", "gensyn.cli", "gensyn.stages")


def test_science_takes_plain_settings_and_knows_no_stage() -> None:
    """No science package imports the config schemas, run folders, the registry, the CLI or a
    stage."""
    graph = import_graph()
    bad = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith(tuple(f"{p}." for p in SCIENCE)) or module in SCIENCE
        for target in targets
        if target in SCIENCE_NEVER or target.startswith(tuple(f"{n}." for n in SCIENCE_NEVER))
    ]
    assert not bad, bad


@pytest.mark.parametrize("module", ["gensyn.run_context"])
def test_run_context_imports_nothing_from_gensyn(module: str) -> None:
    assert import_graph()[module] == set()


def test_tracking_never_imports_runs_or_data() -> None:
    graph = import_graph()
    for name in sorted(m for m in graph if m.startswith("gensyn.tracking")):
        bad = {t for t in graph[name] if t == "gensyn.runs" or t.startswith("gensyn.data")}
        assert not bad, f"{name} imports {sorted(bad)}"


# ---- the stage registry and the stage config group agree --------------------------------------
def test_every_stage_has_its_yaml_and_every_yaml_a_stage() -> None:
    from gensyn.confdir import CONF_DIR
    from gensyn.registry import check_stage_configs, load_stages, stage_config_names

    stages = load_stages()  # checks once; here again, explicitly
    check_stage_configs(stages, CONF_DIR / "stage")
    own = {n for n, s in stages.items() if s.func.__module__.startswith("gensyn.stages.")}
    assert set(stage_config_names(CONF_DIR / "stage")) == own | {"list"}


def test_a_yaml_without_a_stage_and_a_stage_without_a_yaml_are_named(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from gensyn.confdir import CONF_DIR
    from gensyn.errors import GensynError
    from gensyn.registry import check_stage_configs, load_stages

    stage_dir = tmp_path / "stage"
    shutil.copytree(CONF_DIR / "stage", stage_dir)
    stages = load_stages()
    (stage_dir / "segment.yaml").write_text("name: segment\n")
    with pytest.raises(GensynError) as err:
        check_stage_configs(stages, stage_dir)
    message = str(err.value)
    assert f"{stage_dir}/segment.yaml names no registered stage" in message
    assert "drr" in message  # the registered side is listed
    (stage_dir / "segment.yaml").unlink()

    def run(cfg, ctx) -> None:  # a stage module of the package without its YAML
        pass

    run.__module__ = "gensyn.stages.denoise"
    extra = dataclasses.replace(stages["drr"], name="denoise", func=run)
    with pytest.raises(
        GensynError,
        match=r"stage 'denoise' \(registered in gensyn.stages.denoise\) has no config .*denoise.yaml",
    ):
        check_stage_configs({**stages, "denoise": extra}, stage_dir)
    # a stage registered outside the package (a test's) needs no YAML
    run.__module__ = "tests.helpers"
    check_stage_configs({**stages, "denoise": extra}, stage_dir)

    (stage_dir / "drr.yaml").write_text("name: dr\n")
    with pytest.raises(GensynError, match=r"drr.yaml has name: dr; it must be name: drr"):
        check_stage_configs(stages, stage_dir)


def test_launch_refuses_a_stage_yaml_without_a_stage(tmp_path: Path) -> None:
    """The check runs at start-up of the real entry point, from a copied config folder."""
    import os
    import shutil
    import subprocess
    import sys

    pkg = tmp_path / "gensyn"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__", "conf"))
    shutil.copytree(ROOT / "conf", pkg / "conf")  # an installed layout: gensyn/conf
    shutil.copytree(ROOT / "hydra_plugins", tmp_path / "hydra_plugins")
    (pkg / "conf" / "stage" / "segment.yaml").write_text("name: segment\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from gensyn.cli import main; main()", "stage=list"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "GENSYN_ROOT": str(tmp_path / "root")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "segment.yaml names no registered stage" in out, out
