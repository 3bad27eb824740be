"""The source-stage contract: a stage yields rows; the runner names, writes, checks and resumes its shards."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.rundir import RunFolder
from pipeline.runner import Runner
from tests.conftest import write_config

KIND = "tests.data.source_stage:Numbers"


def _run(tmp_path, logs=None, **params):
    cfg = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "numbers", "kind": KIND, **params}]}
    Runner(load_config(write_config(tmp_path / "c.yaml", cfg)), progress=False,
           log=(logs.append if logs is not None else lambda m: None)).run()
    return RunFolder(tmp_path / "run")


def test_the_runner_cuts_names_and_writes_a_source_stages_rows(tmp_path):
    logs: list[str] = []
    run = _run(tmp_path, logs, count=10, shard_rows=4)
    m = run.manifest("numbers")
    assert [s["name"] for s in m["shards"]] == ["part-00000-00000", "part-00000-00001", "part-00000-00002"]
    assert [s["rows_in"] for s in m["shards"]] == [4, 4, 2]
    kept = [r["id"] for r in run.rows("numbers")]
    removed = list(run.rows("numbers", part="removed"))
    assert kept == ["n1", "n2", "n4", "n5", "n7", "n8"]
    assert [(r["id"], r["stage"], r["reason"]) for r in removed] == [
        (f"n{i}", "numbers", "multiple_of_three") for i in (0, 3, 6, 9)]
    assert run.stats("numbers")["counters"] == {"numbers_read": 1}
    assert "[numbers] asked for rows after 0" in logs


def test_a_source_task_resumes_from_its_first_unfinished_shard(tmp_path):
    run = _run(tmp_path, count=10, shard_rows=4)
    before = {p.name: p.read_bytes() for p in sorted(run.stage("numbers").shard_files("kept"))}
    folder = run.stage("numbers")
    folder.marker_path("part-00000-00002").unlink()  # as if killed while writing the last shard
    folder.source_marker_path(0).unlink(missing_ok=True)  # (finished stages keep no task markers)
    folder.manifest_path.unlink()
    logs: list[str] = []
    run = _run(tmp_path, logs, count=10, shard_rows=4)
    assert "[numbers] asked for rows after 8" in logs  # the two finished shards were not asked for again
    assert {p.name: p.read_bytes() for p in sorted(run.stage("numbers").shard_files("kept"))} == before


def test_a_failed_closing_check_leaves_the_task_unfinished(tmp_path):
    with pytest.raises(Exception, match="closing check failed"):
        _run(tmp_path, count=10, shard_rows=4, fail_finish=True)
    folder = RunFolder(tmp_path / "run").stage("numbers")
    assert folder.read_source_marker(0) is None and not folder.is_finished()
    assert pq.read_table(folder.part_path("kept", "part-00000-00000")).num_rows == 2  # finished shards stay
    logs: list[str] = []
    _run(tmp_path, logs, count=10, shard_rows=4)
    assert "[numbers] asked for rows after 10" in logs  # every shard was finished; only the check ran again
