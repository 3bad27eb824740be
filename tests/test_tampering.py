"""Files of a finished run edited behind winnow's back (issue 25 items 6 and 18): a resume notices and
repairs, `winnow check` says what is wrong, and the result is the same bytes as an untouched run.
Also what each run leaves for later readers: its log, and provenance in pipeline.json and manifests.

One small reference run (ingest in four shards, exact dedup with a plan, a filter stage); each test
damages a copy. Seconds each.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experiments.cli import main
from pipeline.check import check_run
from pipeline.provenance import git_state
from pipeline.rundir import RunFolder
from tests.conftest import result_bytes, write_config


def _config(run_dir: Path, src: Path) -> dict:
    return {"run_dir": str(run_dir),
            "stages": [{"name": "ingest", "shard_docs": 10, "inputs": [{"path": str(src)}]},
                       {"name": "exact_dedup", "kind": "exact_dedup"},
                       {"name": "q", "kind": "filter", "filters": ["gopher_quality"]}]}


def _corpus(tmp: Path) -> Path:
    """40 documents, 7 distinct texts: exact dedup removes 33, Gopher removes the shortest survivor."""
    src = tmp / "d.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": "The cat is one of the animals that we have and it "
                                       "is good. " * (i % 7 + 3)}) + "\n" for i in range(40)))
    return src


def _run(cfg_path: Path, *extra: str) -> int:
    return main(["run", str(cfg_path), "--no-progress", *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tamper-ref")
    cfg = write_config(tmp / "c.yaml", _config(tmp / "run", _corpus(tmp)))
    assert _run(cfg) == 0
    return tmp / "run"


@pytest.fixture
def copy(reference, tmp_path):
    """A copy of the reference run with its own config (same inputs), ready to damage."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    cfg = write_config(tmp_path / "c.yaml", _config(run, reference.parent / "d.jsonl"))
    return run, cfg


def _shard(run: Path, stage: str, part: str, k: int = 0) -> Path:
    return run / stage / part / f"part-00000-{k:05d}.parquet"


# ---------------------------------------------------------------------------
# item 6: plan files are checked against the checksums their marker records


def test_rows_appended_to_a_plan_file_are_noticed_by_check_and_resume(reference, copy, capsys):
    """The issue's reproducer: 5 rows appended to a decisions file, that shard's kept file deleted."""
    run, cfg = copy
    plan = run / "exact_dedup" / "plan" / "decisions" / "part-00000-00000.parquet"
    t = pq.read_table(plan)
    extra = pa.table({"row": pa.array([0, 1, 2, 3, 4], pa.int64()), "reason": ["exact_dedup:duplicate"] * 5,
                      "duplicate_of": ["d9"] * 5, "similarity": [1.0] * 5}).cast(t.schema)
    pq.write_table(pa.concat_tables([t, extra]), plan)
    _shard(run, "exact_dedup", "kept").unlink()
    problems = check_run(run)
    assert any(p.startswith("exact_dedup/plan: cannot be trusted (plan file decisions/part-00000-00000.parquet")
               for p in problems), problems
    assert _run(cfg) == 0
    assert "the plan cannot be trusted" in capsys.readouterr().err
    assert result_bytes(run) == result_bytes(reference)  # not 5 more documents removed
    assert check_run(run) == []


@pytest.mark.parametrize("damage", ["truncate", "same_size", "add_file", "delete_file"])
def test_a_damaged_plan_is_planned_again(reference, copy, damage, capsys):
    run, cfg = copy
    plan_dir = run / "exact_dedup" / "plan"
    f = plan_dir / "decisions" / "part-00000-00001.parquet"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "same_size":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "add_file":
        (plan_dir / "decisions" / "part-00000-00009.parquet").write_bytes(f.read_bytes())
    else:
        f.unlink()
    assert any(p.startswith("exact_dedup/plan: cannot be trusted") for p in check_run(run))
    assert check_run(run, deep=False) != [] or damage == "same_size"  # --quick compares sizes only
    if damage == "same_size":  # an up-to-date stage is trusted by size; delete a kept file to make it resume
        _shard(run, "exact_dedup", "kept", 1).unlink()
    assert _run(cfg) == 0
    assert result_bytes(run) == result_bytes(reference)
    assert check_run(run) == []


def test_a_plan_marker_without_checksums_is_planned_again(reference, copy):
    """A plan made by an older winnow (no checksums) is not trusted on resume, but `check` does not fail it."""
    run, cfg = copy
    marker = RunFolder(run).stage("exact_dedup").plan_marker_path
    m = json.loads(marker.read_text())
    del m["files"]
    marker.write_text(json.dumps(m))
    assert check_run(run) == []
    _shard(run, "exact_dedup", "kept", 2).unlink()
    assert _run(cfg) == 0
    assert "files" in json.loads(marker.read_text())
    assert result_bytes(run) == result_bytes(reference)


# ---------------------------------------------------------------------------
# item 18: tampered manifests, stats and pipeline.json: one line or a repair, never a traceback


@pytest.mark.parametrize("content", ["[]", '{"shards": "x"}', '{"shards": [{"name": 5}]}', "{not json",
                                     '{"stage": "exact_dedup", "shards": [], "totals": "x"}'])
def test_a_tampered_manifest_is_rebuilt_from_verified_shards(reference, copy, content, capsys):
    run, cfg = copy
    (run / "exact_dedup" / "manifest.json").write_text(content)
    problems = check_run(run)
    assert problems and problems[0].startswith("exact_dedup/manifest.json: ")
    assert _run(cfg) == 0
    err = capsys.readouterr().err
    assert "[exact_dedup] manifest.json is unreadable or damaged" in err and "Traceback" not in err
    assert result_bytes(run) == result_bytes(reference)
    assert check_run(run) == []


@pytest.mark.parametrize("content", ["garbage", "[1]", '{"stage": "q"}', None])
def test_a_garbage_stats_file_is_named_by_check_and_rebuilt_by_run(reference, copy, content, capsys):
    run, cfg = copy
    stats = run / "q" / "stats.json"
    if content is None:  # well-formed, but counts something else
        st = json.loads(stats.read_text())
        st["kept"] += 1
        content = json.dumps(st)
    stats.write_text(content)
    assert check_run(run) == ["q/stats.json: damaged or does not count what the manifest lists; `winnow run` "
                              "rebuilds it"]
    assert main(["inspect", str(run)]) in (0, 4)  # a damaged file is one line, never a traceback
    assert "Traceback" not in capsys.readouterr().err
    assert _run(cfg) == 0
    assert "[q] stats.json is damaged or does not match the manifest; rebuilding it" in capsys.readouterr().err
    assert check_run(run) == []
    assert json.loads(stats.read_text())["kept"] == json.loads((reference / "q" / "stats.json").read_text())["kept"]


@pytest.mark.parametrize("content", ['{"stages": 5}', "[]", "{not json", '{"stages": [{"name": "../x"}]}'])
def test_a_tampered_pipeline_json_is_named_by_check_and_rewritten_by_run(reference, copy, content):
    run, cfg = copy
    (run / "pipeline.json").write_text(content)
    assert check_run(run)[0].startswith("pipeline.json")
    assert _run(cfg) == 0
    assert check_run(run) == []
    assert result_bytes(run) == result_bytes(reference)


# ---------------------------------------------------------------------------
# provenance and the run log


def test_pipeline_json_and_every_manifest_record_provenance(reference):
    run = RunFolder(reference)
    rec = run.pipeline()["provenance"]
    assert rec["winnow"]["commit"] == git_state()["commit"] and rec["packages"]["pyarrow"] == pa.__version__
    assert rec["host"] and rec["date"] and rec["config_file"]["path"].endswith("c.yaml")
    assert len(rec["config_file"]["sha256"]) == 64
    for name in run.stage_names():
        m = run.manifest(name)["provenance"]
        assert m["winnow"]["version"] and m["date"] and "torch" in m["packages"]


def test_an_up_to_date_run_rewrites_neither_pipeline_json_nor_the_log(copy):
    run, cfg = copy
    assert _run(cfg) == 0  # the copy's config names another run_dir: pipeline.json is rewritten once
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert _run(cfg) == 0
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_each_run_that_changes_the_folder_appends_to_its_log(copy, monkeypatch):
    run, cfg = copy
    log = RunFolder(run).log_path
    first = log.read_text().splitlines()
    assert "====" in first[0] and "winnow 0.1" in first[0]
    assert any("[exact_dedup] 40 in -> 7 kept" in line for line in first) and first[-1].endswith(" finished")
    # a threshold change re-decides q: a second header, its lines, how it ended
    raw = json.loads(json.dumps(_config(run, Path(json.loads((run / "pipeline.json").read_text())["config"]["stages"]
                                                       [0]["inputs"][0]["path"]))))
    raw["stages"][2]["filters"] = [{"gopher_quality": {"min_words": 60}}]
    write_config(cfg, raw)
    assert _run(cfg) == 0
    lines = log.read_text().splitlines()
    assert lines[: len(first)] == first and sum("====" in line for line in lines) == 2
    assert any("[q] " in line and "kept" in line for line in lines[len(first):])
    # a run that fails says so in the log too
    raw["stages"][2]["filters"] = [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 10}}]
    write_config(cfg, raw)
    import tests.data.slow_filter as slow

    monkeypatch.setattr(slow.SlowLengthFilter, "score_batch", lambda self, docs: 1 / 0)
    assert _run(cfg) == 5
    assert log.read_text().splitlines()[-1].split(" ", 1)[1].startswith("failed: TaskError: q: task ")
