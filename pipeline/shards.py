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
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

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


MANIFEST_FILE_KEYS = ("path", "rows", "sha256", "bytes")


@dataclass(frozen=True)
class ShardFile:
    """What a marker records about one written file (the manifest keeps ``MANIFEST_FILE_KEYS``).

    ``xxh3`` is the resume check: a finished shard is re-hashed before a rerun trusts
    it, and xxh3 reads about 7x faster than SHA-256 here (5 GB/s vs 0.7 GB/s,
    experiments/benchmarks/bench_resume_verify.py); SHA-256 stays the manifest's
    checksum that ``winnow check`` compares.
    """

    path: str  # relative to the stage folder
    rows: int
    sha256: str
    bytes: int
    xxh3: str = ""

    def to_dict(self) -> dict:
        d = {"path": self.path, "rows": self.rows, "sha256": self.sha256, "bytes": self.bytes}
        if self.xxh3:
            d["xxh3"] = self.xxh3
        return d


def write_parquet(stage_dir: Path, rel: str, table: pa.Table) -> ShardFile:
    """Atomically write ``table`` to ``stage_dir/rel`` and describe it."""
    data = parquet_bytes(table)
    atomic_write_bytes(Path(stage_dir) / rel, data)
    return ShardFile(rel, table.num_rows, hashlib.sha256(data).hexdigest(), len(data),
                     xxhash.xxh3_64(data).hexdigest())


def _hash_file(path: Path, h) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def xxh3_file(path: Path) -> str:
    return _hash_file(path, xxhash.xxh3_64())


def file_matches(path: Path, recorded: dict, verify_hash: bool = True) -> bool:
    """True when ``path`` is a regular file with the recorded size (and hash: xxh3 if recorded, else SHA-256)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not os.path.isfile(path) or st.st_size != recorded.get("bytes"):
        return False
    if not verify_hash:
        return True
    try:
        if recorded.get("xxh3"):
            return xxh3_file(path) == recorded["xxh3"]
        return sha256_file(path) == recorded.get("sha256")
    except OSError:
        return False


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def sha256_file(path: Path) -> str:
    return _hash_file(path, hashlib.sha256())


def clean_temp_files(folder: Path, root: Path | None = None) -> int:
    """Delete temporary files a killed writer left behind (only inside ``root``); returns how many."""
    n = 0
    if Path(folder).exists():
        for p in Path(folder).rglob(f"*{TMP_MARK}*"):
            if p.is_file() and not p.is_symlink():
                remove_inside(root or folder, p)
                n += 1
    return n


# ---------------------------------------------------------------------------
# names and deletions: nothing the runner writes or deletes leaves the run folder

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class UnsafePathError(ValueError):
    """A stage/shard name or a path to delete would leave the run folder."""


def check_name(name: str, what: str = "stage name") -> str:
    """A stage or shard name is a plain identifier (letters, digits, ``_``, ``-``): it becomes a folder name."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):  # `$` would accept "ab\n"
        raise UnsafePathError(f"{what} {name!r} is not a plain identifier (letters, digits, `_` and `-`, "
                              f"starting with a letter or digit, at most 128 characters)")
    return name


def inside(root: Path, path: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies strictly inside ``root`` (symlinks resolved)."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    return path_r != root_r and root_r in path_r.parents


def remove_inside(root: Path, path: Path) -> None:
    """Delete a file or folder, refusing anything that resolves outside ``root`` (or is ``root`` itself).

    A symlink is removed as a link (its target is never touched); its folder must be inside ``root``.
    """
    path = Path(path)
    if path.is_symlink():
        if not inside(root, path.parent) and Path(root).resolve() != path.parent.resolve():
            raise UnsafePathError(f"refusing to delete {path}: outside the run folder {root}")
        path.unlink()
        return
    if not inside(root, path):
        raise UnsafePathError(f"refusing to delete {path}: outside the run folder {root}")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


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

    #: what a stage folder may hold; anything else was not written by winnow
    ENTRIES = ("kept", "removed", "scores", "plan", "_done", "manifest.json", "stats.json")

    def __init__(self, run_dir: Path, stage_name: str):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / check_name(stage_name)

    def kept(self, shard: str) -> str:
        return f"kept/{check_name(shard, 'shard name')}.parquet"

    def removed(self, shard: str) -> str:
        return f"removed/{check_name(shard, 'shard name')}.parquet"

    def scores(self, shard: str) -> str:
        return f"scores/{check_name(shard, 'shard name')}.parquet"

    def done_marker(self, shard: str) -> Path:
        return self.root / "_done" / f"{check_name(shard, 'shard name')}.json"

    def scores_marker(self, shard: str) -> Path:
        return self.root / "scores" / "_done" / f"{check_name(shard, 'shard name')}.json"

    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"
