"""Input formats: one module per reader, all found through the ``winnow.readers`` entry points.

``format:`` in an input names a reader; ``format: auto`` (the default) picks one from the file name
(or, for a folder, from what it holds: a ``save_to_disk`` dataset, or the files inside). A plug-in
package adds a format by declaring a :class:`~pipeline.ingest.readers.base.Reader` subclass under
``[project.entry-points."winnow.readers"]``, exactly as winnow declares its own.
"""
from __future__ import annotations

import os

from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import InputError
from pipeline.ingest.streams import compression, strip_compression
from pipeline.registry import Registry, subclass_of


#: Input formats by name: winnow's own and plug-ins alike come from the ``winnow.readers`` entry points.
READERS = Registry("winnow.readers", "input format", subclass_of(Reader, needs="format"))


def reader_class(fmt: str) -> type[Reader]:
    return READERS.get(fmt)


def formats() -> list[str]:
    return READERS.names()


def detect_format(path: str) -> str:
    """The reader for a file, from its name (``.jsonl.gz`` -> jsonl); :class:`InputError` if none claims it."""
    name = os.path.basename(path).lower()
    plain = strip_compression(name)
    best: tuple[int, str] | None = None
    for entry in READERS.entries():
        cls = entry.obj
        for suffix in cls.suffixes:
            if plain.endswith(suffix) and (best is None or len(suffix) > best[0]):
                if compression(name) and not cls.compressed_ok:
                    raise InputError(f"{path}: a compressed {cls.format} file cannot be read in place "
                                     f"({cls.format} compresses internally); decompress it first")
                best = (len(suffix), entry.name)
    if best is None:
        raise InputError(f"{path}: cannot tell the format from the name; set `format:` "
                         f"({', '.join(formats())})")
    return best[1]


def detect_folder(path: str) -> str | None:
    """The reader that takes a whole folder as one input (a ``save_to_disk`` dataset), or None."""
    for entry in READERS.entries():
        claims = getattr(entry.obj, "claims_folder", None)
        if claims is not None and claims(path):
            return entry.name
    return None
