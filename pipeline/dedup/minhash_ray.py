"""MinHash dedup's global step on a Ray cluster: the same decisions as the local plan, without one big process.

The local plan (:meth:`pipeline.dedup.stages.MinHashDedup.plan`) loads every
signature and sorts each band in one process. Here:

1. **Band shuffle.** One task per score shard cuts its signatures into band
   keys and routes each ``(band, key, document)`` entry to partition
   ``hash(band, key) mod P``. One reduce task per partition sorts its entries
   and links every bucket member to the bucket's lowest document, exactly the
   local star edges. A bucket never spans two partitions, and no task holds
   more than its partition (about 1/P of all entries).
2. **Pair joins.** Verification needs the true Jaccard of pairs whose
   documents sit in different shards. The driver splits the pairs into P
   chunks; one task per shard computes shingle sets (and fetches signatures
   and ids) of its documents that some chunk needs and routes them there; one
   task per chunk scores its pairs. This runs for the candidate edges, then
   for (removed member, survivor) pairs, as the local plan does.
3. **Components in the driver.** Union-find runs on the verified edges,
   relabelled to the documents that occur in them, so the driver holds
   O(edges), never the bucket table or O(documents) arrays. Edges are at most
   one per bucket member per band and, after verification, roughly one per
   near-duplicate document; a single-machine union-find handles hundreds of
   millions of those, so distributed label propagation (several shuffles per
   round) would cost more than it saves.

Every task reports its peak RSS, written with entry counts to
``plan/shuffle_stats.json``.
"""
from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline.dedup import minhash as mh
from pipeline.dedup.stages import _signature_matrix, _write_decisions
from pipeline.shards import atomic_write_json, read_parquet
from pipeline.stage import StageContext

_FNV_PRIME = np.uint64(0x100000001B3)


# ---------------------------------------------------------------------------
# memory accounting inside tasks


def rss_mb(field: str) -> float:
    """``VmHWM`` (peak since the window started) or ``VmRSS`` in MiB; ``ru_maxrss`` where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_memory_window() -> float:
    """Reset this process's RSS high-water mark (Ray reuses workers across tasks); return the RSS now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_mb("VmRSS")


def _task_stats(task: str, start_mb: float, **counts) -> dict:
    return {"task": task, "start_rss_mb": round(start_mb, 1), "peak_rss_mb": round(rss_mb("VmHWM"), 1), **counts}


# ---------------------------------------------------------------------------
# 1. band shuffle


def _partition_of(band: int, keys: np.ndarray, partitions: int) -> np.ndarray:
    """Which partition each band key goes to: any deterministic hash works, buckets are grouped by exact keys."""
    h = np.full(len(keys), np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
    for col in keys.T:
        h = (h ^ col.astype(np.uint64)) * _FNV_PRIME
    h ^= h >> np.uint64(29)
    return (h % np.uint64(partitions)).astype(np.int64)


def _split_by_partition(partition: np.ndarray, partitions: int) -> list[np.ndarray]:
    """Positions going to each partition, in their original order."""
    order = np.argsort(partition, kind="stable")
    return np.split(order, np.searchsorted(partition[order], np.arange(1, partitions)))


def band_map(scores_path: Path, offset: int, bands: int, rows: int, num_perm: int, partitions: int):
    """One shard's band entries split into ``partitions`` parts, then this task's stats."""
    start = start_memory_window()
    table = read_parquet(scores_path, columns=["minhash", "n_shingles", "length"])
    sig = _signature_matrix([table.column("minhash")], num_perm)
    members = np.flatnonzero(table.column("n_shingles").to_numpy() > 0)
    lengths = table.column("length").to_numpy()[members]
    parts: list[list[tuple]] = [[] for _ in range(partitions)]
    for band in range(bands):
        keys = sig[members, band * rows:(band + 1) * rows]
        for p, picked in enumerate(_split_by_partition(_partition_of(band, keys, partitions), partitions)):
            parts[p].append((np.full(len(picked), band, np.int32), keys[picked], members[picked] + offset,
                             lengths[picked]))
    out = [tuple(np.concatenate(cols) for cols in zip(*chunks)) if members.size else _no_entries(rows)
           for chunks in parts]
    stats = _task_stats("band_map", start, documents=table.num_rows, members=len(members),
                        entries=len(members) * bands)
    return (*out, stats)


def _no_entries(rows: int) -> tuple:
    return (np.zeros(0, np.int32), np.zeros((0, rows), np.uint32), np.zeros(0, np.int64), np.zeros(0, np.int64))


def band_reduce(*parts):
    """Star edges (bucket's lowest document, other member) of one partition's buckets, with both ends' lengths."""
    start = start_memory_window()
    band, keys, docs, lengths = (np.concatenate(cols) for cols in zip(*parts))
    order = np.lexsort([docs, *keys.T[::-1], band])  # by band, then key, then document
    band, keys, docs, lengths = band[order], keys[order], docs[order], lengths[order]
    new_bucket = np.r_[True, (band[1:] != band[:-1]) | np.any(keys[1:] != keys[:-1], axis=1)] if len(docs) \
        else np.zeros(0, bool)
    first = np.flatnonzero(new_bucket)[np.cumsum(new_bucket) - 1]  # row of each row's bucket head
    linked = ~new_bucket
    edges = np.stack([docs[first[linked]], docs[linked]], axis=1)
    edge_lengths = np.stack([lengths[first[linked]], lengths[linked]], axis=1)
    edges, keep = np.unique(edges, axis=0, return_index=True)
    stats = _task_stats("band_reduce", start, entries=len(docs), buckets=int(new_bucket.sum()), edges=len(edges))
    return edges, edge_lengths[keep], stats


# ---------------------------------------------------------------------------
# 2. pair joins


def join_map(input_path: Path, scores_path: Path, offset: int, docs: np.ndarray, chunks: np.ndarray,
             partitions: int, num_perm: int, ngram: int, with_sets: bool):
    """Signature, id and (``with_sets``) shingle set of each needed document, routed to the chunks that need it."""
    start = start_memory_window()
    rows, inverse = np.unique(docs - offset, return_inverse=True)
    scores = read_parquet(scores_path, columns=["minhash", "id"])
    sig = _signature_matrix([scores.column("minhash")], num_perm)[rows]
    ids = scores.column("id").take(pa.array(rows)).to_pylist()
    if with_sets:
        texts = read_parquet(input_path, columns=["text"]).column("text").take(pa.array(rows)).to_pylist()
        sets = mh.shingle_sets(texts, ngram)
    out = []
    for positions in _split_by_partition(chunks, partitions):
        picked = inverse[positions]
        chunk_sets = [sets[i] for i in picked] if with_sets else []
        out.append((docs[positions], [ids[i] for i in picked], sig[picked],
                    np.concatenate(chunk_sets) if chunk_sets else np.zeros(0, np.uint64),
                    np.array([len(s) for s in chunk_sets], np.int64)))
    return (*out, _task_stats("join_map", start, documents=len(rows)))


def join_reduce(pairs: np.ndarray, with_sets: bool, *parts):
    """For each pair: true Jaccard (NaN without sets), MinHash estimate, and the second document's id."""
    start = start_memory_window()
    docs = np.concatenate([p[0] for p in parts])
    ids = [i for p in parts for i in p[1]]
    sig = np.concatenate([p[2] for p in parts])
    order = np.argsort(docs)
    a, b = (order[np.searchsorted(docs[order], pairs[:, k])] for k in (0, 1))
    estimate = mh.estimated_jaccard(sig[a], sig[b])
    jaccard = np.full(len(pairs), np.nan)
    if with_sets:
        sets = []
        for p in parts:  # each part's sets are concatenated, with their sizes alongside
            sets += [p[3][end - n:end] for n, end in zip(p[4].tolist(), np.cumsum(p[4]).tolist())]
        jaccard = np.array([mh.jaccard(sets[x], sets[y]) for x, y in zip(a.tolist(), b.tolist())])
    return jaccard, estimate, [ids[y] for y in b.tolist()], _task_stats("join_reduce", start, pairs=len(pairs),
                                                                         documents=len(docs))


def _pair_join(ctx: StageContext, pairs: np.ndarray, offsets: np.ndarray, partitions: int, num_perm: int,
               ngram: int, with_sets: bool, stats: list[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not len(pairs):
        return np.zeros(0), np.zeros(0), []
    partitions = min(partitions, len(pairs))
    chunk_of_pair = np.arange(len(pairs)) * partitions // len(pairs)
    needed = np.unique(pairs * partitions + chunk_of_pair[:, None])  # (document, chunk), by document
    needed_docs, needed_chunks = needed // partitions, needed % partitions
    bounds = np.searchsorted(needed_docs, offsets)
    mapper = ray.remote(num_cpus=1)(join_map).options(num_returns=partitions + 1)
    mapped = []
    for k, shard in enumerate(ctx.shards):
        lo, hi = bounds[k], bounds[k + 1]
        if lo < hi:
            mapped.append(mapper.remote(ctx.input_path(shard), ctx.scores_path(shard), int(offsets[k]),
                                        needed_docs[lo:hi], needed_chunks[lo:hi], partitions, num_perm, ngram,
                                        with_sets))
    reducer = ray.remote(num_cpus=1)(join_reduce).options(num_returns=4)
    reduced = [reducer.remote(pairs[chunk_of_pair == p], with_sets, *(refs[p] for refs in mapped))
               for p in range(partitions)]
    stats += ray.get([refs[-1] for refs in mapped])
    results = [ray.get(list(refs)) for refs in reduced]
    stats += [r[3] for r in results]
    return (np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]),
            [i for r in results for i in r[2]])


# ---------------------------------------------------------------------------
# the plan


def distributed_plan(opts: dict, ctx: StageContext, partitions: int) -> None:
    """Write the same ``plan/decisions`` and ``plan/summary.json`` as the local MinHash plan, on Ray."""
    rows_per_shard = [pq.ParquetFile(ctx.scores_path(s)).metadata.num_rows for s in ctx.shards]
    offsets = np.zeros(len(rows_per_shard) + 1, dtype=np.int64)
    np.cumsum(rows_per_shard, out=offsets[1:])
    bands, rows, num_perm = int(opts["bands"]), int(opts["rows"]), int(opts["num_perm"])
    threshold = float(opts["threshold"])
    stats: list[dict] = []

    mapper = ray.remote(num_cpus=1)(band_map).options(num_returns=partitions + 1)
    mapped = [mapper.remote(ctx.scores_path(s), int(offsets[k]), bands, rows, num_perm, partitions)
              for k, s in enumerate(ctx.shards)]
    reducer = ray.remote(num_cpus=1)(band_reduce).options(num_returns=3)
    reduced = [reducer.remote(*(refs[p] for refs in mapped)) for p in range(partitions)] if mapped else []
    map_stats = ray.get([refs[-1] for refs in mapped])
    results = [ray.get(list(refs)) for refs in reduced]
    del mapped, reduced  # frees the shuffled entries in the object store
    stats += map_stats + [r[2] for r in results]
    edges = np.concatenate([r[0] for r in results]) if results else np.zeros((0, 2), np.int64)
    edge_lengths = np.concatenate([r[1] for r in results]) if results else np.zeros((0, 2), np.int64)
    edges, first = np.unique(edges, axis=0, return_index=True)  # a pair linked in several bands counts once
    edge_lengths = edge_lengths[first]
    candidates = len(edges)

    if opts["verify"] and len(edges):
        jaccard, _, _ = _pair_join(ctx, edges, offsets, partitions, num_perm, opts["ngram"], True, stats)
        linked = jaccard >= threshold
        edges, edge_lengths = edges[linked], edge_lengths[linked]

    nodes, where = np.unique(edges, return_inverse=True)
    node_lengths = np.zeros(len(nodes), np.int64)
    node_lengths[where.ravel()] = edge_lengths.ravel()
    survivors = mh.choose_survivors(mh.cluster_roots(len(nodes), where.reshape(-1, 2)), node_lengths, opts["keep"])
    removed_local = np.flatnonzero(survivors != np.arange(len(nodes)))
    pairs = np.stack([nodes[removed_local], nodes[survivors[removed_local]]], axis=1)
    jaccard, similarity, survivor_ids = _pair_join(ctx, pairs, offsets, partitions, num_perm, opts["ngram"],
                                                   bool(opts["verify"]), stats)
    if opts["verify"] and len(pairs):  # chains A~B~C with A !~ C: C is no duplicate of survivor A, keep it
        close = jaccard >= threshold
        pairs, similarity = pairs[close], similarity[close]
        survivor_ids = [i for i, c in zip(survivor_ids, close.tolist()) if c]

    _write_decisions(ctx, offsets, pairs[:, 0], ["minhash_dedup:near_duplicate"] * len(pairs), survivor_ids,
                     similarity.tolist())
    atomic_write_json(ctx.plan_dir / "summary.json", {
        "documents": int(offsets[-1]), "without_shingles": int(offsets[-1] - sum(s["members"] for s in map_stats)),
        "bands": opts["bands"], "rows": opts["rows"], "num_perm": opts["num_perm"], "threshold": opts["threshold"],
        "verify": bool(opts["verify"]), "candidate_pairs": candidates, "linked_pairs": len(edges),
        "clusters": len(set(pairs[:, 1].tolist())), "removed": len(pairs)})
    atomic_write_json(ctx.plan_dir / "shuffle_stats.json", {
        "partitions": partitions, "total_band_entries": sum(s["entries"] for s in map_stats),
        "max_entries_in_one_task": max((s["entries"] for s in stats if s["task"] == "band_reduce"), default=0),
        "max_peak_rss_mb": max((s["peak_rss_mb"] for s in stats), default=0.0), "tasks": stats})
