"""What a reader yields: one :class:`Record` per input record (a document, or the reason it cannot be one),
and :class:`InputError` for a file that cannot be read at all."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import InputProblem

#: Characters of a removed record's raw input kept in its removed row (the record itself may be huge).
PREVIEW_CHARS = 2000


class InputError(InputProblem, RuntimeError):
    """An input file cannot be read at all (missing, unreadable, truncated or corrupt stream, wrong format)."""


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
    #: The file it came from, relative to the input, when one input reads several files (a folder of .txt)
    file: str | None = None


#: Placeholder for records of shards already finished (a resumed reader skips them without converting).
SKIPPED = Record(number=-1)


def preview(b: bytes | str) -> str:
    """The start of a raw record, as text, for a removed row."""
    if isinstance(b, bytes):
        b = b[: PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    return b[:PREVIEW_CHARS]


def utf8_clean(s: str) -> bool:
    """False for strings holding lone surrogates (from JSON escapes or undecodable file names)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def printable_path(s: str) -> str:
    """A file name as valid UTF-8 (names that are not UTF-8 arrive with surrogate escapes)."""
    return s if utf8_clean(s) else s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
