"""One parameter validator for stages, filters, ingest inputs and training settings.

Every configurable thing declares ``defaults`` (the complete set of accepted
names) and, optionally, ``checks`` (name -> check). :func:`validate` merges a
config's values over the defaults and fails with one line naming the owner, the
key, what was expected and -- for a typo -- the nearest valid name. A value
left at its default is not checked (defaults may be ``None`` = "not set").
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Mapping

#: A check returns None when the value is fine, else what was expected ("a number in [0, 1]").
Check = Callable[[Any], "str | None"]


class ParamError(ValueError):
    """A config value that winnow cannot accept."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A number in [lo, hi] (or an open end)."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"

    def check(v: Any) -> str | None:
        ok = _is_number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        return None if ok else f"a number in {left}{lo:g}, {hi:g}{right}"

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


def optional(check: Check) -> Check:
    """``None`` (not set) or a value passing ``check``."""
    return lambda v: None if v is None else check(v)


def nearest(name: str, known: list[str] | set[str]) -> str:
    near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean `{near[0]}`?)" if near else ""


def validate(owner: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any],
             checks: Mapping[str, Check] | None = None, allow_unknown: bool = False,
             noun: str = "parameter") -> dict[str, Any]:
    """``{**defaults, **given}`` after checking every given name and value; :class:`ParamError` otherwise."""
    given = dict(given or {})
    if not allow_unknown:
        for key in given:
            if key not in defaults:
                known = ", ".join(sorted(defaults)) or "(none)"
                raise ParamError(f"{owner}: unknown {noun} `{key}`{nearest(key, set(defaults))}; known: {known}")
    for key, value in given.items():
        check = (checks or {}).get(key)
        if check is None or value == defaults.get(key, object()):
            continue
        expected = check(value)
        if expected:
            raise ParamError(f"{owner}: `{key}` must be {expected}, got {value!r}")
    return {**defaults, **given}
