"""The filters against the synthetic web's ground truth: what `make demo` prints, asserted."""
from __future__ import annotations

import pytest

from experiments.filter_truth import dedup_precision_recall, precision_recall
from experiments.synthetic_web import write_corpus
from tests.conftest import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("truth")
    write_corpus(d / "corpus", n_docs=1200, seed=5)
    cfg = {"run_dir": str(d / "run"), "workers": 1, "stages": [
        {"name": "ingest", "shard_docs": 400, "inputs": [{"path": str(d / "corpus" / "web-*.jsonl.gz"), "url_field": "url"}]},
        {"name": "exact_dedup", "kind": "exact_dedup"},
        {"name": "minhash_dedup", "kind": "minhash_dedup"},
        {"name": "langid", "kind": "filter", "filters": ["langid"]},
        {"name": "quality", "kind": "filter", "filters": ["c4", "gopher_repetition", "gopher_quality", "fineweb"]},
    ]}
    return run_pipeline(cfg, d)


def test_filters_catch_what_they_are_meant_to(demo_run):
    rows = {(r["filter"], r["rule"]): r for r in precision_recall(demo_run)}
    lang = rows[("langid", "langid:language")]
    assert lang["recall"] == 1.0 and lang["precision"] > 0.9          # every foreign document, few others
    assert rows[("langid", None)]["junk_precision"] == 1.0              # langid removes no clean prose
    gq = rows[("gopher_quality", None)]
    assert gq["recall"] > 0.95 and gq["junk_precision"] > 0.95
    rep = rows[("gopher_repetition", "gopher_repetition:dup_line_frac")]
    assert rep["precision"] == 1.0 and rep["removed_kinds"].get("repeated_lines", 0) > 0


def test_dedup_finds_the_planted_duplicates(demo_run):
    dd = {r["stage"]: r for r in dedup_precision_recall(demo_run)}
    assert dd["exact_dedup"]["recall"] == 1.0 and dd["exact_dedup"]["precision"] > 0.97
    assert dd["minhash_dedup"]["precision"] == 1.0 and dd["minhash_dedup"]["recall"] > 0.7
