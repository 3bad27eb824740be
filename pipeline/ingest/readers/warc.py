"""WARC/WET/ARC files (plain or ``.gz``) through warcio: HTML responses go through text extraction.

warcio is given only what it reads in bounded time: the file must start like a WARC or ARC file (a
JSON Lines file named ``.warc`` is refused instead of being parsed as ARC records), header lines are
read with a length cap (warcio's own line reader is quadratic on a long line: 32 MB took a minute), and
``Content-Encoding: br`` payloads are decoded here with an output cap (warcio 1.8.1 cannot drive
brotli 1.2's decompressor and crashed the file).
"""
from __future__ import annotations

import gzip
import os
from typing import Iterator

from pipeline.ingest.html import TooComplex, TooDeep, decode_html
from pipeline.ingest.paths import require_regular_file
from pipeline.ingest.readers.base import RECORD_ERRORS, Reader
from pipeline.ingest.records import SKIPPED, InputError, Record, preview
from pipeline.ingest.streams import damaged, stream_errors

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
#: Longest WARC or HTTP header line read (real ones are at most a few KiB; cookies and CSP reach tens).
MAX_HEADER_LINE = 1 << 20
#: Content encodings warcio decodes itself; ``br`` is decoded here; anything else is quarantined.
_WARCIO_ENCODINGS = ("gzip", "x-gzip", "deflate")


class HeaderLineTooLong(ValueError):
    pass


def _bounded_reader_class():
    from warcio.bufferedreaders import DecompressingBufferedReader

    class BoundedLineReader(DecompressingBufferedReader):
        """warcio's reader with a line reader that joins pieces once and stops at :data:`MAX_HEADER_LINE`."""

        def readline(self, length=None):
            if length == 0:
                return b""
            cap = MAX_HEADER_LINE + 1 if length is None else min(length, MAX_HEADER_LINE + 1)
            self._fillbuff()
            if self.empty():
                return b""
            pieces, size = [], 0
            while True:
                piece = self.buff.readline(cap - size)
                pieces.append(piece)
                size += len(piece)
                if piece.endswith(b"\n") or size >= cap:
                    break
                self._fillbuff()
                if self.empty():
                    break
            if size > MAX_HEADER_LINE:
                raise HeaderLineTooLong(f"a header line longer than {MAX_HEADER_LINE:,} bytes")
            return b"".join(pieces)

    return BoundedLineReader


def _archive_iterator_class():
    from warcio.archiveiterator import ArchiveIterator

    bounded = _bounded_reader_class()

    class CheckedArchiveIterator(ArchiveIterator):
        """Reads header lines with a cap and remembers, when iteration ends, where the last complete
        record ended and whether the last gzip member was complete: warcio itself ends quietly on a
        cut-off file."""

        final_offset: int | None = None
        gzip_member_cut = False
        was_compressed = False

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.reader.__class__ = bounded

        def close(self):
            reader = self.reader
            if reader is not None:
                d = reader.decompressor
                self.gzip_member_cut = d is not None and not getattr(d, "eof", True)
                self.final_offset = self.offset
                self.was_compressed = d is not None
            super().close()

    return CheckedArchiveIterator


def _file_start(path: str) -> bytes:
    """The first bytes of the (decompressed) file, to tell a WARC from something else."""
    try:
        if path.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read(64)
        with open(path, "rb") as f:
            return f.read(64)
    except stream_errors() as e:
        raise damaged(path, e) from e


def check_warc_start(path: str) -> None:
    """Refuse a file that does not start like a WARC (``WARC/``) or ARC (``filedesc://``) file."""
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); a WARC file holds at least one record")
    head = _file_start(path)
    if not head:
        raise InputError(f"{path}: holds no WARC data (0 bytes decompressed); a WARC file holds at least one record")
    start = head.lstrip(b"\r\n")
    if start.startswith((b"WARC/", b"filedesc://")):
        return
    hint = ""
    if start.lstrip()[:1] in (b"{", b"["):
        hint = " It looks like JSON Lines: set `format: jsonl` (or name it .jsonl)."
    elif start.lstrip()[:1] == b"<":
        hint = " It looks like HTML: put pages in a JSONL field and set `html_field:`."
    raise InputError(f"{path}: not a WARC or ARC file: it starts with {preview(start[:40])!r}, not `WARC/` "
                     f"or `filedesc://`.{hint}")


def brotli_payload(body: bytes, cap: int) -> bytes:
    """Decode a brotli body, at most ``cap + 1`` bytes of output (a few KiB of brotli can hold gigabytes)."""
    import brotli

    d = brotli.Decompressor()
    out = [d.process(body, output_buffer_limit=cap + 1)]
    size = len(out[0])
    while size <= cap and not d.is_finished() and not d.can_accept_more_data():
        piece = d.process(b"", output_buffer_limit=cap + 1 - size)
        if not piece:
            break
        out.append(piece)
        size += len(piece)
    return b"".join(out)


class WarcReader(Reader):
    """WARC responses/resources (HTML extracted, plain text kept) and WET conversions.

    ``warcinfo``, ``request``, ``metadata`` and ``revisit`` records hold no
    document; they are counted in the stage's counters, not emitted. A record
    shorter than its Content-Length, a cut gzip member or bytes after the last
    complete record mean the file is truncated: :class:`InputError`.
    """

    format = "warc"
    suffixes = (".warc", ".wet", ".arc")
    has_fields = False

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        from warcio.exceptions import ArchiveLoadFailed

        cap = self.limits["max_record_bytes"]
        n = 0  # document records
        k = 0  # all records, for messages
        require_regular_file(self.path)
        check_warc_start(self.path)
        with open(self.path, "rb") as raw:
            it = _archive_iterator_class()(raw, arc2warc=True)
            stream = iter(it)
            while True:
                try:
                    rec = next(stream)
                except StopIteration:
                    break
                except HeaderLineTooLong as e:
                    raise InputError(f"{self.path}: not a readable WARC file after {k} records: {e}; "
                                     f"corrupt or not a WARC file") from e
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
                    key = f"warc_records_skipped:{rtype}"
                    self.counters[key] = self.counters.get(key, 0) + 1
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
            if it.final_offset is not None and not it.was_compressed:
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
        except (TooDeep, TooComplex) as e:
            return Record(n, reason=e.reason, detail=str(e))
        except RECORD_ERRORS as e:
            return Record(n, reason="malformed", detail=f"cannot read the record: {type(e).__name__}: {e}"[:500])

    def _payload(self, rec, cap: int) -> tuple[bytes | None, str | None]:
        """The decoded payload (at most ``cap + 1`` bytes), or None and why it cannot be decoded."""
        encoding = ""
        if rec.http_headers is not None:
            encoding = (rec.http_headers.get_header("Content-Encoding") or "").strip().lower()
        if encoding in ("", "identity") or encoding in _WARCIO_ENCODINGS:
            return rec.content_stream().read(cap + 1), None
        if encoding != "br":
            return None, f"Content-Encoding {encoding[:40]!r} is not supported (gzip, deflate, br)"
        try:
            import brotli  # noqa: F401
        except ImportError:
            return None, "Content-Encoding br needs the `brotli` package"
        body = rec.raw_stream
        if (rec.http_headers.get_header("Transfer-Encoding") or "").lower() == "chunked":
            from warcio.bufferedreaders import ChunkedDataReader

            body = ChunkedDataReader(body, decomp_type=None)
        data = body.read(cap + 1)
        try:
            return brotli_payload(data, cap), None
        except Exception as e:  # brotli.error: a damaged stream, one record
            return None, f"Content-Encoding br: not a valid brotli stream ({type(e).__name__}: {str(e)[:100]})"

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
        payload, why = self._payload(rec, cap)
        if payload is None:
            return Record(n, id=rid, meta=meta, reason="undecodable_content", detail=why, preview="")
        if len(payload) > cap:
            payload = payload[:cap]
            meta["payload_truncated_at"] = cap
        mime = ctype.split(";")[0].strip()
        if mime in HTML_TYPES or (not mime and payload.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))):
            return self.page_record(n, rid, decode_html(payload), meta)
        if mime.startswith("text/"):
            return Record(n, id=rid, text=payload.decode("utf-8", errors="replace"), meta=meta)
        return Record(n, id=rid, meta=meta, reason="unsupported_content_type", detail=mime or "no content type",
                      preview="")
