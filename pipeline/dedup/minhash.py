"""Fast MinHash signatures, a banded LSH index and union-find clustering.

Why not datasketch's ``MinHash.update_batch`` per document: it hashes every
shingle with sha1 in Python and permutes one document at a time (~600 docs/s
per core on 1k-word documents). Here a whole batch is tokenised with one regex
pass per document (C speed), then numba hashes words, combines them into
n-gram shingle hashes and applies all permutations in one compiled loop.

The estimator is the classic one (share of equal signature slots estimates
the Jaccard similarity of the shingle sets), as in datasketch; only the hash
family differs: shingles get a 64-bit hash and permutation ``i`` is the
multiply-shift map ``((a_i * h + b_i) mod 2**64) >> 32`` with odd random
``a_i``, a 2-universal family from 64 to 32 bits, seeded from the stage seed.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Iterator

import numpy as np
from numba import njit

WORD_RE = re.compile(r"\w+")

_U64 = np.uint64
_FNV_OFFSET = _U64(0xCBF29CE484222325)
_FNV_PRIME = _U64(0x100000001B3)
_SHINGLE_SEED = _U64(0x243F6A8885A308D3)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_SPACE = np.uint8(32)
_NEWLINE = np.uint8(10)
EMPTY_SLOT = np.uint32(0xFFFFFFFF)


@njit(inline="always")
def _mix64(z):
    """splitmix64's finaliser: spreads FNV's weak low bits over all 64 bits."""
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


@njit(cache=True)
def _shingle_hashes_kernel(buf, doc_offsets, is_word, ngram):
    """Shingle hashes of UTF-8 documents ``buf[doc_offsets[d]:doc_offsets[d + 1]]``.

    Words are maximal runs of code points with ``is_word[cp]`` (the table of
    Python's unicode ``\\w``), so this equals ``re.findall(r"\\w+", text)``.
    Returns (hashes, offsets): document ``d``'s shingles are
    ``hashes[offsets[d]:offsets[d + 1]]``. A document with fewer than ``ngram``
    words has one shingle (its whole word sequence); one without words has none.
    """
    n_docs = len(doc_offsets) - 1
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    hashes = np.empty(len(buf) + n_docs, dtype=np.uint64)  # >= number of words >= shingles
    words = np.empty(len(buf) + 1, dtype=np.uint64)
    n_out = 0
    for d in range(n_docs):
        n_words = 0
        h = _FNV_OFFSET
        in_word = False
        pos = doc_offsets[d]
        end = doc_offsets[d + 1]
        while pos <= end:
            if pos == end:
                cp, width = 0, 1
            else:
                c = buf[pos]
                if c < 0x80:
                    cp, width = c, 1
                elif c < 0xE0:
                    cp, width = ((c & 0x1F) << 6) | (buf[pos + 1] & 0x3F), 2
                elif c < 0xF0:
                    cp, width = ((c & 0x0F) << 12) | ((buf[pos + 1] & 0x3F) << 6) | (buf[pos + 2] & 0x3F), 3
                else:
                    cp = ((c & 0x07) << 18) | ((buf[pos + 1] & 0x3F) << 12) | ((buf[pos + 2] & 0x3F) << 6) \
                        | (buf[pos + 3] & 0x3F)
                    width = 4
            if pos < end and is_word[cp]:
                for k in range(width):
                    h = (h ^ _U64(buf[pos + k])) * _FNV_PRIME
                in_word = True
            elif in_word:
                words[n_words] = _mix64(h)
                n_words += 1
                in_word = False
                h = _FNV_OFFSET
            pos += width
        span = min(ngram, n_words)
        for start in range(n_words - span + 1 if n_words > 0 else 0):
            s = _SHINGLE_SEED
            for k in range(span):
                s = _mix64(s + words[start + k])
            hashes[n_out] = s
            n_out += 1
        offsets[d + 1] = n_out
    return hashes[:n_out], offsets


@njit(cache=True)
def _minhash_kernel(hashes, offsets, a, b):
    n_docs = len(offsets) - 1
    num_perm = len(a)
    sig = np.full((n_docs, num_perm), EMPTY_SLOT, dtype=np.uint32)
    shift = _U64(32)
    for d in range(n_docs):
        row = sig[d]
        for j in range(offsets[d], offsets[d + 1]):
            h = hashes[j]
            for p in range(num_perm):
                v = np.uint32((a[p] * h + b[p]) >> shift)
                if v < row[p]:
                    row[p] = v
    return sig


_IS_WORD: np.ndarray | None = None


def _word_table() -> np.ndarray:
    """``is_word[cp]`` for every code point, taken from ``re``'s own ``\\w`` so both agree exactly."""
    global _IS_WORD
    if _IS_WORD is None:
        cps = np.arange(0x110000)
        cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]
        chars = "".join(map(chr, cps.tolist()))
        table = np.zeros(0x110000, dtype=np.uint8)
        table[[ord(c) for c in WORD_RE.findall(chars) for c in c]] = 1
        _IS_WORD = table
    return _IS_WORD


def shingles(text: str, ngram: int = 5) -> set[str]:
    """The shingle set as strings: the reference the hashed path is checked against."""
    words = WORD_RE.findall(text.lower())
    if not words:
        return set()
    return {" ".join(words[i:i + ngram]) for i in range(max(1, len(words) - ngram + 1))}


def shingle_hashes(texts: Iterable[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of every text (duplicates included) and per-text offsets."""
    encoded = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    doc_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=doc_offsets[1:])
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return _shingle_hashes_kernel(buf, doc_offsets, _word_table(), ngram)


def shingle_sets(texts: Iterable[str], ngram: int = 5) -> list[np.ndarray]:
    """Sorted unique shingle hashes per text: the sets true Jaccard is computed on."""
    hashes, offsets = shingle_hashes(texts, ngram)
    return [np.unique(hashes[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """True Jaccard similarity of two sorted unique hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class MinHasher:
    """Computes ``num_perm``-slot uint32 MinHash signatures of word n-gram shingle sets."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm, self.ngram = int(num_perm), int(ngram)
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | _U64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)

    def signatures(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures ``(n, num_perm)`` uint32, shingle count per text). Empty texts get all-max slots."""
        hashes, offsets = shingle_hashes(texts, self.ngram)
        return _minhash_kernel(hashes, offsets, self.a, self.b), np.diff(offsets)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal slots, row-wise (the MinHash estimator)."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


# ---------------------------------------------------------------------------
# LSH parameters and the banded index


FINEWEB_PRESET = {"num_perm": 112, "bands": 14, "rows": 8, "ngram": 5}

#: The most permutations a config may ask for. Every document's signature holds 4 bytes per permutation
#: (16 KiB at this bound), kept with the stage's scores and loaded whole to plan; the estimate's standard error is
#: already under 0.01 at this bound, so more is a typo (``num_perm: 100000000000`` would ask for 745 GiB
#: of hash parameters before the first document), never a better dedup.
MAX_NUM_PERM = 4096


#: Default chance that a pair at exactly the threshold becomes a candidate when verification is on.
DEFAULT_RECALL_TARGET = 0.97


def optimal_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's choice of (bands, rows): minimises equally weighted FP and FN probability mass.

    The right trade-off when candidates are removed unverified (a false
    positive costs a wrongly removed document); with verification see
    :func:`recall_bands_rows`.
    """
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def candidate_probability(similarity, bands: int, rows: int):
    """The LSH S-curve: chance that two documents of Jaccard ``similarity`` share at least one band.

    Each slot agrees with probability J, a band of ``rows`` slots with J**rows,
    so at least one of ``bands`` bands with 1 - (1 - J**rows)**bands.
    """
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s ** rows) ** bands


def false_candidate_mass(threshold: float, bands: int, rows: int, steps: int = 2000) -> float:
    """Integral of the S-curve over [0, threshold]: expected candidates below the threshold per unit of
    pair density, assuming pairs spread evenly over similarity -- the verification work spent on pairs
    that are not duplicates. Trapezoid rule on a fixed grid, so the value (and the choice) is deterministic.
    """
    s = np.linspace(0.0, threshold, steps + 1)
    p = candidate_probability(s, bands, rows)
    return float((p[1:] + p[:-1]).sum() * (threshold / steps) / 2)


def recall_bands_rows(threshold: float, num_perm: int, recall_target: float) -> tuple[int, int]:
    """(bands, rows) with the least verification work among those that make a pair at exactly
    ``threshold`` a candidate with probability >= ``recall_target`` (pairs above it do better).

    For each ``rows`` the fewest bands meeting the target is the cheapest, so
    only those are compared (by :func:`false_candidate_mass`; ties go to fewer
    permutations used). Raises ValueError when ``num_perm`` slots cannot reach the target.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not 0.0 < recall_target < 1.0:
        raise ValueError(f"recall_target must be in (0, 1), got {recall_target}")
    best: tuple[float, int, int, int] | None = None
    for rows in range(1, num_perm + 1):
        band_p = threshold ** rows
        if band_p <= 0.0:
            break
        max_bands = num_perm // rows
        if candidate_probability(threshold, max_bands, rows) < recall_target:
            continue  # even every slot in bands of this height falls short
        # fewest bands with 1 - (1 - band_p)**bands >= recall_target (the log form, checked exactly)
        bands = 1 if band_p >= 1.0 else \
            min(max_bands, max(1, math.ceil(math.log1p(-recall_target) / math.log1p(-band_p))))
        while candidate_probability(threshold, bands, rows) < recall_target:
            bands += 1
        while bands > 1 and candidate_probability(threshold, bands - 1, rows) >= recall_target:
            bands -= 1
        key = (false_candidate_mass(threshold, bands, rows), bands * rows, bands, rows)
        if best is None or key < best:
            best = key
    if best is None:
        raise ValueError(f"no bands x rows <= num_perm {num_perm} reaches recall_target {recall_target} "
                         f"at threshold {threshold}; raise num_perm or lower recall_target")
    return best[2], best[3]


def band_buckets(sig: np.ndarray, bands: int, rows: int, members: np.ndarray) -> Iterator[list[np.ndarray]]:
    """Per band, the buckets (ascending row indices, size >= 2) of ``members`` whose band slices are equal.

    Two documents share a bucket exactly when their slices of a band are
    identical -- the same rule as datasketch's ``MinHashLSH`` (which keys its
    hash tables by the slice's bytes), so candidate sets match it on the same
    signatures. Sorting the slices (stable lexsort) replaces hash tables.
    """
    for band in range(bands):
        cols = sig[members, band * rows:(band + 1) * rows]
        order = np.lexsort(cols.T[::-1])
        sorted_cols = cols[order]
        starts = np.flatnonzero(np.r_[True, np.any(sorted_cols[1:] != sorted_cols[:-1], axis=1)])
        sizes = np.diff(np.r_[starts, len(order)])
        yield [members[order[s:s + n]] for s, n in zip(starts[sizes > 1], sizes[sizes > 1])]


def star_edges(buckets: Iterable[list[np.ndarray]]) -> np.ndarray:
    """Unique (first, member) edges linking every bucket member to the bucket's first (lowest) member.

    A bucket of m documents yields m - 1 edges rather than m(m - 1)/2 pairs, so
    one huge bucket (boilerplate repeated 10,000 times) stays linear. The
    trade-off: with verification, a member is only checked against the first
    member; if it is a true duplicate of another member but not of the first,
    this band does not link it (another band usually does).
    """
    parts = [np.stack([np.full(len(g) - 1, g[0]), g[1:]], axis=1) for groups in buckets for g in groups]
    if not parts:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(parts).astype(np.int64), axis=0)


@njit(cache=True)
def _union_find_roots(n, edges):
    parent = np.arange(n)
    for k in range(len(edges)):
        ra, rb = edges[k, 0], edges[k, 1]
        while parent[ra] != ra:
            parent[ra] = parent[parent[ra]]
            ra = parent[ra]
        while parent[rb] != rb:
            parent[rb] = parent[parent[rb]]
            rb = parent[rb]
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
    return parent


def cluster_roots(n: int, edges: np.ndarray) -> np.ndarray:
    """Union-find over ``edges``: each index's cluster root, which is the cluster's lowest index."""
    return _union_find_roots(n, np.ascontiguousarray(edges, dtype=np.int64))


def choose_survivors(roots: np.ndarray, lengths: np.ndarray, keep: str) -> np.ndarray:
    """Survivor index for every index's cluster: the first (lowest index) or the longest, ties to the first."""
    if keep == "first":
        return roots
    if keep != "longest":
        raise ValueError(f"keep must be `first` or `longest`, got {keep!r}")
    idx = np.arange(len(roots))
    order = np.lexsort((idx, -np.asarray(lengths, dtype=np.int64), roots))  # by cluster, longest first
    best_of_root = np.empty(len(roots), dtype=np.int64)
    first_in_cluster = np.r_[True, roots[order][1:] != roots[order][:-1]]
    best_of_root[roots[order][first_in_cluster]] = order[first_in_cluster]
    return best_of_root[roots]
