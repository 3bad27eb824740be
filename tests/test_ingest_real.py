"""Ingest of the real raw sources: document counts must match the inputs exactly."""
from __future__ import annotations

import glob
import gzip
import json

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.check import check_run
from pipeline.shards import read_json
from tests.conftest import run_pipeline

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _lines(path) -> int:
    with gzip.open(path, "rb") as f:
        return sum(1 for _ in f)


def _warc_documents(path) -> int:
    """Count document-bearing WARC records independently of winnow's reader."""
    with open(path, "rb") as f:
        return sum(1 for r in ArchiveIterator(f, arc2warc=True) if r.rec_type in ("response", "resource", "conversion"))


def test_ingest_counts_match_inputs(tmp_path, shared):
    raw = shared / "raw"
    warcs = sorted(glob.glob(str(raw / "crawl-fixtures" / "**" / "*.warc.gz"), recursive=True))
    assert warcs, "no WARC fixtures found"
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "workers": 2,
        "stages": [{
            "name": "ingest",
            "inputs": [
                {"path": str(raw / "usenet-20news.jsonl.gz"), "source": "usenet"},
                {"path": str(raw / "webpages-html.jsonl.gz"), "source": "web", "html_field": "html"},
                {"path": str(raw / "crawl-fixtures" / "**" / "*.warc.gz"), "source": "cc"},
            ],
        }],
    }
    run = run_pipeline(cfg, tmp_path)
    m = read_json(run / "ingest" / "manifest.json")
    by_source: dict[str, int] = {}
    for sh in m["shards"]:
        for part in ("kept", "removed"):
            t = pq.read_table(run / "ingest" / sh[part]["path"], columns=["source"])
            for s in t.column("source").to_pylist():
                by_source[s] = by_source.get(s, 0) + 1
    assert by_source["usenet"] == 18_846 == _lines(raw / "usenet-20news.jsonl.gz")
    assert by_source["web"] == 1_513 == _lines(raw / "webpages-html.jsonl.gz")
    assert by_source["cc"] == sum(_warc_documents(w) for w in warcs)
    assert m["totals"]["rows_in"] == sum(by_source.values())
    assert check_run(run) == []

    # HTML went through extraction: kept web text has no tags, and records the extractor
    kept_web = [r for sh in m["shards"] for r in pq.read_table(run / "ingest" / sh["kept"]["path"]).to_pylist()
                if r["source"] == "web"]
    assert len(kept_web) > 1400
    # (a few pages legitimately quote HTML inside code blocks, so test the share, not every page)
    with_markup = sum(("<div" in r["text"] or "<script" in r["text"]) for r in kept_web)
    assert with_markup / len(kept_web) < 0.02
    meta = json.loads(kept_web[0]["metadata"])
    assert meta["extractor"] == "resiliparse" and meta["extractor_version"] and kept_web[0]["input_file"] == "webpages-html.jsonl.gz"

    # WARC documents carry their URL; non-document records are counted, not dropped silently
    stats = read_json(run / "ingest" / "stats.json")
    assert stats["counters"]["warc_records_skipped:request"] > 0
    cc = [r for sh in m["shards"] for r in pq.read_table(run / "ingest" / sh["kept"]["path"]).to_pylist()
          if r["source"] == "cc"]
    assert cc and all(json.loads(r["metadata"])["url"].startswith("http") for r in cc)
