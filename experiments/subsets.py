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
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from experiments.data import ContaminationIndex, truth_kind
from pipeline.heldout import is_held_out, order_key
from pipeline.rundir import RunFolder
from experiments.tokenizer import eos_id
from pipeline.shards import atomic_write_bytes, atomic_write_json, read_json, sha256_file


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.uint32


def build_subset(run_dir: Path, stage: str, budget: int, tok: Tokenizer, tokenizer_path: Path, out_dir: Path,
                 seed: int, contamination: ContaminationIndex | None = None, batch: int = 256,
                 sources: list[str] | None = None, reference: dict | None = None) -> dict:
    """Draw ``budget`` tokens of non-held-out documents of ``stage`` (only those from ``sources`` if given), or,
    with ``reference`` (``{path, text_field, id_field, min_chars}``), of that external JSONL's train split."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    tok_sha = sha256_file(tokenizer_path)
    if manifest_path.exists():
        m = read_json(manifest_path)
        if (m["stage"], m["budget"], m["seed"], m["tokenizer_sha256"], m.get("sources"), m.get("reference")) == (
                stage, budget, seed, tok_sha, sources, reference):
            return m
    if reference is not None:
        docs = reference_docs(reference)
    else:
        folder = RunFolder(run_dir)
        shards = folder.shard_files(stage, nonempty=True)
        has_lang = bool(shards) and "lang" in pq.read_schema(shards[0]).names
        cols = ["id", "text", "source", "metadata"] + (["lang"] if has_lang else [])
        docs = [d for d in folder.rows(stage, cols)
                if not is_held_out(d["id"]) and (sources is None or d["source"] in sources)]
    docs.sort(key=lambda d: order_key(seed, d["id"], "subset"))
    eos = eos_id(tok)
    pieces: list[np.ndarray] = []
    ids: list[str] = []
    counts: list[int] = []
    composition: dict[str, dict[str, int]] = {"source": {}, "language": {}, "length": {}, "truth": {}}
    total = 0
    found: list[np.ndarray] = []
    chars = 0
    for start in range(0, len(docs), batch):
        chunk = docs[start:start + batch]
        for d, enc in zip(chunk, tok.encode_batch([d["text"] for d in chunk])):
            arr = np.asarray(enc.ids + [eos], dtype=np.int64)
            take = min(len(arr), budget - total)
            text = d["text"]
            if take < len(arr):  # the last document is cut to meet the budget exactly
                end_char = enc.offsets[take - 1][1] if take > 0 else 0
                text = text[:end_char]
            pieces.append(arr[:take])
            ids.append(d["id"])
            counts.append(int(take))
            for key, value in (("source", d.get("source") or "?"), ("language", d.get("lang") or "not identified"),
                               ("length", _length_bucket(len(arr))), ("truth", truth_kind(d.get("metadata")))):
                if value is not None:
                    composition[key][value] = composition[key].get(value, 0) + int(take)
            chars += len(text)
            total += take
            if contamination is not None:
                found.append(contamination.overlapping(text))
            if total >= budget:
                break
        if total >= budget:
            break
    tokens = np.concatenate(pieces).astype(token_dtype(tok.get_vocab_size())) if pieces else np.zeros(0, np.uint16)
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    atomic_write_bytes(out_dir / "tokens.npy", buf.getvalue())
    atomic_write_bytes(out_dir / "doc_ids.txt", ("\n".join(ids) + "\n").encode("utf-8"))
    m = {
        "stage": stage, "budget": budget, "sources": sources, "reference": reference, "tokens": int(total), "documents": len(ids), "chars": chars,
        "exhausted": total < budget, "available_documents": len(docs), "seed": seed,
        "tokenizer_sha256": tok_sha, "tokens_sha256": sha256_file(out_dir / "tokens.npy"),
        "composition_tokens": {k: dict(sorted(v.items())) for k, v in composition.items() if v},
        "doc_token_counts": {"min": min(counts, default=0), "max": max(counts, default=0),
                             "mean": round(float(np.mean(counts)), 1) if counts else 0},
    }
    if contamination is not None:
        hits = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
        m["contamination_13gram"] = contamination.report(hits)
    atomic_write_json(manifest_path, m)
    return m


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
