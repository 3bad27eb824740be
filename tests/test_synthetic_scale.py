"""The large synthetic web (bench_scale's input): streamed in blocks, deterministic, duplicates across files."""
from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from experiments.synthetic_web import MIX, write_corpus, write_large_corpus

pytestmark = pytest.mark.slow


def _docs(folder):
    out = {}
    for f in sorted(folder.glob("web-*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            out[f.name] = [json.loads(line) for line in fh]
    return out


def test_large_corpus_is_deterministic_whatever_the_workers(tmp_path):
    a = write_large_corpus(tmp_path / "a", 2500, seed=4, block_docs=500, docs_per_file=1000, workers=1)
    b = write_large_corpus(tmp_path / "b", 2500, seed=4, block_docs=500, docs_per_file=1000, workers=2)
    assert a == b == {"documents": 2500, "files": 3}
    for name in ("web-00.jsonl.gz", "web-01.jsonl.gz", "web-02.jsonl.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    write_large_corpus(tmp_path / "c", 2500, seed=5, block_docs=500, docs_per_file=1000)
    assert (tmp_path / "c" / "web-00.jsonl.gz").read_bytes() != (tmp_path / "a" / "web-00.jsonl.gz").read_bytes()


def test_large_corpus_keeps_the_mix_and_copies_across_files(tmp_path):
    write_large_corpus(tmp_path, 4000, seed=0, block_docs=500, docs_per_file=1000)
    files = _docs(tmp_path)
    assert [len(d) for d in files.values()] == [1000] * 4
    docs = [d for ds in files.values() for d in ds]
    by_id = {d["id"]: d for d in docs}
    assert len(by_id) == len(docs) == 4000  # ids unique across blocks
    file_of = {d["id"]: name for name, ds in files.items() for d in ds}
    dups = [d for d in docs if "dup_of" in d["truth"]]
    assert 0.15 < len(dups) / len(docs) < 0.21  # 8% exact + 10% near, as in the demo corpus
    for d in dups:
        src = by_id[d["truth"]["dup_of"]]  # every original is in the corpus
        assert src["truth"]["kind"] == "clean" and "dup_of" not in src["truth"]
        if d["truth"]["dup_kind"] == "exact":
            assert d["text"] == src["text"]
    cross_block = [d for d in dups if d["truth"]["dup_of"][:7] != d["id"][:7]]
    assert 0.3 < len(cross_block) / len(dups) < 0.7  # about half copy the previous block
    assert any(file_of[d["truth"]["dup_of"]] != file_of[d["id"]] for d in cross_block)  # some cross files
    originals = Counter(d["truth"]["kind"] for d in docs if "dup_of" not in d["truth"])
    n_orig = sum(originals.values())
    for kind, share in MIX.items():
        assert abs(originals[kind] / n_orig - share) < 0.02, kind


def test_write_corpus_streams_above_its_threshold(tmp_path, monkeypatch):
    import experiments.synthetic_web as sw

    monkeypatch.setattr(sw, "STREAM_ABOVE", 1000)
    info = write_corpus(tmp_path, n_docs=1200, seed=2)  # `winnow demo-corpus --docs N` for large N
    assert info["documents"] == 1200
    assert sum(len(d) for d in _docs(tmp_path).values()) == 1200


def test_scale_report_compares_outputs_only_between_runs_of_the_same_code():
    """Runs of different commits may differ by design (a changed filter); only same-code runs are compared."""
    import copy
    import json
    from pathlib import Path

    from experiments.benchmarks.bench_scale import render

    rows = json.loads((Path(__file__).resolve().parents[1] / "experiments/results/scale.json").read_text())["runs"]
    base = next(r for r in rows if (r["docs"], r["executor"], r["workers"], len(r["stages"])) == (100_000, "local", 1, 5))
    same, other = copy.deepcopy(base), copy.deepcopy(base)
    same["workers"], other["executor"], other["workers"] = 2, "ray", 2
    other["commit"] = "0123456789ab"  # a different version of the code, whose outputs differ
    for st in other["stages"].values():
        st["output_sha256"] = "0" * 64
    table = render([base, same, other], "cmd")
    lines = {ln.split("|")[3].strip() + ln.split("|")[4].strip(): ln for ln in table.splitlines()
             if ln.startswith("| 100,000 | all |")}
    assert "yes (vs local:1)" in lines["local2"]
    assert lines["ray2"].rstrip().endswith("| - |")  # no run of its commit to compare with: not a false NO
    same["stages"]["quality"]["output_sha256"] = "f" * 64  # the same code giving other bytes is flagged
    assert "**NO** (vs local:1)" in render([base, same, other], "cmd")
