"""Training subsets by token budget, written as token shards with manifests.

An arm is (stage, token budget): seeded-random kept documents of that stage,
minus held-out evaluation documents, tokenized in that order with an
end-of-text token after each, until the budget is met exactly (the last
document is cut). The manifest records the document ids, token counts, seed and
the tokenizer's checksum; the 13-gram overlap with every evaluation set is
measured on exactly the text that went in.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from experiments.data import ContaminationIndex, truth_kind
from pipeline.heldout import is_held_out, order_key
from pipeline.rundir import RunFolder
from experiments.tokenizer import eos_id
from pipeline.shards import atomic_write_bytes, atomic_write_json, read_json, sha256_file


#: a subset's manifest, beside its tokens.npy and doc_ids.txt
SUBSET_MANIFEST = "subset.json"


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32


def build_subset(run_dir: Path, stage: str, budget: int, tok: Tokenizer, tokenizer_path: Path, out_dir: Path,
                 seed: int, contamination: ContaminationIndex | None = None, batch: int = 256,
                 sources: list[str] | None = None, reference: dict | None = None, doc_cap: float | None = None,
                 mix: dict | None = None, min_docs: int | None = None, fingerprints: dict | None = None,
                 count_keys: list[str] | None = None) -> dict:
    """Draw ``budget`` tokens of non-held-out documents of ``stage`` (only those from ``sources`` if given), or,
    with ``reference`` (``{path, text_field, id_field, min_chars}``), of that external JSONL's train split.

    ``doc_cap``: the largest share of the budget one document may take (a longer one is cut there and ends with
    end-of-text), so a few long pages cannot make up most of a small subset. ``mix``: ``{"key": K, "shares":
    {value: share}}`` draws each value of metadata key K (``source``, ``language``, ``truth`` or a field of the
    document's metadata) up to its share of the budget -- the source-matched control. ``min_docs``: fewer
    documents than this puts a warning in the manifest (``warnings``) for the caller to show. ``count_keys``:
    further metadata keys whose tokens per value the manifest's composition records (what a mix copies).

    ``fingerprints`` (``{"fingerprint", "contamination_fingerprint"}``, from the ablation, which decides itself
    when a subset is stale) are recorded in the manifest and the subset is always drawn; without them it is reused
    when its recipe is unchanged.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / SUBSET_MANIFEST
    tok_sha = sha256_file(tokenizer_path)
    recipe = {"stage": stage, "budget": budget, "seed": seed, "tokenizer_sha256": tok_sha, "sources": sources,
              "reference": reference, "doc_cap": doc_cap, "mix": mix}
    if manifest_path.exists() and fingerprints is None:
        m = read_json(manifest_path)
        if all(m.get(k) == v for k, v in recipe.items()):
            return with_warnings(m, min_docs)
    if reference is not None:
        docs = reference_docs(reference)
    else:
        folder = RunFolder(run_dir)
        shards = folder.shard_files(stage, nonempty=True)
        has_lang = bool(shards) and "lang" in pq.read_schema(shards[0]).names
        cols = ["id", "text", "source", "metadata"] + (["lang"] if has_lang else [])
        docs = [d for d in folder.rows(stage, cols)
                if not is_held_out(d["id"]) and (sources is None or d["source"] in sources)]
    # a mix-matched draw orders documents with its own salt: with the candidate's order it would pick the
    # candidate's own documents first (they come first among their source's), not a random draw within sources
    docs.sort(key=lambda d: order_key(seed, d["id"], "subset-mix" if mix else "subset"))
    quota = _quotas(budget, mix["shares"]) if mix else None
    taken: dict[str, int] = {}
    cap = None if doc_cap is None else max(2, int(float(doc_cap) * budget))
    eos = eos_id(tok)
    pieces: list[np.ndarray] = []
    ids: list[str] = []
    counts: list[int] = []
    composition: dict[str, dict[str, int]] = {"source": {}, "language": {}, "length": {}, "truth": {}}
    extra = [k for k in dict.fromkeys(([mix["key"]] if mix else []) + list(count_keys or []))
             if k not in ("source", "language", "length", "truth")]
    for k in extra:
        composition[k] = {}
    total = capped = 0
    found: list[np.ndarray] = []
    chars = nbytes = 0

    def room(d) -> int:
        if quota is None:
            return budget - total
        v = key_value(d, mix["key"])
        return quota.get(v, 0) - taken.get(v, 0)

    pending = iter(docs)
    while total < budget:
        chunk = [d for d in _take(pending, batch, room)]
        if not chunk:
            break
        for d, enc in zip(chunk, tok.encode_batch([d["text"] for d in chunk])):
            left = room(d)
            if left <= 0:
                continue
            arr = np.asarray(enc.ids + [eos], dtype=np.int64)
            take = min(len(arr), left)
            text = d["text"]
            if cap is not None and take > cap:  # the cap cuts the document and closes it with end-of-text
                arr = np.concatenate([arr[:cap - 1], [eos]])
                take = min(len(arr), left)
                capped += 1
            if take < len(enc.ids):  # cut (by the budget or the cap): only the text that went in counts
                n_text = take if take < len(arr) else take - 1
                text = text[:enc.offsets[n_text - 1][1] if n_text > 0 else 0]
            pieces.append(arr[:take])
            ids.append(d["id"])
            counts.append(int(take))
            for key, value in (("source", d.get("source") or "?"), ("language", d.get("lang") or "not identified"),
                               ("length", _length_bucket(len(enc.ids) + 1)), ("truth", truth_kind(d.get("metadata")))):
                if value is not None:
                    composition[key][value] = composition[key].get(value, 0) + int(take)
            for k in extra:
                v = key_value(d, k)
                composition[k][v] = composition[k].get(v, 0) + int(take)
            if quota is not None:
                v = key_value(d, mix["key"])
                taken[v] = taken.get(v, 0) + int(take)
            chars += len(text)
            nbytes += len(text.encode("utf-8"))
            total += take
            if contamination is not None:
                found.append(contamination.overlapping(text))
            if total >= budget:
                break
    tokens = np.concatenate(pieces).astype(token_dtype(tok.get_vocab_size())) if pieces else np.zeros(0, np.uint16)
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    for name, data in (("tokens.npy", buf.getvalue()), ("doc_ids.txt", ("\n".join(ids) + "\n").encode("utf-8"))):
        path = out_dir / name
        if not (path.exists() and path.read_bytes() == data):  # a re-check of contamination leaves the draw alone
            atomic_write_bytes(path, data)
    m = {
        **recipe, "tokens": int(total), "documents": len(ids), "chars": chars, "bytes": nbytes,
        "exhausted": total < budget, "available_documents": len(docs),
        "tokens_sha256": sha256_file(out_dir / "tokens.npy"),
        "composition_tokens": {k: dict(sorted(v.items())) for k, v in composition.items() if v},
        "doc_token_counts": {"min": min(counts, default=0), "max": max(counts, default=0),
                             "mean": round(float(np.mean(counts)), 1) if counts else 0,
                             "largest_share": round(max(counts, default=0) / max(total, 1), 4)},
        "capped_documents": capped,
    }
    if quota is not None:
        m["mix_achieved"] = {v: taken.get(v, 0) for v in sorted(quota)}
        m["mix_quota"] = dict(sorted(quota.items()))
    if contamination is not None:
        hits = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
        m["contamination_13gram"] = contamination.report(hits)
    m.update(fingerprints or {})
    atomic_write_json(manifest_path, m)
    return with_warnings(m, min_docs)


def _take(it, n: int, room) -> list[dict]:
    """The next ``n`` documents that still have room (their mix value's quota is not full)."""
    out = []
    for d in it:
        if room(d) > 0:
            out.append(d)
            if len(out) == n:
                break
    return out


def with_warnings(m: dict, min_docs: int | None) -> dict:
    """The manifest with its warnings: too few documents, budget not met, a mix value short of its quota."""
    w = []
    if min_docs and m["documents"] < int(min_docs):
        w.append(f"only {m['documents']} documents (declared minimum {int(min_docs)}): a few documents decide "
                 "what this subset is")
    if m["exhausted"]:
        w.append(f"stage exhausted: {m['tokens']:,} of {m['budget']:,} tokens")
    for v, q in (m.get("mix_quota") or {}).items():
        if m["mix_achieved"].get(v, 0) < q:
            w.append(f"{m['mix']['key']}={v}: {m['mix_achieved'].get(v, 0):,} of {q:,} tokens (not enough documents)")
    return {**m, "warnings": w}


def key_value(doc: dict, key: str) -> str:
    """A document's value of a mix key: ``source``, ``language`` (langid's label), ``truth`` (the synthetic
    web's ground-truth kind), or any top-level field of its metadata JSON; ``?`` when missing."""
    if key == "source":
        v = doc.get("source")
    elif key in ("language", "lang"):
        v = doc.get("lang")
    elif key == "truth":
        v = truth_kind(doc.get("metadata"))
    else:
        try:
            v = (json.loads(doc.get("metadata") or "{}") or {}).get(key)
        except (ValueError, AttributeError):
            v = None
    return "?" if v is None else str(v)


def _quotas(budget: int, shares: dict[str, float]) -> dict[str, int]:
    """Token quotas per mix value that sum to ``budget`` exactly (largest remainders get the rounding)."""
    total = float(sum(shares.values()))
    if not total > 0:
        raise ValueError("a mix needs positive shares")
    raw = {k: budget * float(v) / total for k, v in shares.items() if v > 0}
    q = {k: int(math.floor(x)) for k, x in raw.items()}
    for k in sorted(raw, key=lambda k: (q[k] - raw[k], k))[: budget - sum(q.values())]:
        q[k] += 1
    return q


def reference_docs(reference: dict) -> list[dict]:
    """The train split (pipeline.heldout) of an external reference JSONL, documents of at least ``min_chars``;
    their source is the file's name, so the composition table shows where they came from."""
    from filters.quality_training import iter_reference

    name = Path(reference["path"]).name.split(".")[0]
    return [{"id": doc_id, "text": text, "source": name, "metadata": None}
            for doc_id, text, split in iter_reference(reference["path"], reference.get("text_field", "text"),
                                                      reference.get("id_field", "id"),
                                                      int(reference.get("min_chars", 0)))
            if split == "train"]


LENGTH_BUCKETS = (128, 512, 2048)


def _length_bucket(n_tokens: int) -> str:
    """A document's length class (whole document, in tokens), for the composition table."""
    lo = 0
    for hi in LENGTH_BUCKETS:
        if n_tokens < hi:
            return f"{lo}-{hi - 1} tokens"
        lo = hi
    return f">= {lo} tokens"


def load_tokens(subset_dir: Path) -> np.ndarray:
    return np.load(Path(subset_dir) / "tokens.npy", allow_pickle=False)
