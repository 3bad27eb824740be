"""Plain text: one document per ``.txt`` file (plain, ``.gz`` or ``.zst``), alone or a folder of them."""
from __future__ import annotations

import os
from typing import Iterator

from pipeline.ingest.paths import require_regular_file
from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import SKIPPED, Record, preview, printable_path
from pipeline.ingest.streams import UTF8_BOM, damaged, open_bytes, stream_errors


class TxtReader(Reader):
    """Each file is one document, its id the path relative to the folder named in the config.
    A file over ``max_doc_bytes`` is removed as ``too_long`` without being read further."""

    format = "txt"
    suffixes = (".txt",)
    has_fields = False

    def files(self) -> list[str]:
        """The files of this input: the folder walk done when the inputs were expanded, or the one file."""
        return list(self.spec.get("_files") or [self.path])

    def input_files(self) -> list[str]:
        return self.files()

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        cap = self.limits["max_doc_bytes"]
        root = self.spec.get("_root") or os.path.dirname(self.path)
        for n, fp in enumerate(self.files(), start=1):
            if n < parse_from:
                yield SKIPPED
                continue
            rel = printable_path(os.path.relpath(fp, root))
            require_regular_file(fp)
            try:
                with open_bytes(fp, self.counters) as f:
                    data = f.read(cap + 1)
            except stream_errors() as e:
                raise damaged(fp, e) from e
            if data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM):]
            if len(data) > cap:
                yield Record(n, id=rel, reason="too_long", detail=f"file over {cap:,} bytes", preview=preview(data),
                             meta={}, file=rel)
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Record(n, id=rel, reason="bad_encoding", detail=f"not UTF-8: {e}", preview=preview(data),
                             meta={}, file=rel)
                continue
            yield Record(n, id=rel, text=text, meta={}, file=rel)
