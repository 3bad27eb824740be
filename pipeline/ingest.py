"""Ingest: read raw inputs into document shards, quarantining bad records.

Readers: JSONL (plain, ``.gz``, ``.zst``), Parquet, folders of ``.txt`` files,
WARC/WET (warcio; HTML responses go through text extraction) and Hugging Face
``datasets`` by name or local path. Every input record becomes exactly one row,
kept or removed: ``malformed`` (not a JSON object), ``bad_encoding`` (not
UTF-8), ``missing_text``, ``empty``, ``too_long``, ``unsupported_content_type``,
``http_status`` and ``not_web_content`` (crawler resources) removals carry the file and record number in metadata.

Reading is bounded: lines are read with a length cap (an endless line is
skipped, not loaded), zstd frames with a window cap, WARC payloads and HTML
with a byte cap, so one hostile file cannot exhaust memory.
"""
from __future__ import annotations

import glob
import gzip
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from pipeline.document import DOC_SCHEMA, REMOVED_FIELDS, dumps_metadata
from pipeline.shards import StageLayout, atomic_write_json, fingerprint, read_json
from pipeline.outputs import marker_valid, text_chars, write_shard_outputs
from pipeline.params import at_least, of_type, one_of, optional, validate
from pipeline.stage import Stage, StageContext

FORMATS = ("jsonl", "parquet", "txt", "warc", "hf")
PREVIEW_CHARS = 2000


class InputError(RuntimeError):
    """An input file cannot be read at all (missing, unreadable, corrupt stream)."""


@dataclass
class Record:
    """One input record: a document, or the reason it cannot be one."""

    number: int  # 1-based line / record number within the file
    text: str | None = None
    id: str | None = None
    meta: dict | None = None
    reason: str | None = None
    detail: str | None = None
    preview: str = ""


SKIPPED = Record(number=-1)  # placeholder for records of shards already finished


# ---------------------------------------------------------------------------
# format detection and bounded byte streams


def detect_format(path: str) -> str:
    p = path.lower()
    if os.path.isdir(path):
        return "txt"
    for suf in (".gz", ".zst", ".zstd"):
        if p.endswith(suf):
            p = p[: -len(suf)]
    if p.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".warc", ".wet", ".arc")):
        return "warc"
    if p.endswith(".txt"):
        return "txt"
    raise InputError(f"{path}: cannot tell the format from the name; set `format:` ({', '.join(FORMATS)})")


def open_bytes(path: str, max_window_bytes: int = 1 << 27) -> io.BufferedIOBase:
    """Open a possibly compressed file as a binary stream (streamed, never fully loaded)."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith((".zst", ".zstd")):
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=max_window_bytes)
        return io.BufferedReader(dctx.stream_reader(open(path, "rb"), read_across_frames=True))
    return open(path, "rb")


def bounded_lines(stream, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(line_number, line_bytes or None if over limit, byte_length)``."""
    n = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) > limit and not line.endswith(b"\n"):
            total = len(line)
            while True:  # drain the rest of the overlong line in bounded pieces
                chunk = stream.readline(1 << 20)
                total += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield n, None, total
        else:
            yield n, line, len(line)


def _preview(b: bytes | str) -> str:
    if isinstance(b, bytes):
        b = b[: PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    return b[:PREVIEW_CHARS]


def _is_utf8_clean(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        return False


# ---------------------------------------------------------------------------
# HTML extraction


def extractor_info(name: str) -> dict:
    from importlib.metadata import version

    pkg = {"resiliparse": "resiliparse", "trafilatura": "trafilatura"}[name]
    settings = {
        "resiliparse": {"main_content": True, "alt_texts": False, "links": False, "list_bullets": True},
        "trafilatura": {"include_comments": False, "include_tables": True, "deduplicate": False},
    }[name]
    return {"extractor": name, "extractor_version": version(pkg), "extractor_settings": settings}


def decode_html(raw: bytes) -> str:
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return bytes_to_str(raw, detect_encoding(raw))


def extract_text(html: str, extractor: str) -> str:
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True, alt_texts=False, links=False, list_bullets=True)
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html, include_comments=False, include_tables=True, deduplicate=False) or ""
    raise ValueError(f"unknown extractor {extractor!r} (resiliparse or trafilatura)")


# ---------------------------------------------------------------------------
# readers: each yields Records; records numbered < `parse_from` are SKIPPED


class Reader:
    def __init__(self, path: str, spec: dict, limits: dict):
        self.path = path
        self.spec = spec
        self.limits = limits
        self.text_field = spec.get("text_field", "text")
        self.id_field = spec.get("id_field", "id")
        self.url_field = spec.get("url_field")
        self.html_field = spec.get("html_field")
        self.meta_fields = spec.get("metadata_fields", "all")
        self.extractor = spec.get("extractor", limits["extractor"])

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        raise NotImplementedError

    # shared: turn a mapping (JSON object, Parquet row, HF row) into a Record
    def from_mapping(self, n: int, obj: Any, preview: str) -> Record:
        if not isinstance(obj, dict):
            return Record(n, reason="malformed", detail=f"expected a JSON object, got {type(obj).__name__}", preview=preview)
        field = self.html_field or self.text_field
        raw_id = obj.get(self.id_field) if self.id_field else None
        rid = str(raw_id) if raw_id is not None else None
        value = obj.get(field)
        if value is None:
            return Record(n, id=rid, reason="missing_text", detail=f"no `{field}` field" if field not in obj else f"`{field}` is null", preview=preview)
        if not isinstance(value, str):
            return Record(n, id=rid, reason="malformed", detail=f"`{field}` is {type(value).__name__}, not a string", preview=preview)
        if not _is_utf8_clean(value):
            return Record(n, id=rid, reason="bad_encoding", detail=f"`{field}` has invalid Unicode (lone surrogates)",
                          preview=value.encode("utf-8", "replace").decode("utf-8")[:PREVIEW_CHARS])
        meta = self._metadata(obj, exclude={field, self.text_field, self.html_field, self.id_field})
        text = value
        if self.html_field:
            if len(value) > self.limits["max_html_chars"]:
                value = value[: self.limits["max_html_chars"]]
                meta["html_truncated"] = True
            text = extract_text(value, self.extractor)
            meta.update(self.limits["extractor_meta"][self.extractor])
        if self.url_field and obj.get(self.url_field) is not None:
            meta["url"] = str(obj[self.url_field])
        return Record(n, text=text, id=rid, meta=meta, preview=preview)

    def _metadata(self, obj: dict, exclude: set) -> dict:
        keys = obj.keys() if self.meta_fields == "all" else [k for k in self.meta_fields if k in obj]
        meta = {}
        cap = self.limits["max_metadata_chars"]
        for k in keys:
            if k in exclude:
                continue
            v = obj[k]
            if isinstance(v, (bytes, bytearray)):
                continue
            try:
                s = json.dumps(v, ensure_ascii=False, default=str)
            except (TypeError, ValueError):
                continue
            if len(s) > cap or not _is_utf8_clean(s):
                meta.setdefault("dropped_fields", []).append(k)
                continue
            meta[k] = v
        return meta


class JsonlReader(Reader):
    def records(self, parse_from: int = 1) -> Iterator[Record]:
        limit = self.limits["max_line_bytes"]
        max_records = self.spec.get("limit")  # optional: read only the first N lines
        with open_bytes(self.path) as f:
            for n, line, nbytes in bounded_lines(f, limit):
                if max_records is not None and n > max_records:
                    return
                if n < parse_from:
                    yield SKIPPED
                    continue
                if line is None:
                    yield Record(n, reason="too_long", detail=f"line is {nbytes:,} bytes (max_line_bytes={limit:,})",
                                 preview=f"<{nbytes:,}-byte line not loaded>")
                    continue
                if not line.strip():
                    yield Record(n, reason="empty", detail="blank line", preview="")
                    continue
                try:
                    s = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Record(n, reason="bad_encoding", detail=f"not UTF-8: {e}", preview=_preview(line))
                    continue
                try:
                    obj = json.loads(s)
                except json.JSONDecodeError as e:
                    yield Record(n, reason="malformed", detail=f"invalid JSON: {e}", preview=_preview(s))
                    continue
                yield self.from_mapping(n, obj, _preview(s) if not isinstance(obj, dict) else "")


class ParquetReader(Reader):
    def records(self, parse_from: int = 1) -> Iterator[Record]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        names = pf.schema_arrow.names
        field = self.html_field or self.text_field
        if field not in names:
            raise InputError(f"{self.path}: no column `{field}` (columns: {', '.join(names)}); set `text_field:`")
        n = 0
        for batch in pf.iter_batches(batch_size=256):
            rows = batch.to_pylist() if n + batch.num_rows >= parse_from else None
            for i in range(batch.num_rows):
                n += 1
                if rows is None or n < parse_from:
                    yield SKIPPED
                    continue
                yield self.from_mapping(n, rows[i], "")


class TxtFolderReader(Reader):
    def files(self) -> list[str]:
        if os.path.isfile(self.path):
            return [self.path]
        return sorted(str(p) for p in Path(self.path).rglob("*.txt"))

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        cap = self.limits["max_doc_bytes"]
        root = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        for n, fp in enumerate(self.files(), start=1):
            if n < parse_from:
                yield SKIPPED
                continue
            rel = os.path.relpath(fp, root)
            with open(fp, "rb") as f:
                data = f.read(cap + 1)
            if len(data) > cap:
                yield Record(n, id=rel, reason="too_long", detail=f"file over {cap:,} bytes", preview=_preview(data), meta={"path": rel})
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Record(n, id=rel, reason="bad_encoding", detail=f"not UTF-8: {e}", preview=_preview(data), meta={"path": rel})
                continue
            yield Record(n, id=rel, text=text, meta={"path": rel})


HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


class WarcReader(Reader):
    """WARC responses/resources (HTML extracted, plain text kept) and WET conversions.

    ``warcinfo``, ``request``, ``metadata`` and ``revisit`` records hold no
    document; they are counted in the stage's counters, not emitted.
    """

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed

        cap = self.limits["max_record_bytes"]
        n = 0
        self.skipped: dict[str, int] = {}
        with open(self.path, "rb") as raw:
            try:
                for rec in ArchiveIterator(raw, arc2warc=True):
                    rtype = rec.rec_type
                    if rtype not in ("response", "resource", "conversion"):
                        self.skipped[rtype] = self.skipped.get(rtype, 0) + 1
                        continue
                    n += 1
                    if n < parse_from:
                        yield SKIPPED
                        continue
                    yield self._record(n, rec, cap)
            except ArchiveLoadFailed as e:
                raise InputError(f"{self.path}: not a readable WARC file after {n} records: {e}") from e

    def _record(self, n: int, rec, cap: int) -> Record:
        h = rec.rec_headers
        url = h.get_header("WARC-Target-URI")
        rid = h.get_header("WARC-Record-ID") or f"{os.path.basename(self.path)}:{n}"
        meta = {"url": url, "warc_date": h.get_header("WARC-Date"), "warc_type": rec.rec_type}
        ctype = ""
        if rec.rec_type == "resource" and not (url or "").startswith(("http://", "https://", "ftp://")):
            # e.g. wget's own log and arguments stored as `metadata://` resources
            return Record(n, id=rid, meta=meta, reason="not_web_content", detail=f"resource record {url}", preview="")
        if rec.http_headers is not None:
            status = rec.http_headers.get_statuscode()
            meta["http_status"] = int(status) if status and status.isdigit() else status
            ctype = (rec.http_headers.get_header("Content-Type") or "").lower()
            if status and status.isdigit() and not 200 <= int(status) < 300:
                return Record(n, id=rid, meta=meta, reason="http_status", detail=f"HTTP {status}", preview="")
        elif rec.rec_type == "conversion":
            ctype = "text/plain"
        else:
            ctype = (h.get_header("Content-Type") or "").lower()
        payload = rec.content_stream().read(cap + 1)
        truncated = len(payload) > cap
        payload = payload[:cap]
        mime = ctype.split(";")[0].strip()
        if mime in HTML_TYPES or (not mime and payload.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))):
            html = decode_html(payload)
            text = extract_text(html, self.extractor)
            meta.update(self.limits["extractor_meta"][self.extractor])
        elif mime.startswith("text/"):
            text = payload.decode("utf-8", errors="replace")
        else:
            return Record(n, id=rid, meta=meta, reason="unsupported_content_type", detail=mime or "no content type", preview="")
        if truncated:
            meta["payload_truncated_at"] = cap
        return Record(n, id=rid, text=text, meta=meta)


class HFReader(Reader):
    """Hugging Face ``datasets``: hub names on a connected machine, local paths offline."""

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        from datasets import load_dataset

        s = self.spec
        kwargs = {k: s[k] for k in ("data_files", "data_dir", "revision") if s.get(k)}
        ds = load_dataset(s["name"], s.get("config"), split=s.get("split", "train"),
                          streaming=s.get("streaming", True), **kwargs)
        limit = s.get("limit")
        for n, row in enumerate(ds, start=1):
            if limit is not None and n > limit:
                return
            if n < parse_from:
                yield SKIPPED
                continue
            yield self.from_mapping(n, row, "")


READERS = {"jsonl": JsonlReader, "parquet": ParquetReader, "txt": TxtFolderReader, "warc": WarcReader, "hf": HFReader}


# ---------------------------------------------------------------------------
# the stage


DEFAULT_LIMITS = {
    "shard_docs": 5000,
    "max_doc_chars": 1_000_000,
    "max_line_bytes": 64 << 20,
    "max_doc_bytes": 16 << 20,
    "max_record_bytes": 8 << 20,
    "max_html_chars": 4 << 20,
    "max_metadata_chars": 16_384,
    "extractor": "resiliparse",
}


def expand_inputs(inputs: list[dict]) -> list[dict]:
    """One task per input file (or per HF dataset / txt folder), in a stable order."""
    tasks = []
    for k, inp in enumerate(inputs):
        inp = dict(inp)
        fmt = inp.get("format", "auto")
        if fmt == "hf" or "name" in inp and "path" not in inp:
            inp["format"] = "hf"
            tasks.append({"input": k, "path": None, "spec": inp, "label": f"hf:{inp['name']}"})
            continue
        path = inp.get("path")
        if not path:
            raise InputError(f"input #{k} has no `path` (or `name` for a Hugging Face dataset)")
        if os.path.isdir(path) and fmt in ("auto", "txt"):
            files = [path]
            inp["format"] = "txt"
        else:
            files = sorted(glob.glob(path, recursive=True)) if any(c in path for c in "*?[") else [path]
            if not files:
                raise InputError(f"input #{k}: no files match {path!r}")
        for fp in files:
            if not os.path.exists(fp):
                raise InputError(f"input #{k}: file not found: {fp}")
            spec = dict(inp)
            spec["format"] = detect_format(fp) if fmt == "auto" else fmt
            tasks.append({"input": k, "path": fp, "spec": spec, "label": os.path.basename(fp)})
    for i, t in enumerate(tasks):
        t["index"] = i
    return tasks


#: Every key an entry of ``inputs`` may have (one validator for typos, as for every other parameter).
INPUT_DEFAULTS = {
    "path": None, "format": "auto", "source": None, "text_field": "text", "id_field": "id", "url_field": None,
    "html_field": None, "metadata_fields": "all", "extractor": None,
    # Hugging Face datasets
    "name": None, "config": None, "split": "train", "streaming": True, "limit": None,
    "data_files": None, "data_dir": None, "revision": None,
}
INPUT_CHECKS = {"format": one_of("auto", *FORMATS), "limit": optional(at_least(0, integer=True)),
                "path": optional(of_type(str, name="a file, glob or folder path")),
                "extractor": optional(one_of("resiliparse", "trafilatura"))}
LIMIT_CHECKS = {k: at_least(1, integer=True) for k in DEFAULT_LIMITS if k != "extractor"}
LIMIT_CHECKS["extractor"] = one_of("resiliparse", "trafilatura")


class IngestStage(Stage):
    """The source stage: reads the config's ``inputs`` into shards of ``shard_docs`` records."""

    kind = "ingest"
    has_scores = False
    reads_inputs = True

    def __init__(self, name: str, params: dict):
        super().__init__(name, params)
        opts = self.validated({**DEFAULT_LIMITS, "inputs": None}, LIMIT_CHECKS)
        self.limits = {k: v for k, v in opts.items() if k != "inputs"}
        inputs = opts["inputs"]
        if not inputs:
            raise ValueError(f"stage {name}: ingest needs `inputs` (a list of {{path: ...}} or {{format: hf, name: ...}})")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise ValueError(f"stage {name}: `inputs` must be a list of mappings like {{path: data/*.jsonl.gz}}, "
                             f"got {type(inputs).__name__}" + (" of strings" if isinstance(inputs, list) else ""))
        for k, inp in enumerate(inputs):
            validate(f"stage {name}: inputs[{k}]", inp, INPUT_DEFAULTS, INPUT_CHECKS)

    def describe(self) -> str:
        return (f"ingest({len(self.params['inputs'])} input(s), shard_docs={self.limits['shard_docs']}, "
                f"extractor={self.limits['extractor']})")

    def source_tasks(self) -> list[dict]:
        return expand_inputs(self.params["inputs"])

    def input_fingerprint(self) -> str:
        files = []
        for t in self.source_tasks():
            p = t["path"]
            if p and os.path.isfile(p):
                st = os.stat(p)
                files.append((p, st.st_size, st.st_mtime_ns))
            elif p:  # a folder of .txt files
                files.append((p, [(q, os.path.getsize(q)) for q in TxtFolderReader(p, t["spec"], self.limits).files()]))
            else:
                files.append(t["spec"])
        return fingerprint(files)

    def run_source_task(self, task: dict, ctx: StageContext, stage_fp: str) -> list[dict]:
        return ingest_file(self, task, ctx, stage_fp)


def _source_name(task: dict) -> str:
    spec = task["spec"]
    if spec.get("source"):
        return str(spec["source"])
    if task["path"]:
        base = os.path.basename(task["path"].rstrip("/"))
        return base.split(".")[0]
    return str(spec.get("name"))


def _rows(records: list[Record], task: dict, source: str, max_chars: int) -> tuple[list[dict], list[dict]]:
    kept, removed = [], []
    rel = os.path.basename(task["path"]) if task["path"] else f"hf:{task['spec'].get('name')}"
    for r in records:
        meta = dict(r.meta or {})
        meta["file"] = rel
        meta["record"] = r.number
        rid = r.id if r.id is not None else f"{source}:{rel}:{r.number}"
        reason, detail, text = r.reason, r.detail, r.text
        if reason is None:
            if not text or not text.strip():
                reason, detail = "empty", "no text" + (" after HTML extraction" if "extractor" in meta else "")
            elif len(text) > max_chars:
                reason, detail = "too_long", f"{len(text):,} chars (max_doc_chars={max_chars:,})"
                meta["chars"] = len(text)
        if reason is None:
            kept.append({"id": rid, "text": text, "source": source, "metadata": dumps_metadata(meta)})
        else:
            preview = r.preview if r.preview or text is None else text[:PREVIEW_CHARS]
            removed.append({"id": rid, "text": preview, "source": source, "metadata": dumps_metadata(meta),
                            "stage": "", "reason": reason, "detail": detail})
    return kept, removed


REMOVED_SCHEMA = pa.schema(list(DOC_SCHEMA) + REMOVED_FIELDS)


def ingest_file(stage: IngestStage, task: dict, ctx: StageContext, stage_fp: str) -> list[dict]:
    """Ingest one input file into shards of ``shard_docs`` records, resuming finished shards."""
    layout = StageLayout(ctx.run_dir, stage.name)
    limits = stage.limits
    limits = {**limits, "extractor_meta": {}}
    for ex in ("resiliparse", "trafilatura"):
        try:
            limits["extractor_meta"][ex] = extractor_info(ex)
        except Exception:  # extractor not installed: only fails if used
            pass
    file_marker = layout.root / "_done" / f"file-{task['index']:05d}.json"
    if file_marker.exists():
        fm = read_json(file_marker)
        if fm.get("fingerprint") == stage_fp and all(
            marker_valid(layout, layout.done_marker(s), stage_fp) for s in fm["shards"]
        ):
            return [read_json(layout.done_marker(s)) for s in fm["shards"]]
    fmt = task["spec"]["format"]
    reader = READERS[fmt](task["path"], task["spec"], limits)
    source = _source_name(task)
    per_shard = int(limits["shard_docs"])
    shard_name = lambda c: f"part-{task['index']:05d}-{c:05d}"  # noqa: E731

    # find how many leading shards of this file are already finished
    finished = []
    c = 0
    while marker_valid(layout, layout.done_marker(shard_name(c)), stage_fp):
        finished.append(read_json(layout.done_marker(shard_name(c))))
        c += 1
    parse_from = sum(m["rows_in"] for m in finished) + 1

    markers = list(finished)
    buf: list[Record] = []
    t0 = time.perf_counter()
    chunk = len(finished)

    def flush() -> None:
        nonlocal buf, chunk, t0
        kept, removed = _rows(buf, task, source, int(limits["max_doc_chars"]))
        for r in removed:
            r["stage"] = stage.name
        kt = pa.Table.from_pylist(kept, schema=DOC_SCHEMA)
        rt = pa.Table.from_pylist(removed, schema=REMOVED_SCHEMA)
        # characters in = what the shard holds (removed rows keep a preview only)
        chars_in = text_chars(kt) + text_chars(rt)
        m = write_shard_outputs(layout, shard_name(chunk), len(buf), chars_in, kt, rt, stage_fp,
                                time.perf_counter() - t0)
        markers.append(m)
        buf, chunk, t0 = [], chunk + 1, time.perf_counter()

    try:
        for rec in reader.records(parse_from):
            if rec is SKIPPED:
                continue
            buf.append(rec)
            if len(buf) >= per_shard:
                flush()
    except (OSError, EOFError, InputError) as e:
        where = task["path"] or task["label"]
        raise InputError(f"cannot read {where}: {type(e).__name__}: {e} "
                         f"({len(markers)} finished shards of this file kept; fix the file and rerun)") from e
    if buf or not markers:
        flush()
    skipped = getattr(reader, "skipped", None)
    if skipped:  # non-document WARC records: counted on the file's last shard marker
        markers[-1]["counters"] = {f"warc_records_skipped:{k}": v for k, v in sorted(skipped.items())}
        atomic_write_json(layout.done_marker(markers[-1]["shard"]), markers[-1])
    atomic_write_json(file_marker, {"fingerprint": stage_fp, "shards": [m["shard"] for m in markers],
                                    "path": task["path"], "format": fmt})
    return markers
