"""Evaluation of a causal LM: held-out bits per byte and BLiMP minimal pairs.

Bits per byte (total negative log-likelihood in bits over the UTF-8 bytes of
the evaluated text) is comparable across tokenizers. Per-document sums are
kept so arms can be compared *paired*, document by document; BLiMP keeps the
per-pair outcome (a tie counts as wrong) with its paradigm and field, for
paradigm-cluster intervals and the per-field breakdown. Evaluation is fp32.
"""
from __future__ import annotations

import gzip
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from experiments.tokenizer import eos_id

LN2 = math.log(2.0)


def prepare_bpb_windows(docs: list[dict], tok: Tokenizer, context: int, max_chars: int) -> dict:
    """Tokenize each document (cut to ``max_chars``) once into windows of ``context + 1`` tokens.

    Every token after the leading end-of-text token is predicted exactly once;
    a window starts with the last token of the previous one as its context.
    """
    eos = eos_id(tok)
    windows, owners, doc_bytes = [], [], []
    for i, d in enumerate(docs):
        text = d["text"][:max_chars]
        ids = [eos] + tok.encode(text).ids
        doc_bytes.append(len(text.encode("utf-8")))
        for s in range(0, len(ids) - 1, context):
            windows.append(ids[s:s + context + 1])
            owners.append(i)
    return {"windows": windows, "owners": np.asarray(owners), "bytes": np.asarray(doc_bytes, dtype=np.float64),
            "ids": [d["id"] for d in docs]}


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    x = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return x, mask


@torch.no_grad()
def sequence_logprobs(model, seqs: list[list[int]], device, batch_size: int = 32) -> np.ndarray:
    """Sum of log p(token | prefix) over tokens 1.. of each sequence (natural log).

    Always in fp32, whatever precision training used: under bf16 autocast
    per-document bits moved by up to 0.48, more than some effects we measure.
    """
    out = np.zeros(len(seqs))
    order = np.argsort([len(s) for s in seqs])  # similar lengths together: less padding
    for b in range(0, len(seqs), batch_size):
        idx = order[b:b + batch_size]
        x, mask = _pad([seqs[i] for i in idx], 0)
        x, mask = x.to(device), mask.to(device)
        with torch.autocast(device.type, enabled=False):
            logits = model(input_ids=x, attention_mask=mask.long()).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = x[:, 1:]
        lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
        out[idx] = lp.sum(dim=1).double().cpu().numpy()
    return out


def eval_bpb(model, prepared: dict, device, batch_size: int = 32) -> dict:
    lp = sequence_logprobs(model, prepared["windows"], device, batch_size)
    bits = np.zeros(len(prepared["bytes"]))
    np.add.at(bits, prepared["owners"], -lp / LN2)
    return {"bpb": float(bits.sum() / prepared["bytes"].sum()), "doc_bits": bits.tolist(),
            "doc_bytes": prepared["bytes"].tolist(), "doc_ids": prepared["ids"]}


def load_blimp(path: Path, per_paradigm: int | None, seed: int = 0) -> list[dict]:
    """BLiMP pairs, optionally a seeded sample of ``per_paradigm`` per paradigm (the same for every arm)."""
    by_uid: dict[str, list[dict]] = defaultdict(list)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            by_uid[d["UID"]].append(d)
    rng = np.random.default_rng(seed)
    out = []
    for uid in sorted(by_uid):
        pairs = sorted(by_uid[uid], key=lambda d: int(d["pairID"]))
        if per_paradigm is not None and per_paradigm < len(pairs):
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), per_paradigm, replace=False))]
        out += [{"uid": uid, "pair": int(p["pairID"]), "good": p["sentence_good"], "bad": p["sentence_bad"],
                 "field": p.get("field", "")} for p in pairs]
    return out


def prepare_blimp(pairs: list[dict], tok: Tokenizer) -> list[list[int]]:
    eos = eos_id(tok)
    seqs = []
    for p in pairs:
        seqs.append([eos] + tok.encode(p["good"]).ids)
        seqs.append([eos] + tok.encode(p["bad"]).ids)
    return seqs


def eval_blimp(model, pairs: list[dict], seqs: list[list[int]], device, batch_size: int = 64) -> dict:
    lp = sequence_logprobs(model, seqs, device, batch_size)
    good, bad = lp[0::2], lp[1::2]
    correct = good > bad  # a tie counts as wrong
    by_field: dict[str, list[bool]] = defaultdict(list)
    for p, c in zip(pairs, correct):
        by_field[p["field"]].append(bool(c))
    return {"accuracy": float(correct.mean()), "correct": correct.astype(int).tolist(),
            "pairs": [f"{p['uid']}:{p['pair']}" for p in pairs],
            "by_field": {k: float(np.mean(v)) for k, v in sorted(by_field.items())}}
