"""The structure of gensyn: no import cycles anywhere (the core on its own too, and none even
through imports made for type checking only); science packages never import config, run
folders, the registry, the CLI or a stage; no module imports another's private names; every
DRR renderer offers the :class:`gensyn.drr.renderers.Renderer` interface.

The graph is read from the source with :mod:`ast` (nothing is imported): every ``import
gensyn...`` and ``from gensyn... import ...`` at module or function level is an edge; imports
under ``if TYPE_CHECKING:`` are not (they never run) unless ``type_checking=True`` (a cycle
through them still ties the two modules' designs together). Importing ``gensyn.a.b`` also
runs the package ``gensyn.a``, so that is an edge too.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gensyn"
CORE = ("gensyn.registry", "gensyn.runs", "gensyn.run_context", "gensyn.tracking")


def module_name(path: Path, root: Path | None = None) -> str:
    """``gensyn/tracking/carbon.py`` -> ``gensyn.tracking.carbon`` (a package: its folder);
    ``path`` relative to ``root`` (default: the repository)."""
    parts = list(path.relative_to(ROOT if root is None else root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, here: str, is_package: bool, type_checking: bool = False) -> set[str]:
    """Every module name an import statement in ``tree`` names (TYPE_CHECKING blocks skipped
    unless ``type_checking``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
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


def import_graph(package: Path = PACKAGE, type_checking: bool = False) -> dict[str, set[str]]:
    """``{module: gensyn modules it imports}`` for every module of ``package`` (imports made
    for type checking only count where ``type_checking``)."""
    # A name `from gensyn.x import y` brings in is an edge only where gensyn.x.y is a module.
    files = {module_name(p): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for target in _imported(tree, name, path.name == "__init__.py", type_checking):
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
    (pkg / "a.py").write_text("from gensyn import c\n")  # c imports a for type checking only
    (pkg / "sub" / "b.py").write_text("")
    ROOT = tmp_path
    try:
        graph, typed = import_graph(pkg), import_graph(pkg, type_checking=True)
    finally:
        ROOT = old
    assert cycles_through(graph, set(graph)) == []
    assert cycles_through(typed, {"gensyn.a"}) == [["gensyn.a", "gensyn.c", "gensyn.a"]]


def test_no_import_cycle_through_the_core() -> None:
    graph = import_graph()
    core = _core_modules(graph)
    assert {"gensyn.registry", "gensyn.runs", "gensyn.run_context", "gensyn.tracking"} <= core
    cycles = cycles_through(graph, core)
    assert not cycles, "import cycles through the core: " + "; ".join(
        " -> ".join(c) for c in cycles
    )


@pytest.mark.parametrize("type_checking", [False, True], ids=["at_run_time", "for_typing_too"])
def test_no_import_cycle_anywhere_in_gensyn(type_checking: bool) -> None:
    """No cycle of imports that run, nor one that closes through an import made for type
    checking only (such a pair is one design in two files: put the shared type or protocol
    where both may import it)."""
    graph = import_graph(type_checking=type_checking)
    cycles = cycles_through(graph, set(graph))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# ---- private names stay in their module --------------------------------------------------------
def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _package_of(module: str) -> str:
    return module.rsplit(".", 1)[0]


def private_imports(package: Path = PACKAGE) -> list[str]:
    """Every use of another module's private name in ``package``: ``from gensyn.x import _y``,
    ``x._y`` on an imported gensyn module, or a private module (``gensyn.p._m``) imported from
    outside its package ``gensyn.p`` (its siblings may share it)."""
    files = {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}
    found = []
    for here, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> gensyn module it stands for

        def private_module(target: str, here: str = here) -> bool:
            parts = target.split(".")
            return any(
                _is_private(part) and not here.startswith(".".join(parts[:i]) + ".")
                for i, part in enumerate(parts)
                if i > 0
            )

        for node in ast.walk(tree):
            where = f"{path.relative_to(package.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("gensyn"):
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
                        if private_module(alias.name):
                            found.append(f"{where}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".") if is_package else here.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if not base.startswith("gensyn"):
                    continue
                if private_module(base):
                    found.append(f"{where}: from {base} import ...")
                for alias in node.names:
                    if f"{base}.{alias.name}" in files:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                    if _is_private(alias.name) and base != here:
                        found.append(f"{where}: from {base} import {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                value = node.value
                if isinstance(value, ast.Name) and aliases.get(value.id, here) != here:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"
                    found.append(f"{where}: {value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    """A name one module needs from another is public there (or lives where it belongs)."""
    found = private_imports()
    assert not found, "private names used across modules: " + "; ".join(found)


def test_private_name_finder_finds_each_kind(tmp_path: Path) -> None:
    pkg = tmp_path / "gensyn"
    (pkg / "p").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "p" / "__init__.py").write_text("")
    (pkg / "p" / "_shared.py").write_text("def helper():\n    pass\n")
    (pkg / "p" / "a.py").write_text("from gensyn.p._shared import helper\n_seen = 1\n")
    (pkg / "b.py").write_text(
        "from gensyn.p.a import _seen\n"
        "import gensyn.p.a as mod\n"
        "x = mod._seen\n"
        "from gensyn.p import _shared\n"
        "from . import b\n"
    )
    found = private_imports(pkg)
    assert sorted(f.split(": ", 1)[1] for f in found) == [
        "from gensyn.p import _shared",
        "from gensyn.p.a import _seen",
        "mod._seen",
    ]
    assert all(f.startswith("gensyn/b.py:") for f in found)  # a.py may use its sibling


# ---- every DRR renderer offers the Renderer interface ------------------------------------------
def signature_mismatches(cls: type, protocol: type) -> list[str]:
    """How ``cls`` fails to offer ``protocol``'s methods as the protocol may call them: each
    parameter at its position (or, keyword-only, by name), a default wherever the protocol has
    one, and any further parameter of ``cls`` optional (attributes: ``isinstance``)."""
    P = inspect.Parameter
    problems = []
    for name, want_fn in vars(protocol).items():
        if name.startswith("_") or not callable(want_fn):
            continue
        have_fn = getattr(cls, name, None)
        if not callable(have_fn):
            problems.append(f"{cls.__name__} has no method {name}")
            continue
        want = list(inspect.signature(want_fn).parameters.values())
        have = inspect.signature(have_fn).parameters
        by_position = [
            p.name for p in have.values() if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
        ]
        for i, p in enumerate(want):
            q = have.get(p.name)
            at_i = by_position[i] if i < len(by_position) else None
            if p.kind is P.POSITIONAL_OR_KEYWORD and at_i != p.name:
                problems.append(f"{cls.__name__}.{name} lacks positional parameter {i} {p.name!r}")
            elif p.kind is P.KEYWORD_ONLY and (q is None or q.kind is P.POSITIONAL_ONLY):
                problems.append(f"{cls.__name__}.{name} lacks keyword parameter {p.name!r}")
            elif q is not None and p.default is not P.empty and q.default is P.empty:
                problems.append(f"{cls.__name__}.{name}: {p.name!r} needs a default")
        names = {p.name for p in want}
        problems += [
            f"{cls.__name__}.{name}: extra parameter {q.name!r} needs a default"
            for q in have.values()
            if q.name not in names
            and q.default is P.empty
            and q.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
        ]
    return problems


def _renderers() -> dict[str, Any]:
    import numpy as np

    from gensyn.drr.physics import PhysicsConfig
    from gensyn.drr.renderers import renderer_for
    from gensyn.drr.settings import ProjectorName

    hu, affine = np.full((4, 5, 6), -1000.0, np.float32), np.diag([2.0, 2.0, 3.0, 1.0])
    # DeepDRR's renderer writes its exchange files into a temporary folder of its own
    return {name: renderer_for(name, hu, affine, PhysicsConfig(), "cpu") for name in ProjectorName}


def test_both_renderers_offer_the_renderer_protocol() -> None:
    """DrrRenderer and DeepDrrRenderer have every member of Renderer, callable as it says
    (mypy checks the types: renderer_for returns both as a Renderer)."""
    from gensyn.drr.deepdrr_adapter import DeepDrrRenderer
    from gensyn.drr.render import DrrRenderer
    from gensyn.drr.renderers import Renderer

    made = _renderers()
    assert {type(r) for r in made.values()} == {DrrRenderer, DeepDrrRenderer}
    for renderer in made.values():
        assert isinstance(renderer, Renderer)  # every member present, attributes included
        assert renderer.prepare([], None) is renderer  # nothing to prepare for no pose
        assert signature_mismatches(type(renderer), Renderer) == []


def test_signature_check_names_what_a_renderer_lacks() -> None:
    from gensyn.drr.renderers import Renderer

    class Partial:
        physics = None

        def prepare(self, poses, geometry):  # no method
            return self

        def render(self, poses, geometry, method="auto", step_mm=None, max_samples=1, flip=0,
                   *, extra):  # fmt: skip
            return None

    # isinstance with a runtime-checkable protocol looks at member names only: hence the check
    assert isinstance(Partial(), Renderer)
    assert signature_mismatches(Partial, Renderer) == [
        "Partial.prepare lacks positional parameter 3 'method'",
        "Partial.render lacks keyword parameter 'seed'",
        "Partial.render lacks keyword parameter 'as_tensor'",
        "Partial.render: extra parameter 'extra' needs a default",
    ]


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


# ---- stages read as short recipes ----------------------------------------------------------------
STAGES = PACKAGE / "stages"
#: a stage's ``run`` fits on one screen (docs/developing.md, ../shared/STYLE.md)
RUN_MAX_LINES = 60
#: what a function-level import in a stage module must say: why it is not at the top
IMPORT_REASON = re.compile(r"#\s*(heavy|optional):\s*\S")
#: packages whose import takes seconds or needs optional extras: never loaded to list the stages
HEAVY_PACKAGES = ("torch", "jax", "keras", "scipy", "matplotlib", "sklearn", "cupy", "wandb",
                  "requests", "label_studio_sdk", "deepdrr")  # fmt: skip


def run_lengths(folder: Path = STAGES) -> dict[str, int]:
    """Lines of each module's top-level ``run`` function (``def`` line to its last line)."""
    lengths = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name == "run":
                assert node.end_lineno is not None
                lengths[path.stem] = node.end_lineno - node.lineno + 1
    return lengths


def unexplained_imports(folder: Path = STAGES) -> list[str]:
    """``file:line: import`` of every import inside a function (a nested one too) whose first
    line lacks a ``# heavy: <what>`` or ``# optional: <what>`` comment."""
    found = []
    for path in sorted(folder.glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        inside = {
            id(sub): sub
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for sub in ast.walk(fn)
            if isinstance(sub, ast.Import | ast.ImportFrom)
        }
        for node in sorted(inside.values(), key=lambda n: n.lineno):
            line = lines[node.lineno - 1]
            if not IMPORT_REASON.search(line):
                found.append(f"{path.name}:{node.lineno}: {line.strip()}")
    return found


def test_every_stage_run_fits_on_one_screen() -> None:
    """A stage's ``run`` is its recipe (inputs, settings, the calls into the science package,
    outputs); the steps are helpers."""
    lengths = run_lengths()
    assert len(lengths) >= 16, f"found only the stages {sorted(lengths)}"
    long = {name: n for name, n in lengths.items() if n > RUN_MAX_LINES}
    assert not long, f"stage run() over {RUN_MAX_LINES} lines: {long}"


def test_stage_imports_are_at_the_top_unless_heavy_or_optional() -> None:
    found = unexplained_imports()
    assert not found, (
        "imports inside functions of gensyn/stages without '# heavy: <what>' or "
        "'# optional: <what>' (else move them to the top): " + "; ".join(found)
    )


def test_recipe_checks_find_a_long_run_and_an_unexplained_import(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(RUN_MAX_LINES))
    (tmp_path / "long.py").write_text(f"def run(cfg, ctx):\n{body}")
    (tmp_path / "short.py").write_text(
        "import os\n\n\n"
        "def run(cfg, ctx):\n"
        "    import torch  # heavy: torch\n"
        "    from json import (  # optional: not really\n"
        "        dumps,\n"
        "    )\n"
        "    import math\n"
        "    def inner():\n"
        "        import csv  # heavy:\n"
        "    return os, torch, dumps, math, inner\n"
    )
    assert run_lengths(tmp_path) == {"long": RUN_MAX_LINES + 1, "short": 9}
    assert unexplained_imports(tmp_path) == [
        "short.py:9: import math",
        "short.py:11: import csv  # heavy:",
    ]


def test_listing_the_stages_loads_no_heavy_package() -> None:
    """What the comments promise: every stage module loads without torch, keras/jax, scipy,
    requests ... (``launch.py`` imports them all to list and check the stages)."""
    code = (
        "import sys\n"
        "from gensyn.registry import load_stages\n"
        "load_stages()\n"
        f"print(sorted(p for p in {HEAVY_PACKAGES!r} if p in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", f"loading the stages imported {out.stdout.strip()}"
