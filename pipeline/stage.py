"""The stage contract and the stage registry.

A stage turns each input shard (the previous stage's kept shard) into a
kept part and a removed part. It does so in up to three steps, which the runner
schedules, caches and resumes:

1. ``score(table)`` -- per shard, in parallel: compute per-document annotation
   columns (filter scores, hashes, MinHash signatures). Cached (the stage folder's scores)
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
from typing import Any, ClassVar, Iterator

import numpy as np
import pyarrow as pa

from pipeline.params import validate
from pipeline.registry import Registry, subclass_of
from pipeline.rundir import StageFolder


@dataclass
class Decision:
    """Per-row outcome of a stage's decide step, aligned with the input rows.

    ``reasons[i]`` is ``None`` for kept rows and a short reason string
    (``family:rule``) for removed rows. ``columns`` are added to both kept and
    removed rows (scores travel with documents); ``removed_columns`` only to
    removed rows (e.g. ``duplicate_of``); ``details`` is a free-text or JSON
    explanation per removed row. ``text`` is the edited document text (line-level
    edits), when given: it replaces the text of kept rows; removed rows keep the text
    they entered the stage with, and get the edited one in ``edited_text``.
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

    @property
    def folder(self) -> StageFolder:
        """This stage's folder (paths, markers)."""
        return StageFolder(self.stage_dir.parent, self.stage_dir.name)

    @property
    def input_folder(self) -> StageFolder:
        """The previous stage's folder, whose kept shards are this stage's input."""
        if self.input_stage_dir is None:
            raise ValueError("a source stage has no input stage")
        return StageFolder(self.input_stage_dir.parent, self.input_stage_dir.name)

    def scores_path(self, shard: str) -> Path:
        return self.folder.scores_path(shard)

    def input_path(self, shard: str) -> Path:
        return self.input_folder.input_path(shard)

    def to_dict(self) -> dict:
        """Plain values (what a task sends to a worker process); :meth:`from_dict` rebuilds it."""
        return {"run_dir": str(self.run_dir), "stage_dir": str(self.stage_dir), "plan_dir": str(self.plan_dir),
                "shards": list(self.shards), "seed": self.seed,
                "input_stage_dir": str(self.input_stage_dir) if self.input_stage_dir else None}

    @classmethod
    def from_dict(cls, c: dict) -> "StageContext":
        return cls(run_dir=Path(c["run_dir"]), stage_dir=Path(c["stage_dir"]), plan_dir=Path(c["plan_dir"]),
                   shards=list(c["shards"]), seed=c["seed"],
                   input_stage_dir=Path(c["input_stage_dir"]) if c.get("input_stage_dir") else None)

    @classmethod
    def for_stage(cls, folder: StageFolder, seed: int, shards: list[str] = (),
                  input_folder: StageFolder | None = None) -> "StageContext":
        return cls(run_dir=folder.run_dir, stage_dir=folder.root, plan_dir=folder.plan_dir, shards=list(shards),
                   seed=seed, input_stage_dir=input_folder.root if input_folder else None)


class SourceRead:
    """The rows of one source task, as :meth:`Stage.read_source` gives them to the runner.

    Iterating yields row dicts in the stage's :meth:`~Stage.source_schema`; a row with a ``reason``
    (and a ``detail``) is a removed one. ``finish`` runs after every row is written, with the task's
    shard markers: it may raise (the task is then not marked finished) and returns what to add to the
    last marker (``counters`` summed into the stage's stats, ``notes`` the runner logs).
    """

    def __iter__(self) -> Iterator[dict]:
        raise NotImplementedError

    def finish(self, markers: list[dict]) -> dict:
        return {}


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
    # A source stage reads; the runner writes. The stage expands its inputs into tasks (once per run),
    # fingerprints them, and yields each task's rows; the runner cuts the rows into shards of
    # ``source_shard_rows()``, names and writes them with their markers, resumes a task from its first
    # unfinished shard (asking for the rows after those), and marks the task finished after the read's
    # ``finish`` -- so a source stage cannot break the guarantees a shard stage gets.

    def source_tasks(self) -> list[dict]:
        """Units of reading work (e.g. one per input file), each with an ``index`` and a ``label``."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    #: Whether ``input_fingerprint`` may remember what it learned (e.g. content hashes) in the stage
    #: folder's cache; ``winnow check`` sets it False, so checking never writes.
    remember_inputs: bool = True

    def input_fingerprint(self, tasks: list[dict]) -> str:
        """What the tasks' external inputs are (their content): a change re-runs the stage."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def changed_inputs(self, tasks: list[dict]) -> list[str]:
        """Which external inputs changed since the stage read them, by name, when the stage can tell
        (``winnow check`` names them); empty when it cannot."""
        return []

    def read_source(self, task: dict, start: int) -> "SourceRead":
        """One task's rows after the first ``start`` (those are in finished shards already)."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def source_schema(self) -> pa.Schema:
        """The schema of kept rows; removed rows add ``stage``, ``reason`` and ``detail``."""
        raise NotImplementedError(f"{type(self).__name__} is not a source stage")

    def source_shard_rows(self) -> int:
        """Rows per shard the runner writes."""
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


#: Stage kinds: built-ins and plug-ins alike come from the ``winnow.stages`` entry points.
STAGES = Registry("winnow.stages", "stage kind", subclass_of(Stage))


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator for stages defined outside an installed package (notebooks, tests)."""
    return STAGES.register_kind(cls)


def stage_class(kind: str) -> type[Stage]:
    return STAGES.get(kind)


def build_stage(spec: dict[str, Any]) -> Stage:
    """A new stage object for a config's stage ``spec`` (parameters checked). Prefer :func:`stage_for`."""
    params = {k: v for k, v in spec.items() if k not in ("name", "kind")}
    return stage_class(spec["kind"])(spec["name"], params)


def spec_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


_STAGE_CACHE: dict[str, Stage] = {}


def stage_for(spec: dict[str, Any]) -> Stage:
    """The stage for ``spec``, built once per process (models load once, not per shard).

    The config builds each stage when it is loaded (:meth:`pipeline.config.PipelineConfig.stage_object`)
    and the runner hands that object here with :func:`use_stage`, so a run builds each stage once in
    the main process and once in each worker process. One stage is cached at a time, which keeps a
    worker's model memory bounded.
    """
    key = spec_key(spec)
    if key not in _STAGE_CACHE:
        use_stage(spec, build_stage(spec))
    return _STAGE_CACHE[key]


def use_stage(spec: dict[str, Any], stage: Stage) -> None:
    """Make ``stage`` the one :func:`stage_for` returns for ``spec`` in this process."""
    _STAGE_CACHE.clear()
    _STAGE_CACHE[spec_key(spec)] = stage
