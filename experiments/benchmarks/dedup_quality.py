"""Precision and recall of `minhash_dedup` per true-Jaccard bucket, on real data.

Two corpora, each run through the real pipeline (ingest -> minhash_dedup),
with verification on and off:

* usenet: ``raw/usenet-20news.jsonl.gz`` as is (cross-posts, quoted copies,
  reposted FAQs). Ground truth: every pair with true shingle Jaccard >= 0.5,
  found exactly by all-pairs prefix filtering (a pair with J >= t must share one
  of the ``|x| - ceil(t|x|) + 1`` rarest shingles of each side).
* planted: real English Wikipedia articles, each followed by one planted copy at
  a target Jaccard drawn uniformly from [0.5, 1.0], plus unrelated articles.
  A copy is made by editing the article's whitespace tokens in a seeded random
  order -- substitute a token by one from another article, delete one, or
  insert one (equal odds) -- and binary-searching the number of edits whose
  result is nearest the target. The bucket uses the copy's *measured* Jaccard.

Recall per bucket: share of true pairs that end in the same cluster.
Precision: share of reported pairs (removed document, its survivor) whose
true Jaccard reaches the threshold.

    .venv/bin/python -m experiments.benchmarks.dedup_quality [--planted 1500] [--threshold 0.8]
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.dedup import minhash as mh
from pipeline.config import config_from_dict
from pipeline.runner import Runner
from pipeline.shards import read_json, read_parquet

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BUCKETS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def wikipedia_articles(n: int, min_words: int = 150, skip: int = 0) -> list[dict]:
    """The first ``n`` articles (after ``skip``) with at least ``min_words`` words."""
    out, seen = [], 0
    with gzip.open(DATA / "ref" / "wikipedia-en.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if len(row["text"].split()) < min_words:
                continue
            seen += 1
            if seen > skip:
                out.append(row)
            if len(out) >= n:
                break
    return out


def plant_copy(text: str, donor_tokens: list[str], target: float, rng: np.random.Generator,
               ngram: int = 5) -> tuple[str, float]:
    """A copy of ``text`` whose shingle Jaccard with it is as near ``target`` as edits allow; returns (copy, J)."""
    tokens = text.split()
    n_max = len(tokens)
    ops = rng.integers(0, 3, size=n_max)
    positions = rng.random(n_max)
    donors = rng.integers(0, len(donor_tokens), size=n_max)
    base = mh.shingles(text, ngram)

    def edited(k: int) -> str:
        out = list(tokens)
        for op, pos, donor in zip(ops[:k], positions[:k], donors[:k]):
            i = int(pos * len(out))
            if op == 0 and out:
                out[min(i, len(out) - 1)] = donor_tokens[donor]
            elif op == 1 and len(out) > 1:
                del out[min(i, len(out) - 1)]
            else:
                out.insert(i, donor_tokens[donor])
        return " ".join(out)

    def jac(k: int) -> float:
        other = mh.shingles(edited(k), ngram)
        return len(base & other) / len(base | other)

    lo, hi = 0, n_max
    while lo < hi:  # smallest k with J(k) <= target
        mid = (lo + hi) // 2
        if jac(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    k = min((max(lo - 1, 0), lo), key=lambda c: abs(jac(c) - target))
    return edited(k), jac(k)


def planted_corpus(n_pairs: int, n_distractors: int, seed: int) -> tuple[list[dict], list[tuple[str, str, float]]]:
    rng = np.random.default_rng(seed)
    articles = wikipedia_articles(n_pairs + n_distractors)
    originals, distractors = articles[:n_pairs], articles[n_pairs:]
    donor_tokens = " ".join(a["text"] for a in distractors[:200]).split()
    rows, pairs = [], []
    for k, art in enumerate(originals):
        copy, j = plant_copy(art["text"], donor_tokens, float(rng.uniform(0.5, 1.0)), rng)
        oid, cid = f"wiki-{art['id']}", f"planted-{k}-of-{art['id']}"
        rows += [{"id": oid, "text": art["text"]}, {"id": cid, "text": copy}]
        pairs.append((oid, cid, j))
    rows += [{"id": f"wiki-{a['id']}", "text": a["text"]} for a in distractors]
    order = rng.permutation(len(rows))  # copies not always right after their original
    return [rows[i] for i in order], pairs


def all_pairs_at_least(texts: list[str], t: float = 0.5, ngram: int = 5) -> tuple[list[np.ndarray], dict]:
    """Every pair with true shingle Jaccard >= t, exactly (prefix filtering). Returns (sets, {(i, j): J})."""
    sets = mh.shingle_sets(texts, ngram)
    all_hashes = np.concatenate(sets)
    uniq, freq = np.unique(all_hashes, return_counts=True)
    tok_doc, tok_rank = [], []
    for d, s in enumerate(sets):
        if len(s) == 0:
            continue
        rank = np.searchsorted(uniq, s)
        order = np.lexsort((rank, freq[rank]))  # rarest first, ties by hash
        p = len(s) - math.ceil(t * len(s)) + 1
        tok_rank.append(rank[order[:p]])
        tok_doc.append(np.full(p, d))
    tok_rank, tok_doc = np.concatenate(tok_rank), np.concatenate(tok_doc)
    order = np.lexsort((tok_doc, tok_rank))
    tok_rank, tok_doc = tok_rank[order], tok_doc[order]
    starts = np.flatnonzero(np.r_[True, tok_rank[1:] != tok_rank[:-1]])
    ends = np.r_[starts[1:], len(tok_rank)]
    candidates = set()
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        docs = tok_doc[s:e].tolist()
        candidates.update((a, b) for i, a in enumerate(docs) for b in docs[i + 1:] if a != b)
    truth = {}
    for a, b in candidates:
        j = mh.jaccard(sets[a], sets[b])
        if j >= t:
            truth[(a, b)] = j
    return sets, truth


def run_pipeline(rows: list[dict], workdir: Path, name: str, threshold: float, verify: bool,
                 workers: int) -> tuple[dict[str, str], list[tuple[str, str]], dict]:
    """Ingest ``rows`` and dedup; returns (id -> cluster representative, reported pairs, plan summary)."""
    src = workdir / f"{name}.jsonl"
    if not src.exists():
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run_dir = workdir / f"run-{name}"
    cfg = config_from_dict({"run_dir": str(run_dir), "workers": workers, "stages": [
        {"name": "ingest", "inputs": [{"path": str(src), "source": name}], "shard_docs": 2500},
        {"name": "minhash_dedup", "kind": "minhash_dedup", "threshold": threshold, "verify": verify}]})
    Runner(cfg, progress=False, log=lambda m: None).run()
    rep, reported = {}, []
    stage = run_dir / "minhash_dedup"
    for sh in read_json(stage / "manifest.json")["shards"]:
        for i in read_parquet(stage / sh["kept"]["path"], columns=["id"]).column("id").to_pylist():
            rep[i] = i
        removed = read_parquet(stage / sh["removed"]["path"], columns=["id", "duplicate_of"])
        for i, s in zip(removed.column("id").to_pylist(), removed.column("duplicate_of").to_pylist()):
            rep[i] = s
            reported.append((i, s))
    return rep, reported, read_json(stage / "plan" / "summary.json")


def bucket_of(j: float) -> int:
    return min(int(np.searchsorted(BUCKETS, j, side="right")) - 1, len(BUCKETS) - 2)


def report(title: str, truth: list[tuple[str, str, float]], rep: dict[str, str],
           reported_j: list[float], threshold: float, summary: dict) -> None:
    print(f"\n{title}  (bands={summary['bands']} rows={summary['rows']} verify={summary['verify']}: "
          f"{summary['candidate_pairs']:,} candidate pairs, {summary['removed']:,} removed "
          f"in {summary['clusters']:,} clusters)")
    print(f"  {'true Jaccard':<14}{'true pairs':>11}{'found':>8}{'recall':>8}   {'reported pairs':>15}")
    n_b = len(BUCKETS) - 1
    tp, found = np.zeros(n_b, int), np.zeros(n_b, int)
    rp = np.zeros(n_b + 1, int)
    for a, b, j in truth:
        if j < BUCKETS[0]:  # a planted copy whose nearest reachable J fell just below 0.5
            continue
        tp[bucket_of(j)] += 1
        found[bucket_of(j)] += rep[a] == rep[b]
    for j in reported_j:
        rp[bucket_of(j) if j >= BUCKETS[0] else n_b] += 1
    for k in range(n_b):
        hi = "]" if k == n_b - 1 else ")"
        rec = f"{found[k] / tp[k]:.3f}" if tp[k] else "-"
        print(f"  [{BUCKETS[k]:.1f}, {BUCKETS[k + 1]:.1f}{hi}{'':<4}{tp[k]:>11,}{found[k]:>8,}{rec:>8}   {rp[k]:>15,}")
    print(f"  {'< 0.5':<14}{'':>27}   {rp[n_b]:>15,}")
    ok = sum(j >= threshold for j in reported_j)
    prec = ok / len(reported_j) if reported_j else float("nan")
    hi_pairs = sum(tp[k] for k in range(n_b) if BUCKETS[k] >= 0.9)
    hi_found = sum(found[k] for k in range(n_b) if BUCKETS[k] >= 0.9)
    print(f"  precision (reported pairs with true J >= {threshold}): {ok:,}/{len(reported_j):,} = {prec:.4f}; "
          f"recall at J >= 0.9: {hi_found:,}/{hi_pairs:,} = {hi_found / max(hi_pairs, 1):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--planted", type=int, default=1500, help="planted pairs")
    ap.add_argument("--distractors", type=int, default=3000, help="unrelated Wikipedia articles")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dedup-quality-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        usenet = [{"id": r["id"], "text": r["text"]} for r in read_jsonl(DATA / "raw" / "usenet-20news.jsonl.gz")]
        sets, pairs = all_pairs_at_least([r["text"] for r in usenet])
        ids = [r["id"] for r in usenet]
        truth = [(ids[a], ids[b], j) for (a, b), j in pairs.items()]
        index = {i: k for k, i in enumerate(ids)}
        print(f"usenet: {len(usenet):,} posts; {len(truth):,} pairs with true Jaccard >= 0.5 "
              f"(exact all-pairs, {time.perf_counter() - t0:.0f}s)")
        for verify in (True, False):
            rep, reported, summary = run_pipeline(usenet, tmp, "usenet", args.threshold, verify, args.workers)
            rj = [mh.jaccard(sets[index[a]], sets[index[b]]) for a, b in reported]
            report(f"usenet, threshold {args.threshold}", truth, rep, rj, args.threshold, summary)

        rows, planted = planted_corpus(args.planted, args.distractors, args.seed)
        texts = {r["id"]: r["text"] for r in rows}
        print(f"\nplanted: {len(planted):,} pairs planted into {len(rows):,} Wikipedia documents "
              f"(measured J of copies: min {min(p[2] for p in planted):.3f}, max {max(p[2] for p in planted):.3f})")
        for verify in (True, False):
            rep, reported, summary = run_pipeline(rows, tmp, "planted", args.threshold, verify, args.workers)
            rj = [mh.jaccard(*mh.shingle_sets([texts[a], texts[b]])) for a, b in reported]
            report(f"planted, threshold {args.threshold}", planted, rep, rj, args.threshold, summary)


if __name__ == "__main__":
    main()
