"""Hugging Face ``datasets`` by name: a hub dataset on a connected machine, a builder (``parquet``,
``json``...) with ``data_files``, or a local folder of data files, read with ``load_dataset``."""
from __future__ import annotations

from typing import Iterator

from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import SKIPPED, InputError, Record
from pipeline.params import of_type, optional


class HubReader(Reader):
    """Rows of ``load_dataset(name, config, split=..., streaming=...)``; streamed by default, so a large
    hub dataset is never downloaded whole. Features name the columns, so the text field is found before
    the first row."""

    format = "hf"
    options = {"name": None, "config": None, "split": "train", "streaming": True,
               "data_files": None, "data_dir": None, "revision": None}
    option_checks = {"name": optional(of_type(str, name="a dataset name or folder")),
                     "split": of_type(str, name="a split name"), "streaming": of_type(bool)}

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        from datasets import load_dataset

        s = self.spec
        kwargs = {k: s[k] for k in ("data_files", "data_dir", "revision") if s.get(k)}
        try:
            ds = load_dataset(s["name"], s.get("config"), split=s.get("split") or "train",
                              streaming=s.get("streaming", True), **kwargs)
        except (OSError, ValueError, KeyError, ImportError) as e:  # not found, offline, no such split or config
            raise InputError(f"hf:{s['name']}: cannot load the dataset ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:400]})") from e
        names = list(ds.features) if getattr(ds, "features", None) else None
        if names:
            self.choose_text_field(names, "features")
        for n, row in enumerate(ds, start=1):
            if n < parse_from:
                yield SKIPPED
                continue
            yield self.safe_mapping(n, row, "")
