"""The n-gram baseline and the sanity gate: a proper distribution, the exact tokens the model is scored on,
and an arm whose models do not beat the baseline is flagged before any verdict."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.ngram_baseline import KneserNey
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


def test_continuations_are_scored_from_their_start_with_context_inside_the_sequence():
    rng = np.random.default_rng(3)
    V = 20
    t, _ = _markov(rng, V, 5000)
    lm = KneserNey(3, V).fit(t)
    seq = [int(x) for x in rng.integers(0, V, 9)]
    manual = sum(np.log(lm.prob(np.array([[seq[i - 2] if i >= 2 else -1, seq[i - 1]]]), np.array([seq[i]]))[0])
                 for i in range(4, 9))
    assert lm.score_continuations([seq], [4])[0] == pytest.approx(manual)
    assert lm.sequence_bits([seq])[0] == pytest.approx(-lm.score_continuations([seq], 1)[0] / np.log(2))


def test_baseline_is_scored_by_the_same_tasks_as_a_model(tmp_path):
    """The n-gram goes through the experiment's own evaluation tasks: same windows, same bytes, same pairs, and
    per-item results in the layout of a model's (so the report reads both alike)."""
    import gzip
    import json

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from experiments.ngram_baseline import score_baselines
    from experiments.tasks import BitsPerByte, MinimalPairs, TaskContext, evaluate_model
    from experiments.tokenizer import EOS, eos_id
    from experiments.train import build_model

    texts = [f"document {i}: the quick brown fox jumps over the lazy dog number {i * 7}. " * (1 + i % 5)
             for i in range(40)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    pairs = tmp_path / "pairs.jsonl.gz"
    with gzip.open(pairs, "wt") as f:
        for i in range(12):
            f.write(json.dumps({"sentence_good": f"the fox jumps {i}.", "sentence_bad": f"fox the jumps {i}.",
                                "UID": f"p{i % 3}", "pairID": i, "field": "syntax"}) + "\n")
    ctx = TaskContext(eval_sets={"x": [{"id": str(i), "text": t} for i, t in enumerate(texts[:10])]},
                      eval_max_chars=120)
    tasks = [BitsPerByte("bpb", {}, ctx), MinimalPairs("blimp", {"path": str(pairs)}, ctx)]
    prepared = {t.name: t.prepare(tok, 8, True) for t in tasks}
    train = np.concatenate([np.array(tok.encode(t).ids + [eos_id(tok)]) for t in texts[10:]])
    base = score_baselines(train, tok.get_vocab_size(), tasks, prepared)
    model = build_model({"arch": "llama", "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "context": 8},
                        tok.get_vocab_size(), 0).eval()
    m_metrics, m_items = evaluate_model(tasks, prepared, model, torch.device("cpu"))
    for order, (metrics, items) in base.items():
        assert set(items) == set(m_items) and set(metrics) == set(m_metrics)
        assert np.array_equal(items["bpb/x/bytes"], m_items["bpb/x/bytes"])
        assert np.array_equal(items["blimp/paradigm"], m_items["blimp/paradigm"])
        windows = prepared["bpb"]["x"]["windows"]
        lm = KneserNey(order, tok.get_vocab_size()).fit(train)
        bits = -lm.score_continuations(windows, 1).sum() / np.log(2)
        assert metrics["bpb/x"] == pytest.approx(bits / m_items["bpb/x/bytes"].sum(), rel=1e-5)
        assert 0 < metrics["bpb/x"] < m_metrics["bpb/x"]  # an untrained network is worse than any n-gram


INFO = {"bpb/x": {"task": "bpb", "higher_is_better": False},
        "blimp": {"task": "blimp", "higher_is_better": True, "chance": 0.5, "item_array": "correct",
                  "cluster": "paradigm"}}


def _runs(arm, model_bpb, ngram_bpb, blimp_p=0.5, seeds=(0, 1, 2), rng=None):
    """Synthetic runs of one arm: the model's and the n-gram baselines' value on bpb/x, BLiMP outcomes."""
    rng = rng or np.random.default_rng(0)
    para = np.repeat(np.arange(30), 20)
    out = []
    for s, m in zip(seeds, model_bpb):
        correct = (rng.random(len(para)) < blimp_p).astype(np.uint8)
        out.append({"arm": arm, "seed": s, "subset": {"contamination_13gram": {"x": {"rate": 0.1}}},
                    "items": {"blimp/correct": correct, "blimp/paradigm": para},
                    "values": {"bpb/x": m, "blimp": float(correct.mean())},
                    "ngram": {o: {"items": {}, "values": {"bpb/x": v}} for o, v in ((2, ngram_bpb + 0.2),
                                                                                     (3, ngram_bpb))}})
    return out


def _value(run, metric):
    return run["values"][metric]


def test_an_arm_whose_models_do_not_beat_the_ngram_baseline_is_flagged():
    by_arm = {"raw-large": _runs("raw-large", [2.50, 2.52, 2.49], 2.70, blimp_p=0.7),
              "clean-small": _runs("clean-small", [2.95, 2.93, 2.97], 2.70, blimp_p=0.7)}
    g = gate(by_arm, "bpb/x", ["x"], ("raw-large", "clean-small"), _value, INFO)
    assert g["rows"]["raw-large"]["ngram"]["status"] == "beats"
    assert g["rows"]["clean-small"]["ngram"]["status"] == "does not beat"
    assert g["rows"]["clean-small"]["ngram"]["best"] == 3  # the stronger baseline
    assert not g["passed"] and g["data_statistics"] and g["failed"] == [("ngram", "clean-small")]
    first = verdict_lines(g)[0]
    assert first.startswith("**Sanity gate: failed.**") and "`clean-small`" in first and "data statistics" in first
    # both beat their baselines and BLiMP is above chance: the gate passes
    by_arm["clean-small"] = _runs("clean-small", [2.55, 2.57, 2.54], 2.70, blimp_p=0.7)
    g = gate(by_arm, "bpb/x", ["x"], ("raw-large", "clean-small"), _value, INFO)
    assert g["passed"] and verdict_lines(g)[0].startswith("**Sanity gate: passed**")


def test_minimal_pairs_at_chance_fail_the_gate_and_a_contamination_gap_is_named():
    by_arm = {"a": _runs("a", [2.5, 2.5, 2.5], 2.7, blimp_p=0.5), "b": _runs("b", [2.4, 2.41, 2.42], 2.7, blimp_p=0.5)}
    for r in by_arm["b"]:
        r["subset"]["contamination_13gram"]["x"]["rate"] = 0.4
    g = gate(by_arm, "bpb/x", ["x"], ("a", "b"), _value, INFO, contamination_level=0.05)
    assert ("blimp", "a") in g["failed"] and ("blimp", "b") in g["failed"]
    assert g["contamination_flag"] and g["contamination_gap"] == pytest.approx(0.3)
    lines = verdict_lines(g)
    assert "at chance" in lines[0] and lines[1].startswith("**Contamination gap:**") and "`b`" in lines[1]
    assert not gate(by_arm, "bpb/x", ["x"], ("a", "b"), _value, INFO, contamination_level=0.5)["contamination_flag"]
