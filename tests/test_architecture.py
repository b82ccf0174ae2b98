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
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gensyn"
CORE = ("gensyn.core.registry", "gensyn.core.runs", "gensyn.core.run_context", "gensyn.tracking")


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


def import_graph(
    package: Path = PACKAGE,
    type_checking: bool = False,
    extra: tuple[Path, ...] = (),
    parents: bool = True,
) -> dict[str, set[str]]:
    """``{module: gensyn modules it imports}`` for every module of ``package`` and the files
    ``extra`` (imports made for type checking only count where ``type_checking``; the
    packages an import runs on the way, ``gensyn.a`` of ``import gensyn.a.b``, where
    ``parents``)."""
    # A name `from gensyn.x import y` brings in is an edge only where gensyn.x.y is a module.
    files = {module_name(p): p for p in [*sorted(package.rglob("*.py")), *extra]}
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
                named = i == len(parts)
                if candidate in files and candidate != name and not implied and (parents or named):
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
    assert "gensyn.core.registry" in graph["gensyn.core.runs"]  # module level
    assert "gensyn.tracking" in graph["gensyn.core.runs"]  # inside _run_in
    assert "gensyn.base.io" in graph["gensyn.core.runs"]  # `from gensyn import io`
    # TYPE_CHECKING imports are not edges: the registry names RunContext only for typing
    assert "gensyn.core.run_context" not in graph["gensyn.core.registry"]


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
    assert {
        "gensyn.core.registry",
        "gensyn.core.runs",
        "gensyn.core.run_context",
        "gensyn.tracking",
    } <= core
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
SCIENCE_NEVER = (
    "gensyn.config",
    "gensyn.core.runs",
    "gensyn.core.registry",
    "gensyn.app.cli",
    "gensyn.stages",
)


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


@pytest.mark.parametrize("module", ["gensyn.core.run_context"])
def test_run_context_imports_nothing_from_gensyn(module: str) -> None:
    assert import_graph()[module] == set()


def test_tracking_never_imports_runs_or_data() -> None:
    graph = import_graph()
    for name in sorted(m for m in graph if m.startswith("gensyn.tracking")):
        bad = {t for t in graph[name] if t == "gensyn.core.runs" or t.startswith("gensyn.data")}
        assert not bad, f"{name} imports {sorted(bad)}"


# ---- the code holds to docs/architecture.json ------------------------------------------------
WHITEBOARD = ROOT / "docs" / "architecture.json"
WHITEBOARD_KEYS = {"parts", "ideas", "arrows", "never", "notes"}


def architecture_files(root: Path | None = None) -> list[str]:
    """Every Python file the architecture covers, relative to ``root``: the package, the
    Hydra plugins and ``launch.py`` (tests, benchmarks and scripts are outside it)."""
    root = ROOT if root is None else root
    found = [*(root / "gensyn").rglob("*.py"), *(root / "hydra_plugins").rglob("*.py")]
    found += [p for p in [root / "launch.py"] if p.is_file()]
    return sorted(p.relative_to(root).as_posix() for p in found)


def part_of(file: str, parts: dict[str, Any]) -> str | None:
    """The part holding ``file``: the one whose path names it longest (a file, or a folder
    ending in ``/``), so ``gensyn/app/launcher.py`` beside ``gensyn/app/`` is its own part's."""
    best: tuple[int, str] | None = None
    for name, part in parts.items():
        for path in part["is"]:
            if (file == path or (path.endswith("/") and file.startswith(path))) and (
                best is None or len(path) > best[0]
            ):
                best = (len(path), name)
    return best[1] if best else None


def file_graph(root: Path | None = None, type_checking: bool = False) -> dict[str, set[str]]:
    """``{file: files it imports}`` over :func:`architecture_files` (paths as in the JSON).

    Only what an import names is an edge: ``from gensyn.core.run_context import X`` ties its
    file to ``gensyn/core/run_context.py``, not to ``gensyn/core/__init__.py`` that Python
    runs on the way (``import gensyn.core`` would)."""
    global ROOT
    root = ROOT if root is None else root
    old, ROOT = ROOT, root
    try:
        extra = tuple(root / f for f in architecture_files(root) if not f.startswith("gensyn/"))
        modules = import_graph(root / "gensyn", type_checking, extra, parents=False)
    finally:
        ROOT = old
    path_of = {module_name(root / f, root): f for f in architecture_files(root)}
    return {path_of[m]: {path_of[t] for t in targets} for m, targets in modules.items()}


def whiteboard_problems(board: dict[str, Any], graph: dict[str, set[str]]) -> list[str]:
    """How the code (``graph``, from :func:`file_graph`) and ``board`` differ: a file on no
    part, a path listed twice or naming nothing, an arrow between parts that is not drawn or
    a drawn one the code lacks, a never that the code breaks (with the files), a never that
    is drawn as an arrow too, a part name an arrow or never does not know."""
    problems = [f"unknown key {k!r} (allowed: {sorted(WHITEBOARD_KEYS)})" for k in board
                if k not in WHITEBOARD_KEYS]  # fmt: skip
    parts = board["parts"]
    listed = [path for part in parts.values() for path in part["is"]]
    problems += [f"{p} is listed twice" for p in sorted({p for p in listed if listed.count(p) > 1})]
    problems += [
        f"{p} names no file of the architecture"
        for p in listed
        if not any(f == p or (p.endswith("/") and f.startswith(p)) for f in graph)
    ]
    on = {f: part_of(f, parts) for f in graph}
    problems += [f"{f} is on no part" for f, part in on.items() if part is None]
    named = {*parts, *board.get("ideas", {})}
    for a, b, *_ in [*board.get("arrows", []), *board.get("never", [])]:
        problems += [f"{x!r} is no part or idea" for x in (a, b) if x not in named]
    found: dict[tuple[str, str], list[str]] = {}
    for f, targets in graph.items():
        for t in targets:
            if on[f] and on[t] and on[f] != on[t]:
                found.setdefault((on[f], on[t]), []).append(f"{f} -> {t}")
    drawn = {(a, b) for a, b, *_ in board.get("arrows", [])}
    ideas = set(board.get("ideas", {}))
    for a, b, *why in board.get("never", []):
        if (a, b) in found:
            problems.append(f"never {a} -> {b} ({why[0] if why else ''}) BROKEN: "
                            + "; ".join(sorted(found[a, b])))  # fmt: skip
        if (a, b) in drawn:
            problems.append(f"{a} -> {b} is drawn as an arrow and as a never")
    problems += [
        f"UNDRAWN arrow {a} -> {b}: " + "; ".join(sorted(files)[:3])
        for (a, b), files in sorted(found.items())
        if (a, b) not in drawn and (a, b) not in {(n[0], n[1]) for n in board.get("never", [])}
    ]
    problems += [
        f"arrow {a} -> {b} NOT FOUND in the code"
        for a, b in sorted(drawn)
        if (a, b) not in found and a not in ideas and b not in ideas
    ]
    return problems


def test_the_code_holds_to_docs_architecture_json() -> None:
    """Every file on exactly one part, every import between parts drawn (and every drawn arrow
    real), every never kept. Imports made for type checking only count too: they tie the
    designs of two parts together as much as any other."""
    board = json.loads(WHITEBOARD.read_text(encoding="utf-8"))
    problems = whiteboard_problems(board, file_graph(type_checking=True))
    assert not problems, (
        "docs/architecture.json and the code differ (an intended new dependency between parts is "
        "drawn there, in the same commit; a broken never is a design question, not an arrow to "
        "add):\n" + "\n".join(problems)
    )


def test_whiteboard_check_names_each_kind_of_difference(tmp_path: Path) -> None:
    files = {
        "gensyn/__init__.py": "",
        "gensyn/orphan.py": "",
        "gensyn/app/__init__.py": "",
        "gensyn/app/cli.py": "from gensyn.core import runs\n",
        "gensyn/app/launcher.py": "import gensyn.base.io\n",
        "gensyn/core/__init__.py": "",
        "gensyn/core/runs.py": "from gensyn.base.io import atomic\n",
        "gensyn/base/__init__.py": "",
        "gensyn/base/io.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gensyn.drr import geometry\n",
        "gensyn/drr/__init__.py": "",
        "gensyn/drr/geometry.py": "def f():\n    import gensyn.core.runs\n",
        "hydra_plugins/x/__init__.py": "",
        "hydra_plugins/x/y.py": "import gensyn.app\nfrom gensyn.app.launcher import L\n",
        "launch.py": "from gensyn.app.cli import main\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    board: dict[str, Any] = {
        "parts": {
            "App": {"is": ["gensyn/app/", "launch.py"]},
            "Launcher": {"is": ["gensyn/app/launcher.py", "hydra_plugins/"]},
            "Core": {"is": ["gensyn/core/"]},
            "Base": {"is": ["gensyn/base/", "gensyn/__init__.py", "gensyn/gone.py"]},
            "DRR": {"is": ["gensyn/drr/"]},
        },
        "arrows": [["App", "Core"], ["Core", "Base"], ["App", "Base"], ["Stages", "Core"]],
        "never": [["DRR", "Core", "no run folders"], ["Base", "DRR", "leaf"], ["Core", "Base"]],
        "colours": {},
    }
    graph = file_graph(tmp_path)
    assert sorted(graph) == sorted(files)
    # what an import names, not the packages Python runs on the way
    assert graph["gensyn/drr/geometry.py"] == {"gensyn/core/runs.py"}
    assert graph["launch.py"] == {"gensyn/app/cli.py"}
    assert graph["gensyn/app/cli.py"] == {"gensyn/core/__init__.py", "gensyn/core/runs.py"}
    assert graph["gensyn/base/io.py"] == set()  # for type checking only
    assert part_of("gensyn/app/launcher.py", board["parts"]) == "Launcher"  # the longer path
    assert part_of("gensyn/app/cli.py", board["parts"]) == "App"
    assert whiteboard_problems(board, graph) == [
        "unknown key 'colours' (allowed: ['arrows', 'ideas', 'never', 'notes', 'parts'])",
        "gensyn/gone.py names no file of the architecture",
        "gensyn/orphan.py is on no part",
        "'Stages' is no part or idea",
        "never DRR -> Core (no run folders) BROKEN: gensyn/drr/geometry.py -> gensyn/core/runs.py",
        "never Core -> Base () BROKEN: gensyn/core/runs.py -> gensyn/base/io.py",
        "Core -> Base is drawn as an arrow and as a never",
        "UNDRAWN arrow Launcher -> App: hydra_plugins/x/y.py -> gensyn/app/__init__.py",
        "UNDRAWN arrow Launcher -> Base: gensyn/app/launcher.py -> gensyn/base/io.py",
        "arrow App -> Base NOT FOUND in the code",
        "arrow Stages -> Core NOT FOUND in the code",
    ]
    typed = whiteboard_problems(board, file_graph(tmp_path, type_checking=True))
    assert (  # `from gensyn.drr import geometry` names both
        "never Base -> DRR (leaf) BROKEN: gensyn/base/io.py -> gensyn/drr/__init__.py; "
        "gensyn/base/io.py -> gensyn/drr/geometry.py"
    ) in typed


# ---- the stage registry and the stage config group agree --------------------------------------
def test_every_stage_has_its_yaml_and_every_yaml_a_stage() -> None:
    from gensyn.core.confdir import CONF_DIR
    from gensyn.core.registry import check_stage_configs, load_stages, stage_config_names

    stages = load_stages()  # checks once; here again, explicitly
    check_stage_configs(stages, CONF_DIR / "stage")
    own = {n for n, s in stages.items() if s.func.__module__.startswith("gensyn.stages.")}
    assert set(stage_config_names(CONF_DIR / "stage")) == own | {"list"}


def test_a_yaml_without_a_stage_and_a_stage_without_a_yaml_are_named(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from gensyn.base.errors import GensynError
    from gensyn.core.confdir import CONF_DIR
    from gensyn.core.registry import check_stage_configs, load_stages

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
        [sys.executable, "-c", "from gensyn.app.cli import main; main()", "stage=list"],
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
        "from gensyn.core.registry import load_stages\n"
        "load_stages()\n"
        f"print(sorted(p for p in {HEAVY_PACKAGES!r} if p in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", f"loading the stages imported {out.stdout.strip()}"
