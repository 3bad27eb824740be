"""A hashed byte-level n-gram language model for perplexity-style quality scores.

CCNet (Wenzek et al. 2020, arXiv:1911.00359) ranks web documents by the
perplexity of a 5-gram KenLM model trained on Wikipedia. KenLM is not available
here, so this is a small numpy model with the same role:

* tokens are UTF-8 bytes, so the score is **bits per byte** and needs no
  tokenizer or out-of-vocabulary handling, and is comparable across languages
  and scripts;
* smoothing is interpolated Witten-Bell (Witten & Bell 1991):
  ``P(b|ctx) = (c(ctx,b) + T(ctx) * P(b|shorter ctx)) / (c(ctx) + T(ctx))``,
  where ``T`` counts distinct bytes seen after ``ctx``, down to a uniform
  distribution over 256 bytes;
* counts live in fixed-size hashed tables (``2**log2_buckets`` uint32 cells
  each), so memory is bounded whatever the training size; collisions make
  counts slightly too high, which only smooths the model.

Scoring is vectorised over a whole batch of documents at once (one pass of
numpy gathers per n-gram order), which is what makes thousands of documents a
second possible on one core. The model is saved as ``.npz`` and loaded with
``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

FORMAT = "winnow-byte-ngram-wb-v1"
_PAD = 0  # context token before a document's first byte; real bytes are 1..256
_MUL = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads hash bits so the top bits make good bucket indices."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _encode(texts: list[str], order: int, max_bytes: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate documents, each preceded by ``order - 1`` padding tokens.

    Returns (tokens, positions of real bytes in ``tokens``, bytes per document).
    Padding keeps every context inside its own document.
    """
    pad = order - 1
    pieces, lengths = [], []
    for t in texts:
        b = (t or "").encode("utf-8", "replace")
        if max_bytes is not None:
            b = b[:max_bytes]
        pieces.append(b"\x00" * pad + b)
        lengths.append(len(b))
    raw = np.frombuffer(b"".join(pieces), dtype=np.uint8).astype(np.uint64)
    is_real = np.ones(raw.shape[0], dtype=bool)
    starts = np.cumsum([0] + [pad + n for n in lengths[:-1]]) if lengths else np.array([], dtype=np.int64)
    for s in starts:
        is_real[s : s + pad] = False
    tokens = np.where(is_real, raw + np.uint64(1), np.uint64(_PAD))
    return tokens, np.flatnonzero(is_real), np.asarray(lengths, dtype=np.int64)


def _hashes(tokens: np.ndarray, pos: np.ndarray, order: int, shift: np.uint64):
    """Yield (context bucket, n-gram bucket, full n-gram hash) for context lengths 0..order-1."""
    nxt = tokens[pos]
    ctx = np.zeros(pos.shape[0], dtype=np.uint64)
    for k in range(order):
        if k:
            ctx = (ctx ^ tokens[pos - k]) * _MUL
        ctx_key = _mix(ctx + np.uint64(k + 1))
        ngram_key = _mix((ctx_key ^ nxt) * _MUL + np.uint64(k))
        yield ctx_key >> shift, ngram_key >> shift, ngram_key


class ByteNgramLM:
    """Interpolated Witten-Bell byte n-gram model over hashed count tables."""

    def __init__(self, order: int, ngram_counts: np.ndarray, context_counts: np.ndarray,
                 context_types: np.ndarray, trained_bytes: int = 0):
        self.order = int(order)
        self.ngram_counts = ngram_counts
        self.context_counts = context_counts
        self.context_types = context_types
        self.trained_bytes = int(trained_bytes)
        self.log2_buckets = int(np.log2(ngram_counts.shape[0]))
        self._shift = np.uint64(64 - self.log2_buckets)

    @classmethod
    def train(cls, texts: Iterable[str], order: int = 5, log2_buckets: int = 22,
              chunk_bytes: int = 1 << 22) -> "ByteNgramLM":
        """Count n-grams of ``texts`` in chunks (bounded memory)."""
        size = 1 << log2_buckets
        shift = np.uint64(64 - log2_buckets)
        ngrams = np.zeros(size, np.uint32)
        contexts = np.zeros(size, np.uint32)
        types = np.zeros(size, np.uint32)
        total = 0

        def add(batch: list[str]) -> None:
            nonlocal total
            tokens, pos, lengths = _encode(batch, order, None)
            total += int(lengths.sum())
            for ctx_b, ng_b, ng_key in _hashes(tokens, pos, order, shift):
                contexts[:] += np.bincount(ctx_b.astype(np.int64), minlength=size).astype(np.uint32)
                # a continuation type is new if its n-gram cell is still empty (approximate under collisions)
                uniq, first = np.unique(ng_key, return_index=True)
                new = ngrams[(uniq >> shift).astype(np.int64)] == 0
                types[:] += np.bincount(ctx_b[first[new]].astype(np.int64), minlength=size).astype(np.uint32)
                ngrams[:] += np.bincount(ng_b.astype(np.int64), minlength=size).astype(np.uint32)

        batch, nbytes = [], 0
        for t in texts:
            batch.append(t)
            nbytes += len(t)
            if nbytes >= chunk_bytes:
                add(batch)
                batch, nbytes = [], 0
        if batch:
            add(batch)
        return cls(order, ngrams, contexts, types, total)

    def bits_per_byte(self, texts: list[str], max_bytes: int | None = None) -> np.ndarray:
        """Cross-entropy of each text in bits per UTF-8 byte (NaN for an empty text)."""
        if not texts:
            return np.zeros(0)
        tokens, pos, lengths = _encode(texts, self.order, max_bytes)
        if pos.size == 0:
            return np.full(len(texts), np.nan)
        p = np.full(pos.shape[0], 1.0 / 256.0)
        for ctx_b, ng_b, _ in _hashes(tokens, pos, self.order, self._shift):
            ci = ctx_b.astype(np.int64)
            seen = self.context_counts[ci].astype(np.float64)
            # at least one type wherever a context was seen: collisions can hide the first one
            types = np.maximum(self.context_types[ci], 1).astype(np.float64)
            count = self.ngram_counts[ng_b.astype(np.int64)].astype(np.float64)
            denom = seen + types
            p = np.where(seen > 0, (count + types * p) / np.maximum(denom, 1.0), p)
        bits = -np.log2(np.minimum(p, 1.0))
        sums = np.zeros(len(texts))
        nonempty = lengths > 0
        offsets = np.cumsum(np.concatenate([[0], lengths[:-1]]))
        sums[nonempty] = np.add.reduceat(bits, offsets[nonempty])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(nonempty, sums / np.maximum(lengths, 1), np.nan)

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, format=np.array(FORMAT), order=np.array(self.order),
                                trained_bytes=np.array(self.trained_bytes), ngram_counts=self.ngram_counts,
                                context_counts=self.context_counts, context_types=self.context_types)

    @classmethod
    def load(cls, path: str | Path) -> "ByteNgramLM":
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise ValueError(f"{path}: not a {FORMAT} model (format {z['format']})")
            return cls(int(z["order"]), z["ngram_counts"], z["context_counts"], z["context_types"],
                       int(z["trained_bytes"]))
