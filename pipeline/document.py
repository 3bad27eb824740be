"""The document model shared by every stage.

A document is a row with four fixed columns (``id``, ``text``, ``source``,
``metadata``); stages append annotation columns (scores, labels) beside them so
that a later threshold can be re-applied without re-scoring. ``metadata`` is a
JSON object, so shards keep one schema however heterogeneous the inputs are; it
is stored with Parquet's JSON type, so DuckDB reads it as JSON
(``metadata->>'url'``), ``datasets`` decodes it to a dict, and pyarrow and
pandas give its text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa

#: Columns every shard starts with, in order.
DOC_FIELDS = ("id", "text", "source", "metadata")

#: JSON text, annotated as JSON in Parquet (the canonical ``arrow.json`` extension type).
METADATA_TYPE = pa.json_(pa.string())

DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("metadata", METADATA_TYPE, nullable=False),
    ]
)

#: Columns added to every removed row.
REMOVED_FIELDS = [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
]

#: On removed rows of a stage that edits text (line cleaning): the text after the stage's edits
#: (null where unchanged). The row's ``text`` is the text it entered the stage with.
EDITED_TEXT = "edited_text"
#: On removed rows of a filter stage: every rule the document fails (its ``reason`` is the first).
FAILED_RULES = "failed_rules"

#: Arrow types for annotation columns, by the short names filters declare.
COLUMN_TYPES = {
    "float": pa.float64(),
    "int": pa.int64(),
    "str": pa.string(),
    "bool": pa.bool_(),
}


@dataclass
class Document:
    """One document as filters see it. ``metadata`` is parsed lazily."""

    id: str
    text: str
    source: str = ""
    metadata_json: str = "{}"
    annotations: dict[str, Any] = field(default_factory=dict)
    _metadata: dict | None = field(default=None, repr=False)

    @property
    def metadata(self) -> dict:
        if self._metadata is None:
            self._metadata = json.loads(self.metadata_json or "{}")
        return self._metadata


def iter_documents(table: pa.Table) -> Iterator[Document]:
    """Yield the rows of a shard as :class:`Document` objects.

    Annotation columns from earlier stages are exposed in ``doc.annotations``.
    """
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    extra = [c for c in table.column_names if c not in DOC_FIELDS]
    for i in range(table.num_rows):
        yield Document(
            id=cols["id"][i],
            text=cols["text"][i],
            source=cols["source"][i],
            metadata_json=cols["metadata"][i],
            annotations={c: cols[c][i] for c in extra},
        )


def documents_table(rows: list[dict]) -> pa.Table:
    """Build a document table from dicts with the four fixed fields."""
    return pa.Table.from_pylist(
        [{k: r[k] for k in DOC_FIELDS} for r in rows], schema=DOC_SCHEMA
    )


def dumps_metadata(meta: dict) -> str:
    """Canonical JSON for metadata: sorted keys so output bytes are deterministic."""
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
