"""The n-gram baseline and the sanity gate: a proper distribution, the exact tokens the model is scored on,
and an arm whose models do not beat the baseline is flagged before any verdict."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.ngram_baseline import KneserNey, score_baselines, window_sequences
from experiments.sanity import gate, verdict_lines


def _markov(rng, V, n, order=2, conc=0.1):
    """Tokens from a random Markov chain of the given order (each context has its own sparse next-token law)."""
    table = {}
    t = list(rng.integers(0, V, order - 1))
    for _ in range(n):
        ctx = tuple(t[-(order - 1):])
        if ctx not in table:
            table[ctx] = rng.dirichlet(np.full(V, conc))
        t.append(int(rng.choice(V, p=table[ctx])))
    return np.array(t), table


@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one_in_every_context(order):
    rng = np.random.default_rng(order)
    V = 40
    t, _ = _markov(rng, V, 3000)
    lm = KneserNey(order, V).fit(t)
    contexts = rng.integers(0, V, (6, order - 1))
    if order > 1:
        contexts[0, :] = t[100:100 + order - 1]  # a seen context
        contexts[1, 0] = -1  # the start of a sequence: no token there
    for c in contexts:
        p = lm.prob(np.repeat(c[None], V, 0), np.arange(V))
        assert (p > 0).all() and p.sum() == pytest.approx(1.0, abs=1e-9)


def test_higher_orders_help_when_the_data_has_them():
    rng = np.random.default_rng(0)
    V = 30
    t, table = _markov(rng, V, 60_000, order=3, conc=0.05)
    train, test = t[:50_000], t[50_000:]
    bits = {o: KneserNey(o, V).fit(train).sequence_bits([test])[0] / (len(test) - 1) for o in (1, 2, 3)}
    true = -np.mean([np.log2(table[(a, b)][c]) for a, b, c in zip(test[:-2], test[1:-1], test[2:])])
    assert bits[1] > bits[2] > bits[3] > true
    assert bits[3] < true + 0.25  # near the source's entropy with 50k tokens for 900 sparse contexts


def test_baseline_scores_exactly_the_models_tokens_and_bytes():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from experiments.tasks import BitsPerByte, TaskContext
    from experiments.tokenizer import EOS, eos_id

    texts = [f"document {i}: the quick brown fox jumps over the lazy dog number {i * 7}. " * (1 + i % 5)
             for i in range(40)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    docs = [{"id": str(i), "text": t} for i, t in enumerate(texts[:10])]
    prep = BitsPerByte("bpb", {"max_chars": 120}, TaskContext(eval_sets={"x": docs})).prepare(tok, 8, final=True)["x"]
    seqs = window_sequences(prep)
    for d, s in zip(docs, seqs):
        assert s.tolist() == [eos_id(tok)] + tok.encode(d["text"][:120]).ids
    train = np.concatenate([np.array(tok.encode(t).ids + [eos_id(tok)]) for t in texts[10:]])
    out = score_baselines(train, tok.get_vocab_size(), {"x": prep})
    for order, details in out.items():
        r = details["x"]
        assert r["doc_bytes"] == prep["bytes"].tolist()
        assert r["bpb"] == pytest.approx(sum(r["doc_bits"]) / prep["bytes"].sum())
    assert 0 < out[3]["x"]["bpb"] < 2  # templated text is cheap for both orders


def _runs(arm, model_bpb, ngram_bpb, blimp_p=0.5, seeds=(0, 1, 2), rng=None):
    """Synthetic runs of one arm: the model's and the n-gram baselines' value on bpb/x, BLiMP outcomes."""
    rng = rng or np.random.default_rng(0)
    para = np.repeat(np.arange(30), 20)
    out = []
    for s, m in zip(seeds, model_bpb):
        item = lambda v: {"bpb/x": {"bits": np.array([v * 1000.0]), "bytes": np.array([1000])}}
        out.append({"arm": arm, "seed": s, "subset": {"contamination_13gram": {"x": {"rate": 0.1}}},
                    "items": {**item(m), "blimp": {"correct": rng.random(len(para)) < blimp_p, "paradigm": para}},
                    "ngram": {2: item(ngram_bpb + 0.2), 3: item(ngram_bpb)}})
    return out


def _value(run, metric):
    it = run["items"][metric]
    return float(it["bits"].sum() / it["bytes"].sum())


def test_an_arm_whose_models_do_not_beat_the_ngram_baseline_is_flagged():
    by_arm = {"raw-large": _runs("raw-large", [2.50, 2.52, 2.49], 2.70, blimp_p=0.7),
              "clean-small": _runs("clean-small", [2.95, 2.93, 2.97], 2.70, blimp_p=0.7)}
    g = gate(by_arm, "bpb/x", ["x"], ("raw-large", "clean-small"), _value)
    assert g["rows"]["raw-large"]["ngram"]["status"] == "beats"
    assert g["rows"]["clean-small"]["ngram"]["status"] == "does not beat"
    assert g["rows"]["clean-small"]["ngram"]["best"] == 3  # the stronger baseline
    assert not g["passed"] and g["data_statistics"] and g["failed"] == [("ngram", "clean-small")]
    first = verdict_lines(g)[0]
    assert first.startswith("**Sanity gate: failed.**") and "`clean-small`" in first and "data statistics" in first
    # both beat their baselines and BLiMP is above chance: the gate passes
    by_arm["clean-small"] = _runs("clean-small", [2.55, 2.57, 2.54], 2.70, blimp_p=0.7)
    g = gate(by_arm, "bpb/x", ["x"], ("raw-large", "clean-small"), _value)
    assert g["passed"] and verdict_lines(g)[0].startswith("**Sanity gate: passed**")


def test_minimal_pairs_at_chance_fail_the_gate_and_a_contamination_gap_is_named():
    by_arm = {"a": _runs("a", [2.5, 2.5, 2.5], 2.7, blimp_p=0.5), "b": _runs("b", [2.4, 2.41, 2.42], 2.7, blimp_p=0.5)}
    for r in by_arm["b"]:
        r["subset"]["contamination_13gram"]["x"]["rate"] = 0.4
    g = gate(by_arm, "bpb/x", ["x"], ("a", "b"), _value, contamination_level=0.05)
    assert ("blimp", "a") in g["failed"] and ("blimp", "b") in g["failed"]
    assert g["contamination_flag"] and g["contamination_gap"] == pytest.approx(0.3)
    lines = verdict_lines(g)
    assert "at chance" in lines[0] and lines[1].startswith("**Contamination gap:**") and "`b`" in lines[1]
    assert not gate(by_arm, "bpb/x", ["x"], ("a", "b"), _value, contamination_level=0.5)["contamination_flag"]
