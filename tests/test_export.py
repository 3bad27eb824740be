"""`winnow export`: a stage's kept documents out for training, in every format, round-tripped."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from experiments.cli import main
from experiments.export import ExportError, ExportSettingError, ExportSettings, TokenShards, export
from pipeline.errors import InputProblem
from pipeline.rundir import RunFolder
from tests.conftest import run_pipeline

WORDS = ("river stone light paper garden window music winter letter market forest engine harbor "
         "silver morning candle bridge valley ticket orange").split()


def _doc(i: int, source: str) -> dict:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(30 + i % 17)]
    return {"id": f"{source}-{i}", "text": f"{source.title()} document {i}: " + " ".join(words) + ".\n"
            + "Ünïcode — line two, with a tab\there.", "lang": "en", "n": i}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    for source, n in (("web", 120), ("wiki", 40)):
        (tmp / f"{source}.jsonl").write_text("".join(json.dumps(_doc(i, source)) + "\n" for i in range(n)))
    cfg = {"run_dir": str(tmp / "run"), "stages": [
        {"name": "ingest", "shard_docs": 50, "inputs": [{"path": str(tmp / "web.jsonl"), "source": "web"},
                                                         {"path": str(tmp / "wiki.jsonl"), "source": "wiki"}]},
        {"name": "exact_dedup", "kind": "exact_dedup"}]}
    return run_pipeline(cfg, tmp)


def _kept(run):
    return list(RunFolder(run).rows("exact_dedup", ["id", "text", "source", "metadata"]))


def test_jsonl_export_round_trips(run, tmp_path):
    rec = export(run, "exact_dedup", tmp_path / "out", ExportSettings(format="jsonl", shard_docs=70, compress=True))
    files = sorted((tmp_path / "out").glob("part-*.jsonl.gz"))
    assert len(files) == 3 and rec["documents"] == 160
    back = [json.loads(line) for f in files for line in gzip.decompress(f.read_bytes()).decode().splitlines()]
    assert back == [{**{k: d[k] for k in ("id", "text", "source")}, "metadata": json.loads(d["metadata"])}
                    for d in _kept(run)]
    saved = json.loads((tmp_path / "out" / "export.json").read_text())
    assert saved["stage_output_fingerprint"] == RunFolder(run).manifest("exact_dedup")["output_fingerprint"]
    assert saved["provenance"]["winnow"]["version"] and all(len(f["sha256"]) == 64 for f in saved["files"])


def test_parquet_export_has_typed_metadata(run, tmp_path):
    rec = export(run, "exact_dedup", tmp_path / "out", ExportSettings(format="parquet"))
    assert rec["metadata"] == "struct"
    t = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert t.schema.field("metadata").type.get_field_index("lang") >= 0
    assert t.column("metadata").combine_chunks().field("n").to_pylist() == [json.loads(d["metadata"])["n"]
                                                                               for d in _kept(run)]


def test_hf_export_loads_with_load_from_disk(run, tmp_path, capsys):
    import datasets

    export(run, "exact_dedup", tmp_path / "hf", ExportSettings(format="hf"))
    # not a terminal: none of datasets' carriage-return progress bars in the log, and they are back on after
    assert "\r" not in capsys.readouterr().err and datasets.is_progress_bar_enabled()
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    kept = _kept(run)
    assert ds.num_rows == len(kept) and ds["id"] == [d["id"] for d in kept] and ds["text"] == [d["text"] for d in kept]
    assert ds[0]["metadata"] == json.loads(kept[0]["metadata"])


def test_token_shards_decode_back_to_the_kept_text(run, tmp_path):
    rec = export(run, "exact_dedup", tmp_path / "tok", ExportSettings(format="tokens", train_tokenizer=400,
                                                                      shard_tokens=3000))
    shards = TokenShards(tmp_path / "tok")
    kept = _kept(run)
    assert len(shards) == len(kept) and rec["tokenizer"]["dtype"] == "uint16"
    assert len(list((tmp_path / "tok").glob("tokens-*.bin"))) > 2  # split by --shard-tokens
    assert [shards.text(i) for i in range(len(shards))] == [d["text"] for d in kept]
    assert rec["tokenizer"]["roundtrip"]["checked"] == rec["tokenizer"]["roundtrip"]["equal"] > 0
    eos = rec["tokenizer"]["eos_id"]
    k, off, n = shards.index["shard"][0], shards.index["offset"][0], shards.index["length"][0]
    assert shards.shard(k)[off + n] == eos  # every document ends with the separator
    flat = np.concatenate([np.fromfile(tmp_path / "tok" / f"tokens-{j:05d}.bin", dtype=np.uint16)
                           for j in range(len(list((tmp_path / "tok").glob("tokens-*.bin"))))])
    assert len(flat) == rec["tokenizer"]["tokens"] == sum(shards.index["length"]) + len(shards)


def test_weights_and_budget_draw_a_seeded_mix(run, tmp_path):
    s = ExportSettings(format="tokens", train_tokenizer=400, weights={"web": 1, "wiki": 1}, token_budget=4000)
    rec = export(run, "exact_dedup", tmp_path / "a", s)
    mix = rec["selection"]["sources"]
    for src in ("web", "wiki"):  # each source reaches its share, overshooting by at most one document
        assert 2000 <= mix[src]["tokens"] < 2000 + 200
    again = export(run, "exact_dedup", tmp_path / "b", s)
    assert again["files"] == rec["files"]  # same seed, same bytes
    other = export(run, "exact_dedup", tmp_path / "c", ExportSettings(**{**s.__dict__, "seed": 1}))
    assert other["files"] != rec["files"]
    ids = set(TokenShards(tmp_path / "a").index["id"])
    assert ids <= {d["id"] for d in _kept(run)}


def test_a_short_source_is_reported_or_repeated(run, tmp_path):
    logs: list[str] = []
    s = ExportSettings(format="jsonl", train_tokenizer=400, weights={"web": 0.1, "wiki": 0.9}, token_budget=20_000)
    rec = export(run, "exact_dedup", tmp_path / "short", s, log=logs.append)
    assert rec["selection"]["sources"]["wiki"]["short_by_tokens"] > 0 and any("wiki" in m for m in logs)
    rep = export(run, "exact_dedup", tmp_path / "rep", ExportSettings(**{**s.__dict__, "repeat": True}))
    wiki = rep["selection"]["sources"]["wiki"]
    assert wiki["short_by_tokens"] == 0 and wiki["epochs"] > 1


def test_export_refuses_what_it_cannot_do(run, tmp_path):
    with pytest.raises(ExportSettingError, match="tokenizer"):
        export(run, "exact_dedup", tmp_path / "x", ExportSettings(format="tokens"))
    with pytest.raises(ExportSettingError, match="sources: web, wiki"):
        export(run, "exact_dedup", tmp_path / "x", ExportSettings(train_tokenizer=300, weights={"news": 1}))
    with pytest.raises(InputProblem, match=r"no stage 'quality' in .*; its stages: ingest, exact_dedup"):
        export(run, "quality", tmp_path / "x", ExportSettings())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a winnow export"):
        export(run, "exact_dedup", tmp_path / "mine", ExportSettings())
    export(run, "exact_dedup", tmp_path / "ok", ExportSettings())
    with pytest.raises(ExportError, match="--force"):
        export(run, "exact_dedup", tmp_path / "ok", ExportSettings())
    export(run, "exact_dedup", tmp_path / "ok", ExportSettings(format="parquet", force=True))
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["export.json", "part-00000.parquet"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_the_export_command(run, tmp_path, capsys):
    code = main(["export", str(run), "--stage", "exact_dedup", "--to", str(tmp_path / "cli"), "--format", "tokens",
                 "--train-tokenizer", "300", "--weights", "web=3,wiki=1", "--token-budget", "2000"])
    assert code == 0
    out = capsys.readouterr().out
    assert "exported" in out and "tokens (uint16)" in out
    with pytest.raises(SystemExit) as usage:
        main(["export", str(run), "--stage", "exact_dedup", "--to", str(tmp_path / "bad"), "--weights", "web:3"])
    assert usage.value.code == 2
    assert main(["export", str(run), "--stage", "nope", "--to", str(tmp_path / "none")]) == 4


def test_the_readmes_duckdb_queries_work_on_shards_and_exports(run, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    kept = str(run / "ingest" / "kept" / "*.parquet")  # metadata stored as Parquet JSON: the ->> operators work
    rows = duckdb.sql(f"SELECT metadata->>'lang' AS lang, count(*) AS n FROM '{kept}' GROUP BY 1").fetchall()
    assert rows == [("en", 160)]
    export(run, "exact_dedup", tmp_path / "pq", ExportSettings(format="parquet"))  # exported: a typed struct
    assert duckdb.sql(f"SELECT sum(metadata.n) FROM '{tmp_path / 'pq'}/*.parquet'").fetchall()[0][0] == \
        sum(json.loads(d["metadata"])["n"] for d in _kept(run))
