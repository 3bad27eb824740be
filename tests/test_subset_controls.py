"""Subset controls of issue 20: a per-document cap, a minimum-documents warning and a mix-matched draw."""
from __future__ import annotations

import numpy as np

from experiments.subsets import build_subset, load_tokens
from experiments.tokenizer import eos_id
from tests.test_experiments import run, tok  # noqa: F401  (module fixtures: a small pipeline run and tokenizer)


def test_doc_cap_limits_any_documents_share_and_closes_cut_documents(run, tok, tmp_path):  # noqa: F811
    run_dir, _ = run
    t, path = tok
    free = build_subset(run_dir, "ingest", 20_000, t, path, tmp_path / "free", seed=0)
    capped = build_subset(run_dir, "ingest", 20_000, t, path, tmp_path / "cap", seed=0, doc_cap=0.02)
    assert free["doc_token_counts"]["max"] > 400  # the corpus has documents longer than the cap
    assert capped["tokens"] == len(load_tokens(tmp_path / "cap")) == 20_000
    assert capped["doc_token_counts"]["max"] <= 400 and capped["doc_token_counts"]["largest_share"] <= 0.02
    assert capped["capped_documents"] > 0 and capped["documents"] > free["documents"]
    # every document but the last (cut by the budget) ends with end-of-text, capped ones included
    tokens = load_tokens(tmp_path / "cap")
    assert (tokens == eos_id(t)).sum() >= capped["documents"] - 1
    # the cap is part of the recipe: a cached subset without it is not reused
    again = build_subset(run_dir, "ingest", 20_000, t, path, tmp_path / "free", seed=0, doc_cap=0.02)
    assert again["tokens_sha256"] == capped["tokens_sha256"]


def test_too_few_documents_warns(run, tok, tmp_path):  # noqa: F811
    run_dir, _ = run
    t, path = tok
    m = build_subset(run_dir, "length", 5000, t, path, tmp_path / "s", seed=0, min_docs=1000)
    assert any("declared minimum 1000" in w for w in m["warnings"])
    assert not build_subset(run_dir, "length", 5000, t, path, tmp_path / "s", seed=0, min_docs=2)["warnings"]


def test_mix_matched_draw_reproduces_the_candidates_mix_from_other_documents(run, tok, tmp_path):  # noqa: F811
    run_dir, _ = run
    t, path = tok
    cand = build_subset(run_dir, "length", 8000, t, path, tmp_path / "cand", seed=2)
    shares = cand["composition_tokens"]["truth"]
    assert len(shares) >= 2  # the filtered stage still mixes several ground-truth kinds
    m = build_subset(run_dir, "ingest", 8000, t, path, tmp_path / "matched", seed=2,
                     mix={"key": "truth", "shares": shares})
    assert m["tokens"] == 8000 and not m["warnings"]
    assert m["mix_achieved"] == m["mix_quota"] == m["composition_tokens"]["truth"]
    got = np.array([m["composition_tokens"]["truth"][k] for k in shares], float)
    want = np.array(list(shares.values()), float)
    assert np.abs(got / got.sum() - want / want.sum()).max() < 1e-3
    # the same mix, but drawn from the raw stage: other documents than the candidate's
    ids_c = set((tmp_path / "cand" / "doc_ids.txt").read_text().split())
    ids_m = set((tmp_path / "matched" / "doc_ids.txt").read_text().split())
    assert ids_m != ids_c
    # a value the raw stage cannot fill is reported, not silently dropped
    short = build_subset(run_dir, "ingest", 8000, t, path, tmp_path / "short", seed=2,
                         mix={"key": "truth", "shares": {**shares, "no-such-kind": sum(shares.values())}})
    assert any("no-such-kind" in w for w in short["warnings"]) and short["exhausted"]
