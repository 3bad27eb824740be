"""Parquet files: one document per row, the text from a string column."""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipeline.ingest.paths import require_regular_file
from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import SKIPPED, InputError, Record


def is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def is_binary_type(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def rows_of(batch: pa.RecordBatch, path: str) -> list[dict]:
    """A batch as Python rows; a column Python cannot represent is a one-line error naming it."""
    try:
        return batch.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException) as e:
        for name, col in zip(batch.schema.names, batch.columns):
            try:
                col.to_pylist()
            except (ValueError, OverflowError, pa.ArrowException) as ce:
                raise InputError(f"{path}: column `{name}` ({col.type}) has values Python cannot "
                                 f"represent ({ce}); leave it out with `metadata_fields:`") from ce
        raise InputError(f"{path}: rows cannot be converted: {e}") from e


class ParquetReader(Reader):
    """Rows of a Parquet file. Binary columns are not read; they are named in each row's
    ``dropped_fields``. Compressed ``.parquet.gz`` is refused (Parquet compresses internally)."""

    format = "parquet"
    suffixes = (".parquet",)
    compressed_ok = False

    def records(self, parse_from: int = 1) -> Iterator[Record]:
        import pyarrow.parquet as pq

        require_regular_file(self.path)
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{self.path}: not a readable Parquet file (truncated or corrupt?): {e}") from e
        schema = pf.schema_arrow
        names = schema.names
        self.choose_text_field(names, "columns")
        field = self.html_field or self.text_field
        if field not in names:
            raise InputError(f"{self.path}: no column `{field}` (columns: {', '.join(names)}); set `text_field:`")
        ftype = schema.field(field).type
        if not is_text_type(ftype):
            raise InputError(f"{self.path}: column `{field}` holds {ftype}, not strings; "
                             f"point `text_field:` at a string column")
        binary = [f.name for f in schema if is_binary_type(f.type) and f.name != self.id_field]
        wanted = None if self.meta_fields == "all" else {field, self.text_field, self.id_field, self.url_field,
                                                            *self.meta_fields}
        columns = [c for c in names if c not in binary and (wanted is None or c in wanted)]
        dropped = sorted(b for b in binary if wanted is None or b in wanted)
        n = 0
        try:
            for batch in pf.iter_batches(batch_size=256, columns=columns):
                rows = rows_of(batch, self.path) if n + batch.num_rows >= parse_from else None
                for i in range(batch.num_rows):
                    n += 1
                    if rows is None or n < parse_from:
                        yield SKIPPED
                        continue
                    rec = self.safe_mapping(n, rows[i], "")
                    if dropped and rec.meta is not None:
                        rec.meta["dropped_fields"] = sorted(set(rec.meta.get("dropped_fields", [])) | set(dropped))
                    yield rec
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{self.path}: Parquet data unreadable after {n:,} rows (truncated or corrupt?): {e}") from e
