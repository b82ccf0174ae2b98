"""Settings declared more than once (issue 38's measure; run: ``PYTHONPATH=$PWD python
scripts/count_duplicate_settings.py``), by introspection of the live schema.

For every field of every schema dataclass reachable from gensyn.config.Config, the places that
declare it: the class of the schema's MRO whose body has it (one place), plus every other
dataclass in gensyn (outside that MRO) whose body declares the same name, or the name without
a ``<prefix>_`` matching the class name (``deepdrr_threads`` -> DeepDrrSettings.threads), and
every public function whose parameters with defaults include it; a class or function counts
only if it shares >= 3 such names with the schema class (a twin). Reported per schema class.
Allowed-value lists: Enum classes and module-level tuples of >= 2 strings with the same set.
"""

import contextlib
import dataclasses
import importlib
import inspect
import pkgutil
import typing
from collections import defaultdict
from enum import Enum

import gensyn
from gensyn.config import Config

mods = []
for m in pkgutil.walk_packages(gensyn.__path__, "gensyn."):
    if (
        m.name.startswith(("gensyn.stages", "gensyn.tracking."))
        or m.name.endswith("__main__")
        or "deepdrr_worker" in m.name
    ):
        continue
    with contextlib.suppress(Exception):  # a module needing an optional package: left out
        mods.append(importlib.import_module(m.name))

classes, funcs = {}, {}
for mod in mods:
    for name, obj in vars(mod).items():
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
            own = set(inspect.get_annotations(obj))
            classes[f"{mod.__name__}.{name}"] = (obj, own)
        elif inspect.isfunction(obj) and not name.startswith("_"):
            try:
                sig = inspect.signature(obj)
            except Exception:
                continue
            funcs[f"{mod.__name__}.{name}()"] = {
                p.name for p in sig.parameters.values() if p.default is not p.empty
            }
        if inspect.isclass(obj) and not dataclasses.is_dataclass(obj):
            for mname, meth in vars(obj).items():
                if inspect.isfunction(meth) and not mname.startswith("_"):
                    sig = inspect.signature(meth)
                    funcs[f"{mod.__name__}.{name}.{mname}()"] = {
                        p.name for p in sig.parameters.values() if p.default is not p.empty
                    }


def schemas(cls, seen):
    if cls in seen:
        return
    seen.append(cls)
    for f in dataclasses.fields(cls):
        t = typing.get_type_hints(cls)[f.name]
        for c in [t, *typing.get_args(t)]:
            if inspect.isclass(c) and dataclasses.is_dataclass(c):
                schemas(c, seen)


found = []
schemas(Config, found)
GENERIC = {"name", "seed", "num_workers"}
total = 0
report = []
for S in found[1:]:
    names = {f.name for f in dataclasses.fields(S)} - GENERIC
    mro = set(S.__mro__)
    twice = set()
    for key, (obj, own) in classes.items():
        if obj in mro or issubclass(obj, S):
            continue
        prefix = obj.__name__.lower()
        match = {
            n
            for n in names
            if n in own
            or ("_" in n and prefix.startswith(n.split("_")[0]) and n.split("_", 1)[1] in own)
        }
        if len(match) >= 3:
            twice |= match
            report.append(f"  {S.__name__} ~ {key}: {sorted(match)}")
    for key, params in funcs.items():
        match = names & params
        if len(match) >= 3:
            twice |= match
            report.append(f"  {S.__name__} ~ {key}: {sorted(match)}")
    if twice:
        report.append(f"{S.__name__}: {len(twice)} declared twice")
    total += len(twice)

sets = defaultdict(list)
for mod in mods:
    for name, obj in vars(mod).items():
        if inspect.isclass(obj) and issubclass(obj, Enum) and obj.__module__ == mod.__name__:
            vals = [str(m.value) for m in obj]
            if len(vals) >= 2:
                sets[frozenset(vals)].append(f"{mod.__name__}.{name}")
        elif (
            name.isupper()
            and isinstance(obj, tuple)
            and len(obj) >= 2
            and all(isinstance(v, str) for v in obj)
        ):
            sets[frozenset(obj)].append((id(obj), f"{mod.__name__}.{name}"))
# one entry per distinct object (a name imported elsewhere is the same declaration)
for k, v in sets.items():
    seen = {}
    for item in v:
        key, label = item if isinstance(item, tuple) else (item, item)
        seen.setdefault(key, label)
    sets[k] = list(seen.values())
copies = {k: sorted(v) for k, v in sets.items() if len(v) > 1}
print("\n".join(report))
print(f"TOTAL settings declared twice: {total}")
print(f"allowed-value lists copied: {sum(len(v) - 1 for v in copies.values())}")
for k, v in copies.items():
    print(f"  {sorted(k)}: {v}")
