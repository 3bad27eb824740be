"""Scoring primitives for a causal LM: the log-likelihood of token continuations, in fp32.

Every evaluation task (:mod:`experiments.tasks`) reduces to one question asked
of many sequences: what log-probability does the model give to tokens
``start..`` of this sequence, given the tokens before? Bits per byte asks it of
document windows, minimal pairs of two sentences, a cloze item of each answer
after its context. One batched, length-sorted function answers it for all of
them, so a faster scorer speeds up every task at once.

Sequences are right-padded and run *without* an attention mask: under causal
attention a real token never sees the padding after it, so its logits are
exactly those of the unpadded sequence, and the model keeps its fast
causal-attention path (SDPA / flash) instead of building a 4-D mask. A token's
log-probability is its logit minus the log-sum-exp over the vocabulary (no
second vocabulary-sized tensor). Batches are sized by tokens: about 1,000 on a
CPU, where a batch's logits must stay in cache (measured: 1.7x faster than
32-sequence batches with a mask and a full log-softmax,
experiments/results/train_speed.md), 32,000 on a GPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch

LN2 = math.log(2.0)


@torch.inference_mode()
def continuation_logprobs(model, seqs: list[list[int]], starts: list[int] | int, device,
                          max_tokens: int | None = None) -> np.ndarray:
    """Sum of natural-log p(token | prefix) over tokens ``start..`` of each sequence (``start >= 1``).

    Always fp32, whatever precision training used (under bf16 autocast
    per-document bits moved by up to 0.48, more than some effects we measure).
    Batches hold at most ``max_tokens`` padded tokens, longest first, so a
    batch's padding is small and memory is bounded.
    """
    own = getattr(model, "score_continuations", None)
    if own is not None:  # a scorer that is not a network (the n-gram baseline) answers the same question itself
        return own(seqs, starts)
    starts = [starts] * len(seqs) if isinstance(starts, int) else list(starts)
    device = torch.device(device)
    max_tokens = max_tokens or (1024 if device.type == "cpu" else 32768)
    out = np.zeros(len(seqs))
    if not seqs:
        return out
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    b = 0
    while b < len(order):
        width = len(seqs[order[b]])
        n = max(1, max_tokens // max(width, 1))
        idx = order[b:b + n]
        b += n
        x = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            x[row, : len(seqs[i])] = torch.as_tensor(seqs[i])
        x = x.to(device)
        with torch.autocast(device.type, enabled=False):
            logits = model(input_ids=x).logits[:, :-1].float()
        lp = logits.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        pos = torch.arange(1, width, device=lp.device)
        lens = torch.tensor([len(seqs[i]) for i in idx], device=lp.device)
        st = torch.tensor([starts[i] for i in idx], device=lp.device)
        keep = (pos[None, :] >= st[:, None]) & (pos[None, :] < lens[:, None])
        out[idx] = (lp * keep).sum(dim=1).double().cpu().numpy()
    return out


def sequence_logprobs(model, seqs: list[list[int]], device, batch_size: int | None = None) -> np.ndarray:
    """Sum of log p over tokens 1.. of each sequence (the first token is the context, e.g. end-of-text)."""
    return continuation_logprobs(model, seqs, 1, device)
