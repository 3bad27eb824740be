"""What it costs to verify finished shards before a rerun trusts them.

A rerun checks every finished shard of a stage it (re)runs: size + xxh3 of
each kept and removed file against the shard's marker (``StageFolder.valid_marker``);
the "up to date" fast path only compares sizes (one ``stat`` per file);
``winnow check`` recomputes SHA-256 and reads row counts. This runs a real
pipeline (English Wikipedia, ingest -> gopher_quality), then times each way of
verifying the filter stage's finished shards (files in the page cache; best of
``--rounds``) and sets it beside the time the stage took to compute them, all
in the same run.

    .venv/bin/python -m experiments.benchmarks.bench_resume_verify [--docs 40000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import tempfile
import time
from pathlib import Path

from experiments.benchmarks.dedup_quality import DATA
from pipeline.config import config_from_dict
from pipeline.rundir import StageFolder
from pipeline.runner import Runner
from pipeline.shards import file_matches, sha256_file


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=40000, help="Wikipedia articles to ingest")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    src = work / "wiki.jsonl.gz"
    with gzip.open(DATA / "ref" / "wikipedia-en.jsonl.gz", "rt", encoding="utf-8") as f, \
            gzip.open(src, "wt", encoding="utf-8") as out:
        for line in itertools.islice(f, args.docs):
            out.write(json.dumps({"id": json.loads(line)["id"], "text": json.loads(line)["text"]}) + "\n")
    cfg = config_from_dict({"run_dir": str(work / "run"), "workers": 1, "stages": [
        {"name": "ingest", "shard_docs": 2000, "inputs": [{"path": str(src)}]},
        {"name": "quality", "kind": "filter", "filters": ["gopher_quality"]},
    ]}, base=work)
    Runner(cfg, progress=False, log=lambda m: None).run()

    folder = StageFolder(cfg.run_dir, "quality")
    manifest = folder.manifest()
    stage_seconds = folder.stats()["wall_seconds"]
    fp = manifest["fingerprint"]
    shards = [sh["name"] for sh in manifest["shards"]]
    files = [(folder.path(sh[part]["path"]), sh[part]) for sh in manifest["shards"] for part in ("kept", "removed")]
    total = sum(rec["bytes"] for _, rec in files)

    def size_only():
        assert all(file_matches(p, rec, verify_hash=False) for p, rec in files)

    def resume_xxh3():  # what a rerun does per finished shard: read the marker, size + xxh3 of its files
        assert all(folder.valid_marker(sh, fp) for sh in shards)

    def sha256_all():  # what `winnow check` does per file (it also reads row counts and reasons)
        assert all(sha256_file(p) == rec["sha256"] for p, rec in files)

    rows = [("size only (up-to-date fast path)", _best(size_only, args.rounds)),
            ("size + xxh3 (resume, valid_marker)", _best(resume_xxh3, args.rounds)),
            ("size + SHA-256 (the alternative)", _best(sha256_all, args.rounds))]
    print(f"stage `quality` (gopher_quality) on {args.docs:,} Wikipedia articles: {len(shards)} shards, "
          f"{len(files)} files, {total / 1e6:.1f} MB of Parquet; computing them took {stage_seconds:.2f} s")
    print(f"{'verification':<38} {'seconds':>9} {'MB/s':>9} {'% of stage time':>16}")
    for name, secs in rows:
        print(f"{name:<38} {secs:>9.4f} {total / 1e6 / secs:>9.0f} {100 * secs / stage_seconds:>15.2f}%")
    print(f"SHA-256 / xxh3 time: {rows[2][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="bench_resume_verify"))
