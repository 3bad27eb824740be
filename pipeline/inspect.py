"""`winnow inspect`: the funnel of a run, and sample documents readable in a terminal."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Iterator

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.shards import read_json


def _stages(run_dir: Path) -> list[str]:
    return [s["name"] for s in read_json(Path(run_dir) / "pipeline.json")["stages"]]


def funnel(run_dir: Path) -> list[dict]:
    rows = []
    for name in _stages(run_dir):
        sp = Path(run_dir) / name / "stats.json"
        if sp.exists():
            rows.append(read_json(sp))
    return rows


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def format_funnel(run_dir: Path, top_reasons: int = 6) -> str:
    rows = funnel(run_dir)
    if not rows:
        return f"{run_dir}: no finished stages"
    first = rows[0]
    out = [f"Funnel for {run_dir}", ""]
    hdr = f"{'stage':<16}{'docs in':>10}{'kept':>10}{'kept%':>8}{'chars in':>10}{'chars kept':>12}{'of raw':>8}{'time':>8}"
    out += [hdr, "-" * len(hdr)]
    raw_chars = first["chars_in"] or 1
    for r in rows:
        pct = 100 * r["kept"] / r["docs_in"] if r["docs_in"] else 0
        out.append(f"{r['stage']:<16}{r['docs_in']:>10,}{r['kept']:>10,}{pct:>7.1f}%{_human(r['chars_in']):>10}"
                   f"{_human(r['kept_chars']):>12}{100 * r['kept_chars'] / raw_chars:>7.1f}%{r['wall_seconds']:>7.1f}s")
    if any(r["removed_by_reason"] or r.get("counters") for r in rows):
        out += ["", "Removed, by reason (docs, % of stage input):"]
    for r in rows:
        reasons = sorted(r["removed_by_reason"].items(), key=lambda kv: -kv[1]["docs"])
        shown = ", ".join(f"{k} {v['docs']:,} ({100 * v['docs'] / max(r['docs_in'], 1):.1f}%)"
                          for k, v in reasons[:top_reasons])
        more = f", +{len(reasons) - top_reasons} more" if len(reasons) > top_reasons else ""
        if reasons:
            out.append(textwrap.fill(f"{r['stage']}: {shown}{more}", width=110, subsequent_indent="    "))
        for k, v in sorted((r.get("counters") or {}).items()):
            out.append(f"    ({k}: {v:,})")
    return "\n".join(out)


def iter_rows(run_dir: Path, stage: str, removed: bool, reason: str | None = None) -> Iterator[dict]:
    """Rows of a stage's kept or removed shards, in shard order; ``reason`` matches exactly or as a prefix."""
    m = read_json(Path(run_dir) / stage / "manifest.json")
    part = "removed" if removed else "kept"
    for sh in m["shards"]:
        p = Path(run_dir) / stage / sh[part]["path"]
        if sh[part]["rows"] == 0:
            continue
        t = pq.read_table(p)
        if reason and removed:
            r = t.column("reason")
            mask = pc.or_(pc.equal(r, reason), pc.starts_with(r, reason + ":"))
            t = t.filter(mask)
        yield from t.to_pylist()


def format_document(row: dict, max_chars: int = 1200, width: int | None = None) -> str:
    width = width or min(shutil.get_terminal_size((100, 20)).columns, 110)
    head = f"── {row['id']}  [{row['source']}]"
    if row.get("reason"):
        head += f"  removed: {row['reason']}"
        if row.get("detail"):
            head += f" ({row['detail']})"
    lines = [head[:width]]
    skip = {"id", "text", "source", "metadata", "stage", "reason", "detail"}
    ann = {k: v for k, v in row.items() if k not in skip and v is not None}
    if ann:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(ann.items())[:12])
        lines.append(textwrap.fill(shown, width=width, initial_indent="   ", subsequent_indent="   "))
    meta = json.loads(row.get("metadata") or "{}")
    if meta:
        m = ", ".join(f"{k}={str(v)[:60]}" for k, v in list(meta.items())[:8])
        lines.append(textwrap.fill("meta: " + m, width=width, initial_indent="   ", subsequent_indent="   "))
    text = row.get("text") or ""
    body = text[:max_chars]
    for para in body.split("\n"):
        lines.extend(textwrap.wrap(para, width=width - 4, initial_indent="   │ ", subsequent_indent="   │ ",
                                   replace_whitespace=False) or ["   │"])
    if len(text) > max_chars:
        lines.append(f"   │ … ({len(text) - max_chars:,} more characters)")
    return "\n".join(lines)
