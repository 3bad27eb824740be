"""The ingest stage: the config's ``inputs`` become tasks (one per file, folder dataset or hub dataset),
each task's reader yields records, and every record becomes one row, kept or removed with a reason.

Inputs are expanded once per run (globs walked, folders looked into) and the result is reused for the
fingerprint and the reading. Whether an input changed is decided by the content of its files: a hash
per file, cached under the file's size, mtime, ctime and inode, so a file edited in place with its old
size and mtime restored is read again (its ctime moved), while a plain copy of the tree is re-hashed,
found identical and not re-ingested.
"""
from __future__ import annotations

import os
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from pipeline.document import DOC_SCHEMA, REMOVED_FIELDS, dumps_metadata
from pipeline.ingest.html import EXTRACTORS, extractor_info
from pipeline.ingest.paths import expand_glob, glob_root, has_magic, inside, require_regular_file, skip_reason, walk_folder
from pipeline.ingest.readers import READERS, detect_folder, detect_format, reader_class
from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import PREVIEW_CHARS, SKIPPED, InputError, Record, printable_path
from pipeline.ingest.streams import UNCHECKED_ZSTD, strip_compression
from pipeline.params import ParamError, at_least, between, of_type, one_of, optional, validate
from pipeline.registry import RegistryError
from pipeline.shards import atomic_write_json, fingerprint, read_json, xxh3_file
from pipeline.rundir import StageFolder
from pipeline.stage import SourceRead, Stage

DEFAULT_LIMITS = {
    "shard_docs": 5000,
    "max_doc_chars": 1_000_000,
    "max_line_bytes": 64 << 20,
    "max_doc_bytes": 16 << 20,
    "max_record_bytes": 8 << 20,
    "max_html_chars": 4 << 20,
    "max_html_depth": 1000,
    "max_html_depth_sum": 10_000_000,
    "max_html_attributes": 2000,
    "max_html_options": 5000,
    "max_metadata_chars": 16_384,
    "extractor": "resiliparse",
}
#: Stage parameters beside the limits: what is read and when a file's losses stop the run.
STAGE_DEFAULTS = {"inputs": None, "limit": None, "max_removed_share": 0.9}
#: A file with fewer records is not held to ``max_removed_share`` (one bad record of three is no pattern).
SHARE_MIN_RECORDS = 10

#: Provenance columns ingest adds beside the document columns: where each row came from.
PROVENANCE_FIELDS = [pa.field("input_file", pa.string(), nullable=False),
                     pa.field("input_record", pa.int64(), nullable=False)]
KEPT_SCHEMA = pa.schema(list(DOC_SCHEMA) + PROVENANCE_FIELDS)
REMOVED_SCHEMA = pa.schema(list(KEPT_SCHEMA) + REMOVED_FIELDS)


def _metadata_fields(v: Any) -> str | None:
    ok = v == "all" or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
    return None if ok else "`all`, a field name or a list of field names"


#: Keys every input may have, whatever its format (a reader adds its own in ``options``).
INPUT_DEFAULTS = {
    "path": None, "format": "auto", "source": None, "text_field": None, "id_field": "id", "url_field": None,
    "html_field": None, "metadata_fields": "all", "extractor": None, "limit": None, "max_removed_share": None,
}
INPUT_CHECKS = {
    "path": optional(of_type(str, name="a file, glob or folder path")),
    "format": of_type(str, name="a format name"),
    "source": optional(of_type(str, int, name="a source label")),
    "text_field": optional(of_type(str, name="a field name")),
    "id_field": optional(of_type(str, name="a field name")),
    "url_field": optional(of_type(str, name="a field name")),
    "html_field": optional(of_type(str, name="a field name")),
    "metadata_fields": _metadata_fields,
    "extractor": optional(one_of(*EXTRACTORS)),
    "limit": optional(at_least(0, integer=True)),
    "max_removed_share": optional(between(0, 1)),
}
LIMIT_CHECKS = {k: at_least(1, integer=True) for k in DEFAULT_LIMITS if k != "extractor"}
LIMIT_CHECKS.update(extractor=one_of(*EXTRACTORS), limit=optional(at_least(0, integer=True)),
                    max_removed_share=between(0, 1))


def _format_of(inp: dict, owner: str) -> type[Reader] | None:
    """The reader class an input names with ``format:`` (None for ``auto``); one line if unknown."""
    fmt = inp.get("format", "auto")
    if fmt in (None, "auto"):
        return reader_class("hf") if "name" in inp and "path" not in inp else None
    try:
        return reader_class(fmt)
    except RegistryError as e:
        raise ParamError(f"{owner}: `format`: {e}") from None


def validate_input(owner: str, inp: Any) -> dict:
    """One input's keys and values (common keys plus those of its format's reader), typos refused."""
    if not isinstance(inp, dict):
        raise ParamError(f"{owner} must be a mapping with `path:` (or `name:` for a Hugging Face dataset), "
                         f"got {type(inp).__name__} {str(inp)[:80]!r}")
    cls = _format_of(inp, owner)
    defaults, checks = dict(INPUT_DEFAULTS), dict(INPUT_CHECKS)
    readers = [cls] if cls is not None else [reader_class(f) for f in ("hf", "hf_disk")]
    for r in readers:  # `auto` may turn out to be a saved dataset (split:) or a hub dataset (name:)
        defaults.update({k: v for k, v in r.options.items() if k not in defaults})
        checks.update(r.option_checks)
    return validate(owner, inp, defaults, checks)


# ---------------------------------------------------------------------------
# inputs -> tasks


def _task(k: int, path: str | None, spec: dict, fmt: str, file_label: str, **extra) -> dict:
    spec = {**spec, "format": fmt}
    return {"input": k, "path": path, "spec": spec, "label": file_label, "file": file_label, **extra}


def _folder_tasks(k: int, folder: str, inp: dict, fmt: str, run_root: str | None, skipped: dict) -> list[dict]:
    """A folder named by ``path:``: a saved dataset, or the files inside it, each read by its format
    (``.txt`` files together as one input of one-file documents); other files are skipped and counted."""
    if fmt in ("auto", "hf", "hf_disk") and detect_folder(folder):
        return [_task(k, folder, inp, detect_folder(folder), os.path.basename(folder.rstrip(os.sep)))]
    if fmt in ("hf", "hf_disk"):
        raise InputError(f"{folder}: not a dataset saved with save_to_disk (no state.json and dataset_info.json, "
                         f"nor dataset_dict.json)" + ("; for data files use `name: json` with `data_files:`"
                                                      if fmt == "hf" else ""))
    files, txt = [], []
    for fp in walk_folder(folder, run_root, skipped):
        why = skip_reason(fp, folder, run_root)
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        try:
            f = detect_format(fp) if fmt == "auto" else fmt
        except InputError:
            skipped["unknown_format"] = skipped.get("unknown_format", 0) + 1
            continue
        if fmt != "auto" and not any(strip_compression(fp.lower()).endswith(s) for s in reader_class(f).suffixes):
            skipped["unknown_format"] = skipped.get("unknown_format", 0) + 1
            continue
        (txt if f == "txt" else files).append((fp, f))
    tasks = [_task(k, fp, inp, f, printable_path(os.path.relpath(fp, folder))) for fp, f in files]
    if txt:
        tasks.append(_task(k, folder, {**inp, "_files": [fp for fp, _ in txt], "_root": folder}, "txt",
                           printable_path(os.path.basename(folder.rstrip(os.sep)))))
    if not tasks:
        why = ", ".join(f"{v} {r}" for r, v in sorted(skipped.items())) or "it is empty"
        raise InputError(f"{folder}: the folder holds no file winnow reads ({why}); formats: "
                         f"{', '.join(sorted(set(READERS.names()) - {'hf'}))}")
    return tasks


def expand_inputs(inputs: list[dict], run_dir: str | os.PathLike | None = None) -> list[dict]:
    """One task per input file, saved dataset, hub dataset or folder of .txt files, in a stable order.

    A path named explicitly must be a regular file or a folder; what a glob or a
    folder walk finds is filtered (:func:`skip_reason`) and the skipped paths are
    counted on the input's first task (``task["skipped"]``). Nothing inside
    ``run_dir`` is read, so a run folder under the input glob never re-ingests its own output.
    """
    run_root = os.path.realpath(run_dir) if run_dir is not None else None
    if not isinstance(inputs, list):
        raise InputError(f"`inputs` must be a list of mappings (each with `path:` or `name:`), "
                         f"got {type(inputs).__name__}")
    tasks: list[dict] = []
    for k, inp in enumerate(inputs):
        if not isinstance(inp, dict):
            raise InputError(f"input #{k} must be a mapping with `path:` (or `name:` for a Hugging Face dataset), "
                             f"got {type(inp).__name__} {str(inp)[:80]!r}")
        inp = dict(inp)
        fmt = inp.get("format") or "auto"
        path = inp.get("path")
        skipped: dict[str, int] = {}
        if path is None and inp.get("name") is not None and fmt in ("auto", "hf", "hf_disk"):
            name = str(inp["name"])
            if os.path.isdir(name) and detect_folder(name):  # `name:` of a save_to_disk folder
                new = _task(k, name, inp, detect_folder(name), os.path.basename(name.rstrip(os.sep)))
            else:
                new = _task(k, None, inp, "hf", f"hf:{name}")
            tasks.append(new)
            continue
        if not path:
            raise InputError(f"input #{k} has no `path` (or `name` for a Hugging Face dataset)")
        if not isinstance(path, str):
            raise InputError(f"input #{k}: `path` must be a string (a file, folder or glob), got {type(path).__name__}")
        if has_magic(path):
            new, root = [], glob_root(path)
            matches = expand_glob(path, run_root, skipped)
            if not matches and not skipped:
                raise InputError(f"input #{k}: no files match {path!r}")
            for fp in matches:
                why = skip_reason(fp, root, run_root)
                if why:
                    skipped[why] = skipped.get(why, 0) + 1
                elif os.path.isdir(fp):
                    new.extend(_folder_tasks(k, fp, inp, fmt, run_root, skipped))
                else:
                    f = detect_format(fp) if fmt == "auto" else fmt
                    new.append(_task(k, fp, inp, f, printable_path(os.path.relpath(fp, root))))
            if not new:
                why = ", ".join(f"{v} {r}" for r, v in sorted(skipped.items()))
                raise InputError(f"input #{k}: {len(matches)} paths match {path!r} but none can be read ({why})")
        else:
            if run_root is not None and inside(os.path.realpath(path), run_root):
                raise InputError(f"input #{k}: {path} is inside the run folder {run_dir}; inputs cannot be read from it")
            if os.path.isdir(path):
                new = _folder_tasks(k, path, inp, fmt, run_root, skipped)
            else:
                require_regular_file(path)
                f = detect_format(path) if fmt == "auto" else fmt
                new = [_task(k, path, inp, f, printable_path(os.path.basename(path)))]
        if skipped:
            new[0]["skipped"] = dict(sorted(skipped.items()))
        tasks.extend(new)
    for i, t in enumerate(tasks):
        t["index"] = i
    return tasks


# ---------------------------------------------------------------------------
# the stage


class IngestStage(Stage):
    """The source stage: reads the config's ``inputs`` into shards of ``shard_docs`` records."""

    kind = "ingest"
    has_scores = False
    reads_inputs = True

    def __init__(self, name: str, params: dict):
        super().__init__(name, params)
        opts = self.validated({**DEFAULT_LIMITS, **STAGE_DEFAULTS}, LIMIT_CHECKS)
        self.limits = {k: v for k, v in opts.items() if k not in STAGE_DEFAULTS}
        self.limit = opts["limit"]
        self.max_removed_share = opts["max_removed_share"]
        inputs = opts["inputs"]
        if not inputs:
            raise ValueError(f"stage {name}: ingest needs `inputs` (a list of {{path: ...}} or {{format: hf, name: ...}})")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise ValueError(f"stage {name}: `inputs` must be a list of mappings like {{path: data/*.jsonl.gz}}, "
                             f"got {type(inputs).__name__}" + (" of strings" if isinstance(inputs, list) else ""))
        for k, inp in enumerate(inputs):
            validate_input(f"stage {name}: inputs[{k}]", inp)

    #: The run folder, set by the runner before any source hook: inputs are never read from inside it.
    run_dir: Path | None = None
    #: Paths the expansion of the inputs skipped, by reason (logged by ``describe``).
    skipped_paths: dict[str, int] | None = None

    def describe(self) -> str:
        skipped = self.skipped_paths or {}
        note = "; globs skipped " + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) if skipped else ""
        limit = f", first {self.limit:,} records of each input" if self.limit is not None else ""
        return (f"ingest({len(self.params['inputs'])} input(s), shard_docs={self.limits['shard_docs']}, "
                f"extractor={self.limits['extractor']}{limit}{note})")

    def source_tasks(self) -> list[dict]:
        """The inputs expanded into tasks (the runner asks once per run and reuses them)."""
        tasks = expand_inputs(self.params["inputs"], self.run_dir)
        self.skipped_paths = {}
        for t in tasks:
            for why, n in (t.get("skipped") or {}).items():
                self.skipped_paths[why] = self.skipped_paths.get(why, 0) + n
        return tasks

    def _hashes_path(self) -> Path | None:
        return StageFolder(self.run_dir, self.name).cache_path("input_hashes.json") if self.run_dir is not None else None

    def _input_files(self, task: dict) -> list[str]:
        """The files whose bytes are one task's input (none for a hub dataset)."""
        if task["path"] is None:
            return []
        return reader_class(task["spec"]["format"])(task["path"], task["spec"], self.limits).input_files()

    def input_fingerprint(self, tasks: list[dict]) -> str:
        """The tasks and the content of their files (hashes remembered under each file's stat)."""
        cache = ContentHashes(self._hashes_path(), writable=self.remember_inputs)
        parts = []
        for t in tasks:
            if t["path"] is None:  # a hub dataset: its name and settings are all there is to compare
                parts.append((t["file"], t["spec"]))
                continue
            parts.append((t["file"], t["spec"]["format"], [(os.path.relpath(f, t["path"]) if f != t["path"] else "",
                                                             cache.hash(f)) for f in self._input_files(t)]))
        cache.save()
        return fingerprint(parts)

    def changed_inputs(self, tasks: list[dict]) -> list[str]:
        """Input files whose content differs from the hashes remembered when the stage last read them, or
        that it never read (``(new)``), by path; empty when nothing was remembered. Writes nothing."""
        path = self._hashes_path()
        if path is None or not path.is_file():
            return []
        remembered = ContentHashes(path, writable=False)
        before = {real: e.get("xxh3") for real, e in remembered.known.items() if isinstance(e, dict)}
        out = []
        for t in tasks:
            for f in self._input_files(t):
                real = os.path.realpath(f)
                if real not in before:
                    out.append(f"{printable_path(f)} (new)")
                elif remembered.hash(f) != before[real]:
                    out.append(printable_path(f))
        return out

    def read_source(self, task: dict, start: int) -> "IngestRead":
        return IngestRead(self, task, start)

    def source_schema(self) -> pa.Schema:
        return KEPT_SCHEMA

    def source_shard_rows(self) -> int:
        return int(self.limits["shard_docs"])


class ContentHashes:
    """xxh3 of input files, remembered under ``(size, mtime, ctime, inode, device)`` so unchanged files
    are not read again. ctime cannot be set back by a user, so an in-place edit is always re-hashed."""

    def __init__(self, path: Path | None, writable: bool = True):
        self.path = path
        self.writable = writable
        self.known: dict = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                data = read_json(path)
                self.known = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self.known = {}

    def hash(self, file: str) -> str:
        real = os.path.realpath(file)
        try:
            st = os.stat(real)
        except OSError as e:
            raise InputError(f"{file}: cannot read it: {e.strerror}") from None
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        entry = self.known.get(real)
        if isinstance(entry, dict) and entry.get("stat") == key:
            return entry["xxh3"]
        try:
            h = xxh3_file(Path(real))
        except OSError as e:
            raise InputError(f"{file}: cannot read it: {e.strerror}") from None
        self.known[real] = {"stat": key, "xxh3": h}
        self.changed = True
        return h

    def save(self) -> None:
        """Remember the hashes (best effort: a read-only run folder only means hashing again next time)."""
        if self.path is None or not self.changed or not self.writable:
            return
        try:
            atomic_write_json(self.path, self.known)
        except OSError:
            pass


def _source_name(task: dict) -> str:
    spec = task["spec"]
    if spec.get("source") is not None:
        return str(spec["source"])
    if task["path"]:
        base = printable_path(os.path.basename(task["path"].rstrip("/")))
        return base.split(".")[0]
    return str(spec.get("name"))


def _row(r: Record, task: dict, source: str, max_chars: int) -> dict:
    """A record as the row the runner writes: kept, or removed with a reason (``empty`` and ``too_long``
    are decided here, for every format alike)."""
    meta = dict(r.meta or {})
    file = r.file or task["file"]
    reason, detail, text = r.reason, r.detail, r.text
    if reason is None:
        if not text or not text.strip():
            reason, detail = "empty", "no text" + (" after HTML extraction" if "extractor" in meta else "")
        elif len(text) > max_chars:
            reason, detail = "too_long", f"{len(text):,} chars (max_doc_chars={max_chars:,})"
            meta["chars"] = len(text)
    if reason is not None:  # a removed row keeps a preview of what was read (the record may be huge)
        text = r.preview if r.preview or text is None else text[:PREVIEW_CHARS]
    return {"id": r.id if r.id is not None else f"{source}:{file}:{r.number}", "text": text, "source": source,
            "metadata": dumps_metadata(meta), "input_file": file, "input_record": r.number,
            "reason": reason, "detail": detail}


_HINTS = {
    "missing_text": "set `text_field:`",
    "malformed": "check the file's format (`format:`) and the text field",
    "bad_encoding": "the file is not UTF-8",
    "empty": "check `text_field:` / `html_field:`",
}


def check_removed_share(task: dict, markers: list[dict], allowed: float, fields: list[str]) -> None:
    """One line, naming the file, the reason and the fields records have, when one reason removed
    more than ``allowed`` of a file's records (a wrong ``text_field`` otherwise gives 0 kept, exit 0)."""
    rows = sum(m["rows_in"] for m in markers)
    if rows < SHARE_MIN_RECORDS:
        return
    by_reason: Counter = Counter()
    for m in markers:
        for reason, (n, _) in (m.get("removed_by_reason") or {}).items():
            by_reason[reason] += n
    if not by_reason:
        return
    reason, n = by_reason.most_common(1)[0]
    if n / rows <= allowed:
        return
    where = task["path"] or task["label"]
    has = f"; the records have the fields {', '.join(fields[:20])}" if fields else ""
    hint = _HINTS.get(reason, "check the input")
    raise InputError(f"{where}: {n:,} of {rows:,} records ({100 * n / rows:.0f}%) removed as {reason}{has}; {hint}, "
                     f"or allow it with `max_removed_share: 1.0` (now {allowed:g})")


def _extractor_meta() -> dict:
    out = {}
    for ex in EXTRACTORS:
        try:
            out[ex] = extractor_info(ex)
        except Exception:  # extractor not installed: only fails if used
            pass
    return out


class IngestRead(SourceRead):
    """One input task's rows: its reader's records, from record ``start + 1`` on (at most ``limit``)."""

    def __init__(self, stage: IngestStage, task: dict, start: int):
        self.stage, self.task = stage, task
        spec = task["spec"]
        self.limits = {**stage.limits, "extractor_meta": _extractor_meta()}
        self.reader = reader_class(spec["format"])(task["path"], spec, self.limits)
        self.start = start
        self.limit = min((x for x in (spec.get("limit"), stage.limit) if x is not None), default=None)

    def __iter__(self) -> Iterator[dict]:
        records = self.reader.records(self.start + 1)
        if self.limit is not None:
            records = islice(records, self.limit)  # records before `start` come as SKIPPED: they count
        source, max_chars = _source_name(self.task), int(self.limits["max_doc_chars"])
        try:
            for rec in records:
                if rec is not SKIPPED:
                    yield _row(rec, self.task, source, max_chars)
        except (OSError, EOFError, InputError) as e:
            where = self.task["path"] or self.task["label"]
            what = str(e) if isinstance(e, InputError) and where in str(e) else \
                f"cannot read {where}: {type(e).__name__}: {e}"
            raise InputError(f"{what} (finished shards of this file kept; fix the file and rerun)") from e

    def finish(self, markers: list[dict]) -> dict:
        """The share check, then what the last marker records: counters and notes for the log."""
        task, reader = self.task, self.reader
        allowed = task["spec"].get("max_removed_share")
        check_removed_share(task, markers, self.stage.max_removed_share if allowed is None else allowed,
                            [f for f, _ in reader.fields_seen.most_common()])
        # skipped WARC records, blank lines, paths a glob or folder walk skipped: on the file's last shard marker
        counters = {**reader.counters, **{f"inputs_skipped:{k}": v for k, v in (task.get("skipped") or {}).items()}}
        notes = [f"{task['label']}: {n}" for n in reader.notes]
        if reader.counters.get(UNCHECKED_ZSTD):
            notes.append(f"warning: {task['path']}: {reader.counters[UNCHECKED_ZSTD]:,} zstd frame(s) carry no "
                         f"content checksum, so corruption inside them cannot be detected (write with a checksum: "
                         f"`zstd --check`, or zstandard's write_checksum=True)")
        out: dict = {}
        if counters:
            out["counters"] = dict(sorted(counters.items()))
        if notes:
            out["notes"] = notes
        return out
