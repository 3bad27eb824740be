"""Documents for experiments: held-out evaluation sets, stage documents, contamination.

Evaluation text is decided *before* any training subset is drawn, by a fixed
hash of the document id (:func:`pipeline.heldout.reference_split`, the
same split the quality scorers respect): held-out ids never enter a tokenizer
sample, a training subset or a scorer's training data. Because copies of a
document can carry other ids (cross-posts, mirrors), every training subset is
also checked for 13-gram overlap with every evaluation set.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import xxhash

from pipeline.heldout import is_held_out, order_key
from pipeline.rundir import RunFolder

WORD_RE = re.compile(r"\w+", re.UNICODE)


DOC_COLUMNS = ["id", "text", "source", "metadata"]


def truth_kind(meta: str | None) -> str | None:
    """The synthetic web's ground-truth kind of a document (None for real data)."""
    return (json.loads(meta or "{}").get("truth") or {}).get("kind")


def build_eval_sets(run_dir: Path, specs: list[dict], seed: int, exclude_ids: set[str],
                    default_stage: str = "ingest") -> dict[str, list[dict]]:
    """Held-out evaluation sets: ``{name: [{id, text, source}]}``.

    A spec selects held-out documents of the raw (ingest) stage by ``source``
    and optionally ``truth_kind`` (synthetic corpus), or reads an external
    JSONL ``path`` (its held-out split only), or (``kind: domains``) every
    ``*.jsonl.gz`` of a ``path`` folder as one set per domain, named
    ``NAME/DOMAIN`` (Paloma-style: the report macro-averages them). Domain
    files come from sources in no raw corpus and no reference, so all their
    documents are evaluation text; nothing is ever fitted on them.
    ``exclude_ids``: documents a quality scorer was trained on; they never
    count as held-out text.
    """
    out: dict[str, list[dict]] = {}
    raw_stage = None
    for spec in specs:
        name, limit = spec["name"], int(spec.get("max_docs", 200))
        pool: list[dict] = []
        if spec.get("kind") == "domains":
            files = sorted(Path(spec["path"]).glob("*.jsonl.gz"))
            if not files:
                raise ValueError(f"evaluation set {name!r}: no *.jsonl.gz in {spec['path']}")
            for f in files:
                domain = f.name[: -len(".jsonl.gz")]
                with gzip.open(f, "rt", encoding="utf-8") as fh:
                    docs = [json.loads(line) for line in fh]
                docs = [{"id": str(d["id"]), "text": d["text"], "source": domain} for d in docs
                        if len(d.get("text") or "") >= (spec.get("min_chars") or 0) and str(d["id"]) not in exclude_ids]
                docs.sort(key=lambda d: order_key(seed, d["id"], "eval"))
                if not docs:
                    raise ValueError(f"evaluation set {name}/{domain} is empty")
                out[f"{name}/{domain}"] = docs[:limit]
            continue
        if spec.get("path"):
            opener = gzip.open if str(spec["path"]).endswith(".gz") else open
            with opener(spec["path"], "rt", encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    doc_id, text = str(d.get(spec.get("id_field", "id"))), d.get(spec.get("text_field", "text")) or ""
                    if is_held_out(doc_id) and doc_id not in exclude_ids and len(text) >= spec.get("min_chars", 200):
                        pool.append({"id": doc_id, "text": text, "source": name})
        else:
            raw_stage = raw_stage or spec.get("stage") or default_stage
            for d in RunFolder(run_dir).rows(spec.get("stage") or raw_stage, DOC_COLUMNS):
                if not is_held_out(d["id"]) or d["id"] in exclude_ids:
                    continue
                if spec.get("source") and d["source"] != spec["source"]:
                    continue
                if spec.get("truth_kind") and truth_kind(d["metadata"]) != spec["truth_kind"]:
                    continue
                if len(d["text"]) < spec.get("min_chars", 1):
                    continue
                pool.append({"id": d["id"], "text": d["text"], "source": d["source"]})
        pool.sort(key=lambda d: order_key(seed, d["id"], "eval"))
        if not pool:
            raise ValueError(f"evaluation set {name!r} is empty: no held-out documents match {spec}")
        out[name] = pool[:limit]
    return out


def ngram_hashes(text: str, n: int = 13) -> np.ndarray:
    """64-bit hashes of the lowercased word n-grams of a text (the contamination unit)."""
    words = WORD_RE.findall(text.lower())
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    return np.fromiter((xxhash.xxh64_intdigest(" ".join(words[i:i + n]).encode("utf-8")) for i in range(len(words) - n + 1)),
                       dtype=np.uint64, count=len(words) - n + 1)


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``values`` in ``sorted_set`` (sorted, unique) by binary search: O(n log m), no re-sorting per call."""
    idx = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[idx] == values


class ContaminationIndex:
    """13-gram hashes of every evaluation document, to test training text against."""

    def __init__(self, eval_sets: dict[str, list[dict]], n: int = 13):
        self.n = n
        self.doc_grams: dict[str, list[np.ndarray]] = {
            name: [ngram_hashes(d["text"], n) for d in docs] for name, docs in eval_sets.items()}
        allg = [g for docs in self.doc_grams.values() for g in docs if g.size]
        self.all = np.unique(np.concatenate(allg)) if allg else np.zeros(0, dtype=np.uint64)

    def overlapping(self, text: str) -> np.ndarray:
        """The evaluation 13-grams that also occur in ``text``."""
        g = ngram_hashes(text, self.n)
        if not g.size or not self.all.size:
            return np.zeros(0, dtype=np.uint64)
        return np.unique(g[_member(g, self.all)])

    def report(self, found: np.ndarray) -> dict[str, dict]:
        """Per evaluation set: share of its documents with at least one 13-gram seen in training."""
        found = np.unique(found)
        out = {}
        for name, docs in self.doc_grams.items():
            hit = sum(bool(g.size and found.size and _member(g, found).any()) for g in docs)
            out[name] = {"docs": len(docs), "contaminated_docs": int(hit),
                         "rate": round(hit / len(docs), 4) if docs else 0.0}
        return out
