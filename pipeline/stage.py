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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.params import validate
from pipeline.registry import Registry


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

    #: A *source* stage reads the config's external inputs instead of the previous stage's kept
    #: shards (ingest is one). It comes first in a pipeline and implements the three source hooks below.
    reads_inputs: ClassVar[bool] = False

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        self.params = dict(params)

    def validated(self, defaults: dict[str, Any], checks: dict | None = None) -> dict[str, Any]:
        """This stage's parameters over ``defaults``, typos and out-of-range values refused."""
        return validate(f"stage {self.name}", self.params, defaults, checks, infer=True)

    # -- source stages only ------------------------------------------------
    def source_tasks(self) -> list[dict]:
        """Units of reading work (e.g. one per input file), each with a ``label``."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def input_fingerprint(self) -> str:
        """What the external inputs are (paths, sizes, mtimes): a change re-runs the stage."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def run_source_task(self, task: dict, ctx: "StageContext", stage_fp: str) -> list[dict]:
        """Read one task's inputs into finished shards (resuming); return their markers in order."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

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


def _accept_stage(obj: Any, ref: str) -> type[Stage]:
    if isinstance(obj, type) and issubclass(obj, Stage):
        return obj
    raise TypeError(f"expected a winnow Stage subclass, got {type(obj).__name__} {getattr(obj, '__name__', obj)!r}")


#: Stage kinds: built-ins and plug-ins alike come from the ``winnow.stages`` entry points.
STAGES = Registry("winnow.stages", "stage kind", _accept_stage)


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator for stages defined outside an installed package (notebooks, tests)."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a `kind`")
    STAGES.register(cls.kind, cls)
    return cls


def stage_class(kind: str) -> type[Stage]:
    return STAGES.get(kind)


def build_stage(spec: dict[str, Any]) -> Stage:
    params = {k: v for k, v in spec.items() if k not in ("name", "kind")}
    return stage_class(spec["kind"])(spec["name"], params)


_STAGE_CACHE: dict[str, Stage] = {}


def cached_stage(spec: dict[str, Any]) -> Stage:
    """The stage for ``spec``, built once per worker process (models load once, not per shard)."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _STAGE_CACHE:
        _STAGE_CACHE.clear()  # one stage per worker at a time keeps model memory bounded
        _STAGE_CACHE[key] = build_stage(spec)
    return _STAGE_CACHE[key]
