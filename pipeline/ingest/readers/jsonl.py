"""JSON Lines (plain, ``.gz``, ``.zst``): one JSON object per line; LF, CRLF or CR-only line endings."""
from __future__ import annotations

import json
from typing import Iterator

from pipeline.ingest.paths import require_regular_file
from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import SKIPPED, Record, preview
from pipeline.ingest.streams import UTF8_BOM, LoneCRAsNewline, bounded_lines, damaged, open_bytes, stream_errors

#: Lines read to find the text field when ``text_field`` is not set.
DETECT_LINES = 100


class JsonlReader(Reader):
    """One document per line; a line that is not a JSON object is one ``malformed`` row. Blank lines
    are counted (``blank_lines``), not rows; a UTF-8 byte-order mark before the first line is dropped."""

    format = "jsonl"
    suffixes = (".jsonl", ".json", ".ndjson")

    def _lines(self, counters: dict) -> Iterator[tuple[int, bytes | None, int]]:
        limit = self.limits["max_line_bytes"]
        with open_bytes(self.path, counters) as f:
            for n, line, nbytes in bounded_lines(LoneCRAsNewline(f), limit, counters):
                if n == 1 and line is not None and line.startswith(UTF8_BOM):
                    line = line[len(UTF8_BOM):]  # a byte-order mark is not part of the first record
                    if not line.strip():
                        counters["blank_lines"] = counters.get("blank_lines", 0) + 1
                        continue
                yield n, line, nbytes

    def _detect_text_field(self) -> None:
        """The text field from the first JSON object among the first lines (resume or not: same answer)."""
        for k, (_, line, _) in enumerate(self._lines({})):
            if k >= DETECT_LINES:
                break
            try:
                obj = json.loads(line) if line is not None else None
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                self.choose_text_field(obj.keys(), "first JSON object")
                return
        self.choose_text_field([], f"first {DETECT_LINES} lines")

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        limit = self.limits["max_line_bytes"]
        require_regular_file(self.path)
        try:
            if self.text_field is None and not self.html_field:
                self._detect_text_field()
            row = 0
            for n, line, nbytes in self._lines(self.counters):
                row += 1
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
            return Record(n, reason="bad_encoding", detail=f"not UTF-8: {e}", preview=preview(line))
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            return Record(n, reason="malformed", detail=f"invalid JSON: {e}", preview=preview(s))
        except RecursionError:
            return Record(n, reason="malformed", detail="JSON nested too deeply to parse", preview=preview(s))
        except ValueError as e:  # e.g. an integer of more than 4,300 digits
            return Record(n, reason="malformed", detail=f"JSON value out of range: {e}"[:500], preview=preview(s))
        return self.safe_mapping(n, obj, preview(s) if not isinstance(obj, dict) else "")
