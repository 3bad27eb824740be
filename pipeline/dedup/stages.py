"""Deduplication stages: exact (hash of normalised text, optional URL) and near-duplicate (MinHash-LSH).

Both follow the stage contract: ``score`` hashes each shard in parallel and
caches the result (text hashes, or MinHash signatures), ``plan`` groups all
shards' hashes once and writes one small Parquet decision file per shard into
``plan/``, ``decide`` reads only its shard's file. The plan never holds texts
in memory (verification reads candidate texts only), so memory is bounded by
the hash/signature table: 1M documents x 128 slots x 4 bytes = 512 MB.

Removed rows carry ``duplicate_of`` (survivor id), ``cluster_id`` (the
survivor's id, shared by the whole cluster) and ``similarity`` (1.0 for exact
copies, the MinHash estimate against the survivor for near-duplicates).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipeline.dedup import minhash as mh
from pipeline.dedup.minhash_plan import minhash_plan, write_decisions
from pipeline.executors import LocalExecutor
from pipeline.params import at_least, between, of_type, one_of, optional
from pipeline.shards import atomic_write_json, read_parquet
from pipeline.stage import Decision, Stage, StageContext


def _decision_path(ctx: StageContext, shard: str) -> Path:
    return ctx.plan_dir / "decisions" / f"{shard}.parquet"


def _decide_from_plan(table: pa.Table, ctx: StageContext) -> Decision:
    plan = read_parquet(_decision_path(ctx, ctx.shard))
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    duplicate_of: list[str | None] = [None] * n
    similarity: list[float | None] = [None] * n
    for row, reason, dup, sim in zip(*(plan.column(c).to_pylist() for c in ("row", "reason", "duplicate_of",
                                                                          "similarity"))):
        reasons[row], duplicate_of[row], similarity[row] = reason, dup, sim
    dup_arr = pa.array(duplicate_of, pa.string())
    return Decision(reasons=reasons, removed_columns={
        "duplicate_of": dup_arr, "cluster_id": dup_arr, "similarity": pa.array(similarity, pa.float64())})


def _load_scores(ctx: StageContext, columns: list[str]) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    """Score columns of all shards in shard order, the ids, and each shard's first global index."""
    parts = [read_parquet(ctx.scores_path(s), columns=columns + ["id"]) for s in ctx.shards]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([p.num_rows for p in parts], out=offsets[1:])
    ids = [i for p in parts for i in p.column("id").to_pylist()]
    cols = {c: [p.column(c) for p in parts] for c in columns}
    return cols, ids, offsets


# ---------------------------------------------------------------------------
# exact dedup

_PUNCT_RE = re.compile(r"[^\w\s]|_")
_DIGIT_RE = re.compile(r"\d")


def normalise_text(text: str, lowercase: bool, whitespace: bool, punctuation: bool, digits: bool) -> str:
    """The text exact dedup compares: optionally lower-cased, punctuation dropped, digits -> 0, spaces collapsed."""
    if lowercase:
        text = text.lower()
    if punctuation:
        text = _PUNCT_RE.sub("", text)
    if digits:
        text = _DIGIT_RE.sub("0", text)
    if whitespace:
        text = " ".join(text.split())
    return text


def normalise_url(url: str) -> str:
    """Scheme, ``www.``, fragment and trailing slash do not make a different page."""
    url = url.strip().lower().split("#", 1)[0]
    url = re.sub(r"^[a-z][a-z0-9+.-]*://", "", url)
    url = re.sub(r"^www\.", "", url)
    return url.rstrip("/")


def _hash128(s: str) -> bytes:
    return xxhash.xxh3_128_digest(s.encode("utf-8", "surrogatepass"))


def _first_of_groups(keys: np.ndarray, candidates: np.ndarray, lengths: np.ndarray, keep: str) -> np.ndarray:
    """For each candidate index, the survivor of its key group (``keys`` as rows of uint64)."""
    sub = keys[candidates]
    _, group = np.unique(sub, axis=0, return_inverse=True)
    group = group.ravel()
    rank_len = -lengths[candidates] if keep == "longest" else np.zeros(len(candidates), dtype=np.int64)
    order = np.lexsort((candidates, rank_len, group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    best = np.empty(group.max() + 1 if len(group) else 0, dtype=np.int64)
    best[group[order][first]] = candidates[order][first]
    return best[group]


class ExactDedup(Stage):
    """Removes documents whose normalised text (or normalised URL) another document already has.

    ``keep: first`` keeps the copy earliest in (shard, row) order; ``keep:
    longest`` keeps the longest original text, ties to the earliest. With
    ``url_dedup``, survivors of the text pass sharing a normalised ``url``
    in metadata are deduplicated again (``exact_dedup:duplicate_url``).
    """

    kind = "exact_dedup"
    decision_params = ("keep",)
    defaults = {"lowercase": True, "whitespace": True, "punctuation": False, "digits": False,
                "url_dedup": False, "keep": "first"}
    checks = {"keep": one_of("first", "longest"), **{k: of_type(bool) for k in
                                                      ("lowercase", "whitespace", "punctuation", "digits", "url_dedup")}}

    def __init__(self, name: str, params: dict):
        super().__init__(name, params)
        self.opts = self.validated(self.defaults, self.checks)

    def needs_plan(self) -> bool:
        return True

    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        norm = {k: bool(self.opts[k]) for k in ("lowercase", "whitespace", "punctuation", "digits")}
        texts = table.column("text").to_pylist()
        cols = {
            "text_hash": pa.array([_hash128(normalise_text(t, **norm)) for t in texts], pa.binary(16)),
            "length": pc.utf8_length(table.column("text")).cast(pa.int64()),
        }
        if self.opts["url_dedup"]:
            urls = [json.loads(m or "{}").get("url") for m in table.column("metadata").to_pylist()]
            cols["url_hash"] = pa.array([_hash128(normalise_url(u)) if isinstance(u, str) and u.strip() else None
                                         for u in urls], pa.binary(16))
        return pa.table(cols)

    def plan(self, ctx: StageContext) -> None:
        names = ["text_hash", "length"] + (["url_hash"] if self.opts["url_dedup"] else [])
        cols, ids, offsets = _load_scores(ctx, names)
        n = int(offsets[-1])
        lengths = np.concatenate([c.to_numpy() for c in cols["length"]]) if n else np.zeros(0, np.int64)
        keep = self.opts["keep"]
        everyone = np.arange(n)
        text_keys = _hash_matrix(cols["text_hash"])
        survivor = _first_of_groups(text_keys, everyone, lengths, keep) if n else everyone
        reason = np.where(survivor != everyone, 1, 0)
        if self.opts["url_dedup"]:
            url_keys = _hash_matrix(cols["url_hash"])
            has_url = np.concatenate([c.is_valid().to_numpy(zero_copy_only=False) for c in cols["url_hash"]]) \
                if n else np.zeros(0, bool)
            alive = np.flatnonzero((reason == 0) & has_url)
            url_survivor = _first_of_groups(url_keys, alive, lengths, keep) if len(alive) else alive
            moved = alive[url_survivor != alive]
            survivor[moved] = url_survivor[url_survivor != alive]
            reason[moved] = 2
        removed = np.flatnonzero(reason)
        labels = {1: "exact_dedup:duplicate", 2: "exact_dedup:duplicate_url"}
        write_decisions(ctx, offsets, removed, [labels[r] for r in reason[removed]],
                         [ids[s] for s in survivor[removed]],
                         [1.0 if r == 1 else None for r in reason[removed]])
        atomic_write_json(ctx.plan_dir / "summary.json", {
            "documents": n, "removed": len(removed), "removed_url": int((reason == 2).sum()),
            "clusters": len(set(survivor[removed].tolist())), "keep": keep})

    def decide(self, table: pa.Table, scores: pa.Table, ctx: StageContext) -> Decision:
        return _decide_from_plan(table, ctx)


def _hash_matrix(chunks: list[pa.ChunkedArray]) -> np.ndarray:
    """128-bit hashes as an (n, 2) uint64 matrix (nulls become zeros; callers mask them)."""
    raw = b"".join((h if h is not None else b"\0" * 16) for c in chunks for h in c.to_pylist())
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2)


# ---------------------------------------------------------------------------
# near-duplicate dedup


class MinHashDedup(Stage):
    """Near-duplicate removal: MinHash signatures of word n-gram shingles, banded LSH, union-find.

    Signatures are the cached scores, so ``threshold``, ``bands``, ``rows``,
    ``recall_target``, ``verify`` and ``keep`` re-cluster without re-hashing.
    With ``verify`` (default), each LSH candidate pair is kept only if the true
    Jaccard of its shingle sets reaches ``threshold``, and a cluster member is
    removed only if its true Jaccard to the survivor does (transitive chains do
    not remove documents unlike the survivor). This removes LSH false positives
    at the cost of re-reading the candidates' texts.

    Bands x rows: verified candidates cost work, never precision, so by default
    they are chosen for recall -- the cheapest banding under which a pair at
    exactly ``threshold`` becomes a candidate with probability ``recall_target``
    (default 0.97; 15 x 7 for 0.8 on 128 permutations). Without verification a
    candidate is a removal, so the default is then datasketch's balanced
    optimum (9 x 13 for 0.8), unless ``recall_target`` is given. Explicit
    ``bands``/``rows`` override both; ``preset: fineweb`` is FineWeb's 14 x 8
    on 112 permutations.
    """

    kind = "minhash_dedup"
    decision_params = ("threshold", "bands", "rows", "recall_target", "verify", "keep")
    defaults = {"ngram": 5, "num_perm": 128, "seed": 1, "preset": None, "threshold": 0.8,
                "bands": None, "rows": None, "recall_target": None, "verify": True, "keep": "first"}
    checks = {"ngram": at_least(1, integer=True), "num_perm": between(2, mh.MAX_NUM_PERM, integer=True),
              "seed": of_type(int), "threshold": between(0, 1, lo_open=True),
              "bands": optional(at_least(1, integer=True)), "rows": optional(at_least(1, integer=True)),
              "recall_target": optional(between(0, 1, lo_open=True, hi_open=True)),
              "verify": of_type(bool), "keep": one_of("first", "longest")}
    presets = {"fineweb": mh.FINEWEB_PRESET}
    batch_docs = 1000

    def __init__(self, name: str, params: dict):
        super().__init__(name, params)
        opts = self.validated(self.defaults, self.checks)
        if opts["preset"] is not None:
            if opts["preset"] not in self.presets:
                raise ValueError(f"stage {name}: unknown preset {opts['preset']!r}; known: {', '.join(self.presets)}")
            opts = {**opts, **self.presets[opts["preset"]], **params}
        if (opts["bands"] is None) != (opts["rows"] is None):
            raise ValueError(f"stage {name}: give both `bands` and `rows`, or neither")
        if opts["bands"] is None:
            try:
                opts["bands"], opts["rows"], opts["banding"] = self._choose_banding(opts)
            except ValueError as e:
                raise ValueError(f"stage {name}: {e}") from None
        else:
            opts["banding"] = "given"
        if opts["bands"] * opts["rows"] > opts["num_perm"]:
            raise ValueError(f"stage {name}: bands x rows = {opts['bands'] * opts['rows']} > num_perm {opts['num_perm']}")
        if opts["keep"] not in ("first", "longest"):
            raise ValueError(f"stage {name}: keep must be `first` or `longest`")
        self.opts = opts
        self._hasher: mh.MinHasher | None = None

    @staticmethod
    def _choose_banding(opts: dict) -> tuple[int, int, str]:
        """(bands, rows, how they were chosen) when the config names neither."""
        threshold, num_perm, target = float(opts["threshold"]), int(opts["num_perm"]), opts["recall_target"]
        if target is None and not opts["verify"]:
            return (*mh.optimal_bands_rows(threshold, num_perm), "balanced")
        target = mh.DEFAULT_RECALL_TARGET if target is None else float(target)
        return (*mh.recall_bands_rows(threshold, num_perm, target), f"recall_target={target}")

    def needs_plan(self) -> bool:
        return True

    def decision_config(self) -> dict:
        """The effective bands x rows are part of the plan's fingerprint: a new default choice re-plans."""
        return {**self.params, "bands": self.opts["bands"], "rows": self.opts["rows"]}

    def describe(self) -> str:
        o = self.opts
        at = mh.candidate_probability(float(o["threshold"]), o["bands"], o["rows"])
        return (f"minhash_dedup(ngram={o['ngram']}, num_perm={o['num_perm']}, threshold={o['threshold']}, "
                f"bands={o['bands']}, rows={o['rows']} ({o['banding']}; P(candidate | J=threshold)={at:.3f}), "
                f"verify={o['verify']}, keep={o['keep']})")

    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        if self._hasher is None:
            self._hasher = mh.MinHasher(self.opts["num_perm"], self.opts["ngram"], self.opts["seed"])
        texts = table.column("text")
        sigs, counts = [], []
        for start in range(0, table.num_rows, self.batch_docs):
            sig, n = self._hasher.signatures(texts.slice(start, self.batch_docs).to_pylist())
            sigs.append(sig)
            counts.append(n)
        num_perm = self.opts["num_perm"]
        sig = np.concatenate(sigs) if sigs else np.zeros((0, num_perm), dtype=np.uint32)
        return pa.table({
            "minhash": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel(), pa.uint32()), num_perm),
            "n_shingles": pa.array(np.concatenate(counts) if counts else np.zeros(0), pa.int32()),
            "length": pc.utf8_length(texts).cast(pa.int64()),
        })

    def plan(self, ctx: StageContext) -> None:
        if ctx.executor is None:  # called outside the runner (a benchmark, a notebook)
            ctx.executor = LocalExecutor(1, progress=False)
        partitions = getattr(ctx.executor, "shuffle_partitions", None) or 4 * ctx.executor.workers
        minhash_plan(self.opts, ctx, int(partitions))

    def decide(self, table: pa.Table, scores: pa.Table, ctx: StageContext) -> Decision:
        return _decide_from_plan(table, ctx)


# ---------------------------------------------------------------------------
# `winnow inspect --clusters`
