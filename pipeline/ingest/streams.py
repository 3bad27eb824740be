"""Bounded byte streams: compressed files opened as streams (never fully loaded), cut-off or corrupt
streams detected, and lines read with a length cap.

A truncated ``.gz`` raises when the reader reaches the cut; a ``.zst`` file's frame and block headers
are walked before anything is read (the zstd library ends quietly on a cut-off frame). A zero-byte
compressed file is refused: every gzip or zstd stream has a header, so an empty one is a failed copy,
not an empty corpus. zstd frames written without a content checksum (zstandard's default) cannot show
that a byte was flipped: they are counted, and the stage warns.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from typing import Iterator

from pipeline.ingest.records import InputError

UTF8_BOM = b"\xef\xbb\xbf"
GZIP_SUFFIXES = (".gz",)
ZSTD_SUFFIXES = (".zst", ".zstd")
#: Counter of zstd frames that carry no content checksum (corruption inside them goes unnoticed).
UNCHECKED_ZSTD = "zstd_frames_without_checksum"


def compression(path: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or None, from the file name."""
    p = path.lower()
    if p.endswith(GZIP_SUFFIXES):
        return "gzip"
    if p.endswith(ZSTD_SUFFIXES):
        return "zstd"
    return None


def strip_compression(name: str) -> str:
    """The name without a ``.gz``/``.zst``/``.zstd`` suffix."""
    p = name.lower()
    for suf in GZIP_SUFFIXES + ZSTD_SUFFIXES:
        if p.endswith(suf):
            return name[: -len(suf)]
    return name


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # 0x184D2A50 .. 0x184D2A5F


def check_zstd_frames(path: str) -> tuple[int, int]:
    """Walk a .zst file's frame and block headers (no decompression): ``(frames, frames without a checksum)``.

    The zstd library's streaming reader ends quietly when a file stops in the
    middle of a frame, so a cut-off file would read as a shorter valid one.
    Following the block sizes (RFC 8878, section 3.1) to the end of the file
    catches that before anything is read, at the cost of one small read per block.
    """
    size = os.path.getsize(path)
    frames = unchecked = 0
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
            has_checksum = (fhd >> 2) & 1
            pos += 4 * has_checksum
            if pos > size:
                raise cut("a frame checksum")
            frames += 1
            unchecked += not has_checksum
    return frames, unchecked


def open_bytes(path: str, counters: dict | None = None, max_window_bytes: int = 1 << 27) -> io.BufferedIOBase:
    """Open a possibly compressed file as a binary stream (streamed, never fully loaded).

    A zero-byte compressed file and a truncated ``.zst`` are refused here, before
    anything is read; a truncated ``.gz`` raises ``EOFError`` when the reader reaches
    the cut. zstd frames without a checksum are added to ``counters``.
    """
    kind = compression(path)
    if kind and os.path.getsize(path) == 0:
        raise InputError(f"{path}: the file is empty (0 bytes), so it is not a {kind} stream (even an empty "
                         f"one has a header); the copy failed or the file was cut to nothing")
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "zstd":
        import zstandard

        _, unchecked = check_zstd_frames(path)
        if unchecked and counters is not None:
            counters[UNCHECKED_ZSTD] = counters.get(UNCHECKED_ZSTD, 0) + unchecked
        dctx = zstandard.ZstdDecompressor(max_window_size=max_window_bytes)
        return io.BufferedReader(dctx.stream_reader(open(path, "rb"), read_across_frames=True))
    f = open(path, "rb")
    head = f.peek(4)[:4] if hasattr(f, "peek") else b""
    for magic, what, suffix in ((b"\x1f\x8b", "gzip", ".gz"), (_ZSTD_MAGIC.to_bytes(4, "little"), "zstd", ".zst")):
        if head.startswith(magic):  # no text file starts so (the bytes are not UTF-8): a compressed file misnamed
            f.close()
            raise InputError(f"{path}: the file is {what}-compressed but its name does not end in {suffix}; "
                             f"rename it to {os.path.basename(path)}{suffix} (or decompress it)")
    return f


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
    return InputError(f"{path}: truncated or corrupt {compression(path) or 'input'} stream "
                      f"({type(e).__name__}: {e}); the file is cut short or damaged")


class LoneCRAsNewline:
    """A byte stream in which a carriage return not followed by a line feed reads as a line feed.

    Files written with classic Mac line endings (CR only) would otherwise be one
    long line. Splitting at a lone CR is safe for JSON Lines: a raw CR can only sit
    between JSON values, never inside a valid string (it must be escaped there).
    """

    def __init__(self, stream):
        self.stream = stream
        self.pending_cr = False  # a CR ended the last block: lone or not depends on the next byte

    def read(self, n: int = -1) -> bytes:
        size = n if n is not None and n >= 0 else -1
        while True:
            data = self.stream.read(size)
            if self.pending_cr:
                self.pending_cr = False
                if not data:  # the file ends with a CR: it was lone
                    return b"\n"
                data = b"\r" + data
            if not data:
                return b""
            if data.endswith(b"\r"):
                data, self.pending_cr = data[:-1], True
                if not data:
                    continue
            return _LONE_CR.sub(b"\n", data) if b"\r" in data else data


_LONE_CR = re.compile(rb"\r(?!\n)")
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
