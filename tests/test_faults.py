"""Run-side faults (issue 15): nothing lost, nothing escapes the run folder, nothing hangs.

Each class of fault gets a regression test on a small synthetic-web run
(ingest -> exact_dedup -> a filter stage, a few seconds): data deleted or
altered after a run, names and folders that would make the runner write or
delete outside ``run_dir``, a folder that is not a winnow run, read-only
output, a parent killed under its workers, and config shapes that used to
give tracebacks.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.synthetic_web import write_corpus
from pipeline.check import check_run
from experiments.cli import main
from pipeline.config import ConfigError, config_from_dict, load_config
from pipeline.executors import ExecutorOptionError
from pipeline.runner import Runner, RunFolderError
from pipeline.shards import UnsafePathError, read_json, remove_inside
from tests.conftest import ROOT, result_bytes, write_config

STAGES = ("ingest", "exact_dedup", "length")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d, n_docs=400, seed=5)
    return d


def _cfg(run_dir: Path, corpus: Path, min_chars: int = 300, **extra) -> dict:
    return {"run_dir": str(run_dir), "workers": 1, **extra, "stages": [
        {"name": "ingest", "shard_docs": 100, "inputs": [{"path": str(corpus / "web-*.jsonl.gz"), "url_field": "url"}]},
        {"name": "exact_dedup", "kind": "exact_dedup"},
        {"name": "length", "kind": "filter",
         "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": min_chars}}]},
    ]}


def _run(cfg: dict, tmp: Path, force: bool = False, name: str = "config.yaml") -> list[str]:
    logs: list[str] = []
    Runner(load_config(write_config(tmp / name, cfg)), force=force, progress=False, log=logs.append).run()
    return logs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Path:
    """One finished run; tests copy it instead of re-running the pipeline."""
    tmp = tmp_path_factory.mktemp("ref")
    _run(_cfg(tmp / "run", corpus), tmp)
    return tmp / "run"


def _copy(reference: Path, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(reference, run)
    return run


# ---------------------------------------------------------------------------
# winnow check: data gone, stages missing or unfinished, the chain broken


def test_check_passes_a_finished_run(reference):
    assert check_run(reference) == []
    assert main(["check", str(reference)]) == 0


def test_check_fails_when_a_whole_stage_folder_is_deleted(reference, tmp_path, capsys):
    run = _copy(reference, tmp_path)
    shutil.rmtree(run / "exact_dedup")
    problems = check_run(run)
    assert problems == ["exact_dedup: stage folder missing (pipeline.json lists it)"]
    assert main(["check", str(run)]) == 1
    assert "exact_dedup: stage folder missing" in capsys.readouterr().err
    # --partial does not excuse a stage in the middle
    assert main(["check", "--partial", str(run)]) == 1


def test_check_fails_when_a_middle_manifest_is_missing(reference, tmp_path):
    run = _copy(reference, tmp_path)
    (run / "exact_dedup" / "manifest.json").unlink()
    problems = check_run(run)
    assert len(problems) == 1 and problems[0].startswith("exact_dedup: stage did not finish")


def test_check_fails_on_an_incomplete_run_unless_stopped_on_purpose(corpus, tmp_path):
    cfg = _cfg(tmp_path / "run", corpus)
    config = load_config(write_config(tmp_path / "c.yaml", cfg))
    Runner(config, progress=False, log=lambda m: None).run(upto="exact_dedup")
    run = tmp_path / "run"
    assert check_run(run) == ["length: stage folder missing (pipeline.json lists it)"]
    assert check_run(run, allow_unstarted=True) == []  # `winnow run --stage exact_dedup`, then check --partial
    # a stage that started (markers on disk) but has no manifest is a killed run, --partial or not
    (run / "length" / "_done").mkdir(parents=True)
    (run / "length" / "_done" / "part-00000-00000.json").write_text("{}")
    for allow in (False, True):
        problems = check_run(run, allow_unstarted=allow)
        assert len(problems) == 1 and problems[0].startswith("length: stage did not finish: no manifest.json (1 shard markers")


def test_check_fails_when_a_stage_does_not_take_the_previous_stages_kept_rows(reference, tmp_path):
    run = _copy(reference, tmp_path)
    # exact_dedup's manifest now says one more row was removed from the first shard: the stage adds up by
    # itself (in = kept + removed) but the next stage read more rows than exact_dedup says it kept
    mpath = run / "exact_dedup" / "manifest.json"
    m = read_json(mpath)
    sh = m["shards"][0]
    sh["kept"]["rows"] -= 1
    sh["removed"]["rows"] += 1
    m["totals"]["kept"] -= 1
    m["totals"]["removed"] += 1
    mpath.write_text(json.dumps(m))
    problems = check_run(run, deep=False)
    assert any(p.startswith(f"length/{sh['name']}: ") and "the previous stage kept" in p for p in problems)
    assert any(p.startswith("length: ") and "but the previous stage (exact_dedup) kept" in p for p in problems)
    assert any("rows, manifest says" in p for p in check_run(run))  # the deep check also reads the files


def test_check_flags_a_stage_computed_from_other_upstream_data(reference, tmp_path):
    run = _copy(reference, tmp_path)
    mpath = run / "length" / "manifest.json"
    m = read_json(mpath)
    m["input_fingerprint"] = "0" * 16
    mpath.write_text(json.dumps(m))
    assert check_run(run) == ["length: computed from another version of exact_dedup's output (stale; "
                              "`winnow run` redoes it)"]


# ---------------------------------------------------------------------------
# resume verifies finished shards before trusting them


@pytest.mark.parametrize("stage", STAGES)
def test_truncated_finished_shard_is_redone_and_output_is_byte_identical(reference, corpus, tmp_path, stage):
    run = _copy(reference, tmp_path)
    shard = sorted((run / stage / "kept").glob("*.parquet"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert any("checksum differs" in p for p in check_run(run, deep=False))
    logs = _run(_cfg(run, corpus), tmp_path)
    # the up-to-date fast path noticed the size, the shard-level check redid that shard only
    assert any(f"[{stage}] {shard.relative_to(run / stage)} is missing or changed size" in m for m in logs)
    if stage != "ingest":  # ingest re-reads the input file from the first shard that is not intact
        assert any(f"[{stage}] resuming: 3 of 4 shards already finished" in m for m in logs), logs
    later = STAGES[STAGES.index(stage) + 1:]
    assert all(any(f"[{s}] up to date" in m for m in logs) for s in later)  # same bytes: downstream stays valid
    assert result_bytes(run) == result_bytes(reference)
    assert check_run(run) == []


def test_same_size_alteration_is_caught_by_the_hash_on_resume(reference, corpus, tmp_path):
    """A flipped byte keeps the size; the fast path cannot see it, resume's hash and check's SHA-256 do."""
    run = _copy(reference, tmp_path)
    shard = sorted((run / "length" / "kept").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any("checksum differs from manifest (altered)" in p for p in check_run(run))
    (run / "length" / "manifest.json").unlink()  # as if killed before the stage finished
    logs = _run(_cfg(run, corpus), tmp_path)
    assert any("[length] resuming: 3 of 4 shards already finished" in m for m in logs), logs
    assert result_bytes(run) == result_bytes(reference)
    assert check_run(run) == []


def test_damaged_manifest_is_rebuilt_from_verified_shards(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    (run / "exact_dedup" / "manifest.json").write_text('{"stage": "exact_dedup", "shards": [')
    assert check_run(run)[0].startswith("exact_dedup/manifest.json: unreadable")
    logs = _run(_cfg(run, corpus), tmp_path)
    assert any("[exact_dedup] manifest.json is unreadable" in m for m in logs)
    assert any("[exact_dedup] resuming: 4 of 4 shards already finished" in m for m in logs)
    assert result_bytes(run) == result_bytes(reference) and check_run(run) == []


# ---------------------------------------------------------------------------
# nothing written or deleted outside run_dir


@pytest.mark.parametrize("name", ["../victim", "/tmp/abs", "a/b", "..", ".hidden", "", "x" * 200, "name with space"])
def test_stage_names_must_be_plain_identifiers(name, tmp_path):
    raw = {"run_dir": str(tmp_path / "run"), "stages": [
        {"name": "ingest", "inputs": [{"path": str(tmp_path / "x.jsonl")}]},
        {"name": name, "kind": "exact_dedup"}]}
    with pytest.raises(ConfigError, match=r"^stages\[1\]\.name: stage name .* is not a plain identifier"):
        config_from_dict(raw, base=tmp_path)


def test_stage_name_escaping_run_dir_is_one_line_error_and_touches_nothing(tmp_path, corpus, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    cfg = _cfg(tmp_path / "run", corpus)
    cfg["stages"][1]["name"] = "../victim"
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["run", str(path), "--force", "--no-progress"]) == 3  # config
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("winnow: error: stages[1].name:")
    assert (victim / "precious.txt").read_text() == "keep me" and not (tmp_path / "run").exists()


def test_remove_inside_refuses_paths_outside_the_run_folder(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "st").mkdir(parents=True)
    outside.mkdir()
    (outside / "f").write_text("x")
    (run / "st" / "link").symlink_to(outside, target_is_directory=True)
    for bad in (outside, run, run / "st" / ".." / ".." / "outside", run / "st" / "link" / "f"):
        with pytest.raises(UnsafePathError):
            remove_inside(run, bad)
    remove_inside(run, run / "st" / "link")  # a symlink inside is removed as a link, never followed
    assert not (run / "st" / "link").exists() and (outside / "f").exists()


def test_stage_folder_symlinked_outside_is_refused_even_with_force(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(run / "length"), elsewhere)
    (run / "length").symlink_to(elsewhere, target_is_directory=True)
    for force in (False, True):  # a new threshold (or --force) means writing and deleting there: refused
        with pytest.raises(RunFolderError, match="is not a folder inside the run folder"):
            _run(_cfg(run, corpus, min_chars=400), tmp_path, force=force)
    assert (elsewhere / "manifest.json").exists() and (elsewhere / "kept").is_dir()


# ---------------------------------------------------------------------------
# a folder that is not a winnow run; files winnow did not write


def test_refuses_a_non_empty_folder_that_is_not_a_winnow_run(corpus, tmp_path):
    run = tmp_path / "run"
    (run / "ingest" / "kept").mkdir(parents=True)
    (run / "ingest" / "kept" / "x.parquet").write_bytes(b"someone else's data")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"is not empty \(ingest, notes.txt\) and is not a winnow run"):
        _run(_cfg(run, corpus), tmp_path)
    assert (run / "ingest" / "kept" / "x.parquet").read_bytes() == b"someone else's data"
    assert not (run / "pipeline.json").exists()
    # an empty folder is fine
    shutil.rmtree(run)
    run.mkdir()
    logs = _run(_cfg(run, corpus), tmp_path)
    assert check_run(run) == [] and not any("deleted" in m for m in logs)  # a fresh run deletes nothing


@pytest.mark.parametrize("where", ["kept/x.parquet", "scores/notes.parquet", "_done/mine.json", "README.md",
                                   "kept/sub/part-00000-00000.parquet"])
def test_foreign_file_in_a_stage_folder_is_refused_not_deleted(reference, corpus, tmp_path, where):
    run = _copy(reference, tmp_path)
    foreign = run / "length" / where
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(b"not winnow's")
    # up to date: nothing is written or deleted, so nothing to refuse
    assert sum("up to date" in m for m in _run(_cfg(run, corpus), tmp_path)) == 3
    # a new threshold re-decides the stage (and would clean its folder): refused, the file stays
    shown = "/".join(where.split("/")[:2]) if where.count("/") == 2 else where
    with pytest.raises(RunFolderError, match=f"holds files winnow did not write \\(length/{shown}"):
        _run(_cfg(run, corpus, min_chars=400), tmp_path)
    assert foreign.read_bytes() == b"not winnow's"
    # --force deletes the stage folder on purpose (and says so) and redoes the stage
    logs = _run(_cfg(run, corpus, min_chars=400), tmp_path, force=True)
    assert any("--force: deleting" in m and m.endswith("length") for m in logs)
    assert not foreign.exists() and check_run(run) == []


def test_stale_shards_of_an_earlier_run_are_deleted_and_reported(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    cfg = _cfg(run, corpus)
    cfg["stages"][0]["inputs"][0]["path"] = str(corpus / "web-0[01].jsonl.gz")  # 2 of the 4 files
    logs = _run(cfg, tmp_path)
    assert any(m.startswith("[ingest] deleted ") and "files of shards a previous run wrote" in m for m in logs)
    for stage in STAGES:
        assert sorted(p.name for p in (run / stage / "kept").iterdir()) == [
            "part-00000-00000.parquet", "part-00001-00000.parquet"]
    assert check_run(run) == []


def test_a_shard_file_its_marker_names_is_winnows_whatever_its_name(reference, corpus, tmp_path):
    """Shard names other than ingest's part-N-N (another reader's) count as winnow's when a marker names them."""
    run = _copy(reference, tmp_path)
    (run / "length" / "kept" / "other-shard.parquet").write_bytes(b"stale")
    (run / "length" / "_done" / "other-shard.json").write_text(json.dumps({"shard": "other-shard",
                                                                           "fingerprint": "0" * 16}))
    logs = _run(_cfg(run, corpus, min_chars=400), tmp_path)
    assert any(m == "[length] deleted 2 files of shards a previous run wrote and this one did not" for m in logs)
    assert not (run / "length" / "kept" / "other-shard.parquet").exists() and check_run(run) == []


# ---------------------------------------------------------------------------
# read-only output


def _read_only_argv(run: Path, argv: list[str]) -> list[str] | None:
    """Run ``argv`` with ``run`` read-only: a read-only bind mount when root (root ignores modes)."""
    if os.geteuid() != 0:
        for p in [run, *run.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return argv
    if not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {run} {run} && "
                            f"mount -o remount,bind,ro {run} && ! touch {run}/probe 2>/dev/null"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", f'mount --bind {run} {run} && mount -o remount,bind,ro {run} && exec "$@"',
            "sh", *argv]


def test_read_only_run_folder(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    cfg_path = write_config(tmp_path / "c.yaml", _cfg(run, corpus))
    _run(_cfg(run, corpus), tmp_path)  # the copy's pipeline.json names the reference's run_dir: record this one
    before = {str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in run.rglob("*")}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    base = [sys.executable, "-m", "experiments.cli", "run", "--no-progress"]
    argv = _read_only_argv(run, [*base, str(cfg_path)])
    if argv is None:
        pytest.skip("cannot make a folder read-only here (root without mount namespaces)")
    try:
        # up to date: nothing to write, so it succeeds, and pipeline.json is not rewritten
        up = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr[-2000:]
        assert up.stderr.count("up to date") == 3
        # a changed threshold needs writes: one line naming the folder, no traceback
        write_config(cfg_path, _cfg(run, corpus, min_chars=500))
        changed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert changed.returncode == 4  # input: the run folder cannot be written
        last = changed.stderr.strip().splitlines()[-1]
        assert last.startswith(f"winnow: error: cannot write to the run folder {run}")
        assert "Traceback" not in changed.stderr
    finally:
        for p in [run, *run.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    after = {str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in run.rglob("*")}
    assert after == before


def test_up_to_date_run_writes_nothing(reference, corpus, tmp_path):
    run = _copy(reference, tmp_path)
    _run(_cfg(run, corpus), tmp_path)  # first rerun: pipeline.json identical already
    before = {str(p): p.stat().st_mtime_ns for p in run.rglob("*")}
    logs = _run(_cfg(run, corpus), tmp_path)
    assert sum("up to date" in m for m in logs) == 3
    assert {str(p): p.stat().st_mtime_ns for p in run.rglob("*")} == before


# ---------------------------------------------------------------------------
# killing the parent kills its workers


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
def test_workers_exit_when_the_parent_is_killed(corpus, tmp_path):
    cfg = _cfg(tmp_path / "run", corpus)
    cfg["workers"] = 2
    cfg["stages"][2]["filters"] = [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 300, "sleep": 30}}]
    path = write_config(tmp_path / "c.yaml", cfg)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", str(path), "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        t0 = time.time()
        while time.time() - t0 < 120:  # wait for the slow stage: its workers sit in a 30 s sleep
            workers = [c for c in _children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
            if (tmp_path / "run" / "length").exists() and len(workers) == 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        assert len(workers) == 2, "two workers never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived their parent"
    finally:  # never leave a worker behind, even when the test fails
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# ---------------------------------------------------------------------------
# config shapes that used to give tracebacks: one line, naming the key


@pytest.mark.parametrize("inputs, match", [
    ({"path": "data/*.jsonl"}, r"^stage ingest: `inputs` must be a list of mappings .* got dict$"),
    (["data/a.jsonl", "data/b.jsonl"], r"^stage ingest: `inputs` must be a list of mappings .* got list of strings$"),
    ("data/a.jsonl", r"^stage ingest: `inputs` must be a list of mappings .* got str$"),
    ([{"path": "a.jsonl"}, 3], r"^stage ingest: `inputs` must be a list of mappings"),
])
def test_inputs_shape_errors_name_the_key(inputs, match, tmp_path, capsys):
    raw = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "ingest", "inputs": inputs}]}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw, base=tmp_path)
    path = write_config(tmp_path / "c.yaml", raw)
    assert main(["run", str(path), "--no-progress"]) == 3  # config
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("winnow: error: stage ingest: `inputs` must be")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"])
def test_unreachable_ray_address_is_a_one_line_config_error(address, corpus, tmp_path, capsys):
    cfg = _cfg(tmp_path / "run", corpus, executor="ray", executor_options={"address": address})
    path = write_config(tmp_path / "c.yaml", cfg)
    t0 = time.time()
    assert main(["run", str(path), "--no-progress"]) == 3  # config
    assert time.time() - t0 < 15
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("winnow: error: executor_options.address: ")


def test_unknown_executor_option_is_named(corpus, tmp_path):
    cfg = _cfg(tmp_path / "run", corpus, executor="ray", executor_options={"adress": "auto"})
    with pytest.raises(ExecutorOptionError, match="executor_options: unknown key"):
        Runner(load_config(write_config(tmp_path / "c.yaml", cfg)), progress=False)


@pytest.mark.parametrize("key, value, match", [
    ("workers", "two", r"^workers: expected a whole number, got 'two'$"),
    ("run_dir", ["a", "b"], r"^run_dir: expected a folder path, got list$"),
    ("executor_options", ["auto"], r"^executor_options: expected a mapping"),
])
def test_top_level_values_of_the_wrong_type_are_named(key, value, match, tmp_path):
    raw = {"run_dir": str(tmp_path / "run"), key: value, "stages": [{"name": "ingest", "inputs": [{"path": "x"}]}]}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw, base=tmp_path)


@pytest.mark.parametrize("run_dir", ["/", "~"])
def test_run_dir_cannot_be_a_root_or_home(run_dir, tmp_path):
    raw = {"run_dir": str(Path(run_dir).expanduser()), "stages": [{"name": "ingest", "inputs": [{"path": "x"}]}]}
    with pytest.raises(ConfigError, match="^run_dir: "):
        config_from_dict(raw, base=tmp_path)
