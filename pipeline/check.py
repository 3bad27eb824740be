"""`winnow check RUN_DIR`: verify a run's shards against their manifests.

Fails loudly on a missing, altered or extra shard, on row counts that differ
from the manifest, on removed rows without a reason, and on any stage where
rows in != kept + removed (including across stages: a stage's rows in must
equal the previous stage's kept rows, shard by shard).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.shards import read_json, sha256_file


class CheckError(RuntimeError):
    pass


def check_run(run_dir: Path, deep: bool = True) -> list[str]:
    """Return a list of problems (empty when the run is consistent)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    pj = run_dir / "pipeline.json"
    if not pj.exists():
        return [f"{run_dir}: no pipeline.json -- not a winnow run folder"]
    stages = [s["name"] for s in read_json(pj)["stages"]]
    prev_kept: dict[str, int] | None = None
    for name in stages:
        mpath = run_dir / name / "manifest.json"
        if not mpath.exists():
            prev_kept = None
            continue  # stage not run (yet); later stages cannot be checked against it
        m = read_json(mpath)
        listed = set()
        total_in = total_kept = total_removed = 0
        for sh in m["shards"]:
            for part in ("kept", "removed"):
                f = sh[part]
                listed.add(f["path"])
                p = run_dir / name / f["path"]
                if not p.exists():
                    problems.append(f"{name}/{f['path']}: missing")
                    continue
                if p.stat().st_size != f["bytes"] or (deep and sha256_file(p) != f["sha256"]):
                    problems.append(f"{name}/{f['path']}: checksum differs from manifest (altered?)")
                    continue
                rows = pq.ParquetFile(p).metadata.num_rows
                if rows != f["rows"]:
                    problems.append(f"{name}/{f['path']}: {rows} rows, manifest says {f['rows']}")
                if part == "removed" and rows:
                    reasons = pq.read_table(p, columns=["reason"]).column("reason").to_pylist()
                    if any(not r for r in reasons):
                        problems.append(f"{name}/{f['path']}: removed rows without a reason")
            if sh["rows_in"] != sh["kept"]["rows"] + sh["removed"]["rows"]:
                problems.append(f"{name}/{sh['name']}: {sh['rows_in']} in != {sh['kept']['rows']} kept + "
                                f"{sh['removed']['rows']} removed")
            if prev_kept is not None and prev_kept.get(sh["name"]) != sh["rows_in"]:
                problems.append(f"{name}/{sh['name']}: {sh['rows_in']} rows in, but the previous stage kept "
                                f"{prev_kept.get(sh['name'])}")
            total_in += sh["rows_in"]
            total_kept += sh["kept"]["rows"]
            total_removed += sh["removed"]["rows"]
        if prev_kept is not None and set(prev_kept) != {sh["name"] for sh in m["shards"]}:
            problems.append(f"{name}: shard list differs from the previous stage's")
        for part in ("kept", "removed"):
            d = run_dir / name / part
            if d.exists():
                for p in sorted(d.glob("*.parquet")):
                    if f"{part}/{p.name}" not in listed:
                        problems.append(f"{name}/{part}/{p.name}: not in the manifest")
        t = m["totals"]
        if (t["rows_in"], t["kept"], t["removed"]) != (total_in, total_kept, total_removed):
            problems.append(f"{name}: manifest totals {t} do not match its shards")
        prev_kept = {sh["name"]: sh["kept"]["rows"] for sh in m["shards"]}
    return problems
