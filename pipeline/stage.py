"""The stage contract and the stage registry.

A stage turns each input shard (the previous stage's ``kept/`` shard) into a
kept part and a removed part. It does so in up to three steps, which the runner
schedules, caches and resumes:

1. ``score(table)`` -- per shard, in parallel: compute per-document annotation
   columns (filter scores, hashes, MinHash signatures). Cached in ``scores/``
   under a fingerprint of the *scoring* parameters only, so changing a
   threshold never re-scores.
2. ``plan(ctx)`` -- optional, once per stage: a global step over all cached
   scores (dedup clustering, a top-fraction cut-off). Writes into ``plan/``.
3. ``decide(table, scores, ctx)`` -- per shard, in parallel: return a
   :class:`Decision` saying which rows are kept and why the others are removed.

The runner, not the stage, writes files, checks ``rows in == kept + removed``
and records stats, so a new stage cannot break those guarantees.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa


@dataclass
class Decision:
    """Per-row outcome of a stage's decide step, aligned with the input rows.

    ``reasons[i]`` is ``None`` for kept rows and a short reason string
    (``family:rule``) for removed rows. ``columns`` are added to both kept and
    removed rows (scores travel with documents); ``removed_columns`` only to
    removed rows (e.g. ``duplicate_of``); ``details`` is a free-text or JSON
    explanation per removed row. ``text`` replaces the document text (line-level
    edits) when given.
    """

    reasons: list[str | None]
    columns: dict[str, pa.Array] = field(default_factory=dict)
    removed_columns: dict[str, pa.Array] = field(default_factory=dict)
    details: list[str | None] | None = None
    text: pa.Array | None = None

    @property
    def keep_mask(self) -> np.ndarray:
        return np.fromiter((r is None for r in self.reasons), dtype=bool, count=len(self.reasons))


@dataclass
class StageContext:
    """What a stage may look at beyond its own shard."""

    run_dir: Path
    stage_dir: Path
    plan_dir: Path
    shards: list[str]
    seed: int
    input_stage_dir: Path | None = None
    #: The shard being scored or decided (None in ``plan``), so a global plan can be read per shard.
    shard: str | None = None
    #: The run's executor, set only for ``plan``, so a global step can distribute itself (Ray).
    executor: Any = None

    def scores_path(self, shard: str) -> Path:
        return self.stage_dir / "scores" / f"{shard}.parquet"

    def input_path(self, shard: str) -> Path:
        assert self.input_stage_dir is not None
        return self.input_stage_dir / "kept" / f"{shard}.parquet"


class Stage:
    """Base class for processing stages. Subclasses register with :func:`register_stage`."""

    kind: ClassVar[str] = ""
    #: Whether ``score`` produces a cached scores shard.
    has_scores: ClassVar[bool] = True
    #: Parameter names that only affect ``plan``/``decide``; every other
    #: parameter is part of the scoring fingerprint.
    decision_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        self.params = dict(params)

    # -- fingerprints -----------------------------------------------------
    def scoring_config(self) -> dict:
        return {k: v for k, v in self.params.items() if k not in self.decision_params}

    def decision_config(self) -> dict:
        return dict(self.params)

    def needs_plan(self) -> bool:
        return False

    # -- the three steps --------------------------------------------------
    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        return pa.table({})

    def plan(self, ctx: StageContext) -> None:  # pragma: no cover - optional
        pass

    def decide(self, table: pa.Table, scores: pa.Table, ctx: StageContext) -> Decision:
        raise NotImplementedError

    def describe(self) -> str:
        """One line logged when the stage starts (e.g. the LSH bands and rows actually chosen)."""
        opts = getattr(self, "opts", self.params)
        return f"{self.kind}(" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")"


_STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a `kind`")
    _STAGES[cls.kind] = cls
    return cls


# Modules that define built-in stage kinds; imported on first lookup so that
# `winnow --help` stays fast.
_BUILTIN_STAGE_MODULES = ("pipeline.ingest", "filters.base", "pipeline.dedup.stages")


def stage_class(kind: str) -> type[Stage]:
    if kind not in _STAGES:
        for mod in _BUILTIN_STAGE_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:  # a module not built yet
                if e.name != mod:
                    raise
    if kind not in _STAGES and ":" in kind:
        mod, _, attr = kind.partition(":")
        cls = getattr(importlib.import_module(mod), attr)
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(f"{kind} is not a winnow Stage")
        return cls
    if kind not in _STAGES:
        raise KeyError(f"unknown stage kind {kind!r}; known: {', '.join(sorted(_STAGES))}")
    return _STAGES[kind]


def build_stage(spec: dict[str, Any]) -> Stage:
    params = {k: v for k, v in spec.items() if k not in ("name", "kind")}
    return stage_class(spec["kind"])(spec["name"], params)
