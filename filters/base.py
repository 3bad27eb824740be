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
earlier stages). It returns ``{column: value}`` for the columns in
``columns`` (a missing key or ``None`` is a missing value; any other key is an
error, and so is a value of another type than its column's: nothing is cast).
A filter with ``edits_text = True`` may also return ``"text"``.

Columns and types: ``columns`` maps each score column to ``"float"`` (float64),
``"int"`` (int64), ``"str"`` or ``"bool"``; the stage stores them in
the stage's scores cache (under the scoring parameters) and beside every kept and
removed row. Column names are global within a stage: two filters may not write
the same one.

What ``decide(s)`` sees: one document's score columns of *the whole stage*
(``s[col]``, Python values, ``None`` where missing) -- never the text, so a
decision can be re-made from cached scores alone. It returns ``True`` (keep),
``(False, rule)`` or ``(False, rule, detail)``; the removal reason is
``name:rule`` (the name alone without a rule). ``rule`` may be a list: every rule
the document fails, all of which land in the removed row's ``failed_rules``.
Anything else (``None``, a forgotten ``return True``) is an error naming the
document. A threshold goes into ``decision_params``: those parameters are
left out of the scoring fingerprint. A global cut-off (keep the top 10%)
implements ``needs_plan``/``plan(columns)``; ``decide`` then reads
``self.plan_state``.

A filter that needs a trained model declares ``train_defaults`` (its ``train:``
settings) and implements ``train(ctx)``; ``winnow train-quality`` finds it.
:mod:`filters.apply` is where all of this is called and checked.

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
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from pipeline.document import Document
from pipeline.errors import RunFailure
from pipeline.params import validate
from pipeline.registry import Registry
from pipeline.rundir import RunFolder


class FilterError(RunFailure, ValueError):
    """A filter broke its contract or failed on a document; the message names the filter (and the document)."""


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

    #: A filter that needs a trained model declares its training settings here (the ``train:``
    #: parameter overrides them) and implements :meth:`train`, as dolma's taggers own theirs:
    #: ``winnow train-quality`` finds every such filter of a config through the one registry.
    train_defaults: ClassVar[dict[str, Any] | None] = None
    #: The one column ``decide`` reads, for filters that decide on a single score (reports use it).
    score_column: ClassVar[str] = ""

    def __init__(self, **params: Any):
        if not self.name:  # a plug-in class without a `name`: its reasons still name it
            self.name = type(self).__name__
        self.params = validate(f"filter {self.name}", params, self.defaults, self.checks,
                               allow_unknown=getattr(self, "accept_any_params", False), infer=True)
        self._ready = False
        if self.trainable():
            self.train_settings()  # a typo in `train:` fails when the config loads, not after hours of work

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

    # -- training (filters with ``train_defaults`` only) ----------------------
    @classmethod
    def trainable(cls) -> bool:
        return cls.train_defaults is not None

    def train_settings(self) -> dict[str, Any]:
        """The ``train:`` parameter over :attr:`train_defaults` (typos name the nearest setting)."""
        return validate(f"{self.name} train", self.params.get("train"), self.train_defaults or {}, noun="setting")

    def model_files(self) -> list[str]:
        """The files :meth:`train` writes (a missing one means: train first)."""
        return [p for p in (self.params.get("model_path"),) if p]

    def training_stages(self) -> list[str]:
        """Stages whose kept documents training reads, besides the raw (first) stage; they run first."""
        return []

    def training_reference(self) -> dict | None:
        """Where training's positive documents come from: ``{path, text_field, id_field, min_chars}``."""
        return None

    def train(self, ctx: "TrainContext") -> dict:
        """Train the model, write :meth:`model_files` atomically, return its training manifest."""
        raise NotImplementedError(f"filter {self.name} has no model to train")

    # -- config helpers -----------------------------------------------------
    def scoring_params(self) -> dict:
        return {k: v for k, v in self.params.items() if k not in self.decision_params}

    def reason(self, rule: str | None) -> str:
        if not rule:
            return self.name
        return rule if rule.startswith(self.name + ":") or rule == self.name else f"{self.name}:{rule}"


@dataclass
class TrainContext:
    """What :meth:`Filter.train` may read: the run whose stages :meth:`Filter.training_stages` named
    (brought up to date by the caller), and where the raw corpus is."""

    #: The run folder; its raw stage and every stage in ``training_stages()`` are finished.
    run: RunFolder
    #: The config's first stage: the raw corpus, whose documents are never positives.
    raw_stage: str
    #: The stage the filter belongs to.
    stage: str
    log: Callable[[str], None] = print


def top_fraction_plan(values: np.ndarray, fraction: float) -> dict:
    """Cut-off keeping the highest-scoring ``ceil(fraction * n)`` documents of the whole stage.

    Deterministic (a sort of the scores). Documents tied with the cut-off are all
    kept, so ``kept`` may exceed ``target`` by the size of that tie; both are
    recorded. Missing scores rank last.
    """
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), -np.inf, v)
    n = int(v.shape[0])
    target = min(n, int(math.ceil(fraction * n - 1e-9)))
    cutoff = float(np.sort(v)[n - target]) if target else math.inf
    return {"fraction": fraction, "docs": n, "target": target, "cutoff": cutoff, "kept": int((v >= cutoff).sum())}


class ThresholdOrTopFraction:
    """The decision of a filter with one score, higher = better: keep ``score >= threshold``, or the
    ``top_fraction`` of the whole stage (a global step records the cut-off). Mix into a Filter whose
    ``score_column`` names the score and whose defaults have ``threshold`` and ``top_fraction``."""

    def check_cut(self) -> None:
        if self.params["threshold"] is not None and self.params["top_fraction"] is not None:
            raise ValueError(f"{self.name}: set `threshold` or `top_fraction`, not both")
        frac = self.params["top_fraction"]
        if frac is not None and not 0 < frac <= 1:
            raise ValueError(f"{self.name}: top_fraction must be in (0, 1], got {frac}")

    def needs_plan(self) -> bool:
        return self.params["top_fraction"] is not None

    def plan(self, columns):
        return top_fraction_plan(columns[self.score_column].astype(np.float64), self.params["top_fraction"])

    def decide(self, s):
        col = self.score_column
        score = s[col]
        score = -math.inf if score is None or math.isnan(score) else score
        if self.params["top_fraction"] is not None:
            cutoff = self.plan_state["cutoff"]
            if score >= cutoff:
                return True
            return False, "below_top_fraction", \
                f"{col} {score:.4f} < cut-off {cutoff:.4f} (top {self.params['top_fraction']:g})"
        if self.params["threshold"] is not None and score < self.params["threshold"]:
            return False, "below_threshold", f"{col} {score:.4f} < {self.params['threshold']:g}"
        return True


def decision_rules(f: Filter, out: Any, doc_id: str | None = None) -> tuple[bool, list[str], str | None]:
    """``decide``'s answer as (keep, reasons, detail).

    ``decide`` returns ``True``, ``(False, rule)`` or ``(False, rule, detail)``; ``rule`` may be a list (every
    rule the document fails). Reasons are ``name:rule``, the filter's name alone when no rule is given.
    Anything else (``None``: a forgotten ``return True``) is a :class:`FilterError`.
    """
    if isinstance(out, (bool, np.bool_)):
        keep, rule, detail = bool(out), None, None
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], (bool, np.bool_)):
        keep = bool(out[0])
        rule = out[1] if len(out) > 1 else None
        detail = out[2] if len(out) > 2 else None
    else:
        shown = repr(out) if len(repr(out)) <= 60 else repr(out)[:57] + "..."
        where = f" for document {doc_id!r}" if doc_id is not None else ""
        raise FilterError(f"filter {f.name}: decide returned {shown}{where}; expected True, (False, rule) or "
                          f"(False, rule, detail)")
    if keep:
        return True, [], None
    rules = list(rule) if isinstance(rule, (list, tuple)) else [rule]
    reasons = [f.reason(r) for r in rules if r] or [f.reason(None)]
    if detail is not None and not isinstance(detail, str):
        detail = json.dumps(detail, sort_keys=True, default=str)
    return False, reasons, detail


def normalise_decision(f: Filter, out: Any) -> tuple[bool, str | None, str | None]:
    """``decide``'s answer as (keep, reason, detail): the first rule only (see :func:`decision_rules`)."""
    keep, reasons, detail = decision_rules(f, out)
    return keep, (reasons[0] if reasons else None), detail


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
            out = fn(doc)  # doc -> bool | (bool, reason): any truthy value keeps
            keep = bool(out[0] if isinstance(out, tuple) else out)
            rule = out[1] if isinstance(out, tuple) and len(out) > 1 and not keep else None
            return {f"{fname}__keep": keep, f"{fname}__rule": None if keep else self.reason(rule)}

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
    if entries is not None and not isinstance(entries, list):  # `filters: c4` would be read letter by letter
        raise ValueError(f"`filters` must be a list (e.g. [c4, gopher_quality]), got {type(entries).__name__} "
                         f"{entries!r}")
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
# describing a filter (`winnow filters NAME`)


def _param_notes(cls: type) -> dict[str, str]:
    """The comment after each key of the class's ``defaults = {...}`` (units and meaning), read from its source."""
    import re
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    notes: dict[str, str] = {}
    inside = False
    for line in src.splitlines():
        if re.match(r"\s*defaults\s*=\s*\{", line):
            inside = True
        if inside:
            m = re.match(r"""\s*(?:defaults\s*=\s*\{\s*)?["'](\w+)["']\s*:.*?#\s*(.+?)\s*$""", line)
            if m:
                notes[m.group(1)] = m.group(2)
            if line.rstrip().endswith("}"):
                break
    return notes


def _accepted(check: Any) -> str:
    """What a parameter check accepts, in its own words (a check describes itself when it refuses)."""
    try:
        said = check(object())
    except Exception:
        return ""
    return said if isinstance(said, str) else ""


def describe_filter(cls: type[Filter], origin: str | None = None) -> str:
    """Everything a config author needs about one filter: what it does, its parameters (defaults, units,
    accepted values, which ones only decide), its columns and their types, and whether it edits text
    or trains a model."""
    import textwrap

    doc = inspect.cleandoc(cls.__doc__ or "(no docstring)")
    first, _, rest = doc.partition("\n")
    out = [f"{cls.name or cls.__name__} -- {first}" + (f"  [{origin}]" if origin else "")]
    if rest.strip():
        out += ["", textwrap.indent(rest.strip(), "  ")]
    notes = _param_notes(cls)
    out += ["", f"Parameters (in a filter stage: `- {cls.name or cls.__name__}: {{name: value}}`):"]
    if not cls.defaults:
        out.append("  (none)")
    width = max([len(k) for k in cls.defaults] + [4])
    for key, default in cls.defaults.items():
        role = "decides only (changing it re-decides from cached scores)" if key in cls.decision_params \
            else "training settings (see below)" if key == "train" and cls.train_defaults is not None \
            else "scoring (changing it re-scores)"
        extra = [notes[key]] if key in notes else []
        if key in (cls.checks or {}):
            accepted = _accepted(cls.checks[key])
            if accepted:
                extra.append(f"accepts {accepted}")
        out.append(f"  {key:<{width}}  default {default!r:<12}  {role}" + (f"; {'; '.join(extra)}" if extra else ""))
    out += ["", "Columns (beside every kept and removed row of the stage, and in its score cache):"]
    if cls.columns:
        width = max(len(c) for c in cls.columns)
        out += [f"  {c:<{width}}  {t}" for c, t in cls.columns.items()]
    else:
        out.append("  (none)")
    out += ["", "Removal reasons: `" + (cls.name or cls.__name__) + ":<rule>` (a removed row lists every rule it "
            "fails in `failed_rules`)."]
    if cls.edits_text:
        out.append("Edits text: later filters and stages see the edited text; a removed document keeps the text it "
                   "entered the stage with, the edited one in `edited_text`.")
    if cls.train_defaults is not None:
        out += ["", "Trains a model (`winnow train-quality CONFIG`); its `train:` settings and their defaults:"]
        width = max([len(k) for k in cls.train_defaults] + [4])
        out += [f"  {k:<{width}}  {v!r}" for k, v in cls.train_defaults.items()]
    return "\n".join(out)
