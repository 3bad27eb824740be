"""The reader contract: one input (a file, a folder, a dataset) in, one :class:`Record` per input record out.

A reader class names its format (``format:`` in the config), the file names it reads when the format is
detected (``suffixes``), and any input keys of its own (``options``). It is registered under the
``winnow.readers`` entry-point group (winnow's own readers are declared exactly so in its
pyproject.toml), so a plug-in package adds a format without touching winnow.

Mappings (JSON objects, Parquet and Hugging Face rows) become records through :meth:`Reader.from_mapping`,
which every such reader shares: the text field (detected from the usual names when ``text_field`` is
not set), the id, the URL, optional HTML extraction and the metadata, each bad value quarantined as one
removed record with its reason.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, ClassVar, Iterable, Iterator

from pipeline.ingest.html import TooComplex, TooDeep, html_char_cap, html_to_text
from pipeline.ingest.records import PREVIEW_CHARS, Record, preview, utf8_clean

#: Field names tried, in order, when an input does not set ``text_field``.
TEXT_FIELDS = ("text", "content", "raw_content", "body")
#: Errors converting one record's values; the record is quarantined, the file goes on.
RECORD_ERRORS = (ValueError, TypeError, RecursionError, OverflowError, UnicodeError)
#: How many records' field names are remembered, to name them when a file loses most of its records.
FIELDS_SAMPLE = 1000


class Reader:
    """Base class of every reader. Subclasses set ``format`` and implement :meth:`records`."""

    #: The name a config gives in ``format:`` (also the entry-point name).
    format: ClassVar[str] = ""
    #: Lower-case file-name endings (before any ``.gz``/``.zst``) this reader takes when the format is detected.
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: Whether a ``.gz``/``.zst`` file of those endings is read through decompression.
    compressed_ok: ClassVar[bool] = True
    #: Input keys of this format only, with their defaults (``name:`` of a Hugging Face dataset...).
    options: ClassVar[dict[str, Any]] = {}
    #: Checks of those keys (see :mod:`pipeline.params`).
    option_checks: ClassVar[dict] = {}
    #: Whether records are mappings with named fields (``text_field``, ``id_field``... apply).
    has_fields: ClassVar[bool] = True

    def __init__(self, path: str | None, spec: dict, limits: dict):
        self.path = path
        self.spec = spec
        self.limits = limits
        self.text_field: str | None = spec.get("text_field")
        self.id_field = spec.get("id_field", "id")
        self.url_field = spec.get("url_field")
        self.html_field = spec.get("html_field")
        meta_fields = spec.get("metadata_fields", "all")
        self.meta_fields = [meta_fields] if isinstance(meta_fields, str) and meta_fields != "all" else meta_fields
        self.extractor = spec.get("extractor") or limits.get("extractor")
        #: Added to the stage's counters (skipped WARC records, blank lines, unchecked zstd frames...).
        self.counters: dict[str, int] = {}
        #: One-line notes for the run log (e.g. which text field was detected).
        self.notes: list[str] = []
        #: Field names of the first records read, to name them when most records are lost.
        self.fields_seen: Counter = Counter()
        self._mappings_seen = 0

    # -- what subclasses implement ------------------------------------------
    def records(self, parse_from: int = 1) -> Iterator[Record]:
        """Every record in order; records numbered below ``parse_from`` may be yielded as ``SKIPPED``."""
        raise NotImplementedError

    def input_files(self) -> list[str]:
        """The files whose bytes are this input (their content hashes decide whether it changed)."""
        return [self.path] if self.path else []

    # -- shared by readers of mappings ----------------------------------------
    def choose_text_field(self, names: Iterable[str], where: str) -> None:
        """Set ``text_field`` from field names when the config leaves it unset, and say which in the log."""
        if self.text_field is not None or self.html_field:
            return
        names = list(names)
        found = next((f for f in TEXT_FIELDS if f in names), None)
        self.text_field = found or TEXT_FIELDS[0]
        if found:
            self.notes.append(f"text from `{found}` (text_field not set: the first of {', '.join(TEXT_FIELDS)} "
                              f"in its {where})")
        else:
            shown = ", ".join(f"`{n}`" for n in names[:12]) or "none"
            self.notes.append(f"none of {', '.join(TEXT_FIELDS)} in its {where} (fields: {shown}); "
                              f"set `text_field:`")

    def safe_mapping(self, n: int, obj: Any, raw_preview: str) -> Record:
        """:meth:`from_mapping`, with a record whose values cannot be converted quarantined, not fatal."""
        try:
            return self.from_mapping(n, obj, raw_preview)
        except RECORD_ERRORS as e:
            return Record(n, reason="malformed", detail=f"cannot convert the record: {type(e).__name__}: {e}"[:500],
                          preview=raw_preview)

    def from_mapping(self, n: int, obj: Any, raw_preview: str) -> Record:
        """Turn a mapping (JSON object, Parquet row, dataset row) into a Record."""
        if not isinstance(obj, dict):
            return Record(n, reason="malformed", detail=f"expected a JSON object, got {type(obj).__name__}",
                          preview=raw_preview)
        if self._mappings_seen < FIELDS_SAMPLE:
            self._mappings_seen += 1
            self.fields_seen.update(k for k in obj if isinstance(k, str) and utf8_clean(k))
        if self.text_field is None and not self.html_field:
            self.choose_text_field(obj.keys(), "first record")
        field = self.html_field or self.text_field
        raw_id = obj.get(self.id_field) if self.id_field else None
        rid = str(raw_id) if raw_id is not None else None
        if rid is not None and not utf8_clean(rid):
            return Record(n, reason="bad_encoding", detail=f"`{self.id_field}` has invalid Unicode (lone surrogates)",
                          preview=raw_preview or preview(rid.encode("utf-8", "replace")))
        value = obj.get(field)
        if value is None:  # the removed row shows the record, so its fields are not lost
            return Record(n, id=rid, reason="missing_text",
                          detail=f"no `{field}` field" if field not in obj else f"`{field}` is null",
                          preview=raw_preview or record_preview(obj))
        if not isinstance(value, str):
            return Record(n, id=rid, reason="malformed", detail=f"`{field}` is {type(value).__name__}, not a string",
                          preview=raw_preview or record_preview(obj))
        if not utf8_clean(value):
            return Record(n, id=rid, reason="bad_encoding", detail=f"`{field}` has invalid Unicode (lone surrogates)",
                          preview=value.encode("utf-8", "replace").decode("utf-8")[:PREVIEW_CHARS])
        url = None
        if self.url_field and obj.get(self.url_field) is not None:
            url = str(obj[self.url_field])
            if not utf8_clean(url):
                return Record(n, id=rid, reason="bad_encoding",
                              detail=f"`{self.url_field}` has invalid Unicode (lone surrogates)", preview=raw_preview)
        meta, bad_key = self.metadata(obj, exclude={field, self.text_field, self.html_field, self.id_field})
        if bad_key is not None:
            return Record(n, id=rid, reason="bad_encoding", detail="a field name has invalid Unicode (lone surrogates): "
                          + preview(bad_key.encode("utf-8", "replace"))[:200], preview=raw_preview)
        if url is not None:
            meta["url"] = url
        if self.html_field:
            return self.page_record(n, rid, value, meta)
        return Record(n, text=value, id=rid, meta=meta, preview=raw_preview)

    def page_record(self, n: int, rid: str | None, html: str, meta: dict) -> Record:
        """A record from a web page: cut to what the extractor handles in bounded time, refused if its
        shape would stall extraction (``html_too_deep``/``html_too_complex``), else its text."""
        cap = html_char_cap(self.limits, self.extractor)
        if len(html) > cap:
            html = html[:cap]
            meta["html_truncated"] = True
        try:
            text = html_to_text(html, self.extractor, self.limits)
        except (TooDeep, TooComplex) as e:
            return Record(n, id=rid, meta=meta, reason=e.reason, detail=str(e), preview=html[:PREVIEW_CHARS])
        meta.update(self.limits["extractor_meta"][self.extractor])
        return Record(n, id=rid, text=text, meta=meta)

    def metadata(self, obj: dict, exclude: set) -> tuple[dict, str | None]:
        """Metadata fields as JSON-ready values, and the first field name that is not valid Unicode.

        Values JSON cannot hold are converted, never written as invalid JSON: timestamps and
        decimals become their text, NaN and infinities the strings ``"NaN"``, ``"Infinity"`` and
        ``"-Infinity"``. Binary values, values too deep to serialise and values longer than
        ``max_metadata_chars`` are left out and named in ``dropped_fields``.
        """
        keys = obj.keys() if self.meta_fields == "all" else [k for k in self.meta_fields if k in obj]
        meta: dict = {}
        cap = self.limits["max_metadata_chars"]
        for k in keys:
            if k in exclude:
                continue
            if isinstance(k, str) and not utf8_clean(k):
                return meta, k
            try:
                v, s = _json_value(obj[k])
            except (TypeError, ValueError, RecursionError):
                meta.setdefault("dropped_fields", []).append(k)
                continue
            if len(s) > cap or not utf8_clean(s):
                meta.setdefault("dropped_fields", []).append(k)
                continue
            meta[k] = v
        return meta, None


def record_preview(obj: dict) -> str:
    """The start of a record as JSON (values JSON cannot hold as their text), for a removed row."""
    try:
        return preview(json.dumps(obj, ensure_ascii=False, default=str)[: PREVIEW_CHARS * 2])
    except (TypeError, ValueError, RecursionError):
        return preview(repr(obj)[: PREVIEW_CHARS * 2])


def _as_text(x: Any) -> str:
    """Values JSON has no type for (timestamps, decimals) are stored as their text; binary is refused."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        raise TypeError("binary value")
    return str(x)


def _finite(x: Any) -> Any:
    """``x`` with NaN and infinities (at any depth) replaced by their names as strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _json_value(v: Any) -> tuple[Any, str]:
    """``(a JSON-ready value, its JSON text)``; raises for values that cannot be stored."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        raise TypeError("binary value")
    try:
        s = json.dumps(v, ensure_ascii=False, allow_nan=False, default=_as_text)
    except ValueError:  # NaN or an infinity somewhere inside
        v = _finite(v)
        s = json.dumps(v, ensure_ascii=False, allow_nan=False, default=_as_text)
    if isinstance(v, (str, int, float, bool, type(None))):
        return v, s
    return json.loads(s), s
