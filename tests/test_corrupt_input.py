"""Bad input is quarantined with a reason, never lost; `winnow check` catches altered shards."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from pipeline.check import check_run
from experiments.cli import main
from pipeline.ingest.records import InputError
from pipeline.shards import read_json
from tests.conftest import run_pipeline


def _corrupt_jsonl(path):
    good = [json.dumps({"id": f"g{i}", "text": f"A perfectly fine document number {i}."}) for i in range(20)]
    lines = [
        good[0].encode(),
        good[1][: len(good[1]) // 2].encode(),                      # truncated line -> malformed
        b'{"id": "bad-utf8", "text": "caf\xe9 au lait \xff\xfe"}',   # invalid UTF-8 -> bad_encoding
        json.dumps({"id": "no-text", "body": "text is under another key"}).encode(),  # missing_text
        json.dumps({"id": "null-text", "text": None}).encode(),     # missing_text
        json.dumps({"id": "empty", "text": "   \n  "}).encode(),    # empty
        json.dumps({"id": "num", "text": 42}).encode(),              # malformed (not a string)
        b"[1, 2, 3]",                                                # malformed (not an object)
        b"",                                                         # blank line -> counted, not a row
        json.dumps({"id": "huge", "text": "x" * (50 * 1024 * 1024)}).encode(),  # 50 MB -> too_long
        json.dumps({"id": "surrogate", "text": "bad \ud800 escape"}).encode(),   # lone surrogate -> bad_encoding
        *[g.encode() for g in good[2:]],
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def test_every_corrupt_line_is_kept_or_removed_with_reason(tmp_path):
    src = tmp_path / "corrupt.jsonl"
    n_lines = _corrupt_jsonl(src)
    cfg = {"run_dir": str(tmp_path / "run"),
           "stages": [{"name": "ingest", "shard_docs": 7, "inputs": [{"path": str(src), "source": "c"}]}]}
    run = run_pipeline(cfg, tmp_path)
    m = read_json(run / "ingest" / "manifest.json")
    kept = [r for sh in m["shards"] for r in pq.read_table(run / "ingest" / sh["kept"]["path"]).to_pylist()]
    removed = [r for sh in m["shards"] for r in pq.read_table(run / "ingest" / sh["removed"]["path"]).to_pylist()]
    assert len(kept) + len(removed) == n_lines - 1  # the blank line is not a record...
    assert read_json(run / "ingest" / "stats.json")["counters"] == {"blank_lines": 1}  # ...but it is counted
    assert sorted(r["id"] for r in kept) == sorted(f"g{i}" for i in range(20) if i != 1)
    by_line = {r["input_record"]: r for r in removed}
    expect = {2: "malformed", 3: "bad_encoding", 4: "missing_text", 5: "missing_text", 6: "empty",
              7: "malformed", 8: "malformed", 10: "too_long", 11: "bad_encoding"}
    assert {k: v["reason"] for k, v in by_line.items()} == expect
    assert all(r["detail"] for r in removed)
    assert all(r["input_file"] == "corrupt.jsonl" for r in removed)
    # the 50 MB document is not copied into the removed shard, only a preview
    assert len(by_line[10]["text"]) <= 2000
    assert check_run(run) == []


def test_overlong_line_is_not_loaded(tmp_path):
    src = tmp_path / "long.jsonl.gz"
    with gzip.open(src, "wb") as f:
        f.write(json.dumps({"id": "a", "text": "short one"}).encode() + b"\n")
        f.write(b'{"id": "b", "text": "' + b"y" * (3 << 20) + b'"}\n')
        f.write(json.dumps({"id": "c", "text": "after the long one"}).encode() + b"\n")
    cfg = {"run_dir": str(tmp_path / "run"),
           "stages": [{"name": "ingest", "max_line_bytes": 1 << 20, "inputs": [{"path": str(src)}]}]}
    run = run_pipeline(cfg, tmp_path)
    stats = read_json(run / "ingest" / "stats.json")
    assert stats["kept"] == 2 and stats["removed_by_reason"]["too_long"]["docs"] == 1


def test_check_fails_after_a_shard_is_altered(tmp_path, capsys):
    src = tmp_path / "corrupt.jsonl"
    _corrupt_jsonl(src)
    cfg = {"run_dir": str(tmp_path / "run"),
           "stages": [{"name": "ingest", "shard_docs": 7, "inputs": [{"path": str(src)}]}]}
    run = run_pipeline(cfg, tmp_path)
    assert main(["check", str(run)]) == 0
    shard = sorted((run / "ingest" / "kept").glob("*.parquet"))[0]
    t = pq.read_table(shard)
    pq.write_table(t.slice(1), shard)  # drop a row and rewrite: a silent loss
    assert main(["check", str(run)]) == 1
    err = capsys.readouterr().err
    assert "checksum differs" in err
    shard.unlink()
    assert main(["check", str(run)]) == 1
    assert "missing" in capsys.readouterr().err


def test_unreadable_file_stops_with_its_name_and_keeps_finished_shards(tmp_path):
    good = tmp_path / "a-good.jsonl"
    good.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i}"}) + "\n" for i in range(10)))
    bad = tmp_path / "b-bad.jsonl.gz"
    data = gzip.compress(b"".join(json.dumps({"id": str(i), "text": f"doc {i}"}).encode() + b"\n" for i in range(5000)))
    bad.write_bytes(data[: len(data) // 2])  # truncated gzip stream
    cfg = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "ingest", "shard_docs": 1000, "inputs": [
        {"path": str(good)}, {"path": str(bad)}]}]}
    with pytest.raises(Exception) as exc:
        run_pipeline(cfg, tmp_path)
    assert "b-bad.jsonl.gz" in str(exc.value)
    assert isinstance(exc.value.__cause__, InputError) or isinstance(exc.value, InputError)
    assert (tmp_path / "run" / "ingest" / "_done" / "part-00000-00000.json").exists()
    assert (tmp_path / "run" / "ingest" / "kept" / "part-00000-00000.parquet").exists()
