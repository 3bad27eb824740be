"""One registry for everything a config names by kind: stages and filters.

A name resolves, in order, to

1. something registered in this process (``@register_filter`` / ``@register_stage``,
   handy in a notebook or a test);
2. an entry point of the group (``winnow.stages`` / ``winnow.filters``) of any
   installed distribution -- winnow's own built-ins are declared exactly so in
   its ``pyproject.toml``, so a plug-in package is found the same way;
3. a ``package.module:Name`` reference, imported from ``sys.path`` -- after a
   check that needs no import (:func:`plugin_problem`): never a standard-library
   module, and ``Name`` bound at the module's top level, not as a plain ``def``.

Whatever is found must pass the registry's ``accept`` check (a Stage subclass,
or a Filter subclass -- a function becomes one with ``@function_filter``), so a
config cannot make winnow call an arbitrary callable (``kind: os:system``,
``os:popen`` as a filter) or run a module's import side effects (``this:s``).
Errors are one line and name the nearest known names.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from pipeline.errors import ConfigProblem


class RegistryError(ConfigProblem, KeyError):
    """An unknown name, an unimportable reference or an object of the wrong kind."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    #: Where it came from: "registered", the distribution of an entry point, or "module:attr".
    origin: str


class Registry:
    """Names -> objects of one kind, with entry points and ``module:attr`` references.

    ``accept(obj, ref)`` returns the object to register (possibly adapted, e.g. a
    function wrapped as a Filter) or raises ``TypeError`` saying what was expected.
    """

    def __init__(self, group: str, what: str, accept: Callable[[Any, str], Any]):
        self.group = group
        self.what = what
        self.accept = accept
        self._registered: dict[str, Entry] = {}
        self._eps: dict | None = None
        self._loaded: dict[str, Entry] = {}

    def register(self, name: str, obj: Any, origin: str = "registered") -> None:
        self._registered[name] = Entry(name, obj, origin)

    def register_kind(self, cls: type) -> type:
        """``@register_stage`` / ``@register_task``: register a class in this process under its ``kind``."""
        if not getattr(cls, "kind", None):
            raise ValueError(f"{cls.__name__} needs a `kind`")
        self.register(cls.kind, self.accept(cls, cls.__name__))
        return cls

    def _declared(self) -> dict:
        """Entry points of the group by name, not yet loaded (the first distribution wins a duplicate name)."""
        if self._eps is None:
            self._eps = {}
            for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
                self._eps.setdefault(ep.name, ep)
        return self._eps

    def _load(self, name: str) -> Entry | None:
        """Load one entry point on first use: a lookup imports only the module it names."""
        if name not in self._loaded:
            ep = self._declared().get(name)
            if ep is None:
                return None
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            try:
                obj = self.accept(ep.load(), f"{ep.name} = {ep.value}")
            except (ImportError, AttributeError, TypeError) as e:
                obj = _Broken(f"{self.what} {ep.name!r} (entry point {ep.value} of {dist}) cannot be loaded: "
                              f"{type(e).__name__}: {e}")
            self._loaded[name] = Entry(name, obj, dist)
        return self._loaded[name]

    def get(self, ref: str) -> Any:
        if not isinstance(ref, str) or not ref:
            raise RegistryError(f"{self.what} must be named by a string, got {ref!r}")
        if ref in self._registered:
            return self._registered[ref].obj
        if ":" in ref:
            return self._import(ref)
        entry = self._load(ref)
        if entry is None:
            known = sorted(self.names())
            near = difflib.get_close_matches(ref, known, n=3)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            raise RegistryError(f"unknown {self.what} {ref!r}{hint} (known: {', '.join(known)}; "
                                f"or `package.module:Name` for your own)")
        if isinstance(entry.obj, _Broken):
            raise RegistryError(entry.obj.message)
        return entry.obj

    def _import(self, ref: str) -> Any:
        mod, _, attr = ref.partition(":")
        if not _DOTTED.fullmatch(mod) or not _IDENT.fullmatch(attr):
            raise RegistryError(f"{self.what} reference {ref!r}: expected `package.module:Name`, importable "
                                f"from the Python path (not a file path)")
        problem = plugin_problem(mod, attr, self.what)  # before importing: a module's import may have side effects
        if problem:
            raise RegistryError(f"{self.what} reference {ref!r}: {problem}")
        try:
            module = importlib.import_module(mod)
        except ImportError as e:
            raise RegistryError(f"{self.what} reference {ref!r}: cannot import module {mod!r} ({e})") from None
        except Exception as e:  # noqa: BLE001 - the user's module failed while importing
            raise RegistryError(f"{self.what} reference {ref!r}: importing module {mod!r} failed: "
                                f"{type(e).__name__}: {e}") from None
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise RegistryError(f"{self.what} reference {ref!r}: module {mod!r} has no attribute {attr!r}") from None
        try:
            return self.accept(obj, ref)
        except TypeError as e:
            raise RegistryError(f"{self.what} reference {ref!r}: {e}") from None

    def names(self) -> list[str]:
        return sorted(set(self._registered) | set(self._declared()))

    def entries(self) -> list[Entry]:
        """Every usable entry (registered ones shadow entry points of the same name), sorted by name."""
        eps = {n: self._load(n) for n in self._declared()}
        merged = {**eps, **{n: e for n, e in self._registered.items() if n not in eps or eps[n].obj is not e.obj}}
        return [merged[n] for n in sorted(merged) if not isinstance(merged[n].obj, _Broken)]


def subclass_of(base: type, needs: str | None = None) -> Callable[[Any, str], type]:
    """A registry's ``accept`` check: a subclass of ``base`` (with a non-empty ``needs`` attribute, e.g. a
    reader's ``format``), never an arbitrary callable a config names."""
    what = f"a winnow {base.__name__} subclass" + (f" with a `{needs}`" if needs else "")

    def accept(obj: Any, ref: str) -> type:
        if isinstance(obj, type) and issubclass(obj, base) and (needs is None or getattr(obj, needs, None)):
            return obj
        raise TypeError(f"expected {what}, got {type(obj).__name__} {getattr(obj, '__name__', obj)!r}")

    return accept


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def plugin_problem(mod: str, attr: str, what: str = "filter") -> str | None:
    """Why ``mod:attr`` cannot be a plug-in, found without running the module (None: import and check it).

    A config names code to run, so a reference is checked before its module is imported: a module of
    Python's standard library is never a plug-in (``os:popen``, ``this:s``); in a module with Python
    source, ``attr`` must be bound at the top level, and not by a plain undecorated ``def`` (a filter
    function is marked with ``@function_filter``). Only what passes is imported, and the object is then
    checked for its type. Importing ``a.b`` to find it imports the package ``a`` (Python's rule).
    """
    top = mod.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return f"{top!r} is part of Python's standard library, not a winnow plug-in"
    try:
        spec = importlib.util.find_spec(mod)
    except (ImportError, ValueError) as e:
        return f"cannot import module {mod!r} ({e})"
    except Exception as e:  # noqa: BLE001 - a parent package failed while importing
        return f"importing a parent package of {mod!r} failed: {type(e).__name__}: {e}"
    if spec is None:
        return f"cannot import module {mod!r} (no module named {mod!r} on the Python path)"
    origin = spec.origin or ""
    if not origin.endswith(".py"):
        return None  # compiled or namespace: only the import can tell
    try:
        with open(origin, "rb") as f:
            tree = ast.parse(f.read(), filename=origin)
    except (OSError, SyntaxError, ValueError) as e:
        return f"cannot read module {mod!r} ({type(e).__name__}: {e})"
    binding = None
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            binding = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" or (a.asname or a.name.split(".")[0]) == attr for a in node.names):
                binding = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == attr for t in targets for n in ast.walk(t)):
                binding = node
        elif isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            binding = binding or node
        elif not isinstance(node, (ast.Expr, ast.Pass)):
            binding = binding or (node if attr in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} else None)
    if binding is None:
        return f"module {mod!r} has no attribute {attr!r}"
    if isinstance(binding, (ast.FunctionDef, ast.AsyncFunctionDef)) and binding.name == attr \
            and not binding.decorator_list:
        if what == "filter":
            return (f"{attr!r} is a plain function; a function becomes a filter only when marked with "
                    f"`@function_filter` (from filters.base)")
        return f"{attr!r} is a plain function, not a {what} class"
    return None


@dataclass(frozen=True)
class _Broken:
    message: str
