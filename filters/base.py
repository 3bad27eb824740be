"""The filter contract: score a document, then decide with a threshold.

Scoring and deciding are separate (NeMo-Curator's split; dolma keeps scores
beside documents) so scores are stored as columns and ``winnow select`` can
re-apply new thresholds without running a single scorer.

A filter is a class::

    class NoLorem(Filter):
        name = "no_lorem"
        columns = {"lorem_count": "int"}
        defaults = {"max_count": 0}
        decision_params = ("max_count",)

        def score(self, doc):
            return {"lorem_count": doc.text.lower().count("lorem ipsum")}

        def decide(self, s):
            return s["lorem_count"] <= self.params["max_count"], "too_much_lorem"

or, for datatrove-style one-liners, a function ``doc -> bool | (bool, reason)``
wrapped by :func:`function_filter`.

What ``score(doc)`` sees: a :class:`pipeline.document.Document` -- ``doc.id``,
``doc.text`` (already edited by earlier text-editing filters of the same stage,
e.g. C4's line removal), ``doc.source``, ``doc.metadata`` (the JSON metadata
parsed: ``url``, ``file``, ``record``, WARC headers, ingest's extractor) and
``doc.annotations`` (score columns of earlier filters in the same stage and of
earlier stages). It returns ``{column: value}`` for every column in
``columns``; ``None`` is a missing value.

Columns and types: ``columns`` maps each score column to ``"float"`` (float64),
``"int"`` (int64), ``"str"`` or ``"bool"``; the stage stores them in
the stage's scores cache (under the scoring parameters) and beside every kept and
removed row. Column names are global within a stage: two filters may not write
the same one.

What ``decide(s)`` sees: one document's score columns of *the whole stage*
(``s[col]``, Python values, ``None`` where missing) -- never the text, so a
decision can be re-made from cached scores alone. It returns ``True`` (keep),
``(False, rule)`` or ``(False, rule, detail)``; the removal reason is
``name:rule``. A threshold goes into ``decision_params``: those parameters are
left out of the scoring fingerprint. A global cut-off (keep the top 10%)
implements ``needs_plan``/``plan(columns)``; ``decide`` then reads
``self.plan_state``.

When to write a Stage instead (:class:`pipeline.stage.Stage`): when a decision
needs more than one document at a time beyond a cut-off over score columns --
dedup compares documents with each other, a sampler draws across shards -- or
when the output is not "keep or remove this row".

Filters are found by name through :data:`FILTERS` (the ``winnow.filters``
entry points, winnow's own included), or by ``package.module:Name`` in the
config -- no edit to winnow needed.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.document import COLUMN_TYPES, Document, iter_documents
from pipeline.shards import atomic_write_json, read_json, read_parquet
from pipeline.params import validate
from pipeline.registry import Registry
from pipeline.stage import Decision, Stage, StageContext


class Filter:
    """Base class. Subclasses set ``name``, ``columns`` and implement ``score``/``decide``."""

    #: Registry name; the family prefix of every reason this filter gives.
    name: ClassVar[str] = ""
    #: Score columns this filter writes: column name -> "float" | "int" | "str" | "bool".
    columns: ClassVar[dict[str, str]] = {}
    #: Default parameters; unknown parameters in a config are an error.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Parameters used only by ``decide`` (thresholds): changing them never re-scores.
    decision_params: ClassVar[tuple[str, ...]] = ()
    #: True if ``score`` may return a ``"text"`` key: the edited document text
    #: (line-level cleaning). Later filters in the same stage see the edited text.
    edits_text: ClassVar[bool] = False

    #: Optional value checks per parameter (``pipeline.params``: between, at_least, one_of, ...).
    checks: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        self.params = validate(f"filter {self.name}", params, self.defaults, self.checks,
                               allow_unknown=getattr(self, "accept_any_params", False), infer=True)
        self._ready = False

    # -- scoring ------------------------------------------------------------
    def setup(self) -> None:
        """Load models or tables; called once before the first score, never by ``select``."""

    def score(self, doc: Document) -> dict[str, Any]:
        raise NotImplementedError

    def score_batch(self, docs: list[Document]) -> list[dict[str, Any]]:
        """Override for vectorised scoring (fastText predicts a batch at once)."""
        return [self.score(d) for d in docs]

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    # -- global step (optional): e.g. a top-fraction cut-off over the whole stage
    def needs_plan(self) -> bool:
        return False

    def plan(self, columns: dict[str, np.ndarray]) -> dict:
        """Given every document's score columns, return JSON state for ``decide``."""
        return {}

    plan_state: dict = {}

    # -- deciding -----------------------------------------------------------
    def decide(self, scores: dict[str, Any]) -> bool | tuple[bool, str] | tuple[bool, str, str]:
        """Keep? Optionally with the rule name, and a human-readable detail."""
        raise NotImplementedError

    # -- config helpers -----------------------------------------------------
    def scoring_params(self) -> dict:
        return {k: v for k, v in self.params.items() if k not in self.decision_params}

    def reason(self, rule: str | None) -> str:
        if not rule:
            return self.name
        return rule if rule.startswith(self.name + ":") or rule == self.name else f"{self.name}:{rule}"


def normalise_decision(f: Filter, out: Any) -> tuple[bool, str | None, str | None]:
    """Accept ``bool``, ``(bool, rule)`` or ``(bool, rule, detail)``; return (keep, reason, detail)."""
    detail = None
    if isinstance(out, tuple):
        keep = bool(out[0])
        rule = out[1] if len(out) > 1 else None
        detail = out[2] if len(out) > 2 else None
    else:
        keep, rule = bool(out), None
    return keep, (None if keep else f.reason(rule)), (None if keep else detail)


# ---------------------------------------------------------------------------
# datatrove-style function filters


def function_filter(fn: Callable[[Document], Any] | None = None, name: str | None = None):
    """Make ``doc -> bool | (bool, reason)`` a Filter class (its result is its score).

    Also a decorator -- ``@function_filter`` or ``@function_filter(name="no_lorem")`` -- which is how a
    function in a plug-in module is marked as a filter: a config's ``module:name`` reference accepts
    only Filter classes, so no other function (``os:popen``) is ever called with a document.
    """
    if fn is None:
        return lambda f: function_filter(f, name)
    fname = name or fn.__name__

    class _FunctionFilter(Filter):
        columns = {f"{fname}__keep": "bool", f"{fname}__rule": "str"}
        accept_any_params = True

        def score(self, doc):
            keep, reason, _ = normalise_decision(self, fn(doc))
            rule = None if keep else reason
            return {f"{fname}__keep": keep, f"{fname}__rule": rule}

        def decide(self, s):
            return bool(s[f"{fname}__keep"]), s[f"{fname}__rule"]

    _FunctionFilter.name = fname
    _FunctionFilter.__name__ = _FunctionFilter.__qualname__ = f"FunctionFilter_{fname}"
    return _FunctionFilter


# ---------------------------------------------------------------------------
# registry


def _accept_filter(obj: Any, ref: str) -> type[Filter]:
    """A Filter subclass only: a function is one once marked with ``@function_filter``.

    Accepting any function would let a config call ``os.popen`` or ``shutil.rmtree`` with a document.
    """
    if isinstance(obj, type) and issubclass(obj, Filter):
        return obj
    if inspect.isfunction(obj):
        raise TypeError(f"{getattr(obj, '__name__', obj)!r} is a plain function; a function becomes a filter only "
                        f"when marked with `@function_filter` (from filters.base)")
    raise TypeError(f"expected a winnow Filter subclass (or a function marked with `@function_filter`), "
                    f"got {type(obj).__name__} {getattr(obj, '__name__', obj)!r}")


#: Filters: built-ins and plug-ins alike come from the ``winnow.filters`` entry points.
FILTERS = Registry("winnow.filters", "filter", _accept_filter)


def register_filter(obj=None, *, name: str | None = None):
    """Register a filter class (or a ``doc -> bool`` function) in this process, e.g. from a notebook.

    Installed packages declare theirs as ``winnow.filters`` entry points instead,
    as winnow does for its own, so that worker processes find them too.
    """

    def wrap(o):
        cls = o if isinstance(o, type) else function_filter(o, name)
        if name and isinstance(o, type):
            cls.name = name
        if not cls.name:
            raise ValueError(f"{cls.__name__} needs a `name`")
        FILTERS.register(cls.name, cls)
        return o if isinstance(o, type) else cls

    return wrap(obj) if obj is not None else wrap


def filter_class(ref: str) -> type[Filter]:
    """Find a filter by name (registered or entry point) or ``package.module:Name``."""
    return FILTERS.get(ref)


def available_filters() -> dict[str, tuple[type[Filter], str]]:
    """Every filter winnow can find, with where it comes from (distribution or "registered")."""
    return {e.name: (e.obj, e.origin) for e in FILTERS.entries()}


def parse_filter_specs(entries: list) -> list[tuple[str, dict]]:
    """Config entries are ``name`` or ``{name: {params}}``."""
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append((e, {}))
        elif isinstance(e, dict) and len(e) == 1:
            (ref, params), = e.items()
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"filter {ref}: parameters must be a mapping")
            out.append((ref, dict(params or {})))
        else:
            raise ValueError(f"filter entries are `name` or `{{name: {{params}}}}`, got {e!r}")
    return out


# ---------------------------------------------------------------------------
# the stage that runs a list of filters


def _column(values: list, typ: str) -> pa.Array:
    t = COLUMN_TYPES.get(typ, pa.float64())
    if typ in ("float", None):
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, type=t)


class FilterStage(Stage):
    """Runs filters in config order; a document is removed by the first filter it fails.

    Every filter scores every document (not only those earlier filters passed),
    so per-rule removal rates are independent and any threshold can change later.
    """

    kind = "filter"

    def __init__(self, name: str, params: dict):
        super().__init__(name, params)
        self.validated({"filters": None})
        self.filters: list[Filter] = []
        seen: dict[str, str] = {}
        for ref, p in parse_filter_specs(params.get("filters")):
            f = filter_class(ref)(**p)
            f.ref = ref  # type: ignore[attr-defined]
            for col in f.columns:
                if col in seen:
                    raise ValueError(f"stage {name}: column {col!r} written by both {seen[col]} and {ref}")
                seen[col] = ref
            self.filters.append(f)
        if not self.filters:
            raise ValueError(f"stage {name}: a filter stage needs `filters:`")
        self.edits_text = any(f.edits_text for f in self.filters)

    def scoring_config(self) -> dict:
        return {"filters": [[f.ref, f.scoring_params()] for f in self.filters]}

    def decision_config(self) -> dict:
        return {"filters": [[f.ref, f.params] for f in self.filters]}

    def needs_plan(self) -> bool:
        return any(f.needs_plan() for f in self.filters)

    def describe(self) -> str:
        shown = []
        for f in self.filters:
            decision = ", ".join(f"{k}={f.params[k]}" for k in f.decision_params if k in f.params)
            shown.append(f"{f.ref}({decision})" if decision else f.ref)
        return "filters: " + "; ".join(shown)

    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        docs = list(iter_documents(table))
        cols: dict[str, pa.Array] = {}
        for f in self.filters:
            f.ensure_setup()
            results = f.score_batch(docs) if docs else []
            if f.edits_text:
                for d, r in zip(docs, results):
                    if "text" in r:
                        d.text = r["text"]
            for col, typ in f.columns.items():
                cols[col] = _column([r.get(col) for r in results], typ)
            for d, r in zip(docs, results):  # later filters may read earlier scores
                d.annotations.update({k: v for k, v in r.items() if k != "text"})
        if self.edits_text:
            cols["text"] = pa.array([d.text for d in docs], pa.large_string())
        cols["id"] = table.column("id")
        return pa.table(cols)

    def plan(self, ctx: StageContext) -> None:
        for f in self.filters:
            if not f.needs_plan():
                continue
            parts = [read_parquet(ctx.scores_path(s), columns=list(f.columns)) for s in ctx.shards]
            columns = {c: np.concatenate([p.column(c).to_numpy(zero_copy_only=False) for p in parts])
                       if parts else np.array([]) for c in f.columns}
            atomic_write_json(ctx.plan_dir / f"{f.name}.json", f.plan(columns))

    def decide(self, table: pa.Table, scores: pa.Table, ctx: StageContext) -> Decision:
        for f in self.filters:
            if f.needs_plan():
                f.plan_state = read_json(ctx.plan_dir / f"{f.name}.json")
        names = [c for c in scores.column_names if c not in ("id", "text")]
        data = {c: scores.column(c).to_pylist() for c in names}
        reasons: list[str | None] = []
        details: list[str | None] = []
        for i in range(table.num_rows):
            row = {c: data[c][i] for c in names}
            reason = detail = None
            for f in self.filters:
                keep, reason, detail = normalise_decision(f, f.decide(row))
                if not keep:
                    break
            reasons.append(reason)
            details.append(detail)
        columns = {c: scores.column(c) for c in names}
        text = scores.column("text") if "text" in scores.column_names else None
        return Decision(reasons=reasons, columns=columns, details=details, text=text)
