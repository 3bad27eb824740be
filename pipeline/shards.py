"""Shard files: atomic Parquet/JSON writes, checksums and the stage layout.

Every write goes to a temporary file in the same folder and is renamed into
place, so a reader (or a resumed run) sees either the old file or the whole new
one, never a torn file. Checksums are computed from the bytes written, not by
reading the file back.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"
PARQUET_OPTS = dict(compression="zstd", compression_level=3, row_group_size=2048)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, canonical_json(obj).encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTS)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class ShardFile:
    """What a manifest records about one written file."""

    path: str  # relative to the stage folder
    rows: int
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "rows": self.rows, "sha256": self.sha256, "bytes": self.bytes}


def write_parquet(stage_dir: Path, rel: str, table: pa.Table) -> ShardFile:
    """Atomically write ``table`` to ``stage_dir/rel`` and describe it."""
    data = parquet_bytes(table)
    atomic_write_bytes(Path(stage_dir) / rel, data)
    return ShardFile(rel, table.num_rows, hashlib.sha256(data).hexdigest(), len(data))


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clean_temp_files(folder: Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    n = 0
    if Path(folder).exists():
        for p in Path(folder).rglob(f"*{TMP_MARK}*"):
            if p.is_file():
                p.unlink()
                n += 1
    return n


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (config, upstream checksums)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


class StageLayout:
    """Paths inside one stage's output folder.

    ``kept/`` and ``removed/`` hold one Parquet file per shard; ``scores/``
    caches per-document scores (aligned row-for-row with the input shard) so
    thresholds can change without re-scoring; ``plan/`` holds the output of a
    stage's global step (dedup clusters, quantile thresholds); ``_done/`` holds
    one marker per finished shard, written last, which is what resume trusts.
    """

    def __init__(self, run_dir: Path, stage_name: str):
        self.root = Path(run_dir) / stage_name

    def kept(self, shard: str) -> str:
        return f"kept/{shard}.parquet"

    def removed(self, shard: str) -> str:
        return f"removed/{shard}.parquet"

    def scores(self, shard: str) -> str:
        return f"scores/{shard}.parquet"

    def done_marker(self, shard: str) -> Path:
        return self.root / "_done" / f"{shard}.json"

    def scores_marker(self, shard: str) -> Path:
        return self.root / "scores" / "_done" / f"{shard}.json"

    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"
