"""A dataset written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, read with ``load_from_disk``.

Such a folder (Arrow files beside ``state.json`` and ``dataset_info.json``, or ``dataset_dict.json``
over one folder per split) is recognised whether it is named by ``path:`` or by ``name:`` with
``format: hf``, or set explicitly with ``format: hf_disk``. The Arrow files are memory-mapped, not
loaded, and read in batches.
"""
from __future__ import annotations

import os
from typing import Iterator

from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import SKIPPED, InputError, Record
from pipeline.params import of_type, optional

BATCH_ROWS = 1000


def is_saved_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))


def is_saved_dataset_dict(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json"))


class DiskReader(Reader):
    """Rows of ``datasets.load_from_disk(path)``; for a DatasetDict, the ``split`` (``train`` by default,
    or the only split there is)."""

    format = "hf_disk"
    options = {"split": None}
    option_checks = {"split": optional(of_type(str, name="a split name"))}

    @staticmethod
    def claims_folder(path: str) -> bool:
        return os.path.isdir(path) and (is_saved_dataset(path) or is_saved_dataset_dict(path))

    def _folder(self) -> str:
        """The folder of the one dataset read (a split's folder, for a DatasetDict)."""
        path = self.path
        if not os.path.isdir(path) or not self.claims_folder(path):
            raise InputError(f"{path}: not a dataset saved with save_to_disk (no state.json and "
                             f"dataset_info.json, nor dataset_dict.json)")
        if is_saved_dataset(path):
            return path
        import json

        with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as f:
            splits = json.load(f).get("splits") or []
        want = self.spec.get("split")
        if want is None:
            want = "train" if "train" in splits or len(splits) != 1 else splits[0]
        if want not in splits:
            raise InputError(f"{path}: no split {want!r} in this saved DatasetDict (splits: {', '.join(splits)}); "
                             f"set `split:`")
        return os.path.join(path, want)

    def input_files(self) -> list[str]:
        folder = self._folder()
        return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                      if os.path.isfile(os.path.join(folder, f)))

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        from datasets import load_from_disk

        folder = self._folder()
        try:
            ds = load_from_disk(folder)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{folder}: cannot load the saved dataset ({type(e).__name__}: {e})") from e
        self.choose_text_field(list(ds.column_names), "columns")
        n = 0
        for batch in ds.iter(batch_size=BATCH_ROWS):
            size = len(next(iter(batch.values()))) if batch else 0
            if n + size < parse_from:
                n += size
                for _ in range(size):
                    yield SKIPPED
                continue
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            for row in rows:
                n += 1
                if n < parse_from:
                    yield SKIPPED
                    continue
                yield self.safe_mapping(n, row, "")
