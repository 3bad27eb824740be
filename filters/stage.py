"""The filter stage: a pipeline stage that runs a config's list of filters (``kind: filter``).

Scoring and deciding are the stage contract's two steps: ``score`` runs every filter on a shard
(:func:`filters.apply.score_filters`) and the runner caches the columns; ``decide`` re-applies the
thresholds to the cached columns (:func:`filters.apply.decide_filters`), so ``winnow select`` never
runs a scorer. A filter that needs a global step (a top-fraction cut-off) gets it in ``plan``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from filters.apply import check_columns, decide_filters, plan_filters, score_filters
from filters.base import Filter, filter_class, parse_filter_specs
from pipeline.document import iter_documents
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
        self.validated({"filters": None})
        self.filters: list[Filter] = []
        seen: dict[str, str] = {}
        for ref, p in parse_filter_specs(params.get("filters")):
            f = filter_class(ref)(**p)
            f.ref = ref  # type: ignore[attr-defined]
            check_columns(f)
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
        scores = score_filters(list(iter_documents(table)), self.filters)
        cols = dict(scores.columns)
        if scores.text is not None:
            cols["text"] = pa.array(scores.text, pa.large_string())
        cols["id"] = table.column("id")
        return pa.table(cols)

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
        names = [c for c in scores.column_names if c not in ("id", "text")]
        verdicts = decide_filters({c: scores.column(c).to_pylist() for c in names},
                                  table.column("id").to_pylist(), self.filters)
        columns = {c: scores.column(c) for c in names}
        text = scores.column("text") if "text" in scores.column_names else None
        return Decision(reasons=verdicts.reasons, columns=columns, details=verdicts.details, text=text)
