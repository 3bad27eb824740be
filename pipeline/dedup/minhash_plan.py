"""MinHash dedup's global step as executor-mapped tasks passing files: one plan, any executor.

The same code runs under the local executor (worker processes) and under Ray
(Ray tasks): every step is a module-level function mapped by
:func:`pipeline.executors.run_all`, reading its inputs from and writing its
outputs to ``plan/`` -- the way shard tasks work -- so no step needs the
executor's own object store and no process ever holds the whole signature table.

1. **Band shuffle.** One task per score shard cuts its signatures into band
   keys and routes each ``(band, key, document)`` entry to partition
   ``hash(band, key) mod P``, one file per partition. One reduce task per
   partition sorts its entries and links every bucket member to the bucket's
   lowest document (star edges). A bucket never spans two partitions, and no
   task holds more than its partition (about 1/P of all entries).
2. **Pair joins.** Verification needs the true Jaccard of pairs whose
   documents sit in different shards. The driver splits the pairs into P
   chunks; one task per shard computes shingle sets (and fetches signatures
   and ids) of its documents that some chunk needs and writes them per chunk;
   one task per chunk scores its pairs. This runs for the candidate edges, then
   for (removed member, survivor) pairs.
3. **Components in the driver.** Union-find runs on the verified edges,
   relabelled to the documents that occur in them, so the driver holds
   O(edges), never the bucket table or O(documents) arrays.

The output does not depend on P or on the executor: buckets are grouped by
exact keys, edges are de-duplicated and sorted, chunks are contiguous in pair
order. Every task reports its peak RSS, written with entry counts to
``plan/shuffle_stats.json``.
"""
from __future__ import annotations

import io
import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup import minhash as mh
from pipeline.executors import run_all
from pipeline.shards import atomic_write_bytes, atomic_write_json, read_parquet, write_parquet
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
    with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point
        h = np.full(len(keys), np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
        for col in keys.T:
            h = (h ^ col.astype(np.uint64)) * _FNV_PRIME
        h ^= h >> np.uint64(29)
    return (h % np.uint64(partitions)).astype(np.int64)


def _split_by_partition(partition: np.ndarray, partitions: int) -> list[np.ndarray]:
    """Positions going to each partition, in their original order."""
    order = np.argsort(partition, kind="stable")
    return np.split(order, np.searchsorted(partition[order], np.arange(1, partitions)))


def _save(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:  # files this plan wrote; never pickles
        return {k: z[k] for k in z.files}


def signature_matrix(chunked: list[pa.ChunkedArray], num_perm: int) -> np.ndarray:
    blocks = [chunk.flatten().to_numpy().reshape(-1, num_perm) for c in chunked for chunk in c.chunks]
    return np.concatenate(blocks) if blocks else np.zeros((0, num_perm), dtype=np.uint32)


# ---------------------------------------------------------------------------
# 1. band shuffle


def band_map(scores_path: str, offset: int, bands: int, rows: int, num_perm: int, partitions: int,
             out_prefix: str) -> dict:
    """One shard's band entries, split into ``partitions`` files ``{out_prefix}-p{p}.npz``; returns stats."""
    start = start_memory_window()
    table = read_parquet(Path(scores_path), columns=["minhash", "n_shingles", "length"])
    sig = signature_matrix([table.column("minhash")], num_perm)
    members = np.flatnonzero(table.column("n_shingles").to_numpy() > 0)
    lengths = table.column("length").to_numpy()[members]
    parts: list[list[tuple]] = [[] for _ in range(partitions)]
    for band in range(bands):
        keys = sig[members, band * rows:(band + 1) * rows]
        for p, picked in enumerate(_split_by_partition(_partition_of(band, keys, partitions), partitions)):
            parts[p].append((np.full(len(picked), band, np.int32), keys[picked], members[picked] + offset,
                             lengths[picked]))
    for p, chunks in enumerate(parts):
        band_ids, keys, docs, lens = (tuple(np.concatenate(cols) for cols in zip(*chunks)) if members.size
                                      else _no_entries(rows))
        _save(Path(f"{out_prefix}-p{p}.npz"), band=band_ids, keys=keys, docs=docs, lengths=lens)
    return _task_stats("band_map", start, documents=table.num_rows, members=len(members),
                       entries=len(members) * bands)


def _no_entries(rows: int) -> tuple:
    return (np.zeros(0, np.int32), np.zeros((0, rows), np.uint32), np.zeros(0, np.int64), np.zeros(0, np.int64))


def band_reduce(in_paths: list[str], out_path: str) -> dict:
    """Star edges (bucket's lowest document, other member) of one partition's buckets, with both ends' lengths."""
    start = start_memory_window()
    loaded = [_load(Path(q)) for q in in_paths]
    band, keys, docs, lengths = (np.concatenate([x[k] for x in loaded]) for k in ("band", "keys", "docs", "lengths"))
    del loaded
    order = np.lexsort([docs, *keys.T[::-1], band])  # by band, then key, then document
    band, keys, docs, lengths = band[order], keys[order], docs[order], lengths[order]
    new_bucket = np.r_[True, (band[1:] != band[:-1]) | np.any(keys[1:] != keys[:-1], axis=1)] if len(docs) \
        else np.zeros(0, bool)
    first = np.flatnonzero(new_bucket)[np.cumsum(new_bucket) - 1]  # row of each row's bucket head
    linked = ~new_bucket
    edges = np.stack([docs[first[linked]], docs[linked]], axis=1).reshape(-1, 2)
    edge_lengths = np.stack([lengths[first[linked]], lengths[linked]], axis=1).reshape(-1, 2)
    edges, keep = np.unique(edges, axis=0, return_index=True)
    _save(Path(out_path), edges=edges.astype(np.int64), lengths=edge_lengths[keep].astype(np.int64))
    for q in in_paths:  # the shuffled entries are consumed: free the disk
        Path(q).unlink(missing_ok=True)
    return _task_stats("band_reduce", start, entries=len(docs), buckets=int(new_bucket.sum()), edges=len(edges))


# ---------------------------------------------------------------------------
# 2. pair joins


def join_map(input_path: str, scores_path: str, offset: int, docs: np.ndarray, chunks: np.ndarray,
             partitions: int, num_perm: int, ngram: int, with_sets: bool, out_prefix: str) -> dict:
    """Signature, id and (``with_sets``) shingle set of each needed document, one file per chunk that needs it."""
    start = start_memory_window()
    rows, inverse = np.unique(docs - offset, return_inverse=True)
    scores = read_parquet(Path(scores_path), columns=["minhash", "id"])
    sig = signature_matrix([scores.column("minhash")], num_perm)[rows]
    ids = np.array(scores.column("id").take(pa.array(rows)).to_pylist(), dtype=object)
    if with_sets:
        texts = read_parquet(Path(input_path), columns=["text"]).column("text").take(pa.array(rows)).to_pylist()
        sets = mh.shingle_sets(texts, ngram)
    for p, positions in enumerate(_split_by_partition(chunks, partitions)):
        if not len(positions):
            continue
        picked = inverse[positions]
        chunk_sets = [sets[i] for i in picked] if with_sets else []
        _save(Path(f"{out_prefix}-c{p}.npz"), docs=docs[positions],
              ids=np.array([str(i) for i in ids[picked]], dtype=np.str_), sig=sig[picked],
              sets=np.concatenate(chunk_sets) if chunk_sets else np.zeros(0, np.uint64),
              set_sizes=np.array([len(x) for x in chunk_sets], np.int64))
    return _task_stats("join_map", start, documents=len(rows))


def join_reduce(pairs: np.ndarray, with_sets: bool, in_paths: list[str], out_path: str) -> dict:
    """For each pair: true Jaccard (NaN without sets), MinHash estimate, and the second document's id."""
    start = start_memory_window()
    parts = [_load(Path(q)) for q in in_paths if Path(q).exists()]
    docs = np.concatenate([x["docs"] for x in parts])
    ids = [str(i) for x in parts for i in x["ids"].tolist()]
    sig = np.concatenate([x["sig"] for x in parts])
    order = np.argsort(docs)
    a, b = (order[np.searchsorted(docs[order], pairs[:, k])] for k in (0, 1))
    estimate = mh.estimated_jaccard(sig[a], sig[b])
    jaccard = np.full(len(pairs), np.nan)
    if with_sets:
        sets = []
        for x in parts:  # each part's sets are concatenated, with their sizes alongside
            ends = np.cumsum(x["set_sizes"]).tolist()
            sets += [x["sets"][end - n:end] for n, end in zip(x["set_sizes"].tolist(), ends)]
        jaccard = np.array([mh.jaccard(sets[i], sets[j]) for i, j in zip(a.tolist(), b.tolist())])
    _save(Path(out_path), jaccard=jaccard, estimate=estimate,
          second_ids=np.array([ids[j] for j in b.tolist()], dtype=np.str_))
    for q in in_paths:
        Path(q).unlink(missing_ok=True)
    return _task_stats("join_reduce", start, pairs=len(pairs), documents=len(docs))


def _pair_join(ctx: StageContext, name: str, pairs: np.ndarray, offsets: np.ndarray, partitions: int,
               num_perm: int, ngram: int, with_sets: bool, stats: list[dict]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not len(pairs):
        return np.zeros(0), np.zeros(0), []
    partitions = min(partitions, len(pairs))
    chunk_of_pair = np.arange(len(pairs)) * partitions // len(pairs)
    needed = np.unique(pairs * partitions + chunk_of_pair[:, None])  # (document, chunk), by document
    needed_docs, needed_chunks = needed // partitions, needed % partitions
    bounds = np.searchsorted(needed_docs, offsets)
    work = ctx.plan_dir / "work"
    map_tasks, map_labels = [], []
    for k, shard in enumerate(ctx.shards):
        lo, hi = bounds[k], bounds[k + 1]
        if lo < hi:
            map_tasks.append((str(ctx.input_path(shard)), str(ctx.scores_path(shard)), int(offsets[k]),
                              needed_docs[lo:hi], needed_chunks[lo:hi], partitions, num_perm, ngram, with_sets,
                              str(work / f"{name}-map-{k:05d}")))
            map_labels.append(shard)
    stats += run_all(ctx.executor, join_map, map_tasks, f"{name} join", map_labels)
    reduce_tasks = [(pairs[chunk_of_pair == p], with_sets,
                     [str(work / f"{name}-map-{k:05d}-c{p}.npz") for k in range(len(ctx.shards))],
                     str(work / f"{name}-pairs-{p:05d}.npz")) for p in range(partitions)]
    stats += run_all(ctx.executor, join_reduce, reduce_tasks, f"{name} score pairs")
    results = [_load(Path(t[3])) for t in reduce_tasks]
    for t in reduce_tasks:
        Path(t[3]).unlink()
    return (np.concatenate([r["jaccard"] for r in results]), np.concatenate([r["estimate"] for r in results]),
            [str(i) for r in results for i in r["second_ids"].tolist()])


# ---------------------------------------------------------------------------
# the plan


def write_decisions(ctx: StageContext, shard_offsets: np.ndarray, removed: np.ndarray, reasons: list[str],
                    survivor_ids: list[str], similarity: list[float | None]) -> None:
    """One Parquet file per shard listing its removed rows, so ``decide`` reads only its own part."""
    removed = np.asarray(removed, dtype=np.int64)
    for k, shard in enumerate(ctx.shards):
        lo, hi = np.searchsorted(removed, [shard_offsets[k], shard_offsets[k + 1]])
        table = pa.table({
            "row": pa.array(removed[lo:hi] - shard_offsets[k], pa.int64()),
            "reason": pa.array(reasons[lo:hi], pa.string()),
            "duplicate_of": pa.array(survivor_ids[lo:hi], pa.string()),
            "similarity": pa.array(similarity[lo:hi], pa.float64()),
        })
        write_parquet(ctx.plan_dir, f"decisions/{shard}.parquet", table)


def minhash_plan(opts: dict, ctx: StageContext, partitions: int) -> None:
    """Cluster near-duplicates over all shards; write ``plan/decisions/*`` and ``plan/summary.json``."""
    rows_per_shard = [pq.ParquetFile(ctx.scores_path(s)).metadata.num_rows for s in ctx.shards]
    offsets = np.zeros(len(rows_per_shard) + 1, dtype=np.int64)
    np.cumsum(rows_per_shard, out=offsets[1:])
    bands, rows, num_perm = int(opts["bands"]), int(opts["rows"]), int(opts["num_perm"])
    threshold = float(opts["threshold"])
    work = ctx.plan_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    stats: list[dict] = []

    map_stats = run_all(ctx.executor, band_map,
                        [(str(ctx.scores_path(s)), int(offsets[k]), bands, rows, num_perm, partitions,
                          str(work / f"bands-{k:05d}")) for k, s in enumerate(ctx.shards)],
                        "minhash bands", list(ctx.shards))
    reduce_tasks = [([str(work / f"bands-{k:05d}-p{p}.npz") for k in range(len(ctx.shards))],
                     str(work / f"edges-{p:05d}.npz")) for p in range(partitions)] if ctx.shards else []
    stats += map_stats + run_all(ctx.executor, band_reduce, reduce_tasks, "minhash buckets")
    results = [_load(Path(t[1])) for t in reduce_tasks]
    edges = np.concatenate([r["edges"] for r in results]) if results else np.zeros((0, 2), np.int64)
    edge_lengths = np.concatenate([r["lengths"] for r in results]) if results else np.zeros((0, 2), np.int64)
    del results
    edges, first = np.unique(edges, axis=0, return_index=True)  # a pair linked in several bands counts once
    edges, edge_lengths = edges.reshape(-1, 2), edge_lengths[first].reshape(-1, 2)
    candidates = len(edges)

    if opts["verify"] and len(edges):
        jaccard, _, _ = _pair_join(ctx, "candidates", edges, offsets, partitions, num_perm, opts["ngram"], True, stats)
        linked = jaccard >= threshold
        edges, edge_lengths = edges[linked], edge_lengths[linked]

    nodes, where = np.unique(edges, return_inverse=True)
    node_lengths = np.zeros(len(nodes), np.int64)
    node_lengths[where.ravel()] = edge_lengths.ravel()
    survivors = mh.choose_survivors(mh.cluster_roots(len(nodes), where.reshape(-1, 2)), node_lengths, opts["keep"])
    removed_local = np.flatnonzero(survivors != np.arange(len(nodes)))
    pairs = np.stack([nodes[removed_local], nodes[survivors[removed_local]]], axis=1).reshape(-1, 2)
    jaccard, similarity, survivor_ids = _pair_join(ctx, "members", pairs, offsets, partitions, num_perm,
                                                   opts["ngram"], bool(opts["verify"]), stats)
    if opts["verify"] and len(pairs):  # chains A~B~C with A !~ C: C is no duplicate of survivor A, keep it
        close = jaccard >= threshold
        pairs, similarity = pairs[close], similarity[close]
        survivor_ids = [i for i, c in zip(survivor_ids, close.tolist()) if c]

    write_decisions(ctx, offsets, pairs[:, 0], ["minhash_dedup:near_duplicate"] * len(pairs), survivor_ids,
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
    for t in reduce_tasks:
        Path(t[1]).unlink(missing_ok=True)
