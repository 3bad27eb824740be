"""`winnow inspect`: the funnel of a run, and sample documents readable in a terminal."""
from __future__ import annotations

import difflib
import json
import shutil
import textwrap
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rundir import RunFolder
from pipeline.shards import read_parquet


def funnel(run_dir: Path) -> list[dict]:
    return RunFolder(run_dir).funnel()


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
    yield from RunFolder(run_dir).rows(stage, part="removed" if removed else "kept", reason=reason or None)


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


def _word_diff(base: str, other: str, context: int = 6, max_words: int = 120, color: bool = False) -> str:
    """``other`` against ``base`` word by word: [-only in base-] {+only in other+}, long equal runs elided."""
    a, b = base.split(), other.split()
    dels, ins = (("\x1b[31m[-", "-]\x1b[0m"), ("\x1b[32m{+", "+}\x1b[0m")) if color else (("[-", "-]"), ("{+", "+}"))
    out: list[str] = []
    changed = False
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            words = a[i1:i2]
            if len(words) > 2 * context:
                words = words[:context] * (i1 > 0) + ["…"] + words[-context:] * (i2 < len(a))
            out.extend(words)
            continue
        changed = True
        if i2 > i1:
            out.append(dels[0] + " ".join(a[i1:i2]) + dels[1])
        if j2 > j1:
            out.append(ins[0] + " ".join(b[j1:j2]) + ins[1])
    if not changed:
        return "(same words as the survivor)"
    return " ".join(out[:max_words]) + (" …" if len(out) > max_words else "")


def format_clusters(run_dir: Path, stage: str, n: int = 3, chars: int = 600, color: bool | None = None) -> str:
    """The ``n`` largest duplicate clusters of a dedup stage: the survivor, then each removed member's diff to it."""
    import sys

    run_dir = Path(run_dir)
    color = sys.stdout.isatty() if color is None else color
    run = RunFolder(run_dir)
    removed = [read_parquet(p) for p in run.shard_files(stage, "removed", nonempty=True)]
    removed = [t for t in removed if "cluster_id" in t.column_names]
    if not removed:
        return f"stage {stage}: no duplicate clusters"
    table = pa.concat_tables([t.select(["id", "text", "reason", "cluster_id", "similarity"]) for t in removed])
    cluster_ids = table.column("cluster_id").to_pylist()
    sizes: dict[str, int] = {}
    for c in cluster_ids:
        sizes[c] = sizes.get(c, 0) + 1
    chosen = sorted(sizes, key=lambda c: -sizes[c])[:n]  # stable: ties keep first-seen order
    survivors: dict[str, str] = {}
    for path in run.shard_files(stage, "kept"):
        if len(survivors) == len(chosen):
            break
        kept = read_parquet(path, columns=["id", "text"])
        kept = kept.filter(pc.is_in(kept.column("id"), pa.array(chosen, pa.string())))
        survivors.update(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist()))
    lines = [f"{len(sizes):,} duplicate clusters in stage {stage}; the {len(chosen)} largest:"]
    for cid in chosen:
        base = survivors.get(cid, "")
        lines += ["", f"═══ cluster {cid}: survivor + {sizes[cid]} removed", f"── survivor {cid}",
                  textwrap.indent(textwrap.shorten(" ".join(base.split()), chars, placeholder=" …"), "   │ ")]
        members = table.filter(pc.equal(table.column("cluster_id"), cid)).to_pylist()
        for m in members[:5]:
            sim = "" if m["similarity"] is None else f", similarity {m['similarity']:.3f}"
            lines.append(f"── {m['id']}  ({m['reason']}{sim}) vs survivor:")
            lines.append(textwrap.indent(_word_diff(base, m["text"], color=color), "   │ "))
        if len(members) > 5:
            lines.append(f"   … and {len(members) - 5} more members")
    return "\n".join(lines)
