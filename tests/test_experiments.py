"""The ablation's pieces: exact token budgets, equal optimiser steps, contamination, BLiMP scoring,
resumable training, and a GPU step when CUDA is present."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.data import ContaminationIndex
from pipeline.heldout import is_held_out
from pipeline.rundir import RunFolder
from experiments.tasks import MinimalPairs, TaskContext
from experiments.subsets import build_subset, load_tokens
from experiments.synthetic_web import write_corpus
from experiments.tokenizer import eos_id, load_tokenizer, train_tokenizer
from experiments.train import Batches, build_model, train
from tests.conftest import SHARED, run_pipeline, write_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    write_corpus(d / "corpus", n_docs=500, seed=11)
    cfg = {"run_dir": str(d / "run"), "stages": [
        {"name": "ingest", "shard_docs": 200, "inputs": [{"path": str(d / "corpus" / "web-*.jsonl.gz"), "source": "web"}]},
        {"name": "length", "kind": "filter", "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 600}}]},
    ]}
    return run_pipeline(cfg, d), d


@pytest.fixture(scope="module")
def tok(run):
    run_dir, d = run
    path = d / "tok.json"
    train_tokenizer(run_dir, "ingest", path, vocab_size=600, sample_docs=300, seed=0)
    return load_tokenizer(path), path


@pytest.mark.slow
def test_subsets_meet_the_token_budget_exactly_and_skip_held_out_docs(run, tok, tmp_path):
    run_dir, _ = run
    t, path = tok
    for budget in (1000, 12_345, 50_000):
        m = build_subset(run_dir, "length", budget, t, path, tmp_path / f"s{budget}", seed=0)
        tokens = load_tokens(tmp_path / f"s{budget}")
        assert len(tokens) == m["tokens"] == budget
        ids = (tmp_path / f"s{budget}" / "doc_ids.txt").read_text().split()
        assert len(ids) == m["documents"] and not any(is_held_out(i) for i in ids)
        assert (tokens == eos_id(t)).sum() >= m["documents"] - 1  # one end-of-text per whole document
        comp = m["composition_tokens"]
        assert sum(comp["source"].values()) == sum(comp["length"].values()) == budget
        assert set(comp["source"]) == {"web"} and set(comp["language"]) == {"not identified"}  # no langid stage
    # more than the stage holds: everything, flagged
    m = build_subset(run_dir, "length", 10**9, t, path, tmp_path / "all", seed=0)
    assert m["exhausted"] and m["documents"] == m["available_documents"]
    # same seed, same bytes; another seed, another draw
    a = build_subset(run_dir, "length", 5000, t, path, tmp_path / "a", seed=3)
    b = build_subset(run_dir, "length", 5000, t, path, tmp_path / "b", seed=3)
    c = build_subset(run_dir, "length", 5000, t, path, tmp_path / "c", seed=4)
    assert a["tokens_sha256"] == b["tokens_sha256"] != c["tokens_sha256"]


def test_contamination_check_finds_planted_copies(run, tok, tmp_path):
    run_dir, _ = run
    t, path = tok
    train_docs = [d for d in RunFolder(run_dir).rows("length", ["id", "text"]) if not is_held_out(d["id"])]
    planted = {"id": "eval-copy", "text": train_docs[0]["text"]}  # an evaluation doc that is a training doc
    unseen = {"id": "eval-new", "text": " ".join(f"zebra{i} quartz{i}" for i in range(40))}
    index = ContaminationIndex({"eval": [planted, unseen]})
    m = build_subset(run_dir, "length", 10**9, t, path, tmp_path / "all", seed=0, contamination=index)
    assert m["contamination_13gram"]["eval"] == {"docs": 2, "contaminated_docs": 1, "rate": 0.5}
    m2 = build_subset(run_dir, "length", 10**9, t, path, tmp_path / "none", seed=0,
                      contamination=ContaminationIndex({"eval": [unseen]}))
    assert m2["contamination_13gram"]["eval"]["contaminated_docs"] == 0


TINY = {"arch": "llama", "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "context": 32}


@pytest.mark.slow
def test_minimal_pairs_scoring_on_a_tiny_model(tok, tmp_path):
    """Any good/bad JSONL, with its own field names: a tie counts as wrong, more tokens lose."""
    t, _ = tok
    model = build_model(TINY, t.get_vocab_size(), seed=0).eval()
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"ok": g, "ko": b, "group": "u", "n": i, "kind": "syntax"}) + "\n"
                            for i, (g, b) in enumerate([
                                ("The dog barked.", "The dog barked."),   # identical: a tie, which counts as wrong
                                ("Some old bridge collapsed.", "Some old bridge collapsed collapsed collapsed.")])))
    task = MinimalPairs("pairs", {"path": str(path), "good_field": "ok", "bad_field": "ko", "paradigm_field": "group",
                                  "id_field": "n", "breakdown_field": "kind"}, TaskContext(eval_sets={}))
    items = task.score(model, task.prepare(t, 32, final=True), torch.device("cpu"))
    assert items["correct"].tolist() == [0, 1]  # more tokens, lower log-probability, even for a random model
    assert task.aggregate(items) == {"pairs": 0.5} and items["paradigm"].tolist() == ["u", "u"]
    again = task.score(model, task.prepare(t, 32, final=True), torch.device("cpu"))
    assert all(np.array_equal(again[k], items[k]) for k in items)
    with pytest.raises(ValueError, match="did you mean `good_field`"):
        MinimalPairs("pairs", {"path": str(path), "god_field": "ok"}, TaskContext(eval_sets={}))


@pytest.mark.shared_data
def test_blimp_sample_is_stratified_and_fixed():
    task = lambda: MinimalPairs("blimp", {"path": str(SHARED / "eval" / "blimp.jsonl.gz"), "per_paradigm": 3},
                                TaskContext(eval_sets={}, seed=0))
    a, b = task().pairs(final=False), task().pairs(final=False)
    assert a == b and len(a) == 67 * 3 and len({p["paradigm"] for p in a}) == 67


def test_training_resumes_exactly_after_a_kill(tok, tmp_path):
    t, _ = tok
    tokens = np.random.default_rng(0).integers(0, t.get_vocab_size(), 5000).astype(np.uint16)
    cfg = {"steps": 10, "batch_size": 4, "eval_every": 5, "checkpoint_every": 5, "warmup_steps": 2, "bf16": False,
           "compile": False}
    train(tokens, t.get_vocab_size(), tmp_path / "ref", TINY, cfg, seed=1, log=lambda m: None)

    class Killed(Exception):
        pass

    def dies_at_10(model, point):
        if point["step"] == 10:
            raise Killed

    with pytest.raises(Killed):
        train(tokens, t.get_vocab_size(), tmp_path / "run", TINY, cfg, seed=1, on_point=dies_at_10, log=lambda m: None)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 5
    train(tokens, t.get_vocab_size(), tmp_path / "run", TINY, cfg, seed=1, log=lambda m: None)
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in logs] == [10]


def test_a_cooldown_branch_is_the_same_model_as_a_full_run_of_that_budget(tok, tmp_path):
    """WSD: the branch at budget B forks from the constant-lr trunk and decays like a run of B steps would,
    on the same batches, so its evaluation equals that run's final one (a decayed model, not a mid-schedule one)."""
    t, _ = tok
    tokens = np.random.default_rng(0).integers(0, t.get_vocab_size(), 8000).astype(np.uint16)
    probe = torch.from_numpy(tokens[:2 * 33].astype(np.int64).reshape(2, 33))

    seen: dict[str, list[dict]] = {"long": [], "short": []}

    def loss_on_probe(name):
        def on_point(model, point):
            with torch.no_grad():
                seen[name].append({**point, "probe": float(model(input_ids=probe, labels=probe).loss)})
        return on_point

    base = {"batch_size": 4, "eval_every": 100, "checkpoint_every": 100, "warmup_steps": 2, "bf16": False,
            "compile": False, "schedule": "wsd", "decay_frac": 0.25, "decay_budgets": [0.5]}
    train(tokens, t.get_vocab_size(), tmp_path / "long", TINY, {**base, "steps": 16}, seed=2,
          on_point=loss_on_probe("long"), log=lambda m: None)
    train(tokens, t.get_vocab_size(), tmp_path / "short", TINY, {**base, "steps": 8, "decay_budgets": []}, seed=2,
          on_point=loss_on_probe("short"), log=lambda m: None)
    long, short = seen["long"], seen["short"]
    assert [json.loads(l) for l in (tmp_path / "long" / "points.jsonl").read_text().splitlines()] == [
        {k: v for k, v in p.items() if k != "probe"} for p in long]
    branch = next(e for e in long if e.get("branch_from") == 6)
    assert branch["step"] == 8 and branch["decayed"]
    assert branch["probe"] == pytest.approx(short[-1]["probe"], rel=1e-5)
    assert long[-1]["probe"] != pytest.approx(branch["probe"], rel=1e-3)  # the trunk went on after the branch
    done = json.loads((tmp_path / "long" / "done.json").read_text())
    assert done["seconds_points_and_branches"] > 0 and done["tokens_per_second"] > 0


def test_wsd_schedule_is_constant_then_decays_to_its_floor():
    from experiments.train import lr_at

    c = {"lr": 1.0, "warmup_steps": 10, "min_lr_ratio": 0.1, "schedule": "wsd", "decay_frac": 0.2, "steps": 100}
    lrs = [lr_at(s, c) for s in range(100)]
    assert lrs[9] == 1.0 and lrs[10:80] == [1.0] * 70
    assert lrs[-1] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs[80:], lrs[81:]))
    assert lr_at(39, c, end=40) == pytest.approx(0.1) and lr_at(31, c, end=40) == 1.0


def test_speed_settings_are_measured_and_recorded(tok):
    from experiments.train import choose_speed_settings

    t, _ = tok
    info = choose_speed_settings(TINY, {"batch_size": 2, "bf16": "auto", "compile": False, "threads": 1}, t.get_vocab_size(),
                                 torch.device("cpu"), steps=1, log=lambda m: None)
    assert set(info["ms_per_step"]) == {"fp32", "bf16"} and info["compile"] is False and info["threads"] == 1
    faster = min(info["ms_per_step"], key=info["ms_per_step"].get)
    assert info["bf16"] == (faster == "bf16" and info["ms_per_step"]["bf16"] < 0.95 * info["ms_per_step"]["fp32"])
    assert "chosen by timing" in info["reason"]


def test_batches_repeat_epochs_for_a_small_subset():
    b = Batches(np.arange(1000, dtype=np.uint16), context=10, batch_size=8, seed=0)
    assert b.n_seq == 99
    assert b.epochs(100) == pytest.approx(800 / 99)
    assert torch.equal(b.get(30), Batches(np.arange(1000, dtype=np.uint16), 10, 8, 0).get(30))
    first_epoch = torch.cat([b.get(i) for i in range(13)])[:99, 0]
    assert sorted((first_epoch // 10).tolist()) == list(range(99))  # every window once per epoch


@pytest.mark.slow
def test_ablation_arms_get_equal_optimiser_steps(run, tmp_path):
    run_dir, d = run
    cfg = {"run_dir": str(run_dir), "stages": [
        {"name": "ingest", "shard_docs": 200, "inputs": [{"path": str(d / "corpus" / "web-*.jsonl.gz"), "source": "web"}]},
        {"name": "length", "kind": "filter", "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 600}}]},
    ], "experiment": {
        "out_dir": str(tmp_path / "abl"), "seeds": [0],
        "tokenizer": {"stage": "ingest", "vocab_size": 500, "sample_docs": 200},
        "eval_sets": [{"name": "held", "source": "web", "max_docs": 8}],
        "eval_max_chars": 300,
        "model": TINY, "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "checkpoint_every": 3,
                                 "warmup_steps": 1, "bf16": False, "compile": False},
        "arms": [{"name": "raw", "stage": "ingest", "tokens": 20000},
                 {"name": "clean", "stage": "length", "tokens": 3000},
                 {"name": "clean-one-epoch", "stage": "length", "tokens": 3000, "steps": "one_epoch"}],
        "compare": {"baseline": "raw", "candidate": "clean", "metric": "bpb/held"},
    }}
    from experiments.ablation import load_results, run_ablation
    from experiments.report import write_report
    from pipeline.config import load_config

    out = run_ablation(load_config(write_config(tmp_path / "abl.yaml", cfg)), log=lambda m: None)
    runs = {r["arm"]: r for r in load_results(out)}
    assert runs["raw"]["done"]["steps"] == runs["clean"]["done"]["steps"] == 6
    assert runs["raw"]["done"]["tokens_seen"] == runs["clean"]["done"]["tokens_seen"] == 6 * 4 * 32
    assert runs["clean"]["done"]["epochs"] > runs["raw"]["done"]["epochs"]
    assert runs["clean-one-epoch"]["done"]["steps"] == (3000 - 1) // 32 // 4
    assert [e["step"] for e in runs["raw"]["evals"] if "branch_from" not in e] == [3, 6]
    # WSD: a cool-down branch at 1/8, 1/4 and 1/2 of the steps, and the decayed end
    assert sorted(e["step"] for e in runs["raw"]["evals"] if e.get("decayed")) == [1, 2, 3, 6]
    # each seed draws its own subset; the final evaluation keeps per-document bits
    assert runs["raw"]["subset"]["seed"] == 0 and runs["raw"]["items"]["bpb/held/bits"].dtype == np.float32
    report = write_report(out).read_text()
    assert "**Verdict:**" in report and "Comparisons against" in report and "Contamination" in report


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_on_gpu(tok, tmp_path):
    t, _ = tok
    tokens = np.random.default_rng(0).integers(0, t.get_vocab_size(), 5000).astype(np.uint16)
    r = train(tokens, t.get_vocab_size(), tmp_path / "gpu", TINY, {"steps": 3, "batch_size": 4, "eval_every": 3,
                                                                    "checkpoint_every": 3, "warmup_steps": 1},
              seed=0, log=lambda m: None)
    assert json.loads((tmp_path / "gpu" / "done.json").read_text())["device"] == "cuda"
    assert np.isfinite(r.final_loss)


def test_domain_eval_sets_are_one_set_per_domain_and_macro_averaged(tmp_path):
    import gzip

    from experiments.data import build_eval_sets
    from experiments.tasks import BitsPerByte

    for dom, n in (("books", 5), ("email", 3)):
        with gzip.open(tmp_path / f"{dom}.jsonl.gz", "wt") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"{dom}/{i}", "domain": dom, "text": f"{dom} text number {i} " * 30}) + "\n")
    sets = build_eval_sets(tmp_path, [{"name": "domains", "kind": "domains", "path": str(tmp_path), "max_docs": 4}],
                           seed=0, exclude_ids={"books/0"})
    assert sorted(sets) == ["domains/books", "domains/email"]
    assert len(sets["domains/books"]) == 4 and "books/0" not in {d["id"] for d in sets["domains/books"]}
    assert len(sets["domains/email"]) == 3  # every document of a domain file is evaluation text
    task = BitsPerByte("bpb", {}, TaskContext(eval_sets=sets))
    assert [m.name for m in task.metrics()] == ["bpb_macro/domains", "bpb/domains/books", "bpb/domains/email"]
    items = {"domains/books/bits": np.array([10.0, 10.0]), "domains/books/bytes": np.array([10, 10]),
             "domains/email/bits": np.array([30.0]), "domains/email/bytes": np.array([10])}
    # each domain weighs the same, however many bytes it has: (1.0 + 3.0) / 2
    assert task.aggregate(items)["bpb_macro/domains"] == pytest.approx(2.0)


def test_reference_only_arm_draws_the_train_split_of_a_reference_outside_the_raw_pool(run, tok, tmp_path):
    """Wikipedia is not in the raw pool: the control reads the quality scorer's own reference file (or a given
    ``path``), its train split only, at the candidate's budget; held-out ids and short stubs never go in."""
    import gzip

    from experiments.ablation import experiment_settings
    from pipeline.config import load_config

    run_dir, d = run
    t, tok_path = tok
    ref = tmp_path / "ref" / "wiki.jsonl.gz"
    ref.parent.mkdir()
    train_docs = [d for d in RunFolder(run_dir).rows("length", ["id", "text"])]
    with gzip.open(ref, "wt", encoding="utf-8") as f:
        for i, doc in enumerate(train_docs):
            f.write(json.dumps({"page": f"w{i}", "body": doc["text"]}) + "\n")
        f.write(json.dumps({"page": "stub", "body": "too short"}) + "\n")
    stages = [{"name": "ingest", "inputs": [{"path": "x.jsonl"}]},
              {"name": "quality", "kind": "filter", "filters": [{"quality_classifier": {
                  "model_path": "m.bin", "top_fraction": 0.5,
                  "train": {"reference_path": "ref/wiki.jsonl.gz", "text_field": "body", "id_field": "page",
                            "min_chars": 100}}}]}]
    cfg = {"run_dir": str(tmp_path / "run"), "stages": stages,
           "experiment": {"arms": [{"name": "raw-large", "stage": "ingest", "tokens": 400},
                                   {"name": "clean-small", "stage": "quality", "tokens": 3000},
                                   {"kind": "reference-only"}],
                          "compare": {"baseline": "raw-large", "candidate": "clean-small"}}}
    arm = experiment_settings(load_config(write_config(tmp_path / "c.yaml", cfg)))["arms"][2]
    assert arm["tokens"] == 3000 and "sources" not in arm
    assert arm["reference"] == {"path": str(ref.resolve()), "text_field": "body", "id_field": "page",
                                "min_chars": 100}
    # an explicit `path` (relative to the config) wins over the scorer's reference
    cfg["experiment"]["arms"][2] = {"kind": "reference-only", "path": "ref/wiki.jsonl.gz", "text_field": "body",
                                    "id_field": "page"}
    explicit = experiment_settings(load_config(write_config(tmp_path / "e.yaml", cfg)))["arms"][2]["reference"]
    assert explicit["path"] == str(ref.resolve()) and explicit["min_chars"] == 0

    m = build_subset(run_dir, "ingest", 10**9, t, tok_path, tmp_path / "all", seed=0, reference=arm["reference"])
    ids = (tmp_path / "all" / "doc_ids.txt").read_text().split()
    expected = {f"w{i}" for i in range(len(train_docs)) if not is_held_out(f"w{i}")}
    assert set(ids) == expected and len(ids) == m["documents"] and m["exhausted"]
    assert "stub" not in ids and 0 < len(expected) < len(train_docs)  # some ids are held out
    m = build_subset(run_dir, "ingest", 3000, t, tok_path, tmp_path / "s", seed=1, reference=arm["reference"])
    assert m["tokens"] == len(load_tokens(tmp_path / "s")) == 3000
    assert m["composition_tokens"]["source"] == {"wiki": 3000} and m["reference"] == arm["reference"]
