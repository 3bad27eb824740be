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
import pyarrow.parquet as pq

from pipeline.document import EDITED_TEXT, FAILED_RULES, REMOVED_FIELDS
from pipeline.errors import InputProblem
from pipeline.params import nearest
from pipeline.rundir import RunFolder
from pipeline.shards import read_parquet


def funnel(run_dir: Path) -> list[dict]:
    """The statistics of every finished stage, in pipeline order (a damaged file is one line naming it)."""
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
    failed = row.get(FAILED_RULES) or []
    if len(failed) > 1:
        lines.append(textwrap.fill("fails: " + ", ".join(failed), width=width, initial_indent="   ",
                                   subsequent_indent="   "))
    if row.get(EDITED_TEXT) is not None:
        lines.append(f"   text as it entered the stage ({len(row.get('text') or ''):,} characters); after the "
                     f"stage's edits: {len(row[EDITED_TEXT]):,} characters")
    skip = {"id", "text", "source", "metadata", "stage", "reason", "detail", FAILED_RULES, EDITED_TEXT}
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


# ---------------------------------------------------------------------------
# opening a run for reading, with one line for every way the path can be wrong


def open_run(path: str | Path) -> tuple[RunFolder, list[str]]:
    """The run at ``path`` and its stage names, or :class:`InputProblem` saying what ``path`` is instead.

    A missing path, a file (a config is recognised and its run folder named), a folder that is not a run,
    and a damaged run record each get their own line.
    """
    p = Path(path)
    if not p.exists():
        raise InputProblem(f"{path}: no such folder")
    if not p.is_dir():
        if p.suffix in (".yaml", ".yml"):
            hint = ""
            try:
                from pipeline.config import load_config

                hint = f" (this config's run folder is {load_config(p).run_dir})"
            except Exception:  # noqa: BLE001 - only a hint; the config may be broken
                pass
            raise InputProblem(f"{path} is a config file; give its run folder{hint}")
        raise InputProblem(f"{path} is a file, not a run folder")
    run = RunFolder(p)
    if not run.pipeline_path.is_file():
        raise InputProblem(f"{path}: not a winnow run folder (no {run.pipeline_path.name})")
    try:
        names = run.stage_names()
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError("no stage names")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputProblem(f"{run.pipeline_path} is damaged ({type(e).__name__}: {e}); "
                           f"`winnow run CONFIG` writes it again") from None
    return run, names


def require_stage(run: RunFolder, names: list[str], stage: str) -> None:
    """``stage`` is one of the run's stages and has finished, else one line saying which is not so."""
    if stage not in names:
        raise InputProblem(f"no stage {stage!r} in {run.root}{nearest(stage, names)}; its stages: {', '.join(names)}")
    if not run.is_finished(stage):
        raise InputProblem(f"stage {stage!r} has not finished in {run.root} (no {run.stage(stage).manifest_path.name}); "
                           f"`winnow run CONFIG --stage {stage}` runs it")
    read_manifest(run, stage)


def read_manifest(run: RunFolder, stage: str) -> dict:
    """A finished stage's manifest, or one line naming it as damaged (a reader never guesses past it)."""
    try:
        return run.manifest(stage)
    except OSError as e:
        raise InputProblem(f"{run.stage(stage).manifest_path}: cannot read ({e.strerror or e})") from None


def read_failure(run: RunFolder, stage: str, e: Exception) -> InputProblem:
    """A shard that cannot be read (missing, truncated, not Parquet), as one line pointing at `winnow check`."""
    what = getattr(e, "filename", None) or " ".join(str(e).split())[:300]
    return InputProblem(f"stage {stage}: cannot read a shard of {run.root} ({type(e).__name__}: {what}); "
                        f"`winnow check {run.root}` lists what is missing or damaged")


# ---------------------------------------------------------------------------
# one document's journey through the stages (`winnow inspect RUN --id ID`)

_BASE_COLUMNS = {"id", "text", "source", "metadata", *(f.name for f in REMOVED_FIELDS)}


def _find_in_shard(path: Path, doc_id: str) -> dict | None:
    """The row with ``doc_id`` in one Parquet shard (reads the id column, then one row group)."""
    pf = pq.ParquetFile(path)
    ids = pf.read(columns=["id"]).column("id")
    idx = pc.index(ids, pa.scalar(doc_id, ids.type)).as_py()
    if idx < 0:
        return None
    start = 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if idx < start + n:
            return pf.read_row_group(g).slice(idx - start, 1).to_pylist()[0]
        start += n
    return None  # pragma: no cover - the index is always inside a row group


def trace_document(run_dir: str | Path, doc_id: str) -> list[dict]:
    """Where one document went, stage by stage: ``[{stage, status, row, shard}]``.

    ``status`` is ``kept``, ``removed`` (``row`` is the removed row: reason, detail, scores, and the text
    as it entered the stage), ``not reached`` (an earlier stage removed it) or ``not finished`` (the stage
    has no manifest). A document keeps its shard name through every stage, so after the first stage
    only that shard is read. :class:`InputProblem` when no stage knows the id.
    """
    run, names = open_run(run_dir)
    out: list[dict] = []
    shard: str | None = None
    gone = False
    for stage in names:
        if gone:
            out.append({"stage": stage, "status": "not reached"})
            continue
        if not run.is_finished(stage):
            out.append({"stage": stage, "status": "not finished"})
            gone = True
            continue
        entries = read_manifest(run, stage)["shards"]
        try:
            if shard is not None:
                entries = [e for e in entries if e["name"] == shard]
            found = None
            for e in entries:
                for part in ("kept", "removed"):
                    row = _find_in_shard(run.root / stage / e[part]["path"], doc_id) if e[part]["rows"] else None
                    if row is not None:
                        found = {"stage": stage, "status": part, "row": row, "shard": e["name"]}
                        break
                if found:
                    break
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
            raise read_failure(run, stage, e) from None
        if found is None:
            if shard is None:
                raise InputProblem(f"no document with id {doc_id!r} in {run.root} (ids look like: "
                                   f"{', '.join(repr(i) for i in _some_ids(run, stage))})")
            out.append({"stage": stage, "status": "missing"})  # a damaged run: `winnow check` says more
            gone = True
            continue
        shard = found["shard"]
        gone = found["status"] == "removed"
        out.append(found)
    return out


def _some_ids(run: RunFolder, stage: str, n: int = 3) -> list[str]:
    for path in run.shard_files(stage, "kept", nonempty=True):
        return pq.read_table(path, columns=["id"]).column("id").to_pylist()[:n]
    return []


def format_trace(trace: list[dict], doc_id: str, max_chars: int = 1200, width: int | None = None) -> str:
    """The journey as a table (one line per stage: outcome, reason, text length, new scores), then the text:
    the original text of a removed document as it entered the stage that removed it, else the final text."""
    width = width or min(shutil.get_terminal_size((100, 20)).columns, 110)
    lines = [f"Document {doc_id}", ""]
    seen_cols: set[str] = set()
    prev_chars = None
    last = None
    for t in trace:
        row = t.get("row")
        if row is None:
            lines.append(f"  {t['stage']:<16}{t['status']}")
            continue
        last = t
        chars = len(row.get("text") or "")
        size = f"{chars:,} chars" + (f" (edited from {prev_chars:,})" if prev_chars is not None and
                                     chars != prev_chars and t["status"] == "kept" else "")
        head = f"  {t['stage']:<16}{t['status'].upper() if t['status'] == 'removed' else t['status']:<9}"
        if t["status"] == "removed":
            head += f"{row.get('reason')}" + (f" ({row['detail']})" if row.get("detail") else "") + f"; {size}"
        else:
            head += size
        lines.append(head)
        new = {k: v for k, v in row.items() if k not in _BASE_COLUMNS and k not in seen_cols and v is not None}
        seen_cols |= {k for k in row if k not in _BASE_COLUMNS}
        if new:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in new.items())
            lines.append(textwrap.fill(shown, width=width, initial_indent=" " * 27, subsequent_indent=" " * 27))
        prev_chars = chars
    if last is not None:
        row = last["row"]
        label = (f"text as it entered {last['stage']}, which removed it" if last["status"] == "removed"
                 else f"text after {last['stage']}")
        lines += ["", f"── {label} ({len(row.get('text') or ''):,} chars):"]
        body = format_document({**row, "reason": None}, max_chars=max_chars, width=width).split("\n")
        lines += [ln for ln in body if ln.startswith("   │")]
    return "\n".join(lines)
