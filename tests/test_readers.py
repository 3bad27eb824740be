"""Every input format reads real records: JSONL (.zst), Parquet, .txt folders, WARC, Hugging Face datasets."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.shards import read_json
from tests.conftest import run_pipeline


def _kept(run, stage="ingest"):
    m = read_json(run / stage / "manifest.json")
    return [r for sh in m["shards"] for r in pq.read_table(run / stage / sh["kept"]["path"]).to_pylist()]


def _removed(run, stage="ingest"):
    m = read_json(run / stage / "manifest.json")
    return [r for sh in m["shards"] for r in pq.read_table(run / stage / sh["removed"]["path"]).to_pylist()]


def test_jsonl_zst_parquet_and_txt_folder(tmp_path):
    rows = [{"doc_id": f"r{i}", "content": f"Document number {i} has some words.", "lang": "en"} for i in range(30)]
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    pq.write_table(pa.Table.from_pylist(rows + [{"doc_id": "nulltext", "content": None, "lang": "en"}]),
                   tmp_path / "b.parquet")
    txt = tmp_path / "txt"
    (txt / "sub").mkdir(parents=True)
    (txt / "one.txt").write_text("first text file")
    (txt / "sub" / "two.txt").write_text("second text file")
    (txt / "bad.txt").write_bytes(b"\xff\xfe not utf8 \xc3")
    cfg = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "ingest", "inputs": [
        {"path": str(zst), "text_field": "content", "id_field": "doc_id", "source": "zst"},
        {"path": str(tmp_path / "b.parquet"), "text_field": "content", "id_field": "doc_id", "source": "pq"},
        {"path": str(txt), "source": "txt"},
    ]}]}
    run = run_pipeline(cfg, tmp_path)
    kept = _kept(run)
    assert sum(r["source"] == "zst" for r in kept) == 30
    assert sum(r["source"] == "pq" for r in kept) == 30
    assert sorted(r["id"] for r in kept if r["source"] == "txt") == ["one.txt", "sub/two.txt"]
    assert json.loads(kept[0]["metadata"])["lang"] == "en"  # unmapped fields travel as metadata
    removed = {r["id"]: r["reason"] for r in _removed(run)}
    assert removed == {"nulltext": "missing_text", "bad.txt": "bad_encoding"}


def test_huggingface_datasets_offline_with_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "hfdata"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist([{"text": f"row {i} of a local dataset", "id": i} for i in range(50)]),
                   d / "train-00000.parquet")
    cfg = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "ingest", "inputs": [
        {"format": "hf", "name": str(d), "split": "train", "limit": 20, "source": "hf-local"},
        {"format": "hf", "name": "parquet", "data_files": str(d / "*.parquet"), "split": "train", "source": "hf-pq"},
    ]}]}
    run = run_pipeline(cfg, tmp_path)
    kept = _kept(run)
    assert sum(r["source"] == "hf-local" for r in kept) == 20
    assert sum(r["source"] == "hf-pq" for r in kept) == 50
    assert {r["id"] for r in kept if r["source"] == "hf-local"} == {str(i) for i in range(20)}


@pytest.mark.shared_data
def test_warc_html_extraction_and_record_types(tmp_path, shared):
    warc = shared / "raw" / "crawl-fixtures" / "resiliparse" / "warcfile.warc.gz"
    for extractor in ("resiliparse", "trafilatura"):
        run = run_pipeline({"run_dir": str(tmp_path / extractor), "stages": [
            {"name": "ingest", "extractor": extractor, "inputs": [{"path": str(warc), "source": "cc"}]}]},
            tmp_path, f"{extractor}.yaml")
        kept = _kept(run)
        assert kept, extractor
        meta = json.loads(kept[0]["metadata"])
        assert meta["extractor"] == extractor and meta["url"].startswith("http")
        assert all("<html" not in r["text"].lower()[:200] for r in kept)
