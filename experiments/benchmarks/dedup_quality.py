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

Several stage settings (``--settings``; default: today's explicit 9 x 13
banding against the stage's default choice) run on the same corpora, each in
a fresh run folder so its stage cost includes hashing. Cost is the CPU time
of the minhash_dedup stage alone (this process and its worker processes;
ingest runs first, untimed) and its wall time; rounds alternate between
settings and the best of each counts (the machine is shared), with its ratio
to the first setting.

    .venv/bin/python -m experiments.benchmarks.dedup_quality [--planted 1500] [--threshold 0.8] [--rounds 3]
    .venv/bin/python -m experiments.benchmarks.dedup_quality --settings "bands=9,rows=13" "" "verify=false"
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.dedup import minhash as mh
from pipeline.config import config_from_dict
from pipeline.runner import Runner
from pipeline.rundir import RunFolder
from pipeline.shards import read_json

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


def parse_setting(text: str) -> dict:
    """``"bands=9,rows=13"`` -> stage parameters (numbers and true/false parsed); ``""`` is the default."""
    params = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        params[key.strip()] = yaml.safe_load(value)  # 9 -> int, 0.97 -> float, false -> bool, fineweb -> str
    return params


def run_pipeline(rows: list[dict], workdir: Path, name: str, run: str, stage_params: dict,
                 workers: int) -> tuple[dict[str, str], list[tuple[str, str]], dict]:
    """Ingest ``rows`` and dedup in a fresh run folder; returns (id -> cluster representative,
    reported (removed, survivor) pairs, plan summary + stage timings)."""
    src = workdir / f"{name}.jsonl"
    if not src.exists():
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run_dir = workdir / f"run-{name}-{run}"
    cfg = config_from_dict({"run_dir": str(run_dir), "workers": workers, "stages": [
        {"name": "ingest", "inputs": [{"path": str(src), "source": name}], "shard_docs": 2500},
        {"name": "minhash_dedup", "kind": "minhash_dedup", **stage_params}]})
    Runner(cfg, progress=False, log=lambda m: None).run(upto="ingest")
    self0, children0 = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    Runner(cfg, progress=False, log=lambda m: None).run()  # ingest is up to date: this is minhash_dedup alone
    self1, children1 = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in ((self0, self1), (children0, children1)))
    folder = RunFolder(run_dir)
    rep = {i: i for i in folder.table("minhash_dedup", ["id"]).column("id").to_pylist()}
    reported = []
    for r in folder.rows("minhash_dedup", ["id", "duplicate_of"], part="removed"):
        rep[r["id"]] = r["duplicate_of"]
        reported.append((r["id"], r["duplicate_of"]))
    plan_dir = folder.plan_dir("minhash_dedup")
    summary = {**read_json(plan_dir / "summary.json"),
               "stage_seconds": folder.stats("minhash_dedup")["wall_seconds"], "cpu_seconds": cpu,
               "plan_seconds": folder.stage("minhash_dedup").plan_seconds()}
    shutil.rmtree(run_dir)
    return rep, reported, summary


def bucket_of(j: float) -> int:
    return min(int(np.searchsorted(BUCKETS, j, side="right")) - 1, len(BUCKETS) - 2)


def bucket_counts(truth: list[tuple[str, str, float]], rep: dict[str, str],
                  reported_j: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bucket: true pairs, true pairs found in one cluster, reported pairs (last slot: J < 0.5)."""
    n_b = len(BUCKETS) - 1
    tp, found, rp = np.zeros(n_b, int), np.zeros(n_b, int), np.zeros(n_b + 1, int)
    for a, b, j in truth:
        if j < BUCKETS[0]:  # a planted copy whose nearest reachable J fell just below 0.5
            continue
        tp[bucket_of(j)] += 1
        found[bucket_of(j)] += rep[a] == rep[b]
    for j in reported_j:
        rp[bucket_of(j) if j >= BUCKETS[0] else n_b] += 1
    return tp, found, rp


def report(title: str, labels: list[str], truth: list[tuple[str, str, float]], results: list[dict],
           threshold: float) -> None:
    """Markdown tables: recall and reported pairs per bucket (a column per setting), then cost per setting."""
    print(f"\n**{title}**, threshold {threshold}\n")
    counts = [bucket_counts(truth, r["rep"], r["reported_j"]) for r in results]
    tp = counts[0][0]
    print("| true J | true pairs | " + " | ".join(f"recall, {lab}" for lab in labels) + " | "
          + " | ".join(f"reported, {lab}" for lab in labels) + " |")
    print("|---|---:|" + "---:|" * (2 * len(labels)))
    n_b = len(BUCKETS) - 1
    for k in range(n_b):
        hi = "]" if k == n_b - 1 else ")"
        recs = " | ".join(f"{f[k] / tp[k]:.3f}" if tp[k] else "-" for _, f, _ in counts)
        reps = " | ".join(f"{rp[k]:,}" for _, _, rp in counts)
        print(f"| [{BUCKETS[k]:.1f}, {BUCKETS[k + 1]:.1f}{hi} | {tp[k]:,} | {recs} | {reps} |")
    print(f"| < 0.5 | | {' | '.join('' for _ in labels)} | {' | '.join(f'{rp[n_b]:,}' for _, _, rp in counts)} |")
    base, base_cpu = min(results[0]["seconds"]), min(results[0]["cpu_seconds"])
    print("\n| setting | bands x rows | P(candidate \\| J = t) | candidate pairs | linked | removed | precision "
          "| CPU s (best) | vs first | wall s (best) | vs first | plan wall s (best) | CPU s, all rounds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for lab, r in zip(labels, results):
        s, rj = r["summary"], r["reported_j"]
        ok = sum(j >= threshold for j in rj)
        prec = f"{ok}/{len(rj)} = {ok / len(rj):.3f}" if rj else "-"
        p_t = float(mh.candidate_probability(threshold, s["bands"], s["rows"]))
        best, cpu = min(r["seconds"]), min(r["cpu_seconds"])
        print(f"| {lab} | {s['bands']} x {s['rows']} | {p_t:.3f} | {s['candidate_pairs']:,} | {s['linked_pairs']:,} "
              f"| {s['removed']:,} | {prec} | {cpu:.2f} | {cpu / base_cpu:.2f}x | {best:.2f} | {best / base:.2f}x "
              f"| {min(r['plan_seconds']):.2f} | {' / '.join(f'{x:.2f}' for x in r['cpu_seconds'])} |")


def compare(rows: list[dict], truth: list[tuple[str, str, float]], pair_j, workdir: Path, name: str,
            settings: list[str], args) -> None:
    """Runs every setting ``args.rounds`` times (alternating), scores the first round, prints the table."""
    results: list[dict] = [{"seconds": [], "cpu_seconds": [], "plan_seconds": []} for _ in settings]
    for rnd in range(args.rounds):
        for k, text in enumerate(settings):
            params = {"threshold": args.threshold, **parse_setting(text)}
            rep, reported, summary = run_pipeline(rows, workdir, name, f"{k}-{rnd}", params, args.workers)
            res = results[k]
            res["seconds"].append(summary["stage_seconds"])
            res["cpu_seconds"].append(summary["cpu_seconds"])
            res["plan_seconds"].append(summary["plan_seconds"])
            if rnd == 0:
                res.update(rep=rep, summary=summary, reported_j=[pair_j(a, b) for a, b in reported])
    labels = [t or "default" for t in settings]
    report(name, labels, truth, results, args.threshold)
    explain_misses(rows, truth, pair_j, labels, results, args.threshold)


def explain_misses(rows: list[dict], truth: list[tuple[str, str, float]], pair_j, labels: list[str],
                   results: list[dict], threshold: float) -> None:
    """Why each true pair at or above the threshold did not end in one cluster: never an LSH candidate
    (the S-curve), or a candidate that the clustering rules kept apart (shown: where each side went)."""
    index = {r["id"]: k for k, r in enumerate(rows)}
    signatures: dict[int, np.ndarray] = {}
    for lab, res in zip(labels, results):
        s = res["summary"]
        if s["num_perm"] not in signatures:
            signatures[s["num_perm"]] = mh.MinHasher(s["num_perm"], 5, 1).signatures([r["text"] for r in rows])[0]
        sig, rep, lines = signatures[s["num_perm"]], res["rep"], []
        for a, b, j in sorted(truth, key=lambda t: t[2]):
            if j < threshold or rep[a] == rep[b]:
                continue
            sa, sb = sig[index[a]], sig[index[b]]
            cand = any((sa[k * s["rows"]:(k + 1) * s["rows"]] == sb[k * s["rows"]:(k + 1) * s["rows"]]).all()
                       for k in range(s["bands"]))
            fate = ", ".join("kept" if rep[d] == d else f"removed as duplicate of a third document "
                             f"(J {pair_j(d, rep[d]):.2f}; J to the other side's {pair_j(other, rep[d]):.2f})"
                             for d, other in ((a, b), (b, a)))
            lines.append(f"    J {j:.3f}: {'LSH candidate' if cand else 'NOT an LSH candidate'}; {fate}")
        print(f"\n  {lab}: {len(lines)} true pairs at J >= {threshold} not in one cluster")
        print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--planted", type=int, default=1500, help="planted pairs")
    ap.add_argument("--distractors", type=int, default=3000, help="unrelated Wikipedia articles")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--settings", nargs="+", default=["bands=9,rows=13", ""],
                    help='stage parameter sets to compare, "key=value,key=value" each ("" = the defaults); '
                         "default: today's 9 x 13 banding vs the stage's default choice")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs per setting (alternating; best counts)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["usenet", "planted"], help="run one corpus only")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dedup-quality-") as tmp:
        tmp = Path(tmp)
        # warm-up: numba's compile cache and the worker pool, so no setting pays for them
        run_pipeline([{"id": str(i), "text": f"warm up document {i} " * 20} for i in range(50)], tmp, "warmup",
                     "0", {}, args.workers)
        if args.only in (None, "usenet"):
            t0 = time.perf_counter()
            usenet = [{"id": r["id"], "text": r["text"]} for r in read_jsonl(DATA / "raw" / "usenet-20news.jsonl.gz")]
            sets, pairs = all_pairs_at_least([r["text"] for r in usenet])
            ids = [r["id"] for r in usenet]
            truth = [(ids[a], ids[b], j) for (a, b), j in pairs.items()]
            index = {i: k for k, i in enumerate(ids)}
            print(f"usenet: {len(usenet):,} posts; {len(truth):,} pairs with true Jaccard >= 0.5 "
                  f"(exact all-pairs, {time.perf_counter() - t0:.0f}s)", flush=True)
            compare(usenet, truth, lambda a, b: mh.jaccard(sets[index[a]], sets[index[b]]), tmp, "usenet",
                    args.settings, args)

        if args.only in (None, "planted"):
            rows, planted = planted_corpus(args.planted, args.distractors, args.seed)
            texts = {r["id"]: r["text"] for r in rows}
            print(f"\nplanted: {len(planted):,} pairs planted into {len(rows):,} Wikipedia documents "
                  f"(measured J of copies: min {min(p[2] for p in planted):.3f}, max {max(p[2] for p in planted):.3f})",
                  flush=True)
            compare(rows, planted, lambda a, b: mh.jaccard(*mh.shingle_sets([texts[a], texts[b]])), tmp, "planted",
                    args.settings, args)


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="dedup_quality"))
