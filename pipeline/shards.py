"""Shard files: atomic Parquet/JSON writes, checksums, and safe names and deletions.

Every write goes to a temporary file in the same folder and is renamed into
place, so a reader (or a resumed run) sees either the old file or the whole new
one, never a torn file. Checksums are computed from the bytes written, not by
reading the file back. File *names* inside a run folder belong to :mod:`pipeline.rundir`.
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


def temp_name(path: Path) -> Path:
    """The temporary file a write of ``path`` goes to: ``NAME.tmp-<pid>-<8 hex>`` in the same folder."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


_TEMP_NAME = re.compile(re.escape(TMP_MARK) + r"\d+-[0-9a-f]{8}$")


def is_temp_file_name(name: str) -> bool:
    """True for a name :func:`atomic_write_bytes` gives its temporary files (and nothing a user would pick)."""
    return bool(_TEMP_NAME.search(name))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, fsync it, rename it over ``path``.

    On any error (a full disk, a read-only folder) the temporary file is removed before the
    error propagates, so a failed write leaves nothing behind but the old file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # a failed write() or fsync() names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


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
