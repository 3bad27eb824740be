"""Signature speed and quality: datasketch per-document MinHash vs winnow's batched numba path.

Both paths start from the same real documents (English Wikipedia articles of
700-1500 words) and the same shingles (lower-cased ``\\w+`` word 5-grams),
run single-process (docs/s per core), each in its own fresh process so peak
RSS is its own; rounds alternate between the two paths and the best round of
each counts, because the machine is shared. Quality: on planted copies at
Jaccard 0.5-1.0 (see ``dedup_quality.plant_copy``), mean |estimated - true
Jaccard| for both signatures on the same pairs.

Banding cost at scale (``--plan-docs``): the MinHash plan without verification
(band shuffle, star edges, union-find; synthetic signatures have no texts) on
synthetic score shards, a tenth of them near-copies, under each banding
(``--banding``, default the old 9 x 13 and the recall default 15 x 7), in
alternating rounds, best wall time of each.

    .venv/bin/python -m experiments.benchmarks.bench_minhash [--docs 2000] [--rounds 3]
    .venv/bin/python -m experiments.benchmarks.bench_minhash --plan-docs 200000 --plan-only
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.benchmarks.dedup_quality import DATA, plant_copy
from pipeline.dedup import minhash as mh

NUM_PERM = 128


def long_articles(n: int, lo: int = 700, hi: int = 1500) -> list[str]:
    out = []
    with gzip.open(DATA / "ref" / "wikipedia-en.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            if lo <= len(text.split()) <= hi:
                out.append(text)
                if len(out) >= n:
                    break
    return out


def datasketch_signatures(texts: list[str]) -> np.ndarray:
    """The baseline: one ``MinHash`` per document, ``update_batch`` with datasketch's default sha1 hashing."""
    from datasketch import MinHash

    sigs = []
    for t in texts:
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in mh.shingles(t)])
        sigs.append(m.hashvalues)
    return np.array(sigs)


def winnow_signatures(texts: list[str]) -> np.ndarray:
    hasher = mh.MinHasher(NUM_PERM, 5, seed=1)
    return np.concatenate([hasher.signatures(texts[i:i + 1000])[0] for i in range(0, len(texts), 1000)])


PATHS = {"datasketch": datasketch_signatures, "winnow": winnow_signatures}


def _timed(path: str, n_docs: int, out: mp.Queue) -> None:
    """In a fresh process: load the documents, warm up (numba compile), time one pass, report peak RSS."""
    texts = long_articles(n_docs)
    PATHS[path](texts[:20])
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    PATHS[path](texts)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put({"docs_per_s": len(texts) / seconds, "peak_rss_mb": peak / 1024, "loaded_rss_mb": rss_loaded / 1024,
             "words": sum(len(t.split()) for t in texts) / len(texts)})


def measure(path: str, n_docs: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_timed, args=(path, n_docs, q))
    p.start()
    res = q.get()
    p.join()
    return res


def estimator_error(n_pairs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    texts = long_articles(n_pairs + 100)
    donors = " ".join(texts[n_pairs:]).split()
    pairs = [(t, *plant_copy(t, donors, float(rng.uniform(0.5, 1.0)), rng)) for t in texts[:n_pairs]]
    true_j = np.array([j for _, _, j in pairs])
    flat = [x for a, b, _ in pairs for x in (a, b)]
    out = {}
    for name, fn in PATHS.items():
        sig = fn(flat)
        est = mh.estimated_jaccard(sig[0::2], sig[1::2])
        out[name] = {"mae": float(np.abs(est - true_j).mean()), "bias": float((est - true_j).mean()),
                     "max": float(np.abs(est - true_j).max())}
    out["pairs"] = n_pairs
    return out


def plan_cost(n_docs: int, bandings: list[tuple[int, int]], rounds: int, workers: int = 2) -> None:
    """Wall time of the local MinHash plan (verify off) per banding on the same synthetic score shards."""
    from experiments.benchmarks.bench_ray import write_synthetic_scores
    from pipeline.dedup.stages import MinHashDedup
    from pipeline.executors import LocalExecutor
    from pipeline.shards import read_json
    from pipeline.stage import StageContext

    with tempfile.TemporaryDirectory(prefix="bench-banding-") as tmp:
        stage_dir = Path(tmp) / "minhash_dedup"
        shards = write_synthetic_scores(stage_dir, n_docs, max(1, n_docs // 10_000))
        executor = LocalExecutor(workers, progress=False)
        seconds: dict[tuple[int, int], list[float]] = {b: [] for b in bandings}
        summary: dict[tuple[int, int], dict] = {}
        try:
            for rnd in range(rounds + 1):  # round 0 (one shard) warms up the workers and imports
                for bands, rows in bandings:
                    plan_dir = stage_dir / f"plan-{bands}x{rows}"
                    shutil.rmtree(plan_dir, ignore_errors=True)
                    ctx = StageContext(run_dir=stage_dir.parent, stage_dir=stage_dir, plan_dir=plan_dir,
                                       shards=shards if rnd else shards[:1], seed=0,
                                       input_stage_dir=stage_dir.parent / "no-texts")
                    ctx.executor = executor
                    t0 = time.perf_counter()
                    MinHashDedup("minhash_dedup", {"verify": False, "bands": bands, "rows": rows}).plan(ctx)
                    if rnd:
                        seconds[(bands, rows)].append(time.perf_counter() - t0)
                        summary[(bands, rows)] = read_json(plan_dir / "summary.json")
        finally:
            executor.close()
    base = min(seconds[bandings[0]])
    print(f"\nMinHash plan (verify off) on {n_docs:,} synthetic signatures, {len(shards)} shards, {workers} workers, "
          f"best of {rounds} alternating rounds")
    print("| bands x rows | P(candidate \\| J = 0.8) | candidate pairs | removed | plan s (best) | vs first | all rounds |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for b in bandings:
        s = summary[b]
        best = min(seconds[b])
        print(f"| {b[0]} x {b[1]} | {float(mh.candidate_probability(0.8, *b)):.3f} | {s['candidate_pairs']:,} "
              f"| {s['removed']:,} | {best:.2f} | {best / base:.2f}x | {' / '.join(f'{x:.2f}' for x in seconds[b])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=300, help="planted pairs for the estimator check")
    ap.add_argument("--plan-docs", type=int, default=0, help="also time the plan per banding on this many "
                    "synthetic signatures (0: skip)")
    ap.add_argument("--banding", nargs="+", default=["9x13", "15x7"], help="bandings for --plan-docs, BxR each")
    ap.add_argument("--plan-only", action="store_true", help="only the --plan-docs measurement")
    args = ap.parse_args()
    if args.plan_docs:
        bandings = [tuple(int(x) for x in b.lower().split("x")) for b in args.banding]
        plan_cost(args.plan_docs, bandings, args.rounds)
        if args.plan_only:
            return

    runs: dict[str, list[dict]] = {p: [] for p in PATHS}
    for r in range(args.rounds):
        for path in PATHS:
            runs[path].append(measure(path, args.docs))
            print(f"round {r + 1} {path:<11} {runs[path][-1]['docs_per_s']:>9,.0f} docs/s", flush=True)
    best = {p: max(rs, key=lambda x: x["docs_per_s"]) for p, rs in runs.items()}
    words = best["winnow"]["words"]
    print(f"\n{args.docs:,} Wikipedia articles, mean {words:.0f} words, num_perm {NUM_PERM}, word 5-grams, "
          f"one process each (best of {args.rounds} alternating rounds)")
    print(f"{'path':<12}{'docs/s':>10}{'peak RSS MB':>13}{'RSS after load MB':>19}")
    for p, b in best.items():
        print(f"{p:<12}{b['docs_per_s']:>10,.0f}{b['peak_rss_mb']:>13,.0f}{b['loaded_rss_mb']:>19,.0f}")
    print(f"speed ratio winnow / datasketch: {best['winnow']['docs_per_s'] / best['datasketch']['docs_per_s']:.1f}x "
          f"per core (target >= 5x)")

    err = estimator_error(args.pairs)
    print(f"\nestimator error on {err['pairs']} planted pairs (true Jaccard 0.5-1.0 on the same shingle sets):")
    print(f"{'path':<12}{'mean |est-true|':>16}{'mean est-true':>15}{'max |est-true|':>16}")
    for p in PATHS:
        e = err[p]
        print(f"{p:<12}{e['mae']:>16.4f}{e['bias']:>+15.4f}{e['max']:>16.4f}")


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="bench_minhash"))
