"""Reading a run folder: the one place that knows how finished stages are laid out on disk.

:class:`pipeline.shards.StageLayout` is the writer's view of one stage; this is
the reader's view of a whole run. Everything that consumes a run (inspect,
check, dedup clusters, quality-model training, the ablation's subsets,
benchmarks) goes through it instead of walking ``manifest.json`` by hand, so a
change of layout is a change here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.shards import StageLayout, read_json

PARTS = ("kept", "removed")


class StageNotRun(FileNotFoundError):
    """The stage has no manifest: it was never run, or did not finish."""


class RunFolder:
    """A finished (or partly finished) run: ``RunFolder("runs/demo").table("quality", ["id", "text"])``."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)

    # -- the run ----------------------------------------------------------
    @property
    def pipeline_path(self) -> Path:
        return self.root / "pipeline.json"

    def pipeline(self) -> dict | None:
        """The run's ``pipeline.json`` (stages in order and their config), or None if absent."""
        return read_json(self.pipeline_path) if self.pipeline_path.exists() else None

    def stage_names(self) -> list[str]:
        """Stages in pipeline order (all of them, finished or not)."""
        p = self.pipeline()
        if p is None:
            raise FileNotFoundError(f"{self.root}: no pipeline.json -- not a winnow run folder")
        return [s["name"] for s in p["stages"]]

    def layout(self, stage: str) -> StageLayout:
        return StageLayout(self.root, stage)

    def is_finished(self, stage: str) -> bool:
        return self.layout(stage).manifest.exists()

    # -- one stage --------------------------------------------------------
    def manifest(self, stage: str) -> dict:
        path = self.layout(stage).manifest
        if not path.exists():
            raise StageNotRun(f"stage {stage!r} has not finished in {self.root} (no {path.name})")
        return read_json(path)

    def stats(self, stage: str) -> dict | None:
        path = self.layout(stage).stats
        return read_json(path) if path.exists() else None

    def shard_files(self, stage: str, part: str = "kept", nonempty: bool = False) -> list[Path]:
        """The ``part`` (kept/removed) Parquet files of a finished stage, in manifest order."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        stage_dir = self.root / stage
        return [stage_dir / sh[part]["path"] for sh in self.manifest(stage)["shards"]
                if not nonempty or sh[part]["rows"]]

    def table(self, stage: str, columns: list[str] | None = None, part: str = "kept") -> pa.Table:
        """All ``part`` rows of a finished stage as one table (manifest order)."""
        tables = [pq.read_table(p, columns=list(columns) if columns else None)
                  for p in self.shard_files(stage, part)]
        if tables:
            return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        return pa.table({c: pa.array([], pa.string()) for c in (columns or ["id"])})

    def rows(self, stage: str, columns: list[str] | None = None, part: str = "kept",
             reason: str | None = None) -> Iterator[dict]:
        """Rows of a finished stage as dicts, shard by shard (bounded memory).

        ``reason`` (removed rows only) matches a reason exactly or as a family prefix
        (``gopher_quality`` matches ``gopher_quality:word_count``).
        """
        for path in self.shard_files(stage, part, nonempty=True):
            t = pq.read_table(path, columns=list(columns) if columns else None)
            if reason is not None and part == "removed":
                r = t.column("reason") if "reason" in t.column_names else \
                    pq.read_table(path, columns=["reason"]).column("reason")
                t = t.filter(pc.or_(pc.equal(r, reason), pc.starts_with(r, reason + ":")))
            yield from t.to_pylist()

    def plan_dir(self, stage: str) -> Path:
        return self.layout(stage).plan_dir

    # -- across stages ----------------------------------------------------
    def funnel(self) -> list[dict]:
        """``stats.json`` of every finished stage, in pipeline order."""
        return [s for s in (self.stats(name) for name in self.stage_names()) if s is not None]
