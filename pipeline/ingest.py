"""Ingest: read raw inputs into document shards, quarantining bad records.

Readers: JSONL (plain, ``.gz``, ``.zst``), Parquet, ``.txt`` files (plain,
``.gz``, ``.zst``) and folders of them, WARC/WET (warcio; HTML responses go
through text extraction) and Hugging Face ``datasets`` by name or local path.
Every input record becomes exactly one row, kept or removed: ``malformed``
(not a JSON object, unparseable JSON, a number or nesting beyond the parser's
limits), ``bad_encoding`` (not UTF-8, or lone surrogates in the text, id, URL
or a metadata key), ``missing_text``, ``empty``, ``too_long``,
``html_too_deep``, ``unsupported_content_type``, ``http_status`` and
``not_web_content`` (crawler resources) removals carry the file and record
number in metadata. Blank lines of a JSONL file are not records: they are
counted (``blank_lines``) in the stage's counters.

A file that is cut short or corrupt (a truncated ``.gz``/``.zst`` stream, a
WARC record shorter than its Content-Length) stops the run with an error naming
the file; nothing from a damaged stream is accepted silently. Globs and folders
read regular files only: FIFOs, sockets, dangling symlinks, symlinks leading
outside the input folder and anything inside the run folder are skipped and
counted (``inputs_skipped:*``).

Reading is bounded: lines are read with a length cap (an endless line is
skipped, not loaded), zstd frames with a window cap, WARC payloads and HTML
with a byte cap, HTML nesting with a depth and a total-depth cap (main-content
extraction time grows with the square of the depth), so one hostile file
cannot exhaust memory or CPU.
"""
from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
import stat
import time
import zlib
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
UTF8_BOM = b"\xef\xbb\xbf"


class InputError(RuntimeError):
    """An input file cannot be read at all (missing, unreadable, truncated or corrupt stream)."""


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
        if p != path.lower():
            raise InputError(f"{path}: a compressed Parquet file cannot be read in place; Parquet compresses "
                             f"internally -- decompress it first")
        return "parquet"
    if p.endswith((".warc", ".wet", ".arc")):
        return "warc"
    if p.endswith(".txt"):
        return "txt"
    raise InputError(f"{path}: cannot tell the format from the name; set `format:` ({', '.join(FORMATS)})")


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # 0x184D2A50 .. 0x184D2A5F


def check_zstd_frames(path: str) -> int:
    """Walk a .zst file's frame and block headers (no decompression) and return the frame count.

    The zstd library's streaming reader ends quietly when a file stops in the
    middle of a frame, so a cut-off file would read as a shorter valid one.
    Following the block sizes (RFC 8878, section 3.1) to the end of the file
    catches that before anything is read, at the cost of one small read per block.
    """
    size = os.path.getsize(path)
    frames = 0
    pos = 0

    def cut(what: str) -> InputError:
        return InputError(f"{path}: truncated zstd stream: {what} at byte {pos:,} runs past the end of "
                          f"the file ({size:,} bytes); the file is cut short")

    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(18)  # magic, descriptor, window, dictionary id, content size: at most 18 bytes
            if len(head) < 4:
                raise cut("a frame header")
            magic = int.from_bytes(head[:4], "little")
            if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
                if len(head) < 8:
                    raise cut("a skippable frame header")
                pos += 8 + int.from_bytes(head[4:8], "little")
                if pos > size:
                    raise cut("a skippable frame")
                continue
            if magic != _ZSTD_MAGIC:
                raise InputError(f"{path}: not a zstd stream: no frame magic number at byte {pos:,} "
                                 f"(corrupt, or trailing bytes after the last frame)")
            if len(head) < 5:
                raise cut("a frame header")
            fhd = head[4]
            single_segment = (fhd >> 5) & 1
            header = (5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3]
                      + ((1 if single_segment else 0), 2, 4, 8)[fhd >> 6])
            if len(head) < header:
                raise cut("a frame header")
            pos += header
            while True:
                f.seek(pos)
                b = f.read(3)
                if len(b) < 3:
                    raise cut("a block header")
                bh = int.from_bytes(b, "little")
                btype, bsize = (bh >> 1) & 3, bh >> 3
                if btype == 3:
                    raise InputError(f"{path}: corrupt zstd stream: reserved block type at byte {pos:,}")
                pos += 3 + (1 if btype == 1 else bsize)
                if pos > size:
                    raise cut("a block")
                if bh & 1:  # last block of the frame
                    break
            pos += 4 * ((fhd >> 2) & 1)  # content checksum
            if pos > size:
                raise cut("a frame checksum")
            frames += 1
    return frames


def open_bytes(path: str, max_window_bytes: int = 1 << 27) -> io.BufferedIOBase:
    """Open a possibly compressed file as a binary stream (streamed, never fully loaded).

    A truncated ``.gz`` raises ``EOFError`` when the reader reaches the cut; a
    truncated ``.zst`` is refused here, before anything is read.
    """
    suffix = path.lower()
    if suffix.endswith(".gz"):
        return gzip.open(path, "rb")
    if suffix.endswith((".zst", ".zstd")):
        import zstandard

        check_zstd_frames(path)
        dctx = zstandard.ZstdDecompressor(max_window_size=max_window_bytes)
        return io.BufferedReader(dctx.stream_reader(open(path, "rb"), read_across_frames=True))
    return open(path, "rb")


def stream_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a compressed stream is cut short or corrupt."""
    errs: list[type[BaseException]] = [EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    return tuple(errs)


def damaged(path: str, e: BaseException) -> InputError:
    return InputError(f"{path}: truncated or corrupt {_compression(path)} stream ({type(e).__name__}: {e}); "
                      f"the file is cut short or damaged")


def _compression(path: str) -> str:
    p = path.lower()
    return "gzip" if p.endswith(".gz") else "zstd" if p.endswith((".zst", ".zstd")) else "input"


_BLANK_RUN = re.compile(rb"[ \t\r\n\x0b\x0c]*")


def bounded_lines(stream, limit: int, counts: dict | None = None,
                  chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(line_number, line_bytes or None if over limit, byte_length)`` for non-blank lines.

    A line longer than ``limit`` bytes (newline excluded) is never held in
    memory: only its length is counted. Blank (whitespace-only) lines are not
    yielded; they are counted in ``counts["blank_lines"]`` and skipped in bulk,
    so a small archive of millions of newlines reads in C-speed scans, not one
    Python step per line. Line numbers still count every line.
    """
    tally = counts if counts is not None else {}
    n = 0  # lines finished so far
    parts: list[bytes] = []  # the current line's pieces so far (dropped once it is over the limit)
    size = 0  # bytes of the current line so far
    over = over_blank = False  # whether it is over the limit; if so, whether it is whitespace so far

    def count_blank(k: int) -> None:
        tally["blank_lines"] = tally.get("blank_lines", 0) + k

    while True:
        block = stream.read(chunk_bytes)
        if not block:
            break
        pos, end = 0, len(block)
        while pos < end:
            if size == 0:  # at the start of a line: skip blank lines in one scan
                run_end = _BLANK_RUN.match(block, pos).end()
                last_nl = block.rfind(b"\n", pos, run_end)
                if last_nl >= 0:
                    count_blank(block.count(b"\n", pos, last_nl + 1))
                    n += block.count(b"\n", pos, last_nl + 1)
                    pos = last_nl + 1
                    if pos >= end:
                        break
            nl = block.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            if not over and size + (stop - pos) - (nl >= 0) <= limit:
                parts.append(block[pos:stop])
            else:  # over the limit: keep only whether the line is blank so far, not its bytes
                piece_blank = _BLANK_RUN.match(block, pos, stop).end() == stop
                over_blank = piece_blank and (over_blank if over else not any(p.strip() for p in parts))
                over, parts = True, []
            size += stop - pos
            pos = stop
            if nl >= 0:
                n += 1
                done = _finish_line(n, parts, size, over, over_blank, count_blank)
                if done is not None:
                    yield done
                parts, size, over, over_blank = [], 0, False, False
    if size:  # last line without a newline
        n += 1
        done = _finish_line(n, parts, size, over, over_blank, count_blank)
        if done is not None:
            yield done


def _finish_line(n: int, parts: list[bytes], size: int, over: bool, over_blank: bool,
                 count_blank) -> tuple[int, bytes | None, int] | None:
    """A finished line to yield, or None when it is blank (then counted). An overlong line has no ``parts``."""
    if over:
        if over_blank:
            count_blank(1)
            return None
        return n, None, size
    line = b"".join(parts)
    if line.strip():
        return n, line, size
    count_blank(1)
    return None


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


def _printable_path(s: str) -> str:
    """A file name as valid UTF-8 (names that are not UTF-8 arrive with surrogate escapes)."""
    return s if _is_utf8_clean(s) else s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
    # not a ValueError: a configuration problem must stop the run, not quarantine every record
    raise InputError(f"unknown extractor {extractor!r} (resiliparse or trafilatura)")


_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)")
_VOID_TAGS = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
#: Elements an HTML parser closes when another of the same kind opens directly inside them.
_SIBLING_CLOSES = frozenset("p li dt dd option optgroup tr td th rb rt rp".split())


def html_nesting_bound(html: str) -> tuple[int, int]:
    """An estimate, from a scan of the tags, of ``(deepest element, sum of element depths)``.

    Opening tags nest until a closing tag that matches the innermost open one;
    a ``<p>``, ``<li>``, ``<td>``... directly inside one of its kind closes it,
    as an HTML parser does. Other elements a parser closes implicitly are kept
    open, so this overestimates rather than underestimates;
    :func:`html_nesting` measures exactly when the estimate is over a limit.
    """
    stack: list[str] = []
    deepest = total = 0
    for closing, name in _TAG.findall(html):
        name = name.lower()
        if closing:
            if stack and stack[-1] == name:
                stack.pop()
        elif name in _VOID_TAGS:
            continue
        elif stack and name in _SIBLING_CLOSES and stack[-1] == name:
            total += len(stack)
        else:
            stack.append(name)
            depth = len(stack)
            total += depth
            if depth > deepest:
                deepest = depth
    return deepest, total


def html_nesting(html: str, max_depth: int | None = None, max_depth_sum: int | None = None) -> tuple[int, int]:
    """``(deepest element, sum of element depths)`` of the parsed document tree (``<html>`` is depth 1).

    With limits, raises :class:`TooDeep` as soon as one is passed, so the walk
    costs at most one step per element up to that point.
    """
    from resiliparse.parse.html import DOMContext, HTMLTree, traverse_dom

    tree = HTMLTree.parse(html)
    acc = [0, 0]

    def enter(ctx) -> None:
        depth = ctx.depth + 1
        acc[1] += depth
        if depth > acc[0]:
            acc[0] = depth
            if max_depth is not None and depth > max_depth:
                raise TooDeep(f"HTML nests more than {max_depth:,} elements deep (max_html_depth={max_depth:,})")
        if max_depth_sum is not None and acc[1] > max_depth_sum:
            raise TooDeep(f"HTML element depths sum to more than {max_depth_sum:,} "
                          f"(max_html_depth_sum={max_depth_sum:,})")

    root = tree.document.first_element_child
    if root is not None:
        traverse_dom(root, enter, context=DOMContext(), elements_only=True)
    return acc[0], acc[1]


class TooDeep(ValueError):
    """HTML nested beyond the extraction limits (extraction time grows with depth squared)."""


def check_html_nesting(html: str, max_depth: int, max_depth_sum: int) -> None:
    """Raise :class:`TooDeep` when HTML nests deeper than ``max_depth`` or its element depths sum
    past ``max_depth_sum``. Main-content extraction time grows with the sum of depths: on one
    core about 1 s per 20M, so ``'<div>' * 30000`` (450M) takes tens of seconds."""
    deepest, total = html_nesting_bound(html)
    if deepest <= max_depth and total <= max_depth_sum:
        return
    html_nesting(html, max_depth, max_depth_sum)  # exact, for pages the tag scan overestimates


def html_to_text(html: str, extractor: str, limits: dict) -> str:
    """Extract text from HTML after checking its nesting is within the limits (raises :class:`TooDeep`)."""
    check_html_nesting(html, int(limits["max_html_depth"]), int(limits["max_html_depth_sum"]))
    return extract_text(html, extractor)


# ---------------------------------------------------------------------------
# which paths are read: regular files inside the input folder, never the run folder


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _glob_root(pattern: str) -> str:
    """The folder a glob searches: its leading components up to the first wildcard."""
    prefix = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?["):
            break
        prefix.append(part)
    return os.path.join(*prefix) if prefix else "."


def skip_reason(path: str, root: str | None, run_root: str | None) -> str | None:
    """Why a path found by a glob or folder walk is not read, or None to read it.

    Only regular files (and, for globs, folders of .txt files) are read: a FIFO
    would block forever, a dangling symlink has nothing to read, a symlink that
    leads outside the folder being searched may expose files the input never
    named, and files inside the run folder are this pipeline's own output.
    """
    if os.path.islink(path) and not os.path.exists(path):
        return "dangling_symlink"
    real = os.path.realpath(path)
    if root is not None and not _inside(real, os.path.realpath(root)):
        return "outside_input_folder"
    if run_root is not None and _inside(real, run_root):
        return "inside_run_dir"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISDIR(mode):
        return None
    return None if stat.S_ISREG(mode) else "not_regular_file"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def require_regular_file(path: str) -> None:
    """Refuse anything but a regular file before opening it (opening a FIFO blocks forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        dangling = " (a dangling symlink)" if os.path.islink(path) else ""
        raise InputError(f"{path}: file not found{dangling}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: is {_file_kind(mode)}, not a regular file; only regular files are read")


# ---------------------------------------------------------------------------
# readers: each yields Records; rows numbered < `parse_from` (1-based, counting
# only records that become rows) are SKIPPED; `counters` are added to the stage's stats

#: Errors converting one record's values; the record is quarantined, the file goes on.
RECORD_ERRORS = (ValueError, TypeError, RecursionError, OverflowError, UnicodeError)


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
        self.extractor = spec.get("extractor") or limits.get("extractor")
        self.counters: dict[str, int] = {}

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        raise NotImplementedError

    def safe_mapping(self, n: int, obj: Any, preview: str) -> Record:
        """:meth:`from_mapping`, with a record whose values cannot be converted quarantined, not fatal."""
        try:
            return self.from_mapping(n, obj, preview)
        except RECORD_ERRORS as e:
            return Record(n, reason="malformed", detail=f"cannot convert the record: {type(e).__name__}: {e}"[:500],
                          preview=preview)

    # shared: turn a mapping (JSON object, Parquet row, HF row) into a Record
    def from_mapping(self, n: int, obj: Any, preview: str) -> Record:
        if not isinstance(obj, dict):
            return Record(n, reason="malformed", detail=f"expected a JSON object, got {type(obj).__name__}", preview=preview)
        field = self.html_field or self.text_field
        raw_id = obj.get(self.id_field) if self.id_field else None
        rid = str(raw_id) if raw_id is not None else None
        if rid is not None and not _is_utf8_clean(rid):
            return Record(n, reason="bad_encoding", detail=f"`{self.id_field}` has invalid Unicode (lone surrogates)",
                          preview=preview or _preview(rid.encode("utf-8", "replace")))
        value = obj.get(field)
        if value is None:
            return Record(n, id=rid, reason="missing_text", detail=f"no `{field}` field" if field not in obj else f"`{field}` is null", preview=preview)
        if not isinstance(value, str):
            return Record(n, id=rid, reason="malformed", detail=f"`{field}` is {type(value).__name__}, not a string", preview=preview)
        if not _is_utf8_clean(value):
            return Record(n, id=rid, reason="bad_encoding", detail=f"`{field}` has invalid Unicode (lone surrogates)",
                          preview=value.encode("utf-8", "replace").decode("utf-8")[:PREVIEW_CHARS])
        url = None
        if self.url_field and obj.get(self.url_field) is not None:
            url = str(obj[self.url_field])
            if not _is_utf8_clean(url):
                return Record(n, id=rid, reason="bad_encoding",
                              detail=f"`{self.url_field}` has invalid Unicode (lone surrogates)", preview=preview)
        meta, bad_key = self._metadata(obj, exclude={field, self.text_field, self.html_field, self.id_field})
        if bad_key is not None:
            return Record(n, id=rid, reason="bad_encoding", detail="a field name has invalid Unicode (lone surrogates): "
                          + _preview(bad_key.encode("utf-8", "replace"))[:200], preview=preview)
        text = value
        if self.html_field:
            if len(value) > self.limits["max_html_chars"]:
                value = value[: self.limits["max_html_chars"]]
                meta["html_truncated"] = True
            try:
                text = html_to_text(value, self.extractor, self.limits)
            except TooDeep as e:
                return Record(n, id=rid, meta=meta, reason="html_too_deep", detail=str(e), preview=value[:PREVIEW_CHARS])
            meta.update(self.limits["extractor_meta"][self.extractor])
        if url is not None:
            meta["url"] = url
        return Record(n, text=text, id=rid, meta=meta, preview=preview)

    def _metadata(self, obj: dict, exclude: set) -> tuple[dict, str | None]:
        """Metadata fields as JSON-ready values, and the first field name that is not valid Unicode."""
        keys = obj.keys() if self.meta_fields == "all" else [k for k in self.meta_fields if k in obj]
        meta = {}
        cap = self.limits["max_metadata_chars"]
        for k in keys:
            if k in exclude:
                continue
            if isinstance(k, str) and not _is_utf8_clean(k):
                return meta, k
            v = obj[k]
            if isinstance(v, (bytes, bytearray)):
                continue
            converted = []

            def as_text(x: Any, _c=converted) -> str:  # timestamps, decimals: stored as their text
                _c.append(1)
                return str(x)

            try:
                s = json.dumps({k: v}, ensure_ascii=False, default=as_text)
            except (TypeError, ValueError, RecursionError):
                meta.setdefault("dropped_fields", []).append(k)
                continue
            if len(s) - len(json.dumps(k, ensure_ascii=False)) - 4 > cap or not _is_utf8_clean(s):
                meta.setdefault("dropped_fields", []).append(k)
                continue
            meta[k] = json.loads(s)[k] if converted else v
        return meta, None


class JsonlReader(Reader):
    def records(self, parse_from: int = 1) -> Iterator[Record]:
        limit = self.limits["max_line_bytes"]
        max_records = self.spec.get("limit")  # optional: read only the first N records
        require_regular_file(self.path)
        row = 0
        try:
            with open_bytes(self.path) as f:
                for n, line, nbytes in bounded_lines(f, limit, self.counters):
                    if n == 1 and line is not None and line.startswith(UTF8_BOM):
                        line = line[len(UTF8_BOM):]  # a byte-order mark is not part of the first record
                        if not line.strip():
                            self.counters["blank_lines"] = self.counters.get("blank_lines", 0) + 1
                            continue
                    row += 1
                    if max_records is not None and row > max_records:
                        return
                    if row < parse_from:
                        yield SKIPPED
                        continue
                    yield self._line_record(n, line, nbytes, limit)
        except stream_errors() as e:
            raise damaged(self.path, e) from e

    def _line_record(self, n: int, line: bytes | None, nbytes: int, limit: int) -> Record:
        if line is None:
            return Record(n, reason="too_long", detail=f"line is {nbytes:,} bytes (max_line_bytes={limit:,})",
                          preview=f"<{nbytes:,}-byte line not loaded>")
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return Record(n, reason="bad_encoding", detail=f"not UTF-8: {e}", preview=_preview(line))
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            return Record(n, reason="malformed", detail=f"invalid JSON: {e}", preview=_preview(s))
        except RecursionError:
            return Record(n, reason="malformed", detail="JSON nested too deeply to parse", preview=_preview(s))
        except ValueError as e:  # e.g. an integer of more than 4,300 digits
            return Record(n, reason="malformed", detail=f"JSON value out of range: {e}"[:500], preview=_preview(s))
        return self.safe_mapping(n, obj, _preview(s) if not isinstance(obj, dict) else "")


def _is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


class ParquetReader(Reader):
    def records(self, parse_from: int = 1) -> Iterator[Record]:
        import pyarrow.parquet as pq

        require_regular_file(self.path)
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{self.path}: not a readable Parquet file (truncated or corrupt?): {e}") from e
        schema = pf.schema_arrow
        names = schema.names
        field = self.html_field or self.text_field
        if field not in names:
            raise InputError(f"{self.path}: no column `{field}` (columns: {', '.join(names)}); set `text_field:`")
        ftype = schema.field(field).type
        if not _is_text_type(ftype):
            raise InputError(f"{self.path}: column `{field}` holds {ftype}, not strings; "
                             f"point `text_field:` at a string column")
        columns = None
        if self.meta_fields != "all":
            wanted = {field, self.text_field, self.id_field, self.url_field, *self.meta_fields}
            columns = [c for c in names if c in wanted]
        n = 0
        try:
            for batch in pf.iter_batches(batch_size=256, columns=columns):
                rows = self._rows(batch) if n + batch.num_rows >= parse_from else None
                for i in range(batch.num_rows):
                    n += 1
                    if rows is None or n < parse_from:
                        yield SKIPPED
                        continue
                    yield self.safe_mapping(n, rows[i], "")
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{self.path}: Parquet data unreadable after {n:,} rows (truncated or corrupt?): {e}") from e

    def _rows(self, batch: pa.RecordBatch) -> list[dict]:
        try:
            return batch.to_pylist()
        except (ValueError, OverflowError, pa.ArrowException) as e:
            for name, col in zip(batch.schema.names, batch.columns):
                try:
                    col.to_pylist()
                except (ValueError, OverflowError, pa.ArrowException) as ce:
                    raise InputError(f"{self.path}: column `{name}` ({col.type}) has values Python cannot "
                                     f"represent ({ce}); leave it out with `metadata_fields:`") from ce
            raise InputError(f"{self.path}: rows cannot be converted: {e}") from e


class TxtFolderReader(Reader):
    """One document per ``.txt`` file: a single file (plain, ``.gz``, ``.zst``) or a folder searched recursively."""

    def files(self) -> list[str]:
        if os.path.isfile(self.path):
            return [self.path]
        run_root = self.spec.get("_run_dir")
        out = []
        skipped: dict[str, int] = {}
        for p in sorted(str(p) for p in Path(self.path).rglob("*.txt")):
            why = skip_reason(p, self.path, run_root)
            if why is None and os.path.isdir(p):
                why = "not_regular_file"
            if why:
                skipped[why] = skipped.get(why, 0) + 1
            else:
                out.append(p)
        for why, count in skipped.items():
            self.counters[f"inputs_skipped:{why}"] = count
        return out

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        cap = self.limits["max_doc_bytes"]
        single = os.path.isfile(self.path)
        root = os.path.dirname(self.path) if single else self.path
        for n, fp in enumerate(self.files(), start=1):
            if n < parse_from:
                yield SKIPPED
                continue
            rel = _printable_path(os.path.relpath(fp, root))
            require_regular_file(fp)
            try:
                with (open_bytes(fp) if single else open(fp, "rb")) as f:
                    data = f.read(cap + 1)
            except stream_errors() as e:
                raise damaged(fp, e) from e
            if data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM):]
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


def _archive_iterator_class():
    from warcio.archiveiterator import ArchiveIterator

    class CheckedArchiveIterator(ArchiveIterator):
        """Remembers, when iteration ends, where the last complete record ended and whether the
        last gzip member was complete: warcio itself ends quietly on a cut-off file."""

        final_offset: int | None = None
        gzip_member_cut = False

        def close(self):
            reader = self.reader
            if reader is not None:
                d = reader.decompressor
                self.gzip_member_cut = d is not None and not getattr(d, "eof", True)
                self.final_offset = self.offset
                self.was_compressed = d is not None
            super().close()

    return CheckedArchiveIterator


class WarcReader(Reader):
    """WARC responses/resources (HTML extracted, plain text kept) and WET conversions.

    ``warcinfo``, ``request``, ``metadata`` and ``revisit`` records hold no
    document; they are counted in the stage's counters, not emitted. A record
    shorter than its Content-Length, a cut gzip member or bytes after the last
    complete record mean the file is truncated: :class:`InputError`.
    """

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        from warcio.exceptions import ArchiveLoadFailed

        cap = self.limits["max_record_bytes"]
        n = 0  # document records
        k = 0  # all records, for messages
        require_regular_file(self.path)
        with open(self.path, "rb") as raw:
            it = _archive_iterator_class()(raw, arc2warc=True)
            stream = iter(it)
            while True:
                try:
                    rec = next(stream)
                except StopIteration:
                    break
                except ArchiveLoadFailed as e:
                    raise InputError(f"{self.path}: not a readable WARC file after {k} records: {e}") from e
                except stream_errors() as e:
                    raise damaged(self.path, e) from e
                except (ValueError, TypeError, AttributeError, IndexError) as e:  # warcio on a cut-off header
                    raise InputError(f"{self.path}: not a readable WARC file after {k} records "
                                     f"({type(e).__name__}: {e}); truncated or corrupt") from e
                k += 1
                rtype = rec.rec_type
                if rtype is None or (rec.format != "arc" and rec.length is None):
                    raise InputError(f"{self.path}: WARC record {k} has no WARC-Type or Content-Length header: "
                                     f"the file is truncated or not a WARC file")
                if rtype not in ("response", "resource", "conversion"):
                    self.counters[f"warc_records_skipped:{rtype}"] = self.counters.get(f"warc_records_skipped:{rtype}", 0) + 1
                    self._drain(rec, k)
                    continue
                n += 1
                if n < parse_from:
                    self._drain(rec, k)
                    yield SKIPPED
                    continue
                out = self._safe_record(n, rec, cap)
                self._drain(rec, k)
                yield out
            if it.gzip_member_cut:
                raise InputError(f"{self.path}: truncated gzip stream: the last gzip member ends early "
                                 f"(after {k} complete records); the file is cut short")
            if it.final_offset is not None and not getattr(it, "was_compressed", False):
                raw.seek(it.final_offset)
                rest = raw.read(1 << 16)
                if rest.strip():
                    raise InputError(f"{self.path}: {len(rest):,}{'+' if len(rest) == 1 << 16 else ''} bytes after "
                                     f"the last complete record (byte {it.final_offset:,}, record {k}) are not a "
                                     f"WARC record: the file is truncated or has trailing garbage")

    def _drain(self, rec, k: int) -> None:
        """Read the rest of a record and raise if the file ended before its Content-Length."""
        body = rec.raw_stream
        try:
            while body.read(1 << 16):
                pass
        except stream_errors() as e:
            raise damaged(self.path, e) from e
        left = getattr(body, "limit", 0) or 0
        if left > 0:
            uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
            raise InputError(f"{self.path}: WARC record {k} {uri} is cut short: {left:,} of its {rec.length:,} "
                             f"bytes (Content-Length) are missing; the file is truncated")

    def _safe_record(self, n: int, rec, cap: int) -> Record:
        try:
            return self._record(n, rec, cap)
        except TooDeep as e:
            return Record(n, reason="html_too_deep", detail=str(e))
        except RECORD_ERRORS as e:
            return Record(n, reason="malformed", detail=f"cannot read the record: {type(e).__name__}: {e}"[:500])

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
            try:
                text = html_to_text(html, self.extractor, self.limits)
            except TooDeep as e:
                return Record(n, id=rid, meta=meta, reason="html_too_deep", detail=str(e), preview=html[:PREVIEW_CHARS])
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
            yield self.safe_mapping(n, row, "")


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
    "max_html_depth": 1000,
    "max_html_depth_sum": 10_000_000,
    "max_metadata_chars": 16_384,
    "extractor": "resiliparse",
}


def expand_inputs(inputs: list[dict], run_dir: str | os.PathLike | None = None) -> list[dict]:
    """One task per input file (or per HF dataset / txt folder), in a stable order.

    A path named explicitly must be a regular file or a folder; what a glob
    finds is filtered (:func:`skip_reason`) and the skipped paths are counted on
    the input's first task (``task["skipped"]``). Nothing inside ``run_dir`` is
    read, so a run folder under the input glob never re-ingests its own output.
    """
    run_root = os.path.realpath(run_dir) if run_dir is not None else None
    if not isinstance(inputs, list):
        raise InputError(f"`inputs` must be a list of mappings (each with `path:` or `name:`), "
                         f"got {type(inputs).__name__}")
    tasks = []
    for k, inp in enumerate(inputs):
        if not isinstance(inp, dict):
            raise InputError(f"input #{k} must be a mapping with `path:` (or `name:` for a Hugging Face dataset), "
                             f"got {type(inp).__name__} {str(inp)[:80]!r}")
        inp = dict(inp)
        fmt = inp.get("format", "auto")
        if fmt == "hf" or "name" in inp and "path" not in inp:
            inp["format"] = "hf"
            tasks.append({"input": k, "path": None, "spec": inp, "label": f"hf:{inp['name']}"})
            continue
        path = inp.get("path")
        if not path:
            raise InputError(f"input #{k} has no `path` (or `name` for a Hugging Face dataset)")
        if not isinstance(path, str):
            raise InputError(f"input #{k}: `path` must be a string (a file, folder or glob), got {type(path).__name__}")
        skipped: dict[str, int] = {}
        if os.path.isdir(path) and fmt in ("auto", "txt"):
            if run_root is not None and _inside(os.path.realpath(path), run_root):
                raise InputError(f"input #{k}: {path} is inside the run folder {run_dir}; inputs cannot be read from it")
            files = [path]
            inp["format"] = "txt"
        elif any(c in path for c in "*?["):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise InputError(f"input #{k}: no files match {path!r}")
            root = _glob_root(path)
            files = []
            for fp in matches:
                why = skip_reason(fp, root, run_root)
                if why:
                    skipped[why] = skipped.get(why, 0) + 1
                else:
                    files.append(fp)
            if not files:
                why = ", ".join(f"{v} {r}" for r, v in sorted(skipped.items()))
                raise InputError(f"input #{k}: {len(matches)} paths match {path!r} but none can be read ({why})")
        else:
            if not os.path.isdir(path):
                require_regular_file(path)
            if run_root is not None and _inside(os.path.realpath(path), run_root):
                raise InputError(f"input #{k}: {path} is inside the run folder {run_dir}; inputs cannot be read from it")
            files = [path]
        for j, fp in enumerate(files):
            spec = dict(inp)
            spec["format"] = detect_format(fp) if fmt == "auto" else fmt
            if spec["format"] == "txt" and run_root is not None and os.path.isdir(fp):
                spec["_run_dir"] = run_root  # a folder walk skips the run folder too
            task = {"input": k, "path": fp, "spec": spec, "label": os.path.basename(fp)}
            if j == 0 and skipped:
                task["skipped"] = dict(sorted(skipped.items()))
            tasks.append(task)
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

    #: The run folder, set by the runner before any source hook: inputs are never read from inside it.
    run_dir: Path | None = None
    #: Paths the last expansion of the inputs skipped, by reason (logged by ``describe``).
    skipped_paths: dict[str, int] | None = None

    def describe(self) -> str:
        skipped = self.skipped_paths or {}  # from the last expansion of the inputs
        note = "; globs skipped " + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) if skipped else ""
        return (f"ingest({len(self.params['inputs'])} input(s), shard_docs={self.limits['shard_docs']}, "
                f"extractor={self.limits['extractor']}{note})")

    def source_tasks(self) -> list[dict]:
        tasks = expand_inputs(self.params["inputs"], self.run_dir)
        self.skipped_paths: dict[str, int] = {}
        for t in tasks:
            for why, n in (t.get("skipped") or {}).items():
                self.skipped_paths[why] = self.skipped_paths.get(why, 0) + n
        return tasks

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
        base = _printable_path(os.path.basename(task["path"].rstrip("/")))
        return base.split(".")[0]
    return str(spec.get("name"))


def _rows(records: list[Record], task: dict, source: str, max_chars: int) -> tuple[list[dict], list[dict]]:
    kept, removed = [], []
    rel = _printable_path(os.path.basename(task["path"])) if task["path"] else f"hf:{task['spec'].get('name')}"
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
        what = str(e) if isinstance(e, InputError) and where in str(e) else f"cannot read {where}: {type(e).__name__}: {e}"
        raise InputError(f"{what} ({len(markers)} finished shards of this file kept; fix the file and rerun)") from e
    if buf or not markers:
        flush()
    # skipped WARC records, blank lines, paths a glob or folder walk skipped: on the file's last shard marker
    counters = {**reader.counters, **{f"inputs_skipped:{k}": v for k, v in (task.get("skipped") or {}).items()}}
    if counters:
        markers[-1]["counters"] = dict(sorted(counters.items()))
        atomic_write_json(layout.done_marker(markers[-1]["shard"]), markers[-1])
    atomic_write_json(file_marker, {"fingerprint": stage_fp, "shards": [m["shard"] for m in markers],
                                    "path": task["path"], "format": fmt})
    return markers
