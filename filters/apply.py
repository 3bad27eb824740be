"""Applying filters to documents: the one place a filter's ``score`` and ``decide`` are called.

A pipeline's filter stage (:class:`filters.stage.FilterStage`: score, cache, decide), ``winnow
quality-eval`` (labelled documents in memory) and the ground-truth measurement
(:mod:`experiments.filter_truth`: re-deciding stored scores) all go through here, so a score means
the same everywhere: filters run in order, the text a text-editing filter returns is the text every
later filter sees, and a filter reads earlier filters' scores in ``doc.annotations``.

The plug-in contract is enforced here, with errors that name the filter (and the document):

- ``score`` returns a mapping whose keys are the filter's ``columns`` (plus ``text`` for a filter
  that ``edits_text``); any other key is an error, as is a value of another type than its column's
  (a float for an ``int`` column is not rounded, a string is not parsed);
- an exception in ``score`` or ``decide`` names the document id;
- ``decide`` returns ``True``, ``(False, rule)`` or ``(False, rule, detail)`` (``rule`` may be a
  list: every rule the document fails); a removal without a rule gets the filter's name as reason.

Every filter decides every document, so a removed document lists *every* rule it fails
(``failed_rules``), not only the first, which is its ``reason``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterError, decision_rules
from pipeline.document import COLUMN_TYPES, Document


_ACCEPT = {
    "float": lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)),
    "int": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
}
_CAST = {"float": float, "int": int, "str": str, "bool": bool}


def filter_key(f: Filter) -> str:
    """How a config names the filter (``c4``, ``mypkg.filters:NoLorem``); its ``name`` otherwise."""
    return getattr(f, "ref", None) or f.name


def check_columns(f: Filter) -> None:
    """A filter's declared columns: known types, no name winnow's rows already use."""
    for col, typ in f.columns.items():
        if typ not in COLUMN_TYPES:
            raise FilterError(f"filter {f.name}: column {col!r} has type {typ!r}; expected one of "
                              f"{', '.join(COLUMN_TYPES)}")
        if col in RESERVED_COLUMNS:
            raise FilterError(f"filter {f.name}: column name {col!r} is reserved (winnow's own columns: "
                              f"{', '.join(sorted(RESERVED_COLUMNS))})")


#: Columns a filter may not declare: the document's, the removed rows', and the stage's own.
RESERVED_COLUMNS = frozenset({"id", "text", "source", "metadata", "stage", "reason", "detail",
                              "failed_rules", "edited_text", "text_spans", "text_edited"})


@dataclass
class Scores:
    """What the filters said about each document, in document order."""

    #: Every filter's score columns, typed, in filter order.
    columns: dict[str, pa.Array]
    #: The text after every text edit; None when no filter edits text.
    text: list[str] | None = None

    def rows(self) -> dict[str, list]:
        """The columns as Python lists (what ``decide`` reads)."""
        return {c: a.to_pylist() for c, a in self.columns.items()}


@dataclass
class Verdicts:
    """Per document: the reason it is removed (None: kept), a detail, and every rule it fails."""

    reasons: list[str | None]
    details: list[str | None]
    failed: list[list[str]]
    #: Per filter (by :func:`filter_key`): which documents it keeps.
    keep_by_filter: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def keep(self) -> np.ndarray:
        return np.fromiter((r is None for r in self.reasons), dtype=bool, count=len(self.reasons))


@dataclass
class Applied:
    scores: Scores
    verdicts: Verdicts
    #: The global state each filter that needs one computed over these documents (top-fraction cut-offs).
    plans: dict[str, dict] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# scoring


def _score_batch(f: Filter, docs: list[Document]) -> list[dict]:
    """``f.score_batch(docs)``; on an exception, the document that raised it is found and named."""
    try:
        results = f.score_batch(docs) if docs else []
    except Exception as batch_error:
        for d in docs:  # score one by one to find the document (only on the error path)
            try:
                f.score(d)
            except NotImplementedError:
                break
            except Exception as e:
                raise FilterError(f"filter {f.name}: score failed on document {d.id!r}: "
                                  f"{type(e).__name__}: {e}") from e
        raise FilterError(f"filter {f.name}: score failed on a batch of {len(docs)} documents (first "
                          f"{docs[0].id!r}): {type(batch_error).__name__}: {batch_error}") from batch_error
    results = list(results)
    if len(results) != len(docs):
        raise FilterError(f"filter {f.name}: score returned {len(results)} results for {len(docs)} documents")
    return results


def _check_results(f: Filter, results: list, docs: list[Document]) -> None:
    allowed = set(f.columns) | ({"text"} if f.edits_text else set())
    for r, d in zip(results, docs):
        if not isinstance(r, dict):
            raise FilterError(f"filter {f.name}: score returned {type(r).__name__} for document {d.id!r}; "
                              f"expected a mapping {{column: value}}")
        extra = [k for k in r if k not in allowed]
        if extra:
            hint = ("; a filter that edits text declares `edits_text = True`" if extra[0] == "text"
                    else f"; its columns are {', '.join(f.columns) or '(none)'}")
            raise FilterError(f"filter {f.name}: score returned key {extra[0]!r}, which is not one of its "
                              f"columns (document {d.id!r}){hint}")
        if f.edits_text and "text" in r and not isinstance(r["text"], str):
            raise FilterError(f"filter {f.name}: score returned text of type {type(r['text']).__name__} for "
                              f"document {d.id!r}; expected a string")


def _typed_column(f: Filter, col: str, typ: str, values: list, docs: list[Document]) -> pa.Array:
    ok, cast = _ACCEPT[typ], _CAST[typ]
    out = []
    for v, d in zip(values, docs):
        if v is None:
            out.append(None)
        elif ok(v):
            out.append(cast(v))
        else:
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise FilterError(f"filter {f.name}: column {col!r} is declared {typ!r} but score returned "
                              f"{type(v).__name__} {shown} for document {d.id!r} (no silent conversion: "
                              f"return a {typ} or None)")
    return pa.array(out, type=COLUMN_TYPES[typ])


def score_filters(docs: list[Document], filters: Sequence[Filter]) -> Scores:
    """Score ``docs`` with each filter in order. Text edits and score annotations carry over to later
    filters (``docs`` are updated in place: ``doc.text`` is the edited text afterwards)."""
    columns: dict[str, pa.Array] = {}
    for f in filters:
        f.ensure_setup()
        results = _score_batch(f, docs)
        _check_results(f, results, docs)
        if f.edits_text:
            for d, r in zip(docs, results):
                if "text" in r:
                    d.text = r["text"]
        for col, typ in f.columns.items():
            columns[col] = _typed_column(f, col, typ, [r.get(col) for r in results], docs)
        for d, r in zip(docs, results):  # later filters may read earlier scores
            d.annotations.update({k: v for k, v in r.items() if k != "text"})
    edits = any(f.edits_text for f in filters)
    return Scores(columns, [d.text for d in docs] if edits else None)


# ---------------------------------------------------------------------------
# deciding


def decide_filters(rows: dict[str, list], ids: Sequence[str], filters: Sequence[Filter]) -> Verdicts:
    """Every filter decides every document from its score columns (``rows``: column -> values).

    The first filter (in order) that removes a document gives its reason and detail; every rule of
    every filter that would remove it is in ``failed``.
    """
    n = len(ids)
    names = list(rows)
    keep_by = {filter_key(f): np.ones(n, dtype=bool) for f in filters}
    reasons: list[str | None] = []
    details: list[str | None] = []
    failed: list[list[str]] = []
    for i in range(n):
        row = {c: rows[c][i] for c in names}
        reason = detail = None
        rules: list[str] = []
        for f in filters:
            try:
                out = f.decide(row)
            except Exception as e:
                raise FilterError(f"filter {f.name}: decide failed on document {ids[i]!r}: "
                                  f"{type(e).__name__}: {e}") from e
            keep, rs, d = decision_rules(f, out, ids[i])
            if not keep:
                keep_by[filter_key(f)][i] = False
                rules.extend(rs)
                if reason is None:
                    reason, detail = rs[0], d
        reasons.append(reason)
        details.append(detail)
        failed.append(rules)
    return Verdicts(reasons, details, failed, keep_by)


def plan_filters(columns: dict[str, np.ndarray], filters: Sequence[Filter]) -> dict[str, dict]:
    """Each filter's global state over these documents' columns (e.g. a top-fraction cut-off), by name;
    the filter's ``plan_state`` is set to it."""
    plans = {}
    for f in filters:
        if f.needs_plan():
            plans[f.name] = f.plan({c: np.asarray(columns[c]) for c in f.columns})
            f.plan_state = plans[f.name]
    return plans


# ---------------------------------------------------------------------------
# both, in memory


def apply_filters(docs: Sequence[Document], filters: Sequence[Filter], plans: dict[str, dict] | None = None) -> Applied:
    """Score and decide ``docs`` in memory, exactly as a filter stage would.

    A filter that needs a global step (a top-fraction cut) takes its state from ``plans`` (by filter
    name, as a run's plan recorded it) or, when absent, computes it over ``docs`` -- here they are
    the whole stage. ``docs`` are copied: the caller's texts are not edited.
    """
    docs = [Document(id=d.id, text=d.text, source=d.source, metadata_json=d.metadata_json,
                     annotations=dict(d.annotations)) for d in docs]
    scores = score_filters(docs, filters)
    plans = dict(plans or {})
    todo = [f for f in filters if f.needs_plan() and f.name not in plans]
    if todo:
        numeric = {c: a.to_numpy(zero_copy_only=False) for c, a in scores.columns.items()}
        plans.update(plan_filters(numeric, todo))
    for f in filters:
        if f.needs_plan():
            f.plan_state = plans[f.name]
    verdicts = decide_filters(scores.rows(), [d.id for d in docs], filters)
    return Applied(scores, verdicts, plans)
