"""A shard's outputs: split by a decision, check conservation, write kept and removed rows, then the marker.

The one place that writes a finished shard. The runner's shard tasks and
source stages (ingest) both call :func:`write_shard_outputs`, so every stage
gets the same guarantees: rows in = kept + removed, every removed row has a
reason, files written atomically, the shard's marker (which resume trusts,
after :meth:`pipeline.rundir.StageFolder.valid_marker` re-checks size and hash) written last.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.document import EDITED_TEXT, REMOVED_FIELDS
from pipeline.errors import RunFailure
from pipeline.rundir import StageFolder
from pipeline.stage import Decision


class ConservationError(RunFailure, RuntimeError):
    """rows in != kept + removed: a stage lost or invented documents."""


def text_chars(table: pa.Table) -> int:
    if table.num_rows == 0 or "text" not in table.column_names:
        return 0
    return int(pc.sum(pc.utf8_length(table.column("text"))).as_py() or 0)


def _reason_counts(removed: pa.Table) -> dict[str, list[int]]:
    if removed.num_rows == 0:
        return {}
    reasons = removed.column("reason").to_pylist()
    lengths = pc.utf8_length(removed.column("text")).to_pylist()
    out: dict[str, list[int]] = {}
    for r, n in zip(reasons, lengths):
        cnt = out.setdefault(r, [0, 0])
        cnt[0] += 1
        cnt[1] += n or 0
    return dict(sorted(out.items()))


def write_shard_outputs(
    folder: StageFolder,
    shard: str,
    rows_in: int,
    chars_in: int,
    kept: pa.Table,
    removed: pa.Table,
    stage_fp: str,
    seconds: float,
    extra: dict | None = None,
) -> dict:
    """Write one shard's kept and removed files, check conservation, then the marker."""
    if kept.num_rows + removed.num_rows != rows_in:
        raise ConservationError(
            f"{folder.name}/{shard}: {rows_in} rows in but {kept.num_rows} kept + "
            f"{removed.num_rows} removed"
        )
    missing = [r for r in removed.column("reason").to_pylist() if not r] if removed.num_rows else []
    if missing:
        raise ConservationError(f"{folder.name}/{shard}: {len(missing)} removed rows without a reason")
    kf = folder.write_part("kept", shard, kept)
    rf = folder.write_part("removed", shard, removed)
    marker = {
        "shard": shard,
        "fingerprint": stage_fp,
        "rows_in": rows_in,
        "chars_in": chars_in,
        "kept": kf.to_dict(),
        "kept_chars": text_chars(kept),
        "removed": rf.to_dict(),
        "removed_by_reason": _reason_counts(removed),
        "seconds": round(seconds, 4),
    }
    if extra:
        marker.update(extra)
    folder.write_marker(marker)
    return marker


def apply_decision(table: pa.Table, d: Decision, stage_name: str) -> tuple[pa.Table, pa.Table]:
    """Split ``table`` into kept and removed rows according to a decision.

    Kept rows carry the decision's edited text; a removed row keeps the text it came with (what a person
    inspecting it needs), and the edited text goes in ``edited_text`` (null where the edit changed nothing).
    """
    n = table.num_rows
    if len(d.reasons) != n:
        raise ConservationError(f"stage {stage_name}: decide returned {len(d.reasons)} reasons for {n} rows")
    for name, arr in d.columns.items():
        arr = arr if isinstance(arr, (pa.Array, pa.ChunkedArray)) else pa.array(arr)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, arr)
        else:
            table = table.append_column(name, arr)
    mask = pa.array(d.keep_mask)
    kept = table.filter(mask)
    inv = pc.invert(mask)
    removed = table.filter(inv)
    if d.text is not None:
        text = d.text if isinstance(d.text, (pa.Array, pa.ChunkedArray)) else pa.array(d.text, pa.large_string())
        text = text.cast(pa.large_string())
        kept = kept.set_column(kept.column_names.index("text"), "text", text.filter(mask))
        edited = text.filter(inv)
        unchanged = pc.equal(edited, removed.column("text").cast(pa.large_string()))
        removed = removed.append_column(EDITED_TEXT, pc.if_else(unchanged, pa.scalar(None, pa.large_string()), edited))
    for name, arr in d.removed_columns.items():
        arr = arr if isinstance(arr, (pa.Array, pa.ChunkedArray)) else pa.array(arr)
        removed = removed.append_column(name, arr.filter(inv))
    rm_reasons = [r for r in d.reasons if r is not None]
    details = [x for x, r in zip(d.details, d.reasons) if r is not None] if d.details else [None] * len(rm_reasons)
    removed = removed.append_column(REMOVED_FIELDS[0], pa.array([stage_name] * len(rm_reasons), pa.string()))
    removed = removed.append_column(REMOVED_FIELDS[1], pa.array(rm_reasons, pa.string()))
    removed = removed.append_column(REMOVED_FIELDS[2], pa.array(details, pa.string()))
    return kept, removed
