"""One parameter validator for stages, filters, ingest inputs and training settings.

Every configurable thing declares ``defaults`` (the complete set of accepted
names) and, optionally, ``checks`` (name -> check). :func:`validate` merges a
config's values over the defaults and fails with one line naming the owner, the
key, what was expected and -- for a typo -- the nearest valid name. A value
left at its default is not checked (defaults may be ``None`` = "not set").

With ``infer=True`` (every filter and stage) a parameter without a check is
checked against its default: a ``bool`` default takes a bool, an ``int`` one a
whole number (``2.7`` is refused, not rounded), a ``float`` one any number, a
``str`` one a string, a list one a list; a ``min_*``/``max_*`` bound whose
default is not negative cannot be negative; and ``min_X <= max_X`` whenever both
exist. Nothing is coerced: a value is used exactly as written or refused.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Mapping

from pipeline.errors import ConfigProblem

#: A check returns None when the value is fine, else what was expected ("a number in [0, 1]").
Check = Callable[[Any], "str | None"]


class ParamError(ConfigProblem, ValueError):
    """A config value that winnow cannot accept."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> Check:
    """A number (or, with ``integer``, a whole number) in [lo, hi] (or an open end)."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    what = "an integer" if integer else "a number"

    def check(v: Any) -> str | None:
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number(v)
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        return None if ok else f"{what} in {left}{lo:g}, {hi:g}{right}"

    return check


def at_least(lo: float, *, integer: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number(v)
        return None if ok and v >= lo else f"{'an integer' if integer else 'a number'} >= {lo:g}"

    return check


def one_of(*values: Any) -> Check:
    def check(v: Any) -> str | None:
        return None if v in values else "one of " + ", ".join(repr(x) for x in values)

    return check


def of_type(*types: type, name: str | None = None) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        return None if ok else (name or " or ".join(t.__name__ for t in types))

    return check


def list_of(*types: type, name: str | None = None) -> Check:
    """A list whose items are all of ``types`` (``languages: en`` is a string, not a list of one)."""
    what = name or "a list of " + " or ".join(t.__name__ for t in types)

    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and all(isinstance(x, types) and not isinstance(x, bool) for x in v)
        return None if ok else what

    return check


def inferred(default: Any) -> Check | None:
    """The check a default implies (None: nothing can be inferred, e.g. a default of ``None``)."""
    if isinstance(default, bool):
        return of_type(bool, name="true or false")
    if isinstance(default, int):
        return of_type(int, name="a whole number")
    if isinstance(default, float):
        return lambda v: None if _is_number(v) else "a number"
    if isinstance(default, str):
        return of_type(str, name="a string")
    if isinstance(default, (list, tuple)):
        item_types = {type(x) for x in default}
        if item_types and item_types <= {str}:
            return list_of(str)
        return of_type(list, name="a list")
    if isinstance(default, dict):
        return of_type(dict, name="a mapping")
    return None


def _bound_problem(key: str, value: Any, default: Any) -> str | None:
    """A ``min_``/``max_`` bound whose default is not negative must not be negative."""
    if key.startswith(("min_", "max_")) and _is_number(value) and _is_number(default) and default >= 0 > value:
        return "not negative"
    return None


def optional(check: Check) -> Check:
    """``None`` (not set) or a value passing ``check``."""
    return lambda v: None if v is None else check(v)


def nearest(name: str, known: list[str] | set[str]) -> str:
    near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean `{near[0]}`?)" if near else ""


def validate(owner: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any],
             checks: Mapping[str, Check] | None = None, allow_unknown: bool = False,
             noun: str = "parameter", infer: bool = False) -> dict[str, Any]:
    """``{**defaults, **given}`` after checking every given name and value; :class:`ParamError` otherwise.

    ``infer``: check parameters without an explicit check against their default's type, bounds and
    ``min_X <= max_X`` pairs (see the module docstring).
    """
    if given is not None and not isinstance(given, Mapping):
        raise ParamError(f"{owner}: expected a mapping of {noun}s, got {type(given).__name__}")
    given = dict(given or {})
    for key in given:
        if not isinstance(key, str):
            raise ParamError(f"{owner}: {noun} names are strings, got {key!r}")
    if not allow_unknown:
        for key in given:
            if key not in defaults:
                known = ", ".join(sorted(defaults)) or "(none)"
                raise ParamError(f"{owner}: unknown {noun} `{key}`{nearest(key, set(defaults))}; known: {known}")
    for key, value in given.items():
        default = defaults.get(key, object())
        check = (checks or {}).get(key)
        if check is None and infer:
            check = inferred(default)
        if check is None or (value == default and type(value) is type(default)):
            continue
        expected = check(value) or (_bound_problem(key, value, default) if infer else None)
        if expected:
            raise ParamError(f"{owner}: `{key}` must be {expected}, got {value!r}")
    merged = {**defaults, **given}
    if infer:
        for key in given:
            lo, hi = ("min_" + key[4:], key) if key.startswith("max_") else (key, "max_" + key[4:])
            if key.startswith(("min_", "max_")) and lo in merged and hi in merged \
                    and _is_number(merged[lo]) and _is_number(merged[hi]) and merged[lo] > merged[hi]:
                raise ParamError(f"{owner}: `{lo}` ({merged[lo]!r}) must not exceed `{hi}` ({merged[hi]!r})")
    return merged
