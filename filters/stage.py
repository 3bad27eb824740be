"""The filter stage: a pipeline stage that runs a config's list of filters (``kind: filter``).

Scoring and deciding are the stage contract's two steps: ``score`` runs every filter on a shard
(:func:`filters.apply.score_filters`) and the runner caches the columns; ``decide`` re-applies the
thresholds to the cached columns (:func:`filters.apply.decide_filters`), so ``winnow select`` never
runs a scorer. A filter that needs a global step (a top-fraction cut-off) gets it in ``plan``.

Text edits (C4's line removal, ``line_cleaner``) are cached without copying the text: ``text_spans``
holds the ``[start, end)`` character spans of the input text whose pieces, joined by newlines, are the
edited text (null: unchanged); only an edit that is not such a selection is stored whole
(``text_edited``). Kept rows carry the edited text; a removed row keeps its text as it entered the
stage, the edit in ``edited_text``, and every rule it fails in ``failed_rules``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from filters.apply import check_columns, decide_filters, plan_filters, score_filters
from filters.base import Filter, filter_class, parse_filter_specs
from filters.recipes import expand as expand_recipe
from pipeline.document import FAILED_RULES, iter_documents

#: Score-cache columns of a text-editing stage (see the module docstring); never shown as scores.
TEXT_SPANS, TEXT_EDITED = "text_spans", "text_edited"
#: Bumped when what the stage writes changes, so finished runs are redone rather than mixed.
OUTPUT_FORMAT = 2


def text_spans(original: str, edited: str) -> list[int] | None:
    """``[s0, e0, s1, e1, ...]`` such that ``"\n".join(original[s:e])`` is ``edited``, or None if there is none.

    Each newline-separated piece of ``edited`` is looked up in ``original`` from where the previous one
    ended, so line removal (and stripping) is always representable.
    """
    spans: list[int] = []
    pos = 0
    for piece in edited.split("\n"):
        i = original.find(piece, pos)
        if i < 0:
            return None
        spans += (i, i + len(piece))
        pos = i + len(piece)
    return spans


def apply_spans(original: str, spans: list[int]) -> str:
    return "\n".join(original[spans[k]:spans[k + 1]] for k in range(0, len(spans), 2))
from pipeline.shards import atomic_write_json, read_json, read_parquet
from pipeline.stage import Decision, Stage, StageContext


class FilterStage(Stage):
    """Runs filters in config order; a document is removed by the first filter it fails.

    Every filter scores every document (not only those earlier filters passed),
    so per-rule removal rates are independent and any threshold can change later.
    """

    kind = "filter"

    def __init__(self, name: str, params: dict):
        super().__init__(name, params)
        self.validated({"filters": None, "recipe": None})
        self.filters: list[Filter] = []
        seen: dict[str, str] = {}
        for ref, p in parse_filter_specs(expand_recipe({"name": name, **params})):  # `recipe:` first, then `filters:`
            f = filter_class(ref)(**p)
            f.ref = ref  # type: ignore[attr-defined]
            check_columns(f)
            for col in f.columns:
                if col in seen and seen[col] == ref:
                    raise ValueError(f"stage {name}: filter {ref} is named twice (in `filters:`, or there and in "
                                     f"the `recipe:`); a stage runs each filter once")
                if col in seen:
                    raise ValueError(f"stage {name}: column {col!r} written by both {seen[col]} and {ref}")
                seen[col] = ref
            self.filters.append(f)
        if not self.filters:
            raise ValueError(f"stage {name}: a filter stage needs `filters:` or `recipe:`")
        self.edits_text = any(f.edits_text for f in self.filters)

    def scoring_config(self) -> dict:
        out = {"filters": [[f.ref, f.scoring_params()] for f in self.filters]}
        if self.edits_text:
            out["text_edits"] = "spans"  # the cache's format (not the text itself)
        return out

    def decision_config(self) -> dict:
        return {"filters": [[f.ref, f.params] for f in self.filters], "format": OUTPUT_FORMAT}

    def needs_plan(self) -> bool:
        return any(f.needs_plan() for f in self.filters)

    def describe(self) -> str:
        shown = []
        for f in self.filters:
            decision = ", ".join(f"{k}={f.params[k]}" for k in f.decision_params if k in f.params)
            shown.append(f"{f.ref}({decision})" if decision else f.ref)
        return "filters: " + "; ".join(shown)

    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        originals = table.column("text").to_pylist()
        scores = score_filters(list(iter_documents(table)), self.filters)
        cols = dict(scores.columns)
        if scores.text is not None:
            spans, whole = [], []
            for original, edited in zip(originals, scores.text):
                s = None if edited == original else text_spans(original, edited)
                spans.append(s)
                whole.append(edited if s is None and edited != original else None)
            cols[TEXT_SPANS] = pa.array(spans, pa.list_(pa.int64()))
            cols[TEXT_EDITED] = pa.array(whole, pa.large_string())
        cols["id"] = table.column("id")
        return pa.table(cols)

    @staticmethod
    def edited_texts(table: pa.Table, scores: pa.Table) -> list[str] | None:
        """The text after the stage's edits, from the input shard and the score cache (None: no edits)."""
        if TEXT_SPANS not in scores.column_names:
            return None
        out = []
        for original, spans, whole in zip(table.column("text").to_pylist(), scores.column(TEXT_SPANS).to_pylist(),
                                          scores.column(TEXT_EDITED).to_pylist()):
            out.append(whole if whole is not None else original if spans is None else apply_spans(original, spans))
        return out

    # -- the global step: one JSON state per filter that needs one, in the stage's plan folder
    @staticmethod
    def plan_file(plan_dir, f: Filter):
        return plan_dir / f"{f.name}.json"

    def plan(self, ctx: StageContext) -> None:
        for f in self.filters:
            if not f.needs_plan():
                continue
            parts = [read_parquet(ctx.scores_path(s), columns=list(f.columns)) for s in ctx.shards]
            columns = {c: np.concatenate([p.column(c).to_numpy(zero_copy_only=False) for p in parts])
                       if parts else np.array([]) for c in f.columns}
            atomic_write_json(self.plan_file(ctx.plan_dir, f), plan_filters(columns, [f])[f.name])

    def load_plans(self, plan_dir) -> None:
        """Give each filter that needs one the state the stage's plan recorded."""
        for f in self.filters:
            if f.needs_plan():
                f.plan_state = read_json(self.plan_file(plan_dir, f))

    def decide(self, table: pa.Table, scores: pa.Table, ctx: StageContext) -> Decision:
        self.load_plans(ctx.plan_dir)
        names = [c for c in scores.column_names if c not in ("id", TEXT_SPANS, TEXT_EDITED)]
        verdicts = decide_filters({c: scores.column(c).to_pylist() for c in names},
                                  table.column("id").to_pylist(), self.filters)
        columns = {c: scores.column(c) for c in names}
        failed = pa.array(verdicts.failed, pa.list_(pa.string()))
        return Decision(reasons=verdicts.reasons, columns=columns, details=verdicts.details,
                        text=self.edited_texts(table, scores), removed_columns={FAILED_RULES: failed})
