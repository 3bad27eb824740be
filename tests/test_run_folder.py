"""The run folder's owner (pipeline/rundir.py): our own leftovers never block a resume, a full disk
resumes to the same bytes, one process at a time, and --force never deletes a folder that is not ours.

Issue 25 items 9 (temp files of a dead writer; a full disk), 10 (a run lock) and 21 (--force).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.synthetic_web import write_corpus
from pipeline import shards
from pipeline.check import check_run
from pipeline.config import load_config
from pipeline.errors import EXIT_INPUT
from pipeline.rundir import RunFolder, RunFolderError, RunInUse, StageFolder
from pipeline.runner import Runner
from pipeline.shards import atomic_write_bytes, is_temp_file_name, temp_name
from tests.conftest import ROOT, result_bytes, write_config

STAGES = ("ingest", "exact_dedup", "length")
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d, n_docs=300, seed=7)
    return d


def _cfg(run_dir: Path, corpus: Path, min_chars: int = 300) -> dict:
    return {"run_dir": str(run_dir), "workers": 1, "stages": [
        {"name": "ingest", "shard_docs": 100, "inputs": [{"path": str(corpus / "web-*.jsonl.gz"), "url_field": "url"}]},
        {"name": "exact_dedup", "kind": "exact_dedup"},
        {"name": "length", "kind": "filter",
         "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": min_chars}}]},
    ]}


def _run(cfg: dict, tmp: Path, force: bool = False) -> list[str]:
    logs: list[str] = []
    Runner(load_config(write_config(tmp / "config.yaml", cfg)), force=force, progress=False, log=logs.append).run()
    return logs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Path:
    tmp = tmp_path_factory.mktemp("ref")
    _run(_cfg(tmp / "run", corpus), tmp)
    return tmp / "run"


def _copy(reference: Path, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(reference, run)
    return run


# ---------------------------------------------------------------------------
# item 9: temporary files of a dead writer


def test_temp_names_are_recognisable_and_nothing_a_user_would_pick():
    assert is_temp_file_name(temp_name(Path("kept/part-00000-00000.parquet")).name)
    for name in ("notes.tmp", "part.parquet.tmp-mine", "x.tmp-12-ABCDEF12", "x.tmp-12-abcdef1", "draft.tmp-1"):
        assert not is_temp_file_name(name), name


def test_a_failed_atomic_write_removes_its_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new" * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"] and target.read_bytes() == b"old"


def test_temp_files_left_by_a_killed_writer_do_not_block_the_resume(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    # as if killed mid-stage: no manifest, one shard unfinished, its writer's temp files left behind
    (run / "length" / "manifest.json").unlink()
    (run / "length" / "_done" / "part-00001-00000.json").unlink()
    left = [run / "length" / "kept" / "part-00001-00000.parquet.tmp-7721-0123abcd",
            run / "length" / "_done" / "part-00001-00000.json.tmp-7721-89abcdef",
            run / "length" / "scores" / "part-00002-00000.parquet.tmp-7722-deadbeef",
            run / "pipeline.json.tmp-7720-feedf00d"]
    for p in left:
        p.write_bytes(b"torn")
    logs = _run(_cfg(run, corpus), tmp_path)  # no --force
    assert any("[length] resuming: 3 of 4 shards already finished" in m for m in logs), logs
    assert not any(p.exists() for p in left)
    assert result_bytes(run) == result_bytes(reference) and check_run(run) == []


def test_a_user_file_that_only_looks_temporary_is_still_foreign(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    mine = run / "length" / "kept" / "draft.tmp-notes"
    mine.write_text("mine")
    with pytest.raises(RunFolderError, match="holds files winnow did not write"):
        _run(_cfg(run, corpus, min_chars=400), tmp_path)
    assert mine.read_text() == "mine"


class _DiskFull:
    """Every write after the first ``after`` fails with ENOSPC, as on a full disk (the fsync is where it shows)."""

    def __init__(self, after: int):
        self.after, self.calls = after, 0
        self.real = os.fsync

    def __call__(self, fd):
        self.calls += 1
        if self.calls > self.after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd)


@pytest.mark.parametrize("after", [2, 9, 17, 24])
def test_a_disk_full_run_resumes_to_the_same_bytes_once_space_returns(reference, corpus, tmp_path, monkeypatch,
                                                                      after):
    run = tmp_path / "run"
    full = _DiskFull(after)
    monkeypatch.setattr(shards.os, "fsync", full)
    with pytest.raises(RunFolderError, match=r"^no space left for the run folder .*free space and rerun to resume"):
        _run(_cfg(run, corpus), tmp_path)
    assert full.calls > after
    assert not [p for p in run.rglob("*") if is_temp_file_name(p.name)]  # nothing torn left behind
    monkeypatch.setattr(shards.os, "fsync", full.real)  # space is back
    _run(_cfg(run, corpus), tmp_path)  # no --force
    assert result_bytes(run) == result_bytes(reference) and check_run(run) == []


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d"],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_run_on_a_full_tmpfs_resumes_after_it_grows(reference, corpus, tmp_path):
    """The real thing: run_dir on a 300 KB tmpfs (ENOSPC mid-run), remounted at 64 MB, rerun without --force."""
    if not _can_mount_tmpfs():
        pytest.skip("needs root and mount namespaces to mount a tmpfs")
    run, out = tmp_path / "run", tmp_path / "copy"
    run.mkdir()
    cfg = write_config(tmp_path / "c.yaml", _cfg(run, corpus))
    winnow = f"{sys.executable} -m experiments.cli run --no-progress {cfg}"
    script = (f"mount -t tmpfs -o size=300k tmpfs {run} && cd {ROOT} && "
              f"{{ {winnow} 2> {tmp_path}/first.err; echo $? > {tmp_path}/first.rc; }} && "
              f"mount -o remount,size=64m {run} && {winnow} 2> {tmp_path}/second.err; "
              f"echo $? > {tmp_path}/second.rc; cp -a {run} {out}")
    subprocess.run(["unshare", "-m", "sh", "-c", script], env=ENV, timeout=600, check=True)
    first = (tmp_path / "first.err").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == str(EXIT_INPUT), first
    assert "no space left for the run folder" in first.strip().splitlines()[-1] and "Traceback" not in first
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    assert result_bytes(out) == result_bytes(reference) and check_run(out) == []


# ---------------------------------------------------------------------------
# item 10: one process per run folder


_HOLD = """
import sys, time
from pipeline.rundir import RunFolder
with RunFolder(sys.argv[1]).lock("winnow run other.yaml"):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_other_process(reference, corpus, tmp_path, capsys):
    run = _copy(reference, tmp_path)
    path = write_config(tmp_path / "c.yaml", _cfg(run, corpus, min_chars=400))
    before = result_bytes(run)
    holder = _hold_lock(run)
    try:
        assert RunFolder(run).lock_holder()["pid"] == holder.pid
        assert main(["run", str(path), "--no-progress"]) == EXIT_INPUT
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert err.startswith(f"winnow: error: run_dir {run} is in use by another winnow process (pid {holder.pid}")
        assert "winnow run other.yaml" in err
        assert result_bytes(run) == before  # nothing written, nothing deleted
        assert any("is running in this folder now" in p for p in check_run(run))
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL, no clean-up): its lock file is left, and does not block
    assert (run / ".winnow.lock").exists() and RunFolder(run).lock_holder() is None
    assert main(["run", str(path), "--no-progress"]) == 0
    assert not (run / ".winnow.lock").exists()  # a finished run leaves no lock file
    assert check_run(run) == []


def test_the_lock_is_reentrant_in_one_process_and_released(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        with folder.lock():  # the ablation runs the pipeline while it holds the folder
            assert folder.lock_holder()["pid"] == os.getpid()
        assert folder.lock_holder()["pid"] == os.getpid()
    assert folder.lock_holder() is None and not folder.lock_path.exists()


@pytest.mark.slow
def test_two_concurrent_runs_one_wins_one_is_refused(corpus, tmp_path):
    run = tmp_path / "run"
    path = write_config(tmp_path / "c.yaml", _cfg(run, corpus))
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", "--no-progress", str(path)], env=ENV,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, EXIT_INPUT], results
    refused = next(err for rc, err in results if rc == EXIT_INPUT).strip()
    assert "is in use by another winnow process (pid" in refused and "Traceback" not in refused
    assert check_run(run) == []


# ---------------------------------------------------------------------------
# item 21: --force deletes only what is recognisably winnow's


def test_force_refuses_to_delete_a_user_folder_named_like_a_stage(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    shutil.rmtree(run / "length")
    (run / "length" / "drafts").mkdir(parents=True)
    (run / "length" / "drafts" / "paper.tex").write_text("my thesis")
    with pytest.raises(RunFolderError, match=r"refusing to delete .*length with --force: .*not look like a winnow"):
        _run(_cfg(run, corpus), tmp_path, force=True)
    assert (run / "length" / "drafts" / "paper.tex").read_text() == "my thesis"
    # without --force it is refused as foreign, and still kept
    with pytest.raises(RunFolderError, match="holds files winnow did not write"):
        _run(_cfg(run, corpus), tmp_path)
    assert (run / "length" / "drafts" / "paper.tex").read_text() == "my thesis"


def test_force_on_a_folder_that_is_not_a_run_deletes_nothing_of_the_users(corpus, tmp_path):
    run = tmp_path / "run"
    (run / "exact_dedup").mkdir(parents=True)
    (run / "exact_dedup" / "results.csv").write_text("a,b\n")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="refusing to delete"):
        _run(_cfg(run, corpus), tmp_path, force=True)
    assert (run / "exact_dedup" / "results.csv").read_text() == "a,b\n" and (run / "notes.txt").exists()


def test_force_still_redoes_a_winnow_stage_folder(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    logs = _run(_cfg(run, corpus), tmp_path, force=True)
    assert sum("--force: deleting" in m for m in logs) == 3
    assert result_bytes(run) == result_bytes(reference) and check_run(run) == []


# ---------------------------------------------------------------------------
# the StageFolder is the one reader and writer of a stage's files


def test_stage_folder_reads_what_the_runner_wrote(reference):
    folder = StageFolder(reference, "length")
    m = folder.manifest()
    assert folder.is_finished() and m["stage"] == "length"
    shard = m["shards"][0]["name"]
    assert folder.valid_marker(shard, m["fingerprint"])["shard"] == shard
    assert folder.valid_marker(shard, "0" * 16) is None  # another fingerprint: not trusted
    assert folder.shard_files("kept") == [folder.part_path("kept", sh["name"]) for sh in m["shards"]]
    assert folder.foreign_files() == [] and folder.looks_like_winnow()
    assert RunFolder(reference).stage_names() == list(STAGES)
    assert not StageFolder(reference, "nonexistent").looks_like_winnow()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        StageFolder(reference, "nonexistent").manifest()


def test_a_marker_naming_a_damaged_file_is_not_trusted(reference, tmp_path):
    run = _copy(reference, tmp_path)
    folder = StageFolder(run, "exact_dedup")
    m = folder.manifest()
    shard = m["shards"][0]["name"]
    marker = folder.read_marker(shard)
    folder.part_path("removed", shard).write_bytes(b"x" * marker["removed"]["bytes"])  # same size, other bytes
    assert folder.valid_marker(shard, m["fingerprint"]) is None
    folder.marker_path(shard).write_text(json.dumps({**marker, "kept": "not a file record"}))
    assert folder.valid_marker(shard, m["fingerprint"]) is None


def test_a_stage_cache_file_is_ours_and_survives_a_rerun(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    cache = StageFolder(run, "length").cache_path("hashes.json")
    cache.parent.mkdir()
    cache.write_text("{}")
    _run(_cfg(run, corpus, min_chars=400), tmp_path)  # re-decides the stage: not foreign, not stale
    assert cache.read_text() == "{}" and check_run(run) == []
    with pytest.raises(ValueError, match="not a plain file name"):
        StageFolder(run, "length").cache_path("../escape.json")
