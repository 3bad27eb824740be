"""Core behaviour on the embedded synthetic corpus: determinism, workers, config safety, inspect."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from experiments.synthetic_web import write_corpus
from experiments.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.shards import read_json
from tests.conftest import comparable_bytes, run_pipeline, write_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d, n_docs=600, seed=3)
    return d


def _cfg(run_dir, corpus, workers=1):
    return {"run_dir": str(run_dir), "workers": workers, "stages": [
        {"name": "ingest", "shard_docs": 100, "inputs": [{"path": str(corpus / "web-*.jsonl.gz"), "url_field": "url"}]},
        {"name": "length", "kind": "filter", "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 300}}]},
    ]}


def _shard_bytes(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.parquet"))} | {
        str(p.relative_to(run)): comparable_bytes(p) for p in sorted(run.rglob("manifest.json"))}


@pytest.mark.slow
def test_same_bytes_with_one_and_two_workers(tmp_path, corpus):
    a = run_pipeline(_cfg(tmp_path / "a", corpus, 1), tmp_path, "a.yaml")
    b = run_pipeline(_cfg(tmp_path / "b", corpus, 2), tmp_path, "b.yaml")
    assert _shard_bytes(a) == _shard_bytes(b)
    st = read_json(a / "length" / "stats.json")
    assert st["docs_in"] == 600 and st["kept"] + st["removed"] == 600
    assert set(st["removed_by_reason"]) == {"slow_length:too_short"}


def test_rerun_skips_finished_stages_and_threshold_change_reuses_scores(tmp_path, corpus):
    cfg = _cfg(tmp_path / "r", corpus)
    run = run_pipeline(cfg, tmp_path)
    scores_before = {p: p.stat().st_mtime_ns for p in (run / "length" / "scores").glob("*.parquet")}
    logs = []
    from pipeline.config import load_config as lc
    from pipeline.runner import Runner

    Runner(lc(write_config(tmp_path / "config.yaml", cfg)), progress=False, log=logs.append).run()
    assert any("up to date" in l for l in logs)
    # a new threshold: re-decided from cached scores (score files untouched), different removals
    cfg["stages"][1]["filters"] = [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 2000}}]
    Runner(lc(write_config(tmp_path / "config.yaml", cfg)), progress=False, log=logs.append).run()
    scores_after = {p: p.stat().st_mtime_ns for p in (run / "length" / "scores").glob("*.parquet")}
    assert scores_after == scores_before
    assert read_json(run / "length" / "stats.json")["removed"] > 0


def test_select_refuses_when_scores_are_stale(tmp_path, corpus, capsys):
    cfg = _cfg(tmp_path / "s", corpus)
    cfg_path = write_config(tmp_path / "s.yaml", cfg)
    assert main(["run", str(cfg_path), "--no-progress"]) == 0
    cfg["stages"][0]["shard_docs"] = 50  # upstream change: the filter's cached scores no longer apply
    write_config(cfg_path, cfg)
    assert main(["run", str(cfg_path), "--stage", "ingest", "--no-progress"]) == 0
    assert main(["select", str(cfg_path), "--stage", "length", "--no-progress"]) == 4  # input: the run folder lacks current scores
    assert "never re-scores" in capsys.readouterr().err


def test_kept_shards_load_with_datasets_and_pandas(tmp_path, corpus):
    run = run_pipeline(_cfg(tmp_path / "d", corpus), tmp_path)
    import datasets

    files = sorted(str(p) for p in (run / "length" / "kept").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.num_rows == read_json(run / "length" / "stats.json")["kept"]
    assert {"id", "text", "source", "metadata", "slow_chars"} <= set(ds.column_names)
    removed = pq.read_table(sorted((run / "length" / "removed").glob("*.parquet"))[0]).to_pandas()
    assert {"reason", "stage", "detail"} <= set(removed.columns)
    assert (removed["stage"] == "length").all()


def test_inspect_prints_funnel_and_samples(tmp_path, corpus, capsys):
    run = run_pipeline(_cfg(tmp_path / "i", corpus), tmp_path)
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "ingest" in out and "length" in out and "slow_length:too_short" in out
    assert main(["inspect", str(run), "--stage", "length", "--removed", "--reason", "slow_length", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("removed: slow_length:too_short") == 2


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("run_dir: !!python/object/apply:os.system ['echo pwned']\nstages: [ingest]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


@pytest.mark.parametrize("text,match", [
    ("stages: []", "non-empty"),
    ("stages: [{name: a, kind: filter, filters: [x]}]", "first stage"),
    ("stages: [ingest, ingest]", "unique"),
    ("stagez: [ingest]", r"unknown top-level key `stagez` \(did you mean `stages`\?\)"),
    ("stages: [{name: ingest, shard_doc: 5, inputs: [{path: x}]}]", r"stage ingest: unknown parameter `shard_doc` \(did you mean `shard_docs`\?\)"),
    ("stages: [{name: ingest, inputs: [{path: x, txt_field: body}]}]", r"inputs\[0\]: unknown parameter `txt_field` \(did you mean `text_field`\?\)"),
    ("stages: [{name: ingest, max_line_bytes: -1, inputs: [{path: x}]}]", r"`max_line_bytes` must be an integer >= 1, got -1"),
    ("stages: [{name: ingest, inputs: {path: x}}]", r"`inputs` must be a list of mappings"),
    ("stages: [{name: ingest, inputs: [x.jsonl]}]", r"`inputs` must be a list of mappings"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: minhash_dedup, threshold: 1.5}]", r"stage d: `threshold` must be a number in \(0, 1\], got 1.5"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: minhash_dedup, threshold: -0.5}]", r"stage d: `threshold` must be a number in \(0, 1\], got -0.5"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: minhash_dedup, ngram: 0}]", r"stage d: `ngram` must be an integer >= 1, got 0"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: 'os:system'}]", r"stage d: stage kind reference 'os:system': 'os' is part of Python's standard library, not a winnow plug-in"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: './x.py:Foo'}]", r"expected `package.module:Name`"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: 'no_such_mod_x:Foo'}]", r"cannot import module 'no_such_mod_x'"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: 'tests.data.readme_filter:Nope'}]", r"module 'tests.data.readme_filter' has no attribute 'Nope'"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: d, kind: minhash_dedupe}]", r"unknown stage kind 'minhash_dedupe'; did you mean minhash_dedup"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filters: [gopher_qualty]}]", r"unknown filter 'gopher_qualty'; did you mean gopher_quality"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filters: [{langid: {threshold: 7}}]}]", r"filter langid: `threshold` must be a number in \[0, 1\], got 7"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filters: [{langid: {threshold: {en: 1.5}}}]}]", r"filter langid: `threshold` must be a mapping"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filters: [{langid: {backend: lid}}]}]", r"filter langid: `backend` must be one of 'heliport', 'fasttext'"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filter: [c4]}]", r"stage q: unknown parameter `filter` \(did you mean `filters`\?\)"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filters: ['os:system']}]", r"filter reference 'os:system': 'os' is part of Python's standard library"),
    ("stages: [{name: ingest, inputs: [{path: x}]}, {name: q, kind: filter, filters: [{c4: {min_sentence: 2}}]}]", r"filter c4: unknown parameter `min_sentence` \(did you mean `min_sentences`\?\)"),
])
def test_bad_configs_get_clear_errors(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_unknown_filter_and_parameter_are_named(tmp_path, corpus, capsys):
    cfg = _cfg(tmp_path / "u", corpus)
    cfg["stages"][1]["filters"] = [{"tests.data.slow_filter:SlowLengthFilter": {"min_charz": 3}}]
    assert main(["run", str(write_config(tmp_path / "u.yaml", cfg)), "--no-progress"]) == 3  # config
    assert "min_charz" in capsys.readouterr().err


def test_demo_corpus_is_deterministic_and_carries_truth(tmp_path):
    write_corpus(tmp_path / "a", n_docs=400, seed=7)
    write_corpus(tmp_path / "b", n_docs=400, seed=7)
    for f in sorted((tmp_path / "a").glob("*.gz")):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    import gzip

    from experiments.synthetic_web import KINDS, jaccard

    docs = [json.loads(l) for f in sorted((tmp_path / "a").glob("*.gz")) for l in gzip.open(f, "rt")]
    assert len(docs) == 400
    assert {d["truth"]["kind"] for d in docs} == set(KINDS)
    by_id = {d["id"]: d for d in docs}
    near = [d for d in docs if d["truth"].get("dup_kind") == "near"]
    exact = [d for d in docs if d["truth"].get("dup_kind") == "exact"]
    assert near and exact
    for d in near:  # the recorded similarity is the true 5-gram Jaccard to the source
        assert abs(jaccard(d["text"], by_id[d["truth"]["dup_of"]]["text"]) - d["truth"]["jaccard"]) < 1e-3
    for d in exact:
        assert d["text"] == by_id[d["truth"]["dup_of"]]["text"]
