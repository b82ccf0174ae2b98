"""What a setting allows and whether it is hashed, declared once next to the field.

A settings field is declared with :func:`bounded` instead of a bare default::

    kvp: float = bounded(90.0, ge=20, le=300)  # tube voltage, kV
    window_percentiles: list[float] = bounded(
        factory=lambda: [0.5, 99.5], ge=0, le=100, length=2, order="<"
    )

The :class:`Bounds` travel in the field's metadata; Hydra and OmegaConf ignore them, and the
start-up check (:func:`gensyn.app.startup.check_bounds`) reads them from the schema. Every float
setting must be finite (NaN and infinities give garbage, not errors, deep inside a stage)
unless its bounds say ``finite=False``. Bounds hold for a scalar or for each element of a
list; ``length`` and ``order`` are about the list itself; ``above`` names a sibling field
that this one must exceed (``bone_min_hu`` above ``air_max_hu``).

A setting that never changes a result (worker counts, prefetch depth, caches, a local
interpreter's path, a time-out) is declared with :func:`unhashed`, with bounds or without::

    num_workers: int = unhashed(4, ge=1)  # parallel downloads
    cache: str = unhashed("auto")  # decode-once image cache folder

It is left out of every run hash, wherever its group sits in a hashed key
(:func:`gensyn.core.runs.stage_identity` reads the mark from the schema); a stage that names
such a key in its ``config_keys`` is an error. :func:`hashed_field_names` lists the fields
of a schema that are hashed, for stages that hash a group field by field.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BOUNDS_KEY",
    "HASHED_KEY",
    "Bounds",
    "bounded",
    "check_instance",
    "field_bounds",
    "hashed_field_names",
    "is_hashed",
    "unhashed",
    "unhashed_field_names",
    "unhashed_paths",
]

#: The key of :class:`Bounds` in a dataclass field's metadata.
BOUNDS_KEY = "gensyn_bounds"
#: The key in a dataclass field's metadata that says whether run hashes include the field
#: (absent: they do).
HASHED_KEY = "gensyn_hashed"


@dataclass(frozen=True)
class Bounds:
    """What a number (or each number of a list) may be, and what the list must look like."""

    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    lt: float | None = None  # value < lt
    choices: tuple[float, ...] = ()  # one of these (e.g. bit depths 8, 16)
    finite: bool = True  # NaN and +-inf refused
    length: int | None = None  # a list's exact length
    order: str = ""  # a list's order: "<" strictly increasing, "<=" non-decreasing
    above: str = ""  # a sibling field this one must be greater than
    or_zero: bool = False  # 0 is allowed too, besides the range (0 = off)
    allowed: str = ""  # the words after "allowed:" (default: written from the bounds)

    def __post_init__(self) -> None:
        if self.order not in ("", "<", "<="):
            raise ValueError(f"Bounds.order={self.order!r}; allowed: '', '<', '<='")

    def number_ok(self, value: float) -> bool:
        """Whether one number lies within these bounds (NaN never does)."""
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.finite and isinstance(value, float) and math.isinf(value):
            return False
        if self.choices and value not in self.choices:
            return False
        if self.or_zero and value == 0:
            return True
        return not (
            (self.ge is not None and not value >= self.ge)
            or (self.gt is not None and not value > self.gt)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
        )

    def list_ok(self, values: Sequence[float]) -> bool:
        """Whether a list has the right length and order (its numbers checked apart)."""
        if self.length is not None and len(values) != self.length:
            return False
        pairs = list(itertools.pairwise(values))
        if self.order == "<":
            return all(a < b for a, b in pairs)
        if self.order == "<=":
            return all(a <= b for a, b in pairs)
        return True

    def describe(self, key: str, is_list: bool, is_int: bool) -> str:
        """The words after ``allowed:`` for the setting ``key``."""
        if self.allowed:
            return self.allowed
        name = "each value" if is_list else key
        if self.choices:
            text = " or ".join(f"{c:g}" for c in self.choices)
        elif is_int and self.gt is None and self.lt is None and (self.ge, self.le) != (None, None):
            if self.le is None:
                text = f"{self.ge:g} or more"
            elif self.ge is None:
                text = f"{self.le:g} or less"
            else:
                text = f"{self.ge:g} .. {self.le:g}"
        else:
            low = f"{self.ge:g} <= " if self.ge is not None else ""
            low = f"{self.gt:g} < " if self.gt is not None else low
            high = f" <= {self.le:g}" if self.le is not None else ""
            high = f" < {self.lt:g}" if self.lt is not None else high
            text = f"{low}{name}{high}" if low or high else ""
            if not is_int and self.finite:
                text = f"{text} (finite)" if text else "a finite number"
        if is_list:
            parts = [text] if text else []
            if self.length is not None:
                parts.insert(0, f"{self.length} value{'s' if self.length != 1 else ''}")
            if self.order and self.length == 2:
                parts.append(f"[low, high] with low {self.order} high")
            elif self.order:
                parts.append("increasing" if self.order == "<" else "non-decreasing")
            text = "; ".join(parts)
        return text


def _field(default: Any, factory: Callable[[], Any] | None, meta: dict[str, Any]) -> Any:
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    **bounds: Any,
) -> Any:
    """A dataclass field with ``default`` (or ``factory``) and :class:`Bounds` ``bounds``."""
    return _field(default, factory, {BOUNDS_KEY: Bounds(**bounds)})


def unhashed(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    **bounds: Any,
) -> Any:
    """A dataclass field that no run hash includes (it never changes a result), with
    ``default`` (or ``factory``) and, when given, :class:`Bounds` ``bounds``."""
    meta: dict[str, Any] = {HASHED_KEY: False}
    if bounds:
        meta[BOUNDS_KEY] = Bounds(**bounds)
    return _field(default, factory, meta)


def field_bounds(field: dataclasses.Field[Any]) -> Bounds | None:
    """The bounds declared on ``field``, or None."""
    found = field.metadata.get(BOUNDS_KEY)
    return found if isinstance(found, Bounds) else None


def is_hashed(field: dataclasses.Field[Any]) -> bool:
    """Whether run hashes include ``field`` (False for fields declared with :func:`unhashed`)."""
    return bool(field.metadata.get(HASHED_KEY, True))


def hashed_field_names(schema: type) -> tuple[str, ...]:
    """The fields of dataclass ``schema`` that run hashes include, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(schema) if is_hashed(f))


def unhashed_field_names(schema: type) -> frozenset[str]:
    """The fields of dataclass ``schema`` declared with :func:`unhashed`."""
    return frozenset(f.name for f in dataclasses.fields(schema) if not is_hashed(f))


def unhashed_paths(schema: type, prefix: str = "") -> frozenset[str]:
    """The dotted keys below dataclass ``schema`` declared with :func:`unhashed`, at every
    depth (``dataset.demo.num_workers``); a ``dict[str, Schema]`` field's entries show as
    ``<field>.*``."""
    found: set[str] = set()
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if not is_hashed(f):
            found.add(key)
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            found |= unhashed_paths(kind, f"{key}.")  # type: ignore[arg-type]
        elif typing.get_origin(kind) is dict:
            value = typing.get_args(kind)[-1]
            if dataclasses.is_dataclass(value):
                found |= unhashed_paths(value, f"{key}.*.")  # type: ignore[arg-type]
    return frozenset(found)


def check_instance(settings: Any, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the key, its value and what is allowed for the first field of
    the dataclass instance ``settings`` outside its declared bounds (None values pass).

    For settings built in Python, not from a config (which start-up checks the same way);
    ``prefix`` is how the error names the key (``projector.``). Values that are not numbers
    (an interpolation such as ``${num_workers}`` in a schema's default) are left to start-up.
    """
    for f in dataclasses.fields(settings):
        bounds = field_bounds(f)
        value = getattr(settings, f.name)
        if bounds is None or value is None:
            continue
        is_list = isinstance(value, list | tuple)
        numbers = list(value) if is_list else [value]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            continue  # not numbers (e.g. a schema default ``${num_workers}``): checked elsewhere
        ok = all(bounds.number_ok(v) for v in numbers) and (not is_list or bounds.list_ok(numbers))
        if not ok:
            is_int = all(isinstance(v, int) for v in numbers)
            allowed = bounds.describe(f"{prefix}{f.name}", is_list, is_int)
            raise ValueError(f"{prefix}{f.name}={value}; allowed: {allowed}")
        floor = getattr(settings, bounds.above) if bounds.above else None
        if floor is not None and not value > floor:
            raise ValueError(
                f"{prefix}{f.name}={value}; allowed: more than {prefix}{bounds.above}={floor}"
            )
