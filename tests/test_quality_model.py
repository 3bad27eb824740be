"""Model-based quality: training determinism, the reference/eval split, AUC, and
`winnow select` re-cutting a top fraction without running any scorer."""
from __future__ import annotations

import gzip
import json
import math
import random
import time

import numpy as np
import pytest

from filters.ngram_lm import ByteNgramLM
from experiments.quality_models import train_quality
from filters.base import top_fraction_plan
from filters.metrics import roc_auc
from filters.quality_model import QualityClassifier, RefPerplexity
from filters.quality_scorers import manifest_path, reference_ids, training_ids
from filters.quality_training import iter_reference
from pipeline.heldout import EVAL_PERCENT, reference_split
from pipeline.config import load_config
from pipeline.runner import Runner
from pipeline.shards import read_json, sha256_file
from tests.conftest import write_config

PROSE = ("the river flows through the old city and its history is recorded in the archive of the "
         "museum where scholars study the population economy and culture of the region").split()
SPAM = "buy cheap pills now click here free casino bonus win money best deal offer limited".split()


def _docs(vocab, n, rng, words=40):
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(n)]


def _write_jsonl_gz(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture
def toy(tmp_path):
    """A reference corpus of prose; a raw corpus of spam plus some prose (a source kept out of the negatives)."""
    rng = random.Random(0)
    ref = [{"id": f"ref-{i}", "text": t} for i, t in enumerate(_docs(PROSE, 300, rng))]
    ref.append({"id": "ref-stub", "text": "A stub."})
    _write_jsonl_gz(tmp_path / "ref.jsonl.gz", ref)
    _write_jsonl_gz(tmp_path / "spam.jsonl.gz", [{"id": f"spam-{i}", "text": t} for i, t in enumerate(_docs(SPAM, 160, rng))])
    _write_jsonl_gz(tmp_path / "prose.jsonl.gz", [{"id": f"prose-{i}", "text": t} for i, t in enumerate(_docs(PROSE, 40, rng))])
    train = {"reference_path": "ref.jsonl.gz", "min_chars": 50, "negatives_from_stage": "ingest",
             "negatives_exclude_sources": ["prose"],
             "max_per_class": 150, "validation_fraction": 0.2, "epoch": 5, "dim": 8, "bucket": 20000, "seed": 0}
    cfg = {
        "run_dir": "run", "workers": 1,
        "stages": [
            {"name": "ingest", "shard_docs": 50, "inputs": [{"path": "spam.jsonl.gz", "source": "spam"},
                                                           {"path": "prose.jsonl.gz", "source": "prose"}]},
            {"name": "quality", "kind": "filter", "filters": [
                {"quality_classifier": {"model_path": "models/clf.bin", "top_fraction": 0.5, "train": train}},
                {"ref_perplexity": {"model_path": "models/lm.npz",
                                    "train": {"reference_path": "ref.jsonl.gz", "min_chars": 50,
                                              "order": 3, "log2_buckets": 14}}},
            ]},
        ],
    }
    return tmp_path, cfg


def _load(tmp_path, cfg, name="config.yaml"):
    return load_config(write_config(tmp_path / name, cfg))


def test_auc_matches_hand_computed_values():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    # pairs (pos, neg): (0.8,0.7) win, (0.8,0.9) loss, (0.6,0.7) loss, (0.6,0.9) loss -> 1/4
    assert roc_auc([1, 0, 1, 0], [0.8, 0.7, 0.6, 0.9]) == 0.25


def test_reference_split_is_fixed_and_about_ten_percent():
    ids = [f"enwiki-{i}" for i in range(20000)]
    share = sum(reference_split(i) == "eval" for i in ids) / len(ids)
    assert abs(share - EVAL_PERCENT / 100) < 0.01
    assert [reference_split(i) for i in ids[:50]] == [reference_split(i) for i in ids[:50]]


def test_top_fraction_keeps_ties_together_and_reports_them():
    plan = top_fraction_plan(np.array([0.9, 0.8, 0.8, 0.8, 0.1, np.nan]), 1 / 3)
    assert plan["target"] == 2 and plan["cutoff"] == 0.8 and plan["kept"] == 4
    plan = top_fraction_plan(np.array([0.5, 0.2, 0.7, 0.1]), 0.5)
    assert plan == {"fraction": 0.5, "docs": 4, "target": 2, "cutoff": 0.5, "kept": 2}


def test_byte_lm_prefers_its_training_language_and_round_trips(tmp_path):
    rng = random.Random(1)
    lm = ByteNgramLM.train(_docs(PROSE, 200, rng), order=4, log2_buckets=14)
    held_out = _docs(PROSE, 20, rng)
    bpb_prose = lm.bits_per_byte(held_out)
    bpb_spam = lm.bits_per_byte(_docs(SPAM, 20, rng))
    assert bpb_prose.max() < bpb_spam.min()
    lm.save(tmp_path / "lm.npz")
    again = ByteNgramLM.load(tmp_path / "lm.npz")
    assert np.array_equal(again.bits_per_byte(held_out), bpb_prose)
    assert np.isnan(lm.bits_per_byte(["", "river"])[0])
    # a batch scores each document as if alone: contexts never cross documents
    assert lm.bits_per_byte([held_out[0], held_out[1]])[1] == pytest.approx(lm.bits_per_byte([held_out[1]])[0])


def test_training_is_deterministic_separates_toy_classes_and_never_uses_eval_ids(toy):
    tmp_path, cfg = toy
    config = _load(tmp_path, cfg)
    first = train_quality(config, log=lambda m: None)
    clf_manifest, lm_manifest = first
    sha = sha256_file(config.run_dir.parent / "models" / "clf.bin")
    assert clf_manifest["validation"]["auc"] > 0.99 and clf_manifest["validation"]["accuracy"] > 0.95
    assert clf_manifest["counts"]["valid"] > 0
    for m in (clf_manifest, lm_manifest):  # which code, packages and machine trained it
        assert m["provenance"]["winnow"]["version"] and "torch" in m["provenance"]["packages"]

    again = train_quality(config, log=lambda m: None)
    assert sha256_file(config.run_dir.parent / "models" / "clf.bin") == sha
    assert again[0]["model_sha256"] == sha and again[1]["model_sha256"] == lm_manifest["model_sha256"]

    eval_ids = {i for i, _, split in iter_reference(str(tmp_path / "ref.jsonl.gz")) if split == "eval"}
    eval_ids |= {f"{kind}-{i}" for kind in ("spam", "prose") for i in range(160) if reference_split(f"{kind}-{i}") == "eval"}
    assert eval_ids, "toy corpora should have some eval-split ids"
    used = training_ids(tmp_path / "models")
    assert not (set().union(*used.values()) & eval_ids)
    positives = reference_ids(tmp_path / "models")
    assert positives and all(i.startswith("ref-") for i in positives) and "ref-stub" not in positives
    assert used["lq"] <= {f"spam-{i}" for i in range(160)}  # the excluded source never becomes a negative
    assert read_json(manifest_path(tmp_path / "models" / "lm.npz"))["counts"]["documents"] == len(used["ref"])


def test_select_recuts_top_fraction_without_running_a_scorer(toy, monkeypatch):
    tmp_path, cfg = toy
    config = _load(tmp_path, cfg)
    train_quality(config, log=lambda m: None)
    Runner(config, progress=False, log=lambda m: None).run()
    run = config.run_dir
    n = read_json(run / "quality" / "manifest.json")["totals"]["rows_in"]
    assert read_json(run / "quality" / "manifest.json")["totals"]["kept"] == math.ceil(0.5 * n)

    def no_scoring(*a, **k):
        raise AssertionError("a scorer ran during select")

    for cls in (QualityClassifier, RefPerplexity):
        monkeypatch.setattr(cls, "setup", no_scoring)
        monkeypatch.setattr(cls, "score_batch", no_scoring)
        monkeypatch.setattr(cls, "score", no_scoring)
    cfg["stages"][1]["filters"][0]["quality_classifier"]["top_fraction"] = 0.2
    t0 = time.perf_counter()
    Runner(_load(tmp_path, cfg), progress=False, log=lambda m: None).run(select_only="quality")
    assert time.perf_counter() - t0 < 10
    manifest = read_json(run / "quality" / "manifest.json")
    plan = read_json(run / "quality" / "plan" / "quality_classifier.json")
    assert manifest["totals"]["kept"] == plan["kept"] == math.ceil(0.2 * n)
    # the prose documents of the raw corpus rank above the spam
    import pyarrow.parquet as pq

    kept_ids = [i for s in manifest["shards"] for i in pq.read_table(run / "quality" / s["kept"]["path"]).column("id").to_pylist()]
    assert sum(i.startswith("prose-") for i in kept_ids) >= 0.9 * len(kept_ids)
    # CCNet-style buckets from the same cached scores: the head tercile of ref_bpb
    cfg["stages"][1]["filters"][0]["quality_classifier"]["top_fraction"] = None
    cfg["stages"][1]["filters"][1]["ref_perplexity"]["keep_buckets"] = ["head"]
    Runner(_load(tmp_path, cfg), progress=False, log=lambda m: None).run(select_only="quality")
    kept_head = read_json(run / "quality" / "manifest.json")["totals"]["kept"]
    assert abs(kept_head - n / 3) <= 2


def test_retrained_model_changes_the_scoring_fingerprint(toy):
    tmp_path, cfg = toy
    config = _load(tmp_path, cfg)
    train_quality(config, only="quality_classifier", log=lambda m: None)
    params = cfg["stages"][1]["filters"][0]["quality_classifier"]
    path = str(tmp_path / "models" / "clf.bin")
    before = QualityClassifier(**{**params, "model_path": path}).scoring_params()
    params["train"]["seed"] = 1
    train_quality(_load(tmp_path, cfg), only="quality_classifier", log=lambda m: None)
    after = QualityClassifier(**{**params, "model_path": path, "top_fraction": 0.3}).scoring_params()
    assert before["model_sha256"] != after["model_sha256"]
    assert "train" not in after and "top_fraction" not in after


@pytest.mark.shared_data
def test_reference_lm_ranks_held_out_wikipedia_above_usenet(shared):
    wiki = _first(iter_reference(str(shared / "ref" / "wikipedia-en.jsonl.gz"), min_chars=500), 400)
    train = [t for _, t, split in wiki if split == "train"][:300]
    held_out = [t for _, t, split in wiki if split == "eval"]
    with gzip.open(shared / "raw" / "usenet-20news.jsonl.gz", "rt") as f:
        usenet = [json.loads(line)["text"] for line, _ in zip(f, range(100))]
    lm = ByteNgramLM.train(train, order=4, log2_buckets=18)
    assert np.nanmedian(lm.bits_per_byte(held_out)) < np.nanmedian(lm.bits_per_byte(usenet))


def _first(it, n):
    return [x for x, _ in zip(it, range(n))]


def test_train_quality_command(toy):
    from experiments.cli import main

    tmp_path, cfg = toy
    path = write_config(tmp_path / "config.yaml", cfg)
    assert main(["train-quality", str(path), "--only", "ref_perplexity"]) == 0
    assert (tmp_path / "models" / "lm.npz").exists() and not (tmp_path / "models" / "clf.bin").exists()
