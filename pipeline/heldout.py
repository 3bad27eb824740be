"""The held-out rule and seeded document order: one definition for the whole project.

A document whose id hashes into ``EVAL_PERCENT`` of 100 buckets is evaluation
text, whatever its source: no scorer is trained on it (neither as a reference
positive nor as a raw negative), no tokenizer sample or training subset draws
it. The rule depends on the id alone -- no seed, no config -- so every
component agrees on it without talking to the others.

:func:`order_key` gives a seeded pseudo-random rank per document for sampling,
stable across runs, machines and shard layouts; ``purpose`` separates
independent draws made with the same seed.
"""
from __future__ import annotations

import hashlib

#: Percent of documents (by id hash) reserved for evaluation.
EVAL_PERCENT = 10
SPLIT_RULE = f"sha256('winnow-ref:'+id) % 100 < {EVAL_PERCENT} is eval, never trained on"


def reference_split(doc_id: str) -> str:
    """``"eval"`` or ``"train"``: a fixed hash of the id, independent of any seed or config."""
    h = int.from_bytes(hashlib.sha256(f"winnow-ref:{doc_id}".encode()).digest()[:8], "big")
    return "eval" if h % 100 < EVAL_PERCENT else "train"


def is_held_out(doc_id: str) -> bool:
    return reference_split(doc_id) == "eval"


def order_key(seed: int, doc_id: str, purpose: str) -> bytes:
    """Deterministic pseudo-random sort key for sampling, stable across runs and machines."""
    return hashlib.sha256(f"{purpose}:{seed}:{doc_id}".encode()).digest()


def unit_interval(seed: int, doc_id: str, purpose: str) -> float:
    """The same draw as a float in [0, 1), for Bernoulli splits."""
    return int.from_bytes(order_key(seed, doc_id, purpose)[:8], "big") / 2.0**64


def sample_indices(ids: list[str], n: int, seed: int, purpose: str) -> list[int]:
    """Indices of ``n`` of ``ids`` chosen by hash order (same ids + seed -> same sample), ascending."""
    ranked = sorted(range(len(ids)), key=lambda i: order_key(seed, ids[i], purpose))
    return sorted(ranked[:n])
