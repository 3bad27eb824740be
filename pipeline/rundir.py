"""The run folder: the one module that knows its file names, for writing and for reading.

A run folder holds ``pipeline.json`` (the stages in order and their config) and
one folder per stage. :class:`StageFolder` owns one stage's folder::

    <stage>/kept/<shard>.parquet        documents kept (the next stage's input)
    <stage>/removed/<shard>.parquet     documents removed, each with a reason
    <stage>/scores/<shard>.parquet      cached per-document scores (aligned with the input shard)
    <stage>/scores/_done/<shard>.json   marker: the scores shard is finished (fingerprint, checksum)
    <stage>/plan/                       the output of a stage's global step (dedup clusters, cut-offs)
    <stage>/plan/_plan_done.json        marker: the plan is finished
    <stage>/_done/<shard>.json          marker: the shard is finished, written last; resume trusts it
    <stage>/_done/file-<n>.json         marker: a source stage finished input file n
    <stage>/_cache/<name>               what a stage remembers between runs (e.g. input content hashes): winnow's,
                                        never a shard, never swept as stale
    <stage>/manifest.json               every shard file with its rows and SHA-256, written when the stage ends
    <stage>/stats.json                  the stage's funnel numbers

:class:`RunFolder` owns the whole run: ``pipeline.json``, the run lock, and the
readers every consumer uses (inspect, check, select, the experiments), so a
change of layout is a change here and nowhere else.

Which files are ours: winnow writes only the names above (shards named by the
runner, temporary files with the ``.tmp-<pid>-<hex>`` suffix of
:func:`pipeline.shards.atomic_write_bytes`). It deletes only files it
recognises as its own, and refuses to touch a folder that holds anything else,
so a run is never blocked by its own leftovers and never deletes a user's file.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputProblem
from pipeline.provenance import without_provenance
from pipeline.shards import (
    ShardFile,
    atomic_write_json,
    canonical_json,
    check_name,
    file_matches,
    inside,
    is_temp_file_name,
    read_json,
    read_parquet,
    remove_inside,
    sha256_file,
    write_parquet,
    xxh3_file,
)

#: The two parts of a finished shard.
PARTS = ("kept", "removed")
SCORES = "scores"
PLAN = "plan"
DONE = "_done"
MANIFEST = "manifest.json"
STATS = "stats.json"
PLAN_MARKER = "_plan_done.json"
CACHE = "_cache"
PIPELINE = "pipeline.json"
#: Held (``flock``) by the process running the pipeline; another ``winnow run`` on the folder is refused.
LOCK = ".winnow.lock"
#: What each run that changed the folder said, appended (timestamped lines; a header per run).
LOG = "winnow.log"
#: Keys every stage's stats carry (a file without them is damaged).
STATS_KEYS = frozenset({"stage", "docs_in", "chars_in", "kept", "kept_chars", "removed", "removed_by_reason",
                        "wall_seconds"})

# shard names: ingest's part-<file>-<chunk> (any stage's shards are ingest's); source-file markers: file-<n>
_SHARD_STEM = re.compile(r"^part-\d+-\d+$")
_SOURCE_MARKER = re.compile(r"^file-\d+\.json$")
_SHARD_DIRS = ((PARTS[0], ".parquet"), (PARTS[1], ".parquet"), (SCORES, ".parquet"),
               (DONE, ".json"), (f"{SCORES}/{DONE}", ".json"))


class DamagedFile(InputProblem, ValueError):
    """A file winnow wrote (manifest, stats, plan) that no longer reads as what it was; ``reason`` says how."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


def manifest_problem(m: Any) -> str | None:
    """What is wrong with the shape of a stage manifest (None: nothing), checked before anyone reads it."""
    if not isinstance(m, dict):
        return f"not a JSON object but {type(m).__name__}"
    if not isinstance(m.get("shards"), list):
        return "`shards` is not a list"
    for i, sh in enumerate(m["shards"]):
        if not isinstance(sh, dict) or not isinstance(sh.get("name"), str) or \
                not isinstance(sh.get("rows_in"), int) or isinstance(sh.get("rows_in"), bool):
            return f"shard #{i} is malformed"
        for part in PARTS:
            f = sh.get(part)
            if not isinstance(f, dict) or not isinstance(f.get("path"), str) or \
                    not all(isinstance(f.get(k), int) and not isinstance(f.get(k), bool) for k in ("rows", "bytes")) \
                    or not isinstance(f.get("sha256"), str):
                return f"shard #{i} {part} file is malformed"
    t = m.get("totals")
    if not isinstance(t, dict) or not all(isinstance(t.get(k), int) for k in ("rows_in", "kept", "removed")):
        return "`totals` is malformed"
    for key in ("stage", "fingerprint", "output_fingerprint"):
        if not isinstance(m.get(key), str):
            return f"`{key}` is missing"
    return None


class StageNotRun(FileNotFoundError):
    """The stage has no manifest: it was never run, or did not finish."""


class RunFolderError(InputProblem, ValueError):
    """The run folder cannot be used as asked (not a winnow run, foreign files, in use, not writable)."""


class RunInUse(RunFolderError):
    """Another live process holds the run lock."""


def _is_json_object(path: Path) -> bool:
    try:
        return isinstance(read_json(path), dict)
    except (OSError, ValueError):
        return False


def _is_marker_file(path: Path) -> bool:
    """A marker winnow wrote: a JSON object with a fingerprint (read only for names off the usual pattern)."""
    try:
        m = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "fingerprint" in m


class StageFolder:
    """One stage's folder: its paths, its markers and manifest, and which of its files are winnow's.

    ``StageFolder(run_dir, "quality").valid_marker("part-00000-00000", fp)`` is what resume
    trusts; ``prepare()`` makes the folder ready to write (temporary files of a dead writer
    swept first, then anything foreign refused); ``finish()`` writes stats and manifest.
    """

    def __init__(self, run_dir: str | Path, name: str):
        self.run_dir = Path(run_dir)
        self.name = check_name(name)
        self.root = self.run_dir / self.name

    def __repr__(self) -> str:
        return f"StageFolder({str(self.run_dir)!r}, {self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StageFolder) and (self.run_dir, self.name) == (other.run_dir, other.name)

    def __hash__(self) -> int:
        return hash((self.run_dir, self.name))

    # -- paths ------------------------------------------------------------
    def rel(self, part: str, shard: str) -> str:
        """The path of a shard file relative to the stage folder (as markers and the manifest record it)."""
        if part not in (*PARTS, SCORES):
            raise ValueError(f"part must be one of {(*PARTS, SCORES)}, got {part!r}")
        return f"{part}/{check_name(shard, 'shard name')}.parquet"

    def path(self, rel: str) -> Path:
        """A path the stage recorded (``kept/part-….parquet``), inside the stage folder."""
        return self.root / rel

    def part_path(self, part: str, shard: str) -> Path:
        return self.root / self.rel(part, shard)

    def scores_path(self, shard: str) -> Path:
        return self.part_path(SCORES, shard)

    def input_path(self, shard: str) -> Path:
        """This stage's kept shard, as the next stage reads it."""
        return self.part_path(PARTS[0], shard)

    def marker_path(self, shard: str) -> Path:
        return self.root / DONE / f"{check_name(shard, 'shard name')}.json"

    def scores_marker_path(self, shard: str) -> Path:
        return self.root / SCORES / DONE / f"{check_name(shard, 'shard name')}.json"

    def source_marker_path(self, index: int) -> Path:
        """A source stage's marker for one finished input (``_done/file-<index>.json``)."""
        return self.root / DONE / f"file-{int(index):05d}.json"

    def cache_path(self, name: str) -> Path:
        """A file the stage keeps between runs (``_cache/<name>``), e.g. a source stage's input hashes.

        Winnow's own: never judged foreign, never deleted as stale (``--force`` deletes it with the folder).
        """
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
            raise ValueError(f"cache file name {name!r} is not a plain file name")
        return self.root / CACHE / name

    @property
    def plan_dir(self) -> Path:
        return self.root / PLAN

    @property
    def plan_marker_path(self) -> Path:
        return self.plan_dir / PLAN_MARKER

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def stats_path(self) -> Path:
        return self.root / STATS

    # -- writing (every write is atomic: temp file + rename) --------------
    def write_part(self, part: str, shard: str, table: pa.Table) -> ShardFile:
        return write_parquet(self.root, self.rel(part, shard), table)

    def write_marker(self, marker: dict) -> None:
        """A finished shard's marker, written after its files: what resume trusts."""
        atomic_write_json(self.marker_path(marker["shard"]), marker)

    def write_scores_marker(self, marker: dict) -> None:
        atomic_write_json(self.scores_marker_path(marker["shard"]), marker)

    def write_source_marker(self, index: int, marker: dict) -> None:
        atomic_write_json(self.source_marker_path(index), marker)

    def write_plan_marker(self, fingerprint: str, seconds: float) -> None:
        """The plan is finished: its fingerprint, and every file in ``plan/`` with its size and checksums,
        so a plan file appended to, truncated or replaced afterwards is found (resume re-plans, check says so)."""
        atomic_write_json(self.plan_marker_path, {"fingerprint": fingerprint, "seconds": round(seconds, 3),
                                                  "files": self._plan_files()})

    def _plan_files(self) -> dict[str, dict]:
        out = {}
        for p in sorted(self.plan_dir.rglob("*")) if self.plan_dir.is_dir() else ():
            if p == self.plan_marker_path or is_temp_file_name(p.name) or p.is_dir():
                continue
            rel = p.relative_to(self.plan_dir).as_posix()
            if p.is_symlink() or not p.is_file():
                out[rel] = {"bytes": -1}  # never matches: a plan holds regular files only
                continue
            out[rel] = {"bytes": p.stat().st_size, "xxh3": xxh3_file(p), "sha256": sha256_file(p)}
        return out

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def write_stats(self, stats: dict) -> None:
        atomic_write_json(self.stats_path, stats)

    def reset_plan(self) -> Path:
        """An empty ``plan/`` folder (a new plan invalidates the old one entirely)."""
        if self.plan_dir.exists() or self.plan_dir.is_symlink():
            remove_inside(self.run_dir, self.plan_dir)
        self.plan_dir.mkdir(parents=True)
        return self.plan_dir

    # -- reading ----------------------------------------------------------
    def is_finished(self) -> bool:
        return self.manifest_path.exists()

    def manifest(self) -> dict:
        """The finished stage's manifest; :class:`StageNotRun` when there is none, :class:`DamagedFile`
        when it is not valid JSON or not shaped like a manifest (a reader never guesses past it)."""
        if not self.manifest_path.exists():
            raise StageNotRun(f"stage {self.name!r} has not finished in {self.run_dir} (no {MANIFEST})")
        try:
            m = read_json(self.manifest_path)
        except (UnicodeDecodeError, ValueError) as e:
            raise DamagedFile(f"{self.manifest_path} is damaged ({type(e).__name__}); `winnow run` redoes the "
                              f"stage from its verified shards", reason=f"not valid JSON: {type(e).__name__}") from None
        problem = manifest_problem(m)
        if problem:
            raise DamagedFile(f"{self.manifest_path} is damaged ({problem}); `winnow run` redoes the stage from "
                              f"its verified shards", reason=problem)
        return m

    def stats(self) -> dict | None:
        """The stage's funnel numbers (None when absent); :class:`DamagedFile` when unreadable or not stats."""
        if not self.stats_path.exists():
            return None
        try:
            st = read_json(self.stats_path)
        except (UnicodeDecodeError, ValueError) as e:
            raise DamagedFile(f"{self.stats_path} is damaged ({type(e).__name__}); `winnow run` rebuilds it from "
                              f"the finished shards", reason=f"not valid JSON: {type(e).__name__}") from None
        if not isinstance(st, dict) or not STATS_KEYS <= set(st):
            raise DamagedFile(f"{self.stats_path} is damaged (not a stage's statistics); `winnow run` rebuilds it "
                              f"from the finished shards", reason="not a stage's statistics")
        return st

    def stats_match(self, manifest: dict) -> bool:
        """``stats.json`` is readable and counts what the manifest lists (else the run rebuilds it)."""
        try:
            st = self.stats()
        except DamagedFile:
            return False
        t = manifest.get("totals") or {}
        return st is not None and (st["docs_in"], st["kept"], st.get("removed")) == \
            (t.get("rows_in"), t.get("kept"), t.get("removed"))

    def read_marker(self, shard: str) -> dict:
        return read_json(self.marker_path(shard))

    def read_source_marker(self, index: int) -> dict | None:
        path = self.source_marker_path(index)
        try:
            m = read_json(path)
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) else None

    def _valid(self, path: Path, fp: str, files: tuple[str, ...]) -> dict | None:
        if not path.exists():
            return None
        try:
            m = read_json(path)
        except (OSError, ValueError):
            return None
        if not isinstance(m, dict) or m.get("fingerprint") != fp:
            return None
        for key in files:
            f = m.get(key)
            if not isinstance(f, dict) or not isinstance(f.get("path"), str) or \
                    not file_matches(self.root / f["path"], f):
                return None
        return m

    def valid_marker(self, shard: str, fp: str) -> dict | None:
        """The shard's marker if it names ``fp`` and its kept and removed files are intact (size and hash).

        Resume trusts a finished shard only after re-hashing its files, so a truncated or
        altered shard is redone instead of being passed downstream.
        """
        return self._valid(self.marker_path(shard), fp, PARTS)

    def valid_scores_marker(self, shard: str, fp: str) -> dict | None:
        return self._valid(self.scores_marker_path(shard), fp, (SCORES,))

    def plan_is_current(self, fp: str) -> bool:
        """The plan was made for ``fp`` and its files are exactly those the marker lists, unaltered."""
        return self.plan_problem(fp, verify_hash=True) is None

    def plan_problem(self, fp: str | None = None, verify_hash: bool = True) -> str | None:
        """Why the finished plan cannot be trusted (None: it can): a different fingerprint, a marker without
        checksums (an older winnow), or a plan file missing, added, resized or altered since."""
        try:
            marker = read_json(self.plan_marker_path)
        except (OSError, ValueError):
            return "no readable plan marker"
        if not isinstance(marker, dict):
            return "plan marker is not a JSON object"
        if fp is not None and marker.get("fingerprint") != fp:
            return "made for other settings or input"
        files = marker.get("files")
        if not isinstance(files, dict):
            return "plan marker lists no checksums"
        on_disk = {p.relative_to(self.plan_dir).as_posix() for p in self.plan_dir.rglob("*")
                   if p != self.plan_marker_path and not is_temp_file_name(p.name) and not p.is_dir()} \
            if self.plan_dir.is_dir() else set()
        if on_disk != set(files):
            extra, missing = sorted(on_disk - set(files)), sorted(set(files) - on_disk)
            return "plan files " + "; ".join(x for x in (f"added: {', '.join(extra[:3])}" if extra else "",
                                                         f"missing: {', '.join(missing[:3])}" if missing else "") if x)
        for rel, rec in sorted(files.items()):
            p = self.plan_dir / rel
            if not isinstance(rec, dict) or p.is_symlink() or not file_matches(p, rec, verify_hash=False):
                return f"plan file {rel} changed size"
            if verify_hash and (xxh3_file(p) if rec.get("xxh3") else None) != rec.get("xxh3"):
                return f"plan file {rel} altered"
        return None

    def plan_seconds(self) -> float | None:
        try:
            return read_json(self.plan_marker_path).get("seconds")
        except (OSError, ValueError, AttributeError):
            return None

    def marker_count(self) -> int:
        d = self.root / DONE
        return len(list(d.glob("*.json"))) if d.is_dir() else 0

    def shard_files(self, part: str = "kept", nonempty: bool = False) -> list[Path]:
        """The ``part`` (kept/removed) Parquet files of the finished stage, in manifest order."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        return [self.root / sh[part]["path"] for sh in self.manifest()["shards"]
                if not nonempty or sh[part]["rows"]]

    def unlisted_files(self, part: str, listed: set[str]) -> list[str]:
        """Parquet files under ``part/`` whose relative path is not in ``listed`` (``winnow check``)."""
        d = self.root / part
        return [f"{part}/{p.name}" for p in sorted(d.glob("*.parquet")) if f"{part}/{p.name}" not in listed] \
            if d.is_dir() else []

    def shards_on_disk(self, part: str) -> list[str]:
        """Names of the shards with a ``part`` (kept/removed/scores) file on disk, sorted (finished or not)."""
        d = self.root / part
        return sorted(p.name[: -len(".parquet")] for p in d.glob("*.parquet")) if d.is_dir() else []

    def read_scores(self, shard: str, columns: list[str] | None = None) -> pa.Table:
        return read_parquet(self.scores_path(shard), columns=columns)

    # -- which files are ours ---------------------------------------------
    def sweep_temp_files(self) -> int:
        """Delete the temporary files a killed (or disk-full) writer left behind; returns how many.

        Only names with winnow's temp suffix, only regular files, only inside the stage folder.
        Runs before anything is judged foreign, so our own leftovers never block a resume.
        """
        n = 0
        if self.root.is_dir() and not self.root.is_symlink():
            for p in self.root.rglob("*"):
                if is_temp_file_name(p.name) and p.is_file() and not p.is_symlink():
                    remove_inside(self.run_dir, p)
                    n += 1
        return n

    def _marked_stems(self) -> set[str]:
        return {p.stem for d in (DONE, f"{SCORES}/{DONE}") if (self.root / d).is_dir()
                for p in (self.root / d).glob("*.json")
                if _SHARD_STEM.match(p.stem) or _SOURCE_MARKER.match(p.name) or _is_marker_file(p)}

    @staticmethod
    def _ours_by_name(name: str, ext: str) -> bool:
        stem = name[: -len(ext)]
        return bool(_SHARD_STEM.match(stem)) or (ext == ".json" and bool(_SOURCE_MARKER.match(name)))

    def foreign_files(self) -> list[Path]:
        """Files in the stage folder that winnow would not have written there (``plan/`` is the stage's own).

        A shard file is winnow's when its name follows the shard pattern or a marker names its shard;
        a marker is winnow's when its name follows the pattern or it reads as a marker.
        """
        root = self.root
        if not root.is_dir():
            return []
        out: list[Path] = []
        marked = self._marked_stems()
        sub_dirs = {PARTS[0], PARTS[1], SCORES, DONE, PLAN, CACHE}
        for p in sorted(root.iterdir()):
            if p.name in sub_dirs and p.is_dir() and not p.is_symlink():
                continue
            if p.name in (MANIFEST, STATS) and p.is_file() and not p.is_symlink():
                continue
            if is_temp_file_name(p.name) and p.is_file():
                continue
            out.append(p)
        for sub, ext in _SHARD_DIRS:
            d = root / sub
            if not d.is_dir() or d.is_symlink():
                continue
            for p in sorted(d.iterdir()):
                if sub == SCORES and p.name == DONE and p.is_dir() and not p.is_symlink():
                    continue
                if is_temp_file_name(p.name) and p.is_file() and not p.is_symlink():
                    continue
                if p.is_symlink() or not p.is_file() or not p.name.endswith(ext):
                    out.append(p)
                elif not self._ours_by_name(p.name, ext) and p.name[: -len(ext)] not in marked:
                    out.append(p)
        return out

    def looks_like_winnow(self) -> bool:
        """Recognisably a winnow stage folder: a manifest or a marker winnow wrote, or nothing but its
        cache (a source stage remembers its input hashes before its first shard): what ``--force`` may delete."""
        if _is_marker_file(self.manifest_path) or _is_marker_file(self.plan_marker_path):
            return True
        entries = list(self.root.iterdir()) if self.root.is_dir() else []
        cache = self.root / CACHE
        if entries == [cache] and cache.is_dir() and not cache.is_symlink() and \
                all(p.is_file() and _is_json_object(p) for p in cache.iterdir()):
            return True
        for d in (self.root / DONE, self.root / SCORES / DONE):
            if d.is_dir() and not d.is_symlink():
                if any(_is_marker_file(p) for p in d.glob("*.json")):
                    return True
        return False

    def prepare(self, force: bool = False, wipe: bool = False, log=None) -> None:
        """Make the folder ready to write: refuse what is not ours, sweep our temp files, create it.

        Order matters: temp files of a dead writer are swept *before* the foreign-file check, so a
        killed or disk-full run resumes without ``--force``. With ``wipe`` (``--force``) the folder is
        deleted first, but only when it is recognisably winnow's.
        """
        root = self.root
        if root.exists() or root.is_symlink():
            if root.is_symlink() or not root.is_dir() or not inside(self.run_dir, root):
                raise RunFolderError(f"stage folder {root} is not a folder inside the run folder {self.run_dir}")
            self.sweep_temp_files()
            empty = not any(root.iterdir())
            if wipe and not empty:
                if not self.looks_like_winnow():
                    raise RunFolderError(
                        f"refusing to delete {root} with --force: it holds no manifest or shard marker, so it "
                        f"does not look like a winnow stage folder; move it away or choose another run_dir")
                if log:
                    log(f"[{self.name}] --force: deleting {root}")
                remove_inside(self.run_dir, root)
            elif not force:
                foreign = self.foreign_files()
                if foreign:
                    shown = ", ".join(str(p.relative_to(self.run_dir)) for p in foreign[:3])
                    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
                    raise RunFolderError(
                        f"stage folder {root} holds files winnow did not write ({shown}{more}); move them away, "
                        f"or pass --force to delete the stage folder and redo the stage")
        root.mkdir(parents=True, exist_ok=True)

    def remove_stale(self, shards: set[str]) -> int:
        """Delete winnow's own shard files and markers of shards not in ``shards``; returns how many shards' files.

        Source-file markers (``_done/file-N.json``) of a previous run go too, uncounted.
        """
        n = 0
        marked = None
        for sub, ext in _SHARD_DIRS:
            d = self.root / sub
            if not d.is_dir() or d.is_symlink():
                continue
            for p in sorted(d.iterdir()):
                if not (p.is_file() and not p.is_symlink() and p.name.endswith(ext)):
                    continue
                stem = p.name[: -len(ext)]
                if stem in shards:
                    continue
                if not self._ours_by_name(p.name, ext):
                    marked = self._marked_stems() if marked is None else marked
                    if not (stem in marked or (ext == ".json" and _is_marker_file(p))):
                        continue
                remove_inside(self.run_dir, p)
                n += not _SOURCE_MARKER.match(p.name)
        return n

    def delete(self) -> None:
        remove_inside(self.run_dir, self.root)


class RunFolder:
    """A run: ``RunFolder("runs/demo").table("quality", ["id", "text"])``; ``.stage(name)`` is one stage's folder."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)

    # -- the run ----------------------------------------------------------
    @property
    def pipeline_path(self) -> Path:
        return self.root / PIPELINE

    def is_run(self) -> bool:
        return self.pipeline_path.is_file()

    def pipeline(self) -> dict | None:
        """The run's ``pipeline.json`` (stages in order and their config), or None if absent."""
        return read_json(self.pipeline_path) if self.pipeline_path.exists() else None

    def write_pipeline(self, content: dict) -> bool:
        """Record the stages and config; an unchanged file is not rewritten (an up-to-date run writes nothing).

        Unchanged means the same apart from its provenance: the file keeps the provenance of the run
        that last changed it.
        """
        try:
            if self.pipeline_path.is_file() and without_provenance(read_json(self.pipeline_path)) == \
                    json.loads(canonical_json(without_provenance(content))):
                return False
        except (OSError, ValueError):
            pass
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.pipeline_path, content)
        return True

    def stage_names(self) -> list[str]:
        """Stages in pipeline order (all of them, finished or not)."""
        p = self.pipeline()
        if p is None:
            raise FileNotFoundError(f"{self.root}: no {PIPELINE} -- not a winnow run folder")
        return [s["name"] for s in p["stages"]]

    def stage_configs(self) -> list[dict]:
        """The stage specs of the config the run was made with (``pipeline.json``), in order."""
        p = self.pipeline()
        if p is None:
            raise FileNotFoundError(f"{self.root}: no {PIPELINE} -- not a winnow run folder")
        return list(p["config"]["stages"])

    def stage(self, name: str) -> StageFolder:
        return StageFolder(self.root, name)

    def sweep_temp_files(self) -> int:
        """Temporary files of a dead writer at the top of the run folder (``pipeline.json``'s)."""
        n = 0
        if self.root.is_dir():
            for p in self.root.iterdir():
                if is_temp_file_name(p.name) and p.is_file() and not p.is_symlink():
                    remove_inside(self.root, p)
                    n += 1
        return n

    def check_usable(self, force: bool = False) -> None:
        """Refuse a folder that holds files but is not a winnow run (unless ``force``)."""
        d = self.root
        if d.exists() and not d.is_dir():
            raise RunFolderError(f"run_dir {d} exists and is not a folder")
        if force or not d.exists() or self.is_run():
            return
        entries = sorted(p.name for p in d.iterdir() if p.name != LOCK and not is_temp_file_name(p.name))
        if entries:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise RunFolderError(
                f"run_dir {d} is not empty ({shown}) and is not a winnow run (no {PIPELINE}); "
                f"choose a new or empty run_dir, or pass --force to use it anyway")

    @property
    def log_path(self) -> Path:
        """The run's log (appended by every run that changes the folder)."""
        return self.root / LOG

    # -- the run lock -----------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.root / LOCK

    def lock_holder(self) -> dict | None:
        """Who holds the run lock now (pid, host, command, started), or None when nobody does."""
        return _lock_holder(self.lock_path)

    @contextlib.contextmanager
    def lock(self, command: str | None = None) -> Iterator[None]:
        """Hold the run folder for this process: a second ``winnow run`` on it is refused (:class:`RunInUse`).

        An ``flock`` on ``.winnow.lock``: the kernel releases it when the process dies, so a
        killed run never leaves a lock that blocks the next one (its file stays, unlocked, and
        the next run takes it over); a finished run deletes the file. Re-entrant within a process.
        """
        key = str(self.root.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
        fd = _acquire(self.lock_path, command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
            if fd is not None:
                _release(self.lock_path, fd)

    # -- one stage (reading) ----------------------------------------------
    def is_finished(self, stage: str) -> bool:
        return self.stage(stage).is_finished()

    def manifest(self, stage: str) -> dict:
        return self.stage(stage).manifest()

    def stats(self, stage: str) -> dict | None:
        return self.stage(stage).stats()

    def shard_files(self, stage: str, part: str = "kept", nonempty: bool = False) -> list[Path]:
        return self.stage(stage).shard_files(part, nonempty)

    def plan_dir(self, stage: str) -> Path:
        return self.stage(stage).plan_dir

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

    # -- across stages ----------------------------------------------------
    def funnel(self) -> list[dict]:
        """``stats.json`` of every finished stage, in pipeline order."""
        return [s for s in (self.stats(name) for name in self.stage_names()) if s is not None]


# ---------------------------------------------------------------------------
# the lock (module level: one table of locks this process holds)

_HELD: dict[str, list] = {}


def _acquire(path: Path, command: str) -> int | None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (documented)
        return None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            # a folder we cannot write to: an up-to-date run still reads it; a writer elsewhere still shows
            holder = _lock_holder(path)
            if holder is not None:
                raise RunInUse(f"run_dir {path.parent} is in use by another winnow process "
                               f"({_describe_holder(holder)}); wait for it to finish or stop it") from None
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunInUse(f"run_dir {path.parent} is in use by another winnow process "
                               f"({_describe_holder(_lock_holder(path))}); wait for it to finish or stop it") from None
            if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                return None  # a file system without locks (some network mounts): run unlocked, as before
            raise
        # the holder before us deletes the file when it is done: make sure we locked the file that is there now
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command[:300],
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    return fd


def _release(path: Path, fd: int) -> None:
    """Delete the lock file while still holding it, then let go (a finished run leaves nothing behind)."""
    try:
        os.unlink(path)
    except OSError:
        pass
    os.close(fd)


def _describe_holder(holder: dict | None) -> str:
    holder = holder or {}
    who = f"pid {holder.get('pid', '?')}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        who += f" on {holder['host']}"
    if holder.get("command"):
        who += f", `{holder['command']}`"
    if holder.get("started"):
        who += f", since {holder['started']}"
    return who


def _lock_holder(path: Path) -> dict | None:
    """The holder recorded in a lock file that some process holds now (a free lock's file is stale)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pass  # held: read who holds it
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        try:
            info: Any = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
        except ValueError:
            info = {}
        return info if isinstance(info, dict) else {}
    finally:
        os.close(fd)
