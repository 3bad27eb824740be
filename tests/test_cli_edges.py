"""The command line's edges (issues 23 and 25): exit codes by kind of failure, `--debug`, `--version`,
a quiet Ctrl-C, and config mistakes that used to give tracebacks or be coerced silently.

Every case is small and in-process unless it needs a real signal; the module runs in seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from experiments.cli import main
from pipeline.config import MAX_CONFIG_DEPTH, ConfigError, config_from_dict, load_config
from pipeline.errors import EXIT_CONFIG, ConfigProblem, EXIT_INPUT, EXIT_INTERNAL, EXIT_RUN, EXIT_USAGE, exit_code_for
from pipeline.provenance import git_state, provenance, version_string, without_provenance

ROOT = Path(__file__).resolve().parents[1]


def _docs(tmp_path: Path, n: int = 6) -> Path:
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Document {i} is one of the texts that we have, and it is good to read. " * (i + 1)}) + "\n"
                           for i in range(n)))
    return src


def _config(tmp_path: Path, **extra) -> dict:
    return {"run_dir": str(tmp_path / "run"),
            "stages": [{"name": "ingest", "inputs": [{"path": str(_docs(tmp_path))}]},
                       {"name": "q", "kind": "filter", "filters": ["c4"]}], **extra}


def _write(tmp_path: Path, cfg, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return p


def _one_line_error(capsys) -> str:
    """The error is one line, the last on stderr (a run logs its stages before it)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("winnow: error: "), err
    assert sum(line.startswith("winnow: ") for line in err.splitlines()) == 1, err
    return last


# ---------------------------------------------------------------------------
# exit codes: usage 2, config 3, input 4, run failure 5, internal 70


def test_a_usage_mistake_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--no-such-option", "x.yaml"])
    assert e.value.code == EXIT_USAGE


def test_a_config_mistake_exits_3(tmp_path, capsys):
    assert main(["run", str(_write(tmp_path, "stages: [\n")), "--no-progress"]) == EXIT_CONFIG
    assert "not valid YAML" in _one_line_error(capsys)
    assert main(["run", str(tmp_path / "missing.yaml")]) == EXIT_CONFIG
    assert "config file not found" in _one_line_error(capsys)


def test_a_missing_input_file_exits_4(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg["stages"][0]["inputs"] = [{"path": str(tmp_path / "nope.jsonl")}]
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == EXIT_INPUT
    assert "nope.jsonl" in _one_line_error(capsys)


def test_a_failing_plugin_exits_5_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    (tmp_path / "boom_mod.py").write_text(
        "from filters.base import Filter\n"
        "class Boom(Filter):\n"
        "    name = 'boom'\n"
        "    columns = {'x': 'float'}\n"
        "    def score(self, doc):\n"
        "        return {'x': 1 / 0}\n"
        "    def decide(self, s):\n"
        "        return True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = ["boom_mod:Boom"]
    path = _write(tmp_path, cfg)
    assert main(["run", str(path), "--no-progress"]) == EXIT_RUN
    assert "ZeroDivisionError" in _one_line_error(capsys)
    assert main(["run", str(path), "--no-progress", "--debug"]) == EXIT_RUN
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "1 / 0" in err
    assert err.strip().splitlines()[-1].startswith("winnow: error: ")


def test_an_unexpected_exception_is_an_internal_error_70(monkeypatch, capsys, tmp_path):
    import experiments.cli as cli

    monkeypatch.setattr(cli, "cmd_check", lambda args: {}["oops"])  # a bug: a bare KeyError
    assert main(["check", str(tmp_path)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error: KeyError" in err and "--debug" in err


def test_exit_code_follows_the_cause_of_a_task_failure():
    from pipeline.errors import top_level_code
    from pipeline.executors import TaskError
    from pipeline.ingest.records import InputError

    def failed_task(cause):
        try:
            try:
                raise cause
            except Exception as e:
                raise TaskError("task failed") from e
        except TaskError as e:
            return e

    def code(e):
        return top_level_code(e)

    assert code(failed_task(InputError("a.jsonl: truncated"))) == EXIT_INPUT
    assert code(failed_task(ConfigError("languages: ..."))) == EXIT_CONFIG
    assert code(failed_task(ZeroDivisionError("x"))) == EXIT_RUN
    assert code(ConfigError("x")) == EXIT_CONFIG
    assert code(FileNotFoundError("x")) == EXIT_INPUT
    assert code(OSError(28, "No space left on device")) == EXIT_RUN
    assert code(KeyError("x")) == EXIT_INTERNAL
    assert code(ValueError("arm x: no stage 'y'")) == EXIT_CONFIG and exit_code_for(ValueError("x")) == EXIT_INTERNAL


# ---------------------------------------------------------------------------
# --version and provenance


def test_version_names_the_package_and_the_commit(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == version_string() and out.startswith("winnow ")
    g = git_state()
    if g["commit"]:
        real = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert g["commit"] == real.strip() and g["commit"][:12] in out


def test_provenance_records_code_packages_host_and_date():
    rec = provenance()
    assert rec["winnow"]["version"] and "commit" in rec["winnow"] and "dirty" in rec["winnow"]
    assert {"pyarrow", "numpy", "torch"} <= set(rec["packages"])
    assert rec["host"] and rec["cpu"] and rec["date"].endswith("+00:00")
    assert without_provenance({"a": 1, "provenance": rec}) == {"a": 1}


def test_config_record_keeps_the_path_as_given_and_hashes_the_bytes(tmp_path, monkeypatch):
    import hashlib

    from pipeline.provenance import config_record

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("seed: 1\n")
    monkeypatch.chdir(tmp_path)
    rec = config_record("sub/c.yaml")
    assert rec == {"path": "sub/c.yaml", "resolved": str(tmp_path / "sub" / "c.yaml"),
                   "sha256": hashlib.sha256(b"seed: 1\n").hexdigest()}


# ---------------------------------------------------------------------------
# Ctrl-C: one friendly line, no worker traceback


def _sigint_as_in_a_terminal() -> None:
    """A run started from a terminal gets Ctrl-C. The test runner itself may have been started with SIGINT ignored
    (a background job of a non-interactive shell ignores it, and the ignore is inherited), in which case Python
    keeps it ignored and the run, rightly, never sees the interrupt: give the child the terminal's default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
def test_ctrl_c_is_one_line_without_worker_tracebacks(tmp_path):
    cfg = {"run_dir": str(tmp_path / "run"), "workers": 2,
           "stages": [{"name": "ingest", "shard_docs": 1, "inputs": [{"path": str(_docs(tmp_path, 8))}]},
                      {"name": "slow", "kind": "filter",
                       "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 10, "sleep": 30}}]}]}
    path = _write(tmp_path, cfg)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", str(path), "--no-progress"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "run" / "slow").exists():
            time.sleep(0.2)
        time.sleep(3.0)  # the workers have started their 30-second tasks
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        err = proc.communicate(timeout=90)[1]
        assert time.time() - t0 < 25, "the run waited for its workers' tasks instead of ending them"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "winnow: interrupted; finished shards are kept and a rerun resumes"


# ---------------------------------------------------------------------------
# YAML: duplicate keys, depth, size


def test_a_duplicate_key_is_an_error_naming_it_and_both_lines(tmp_path):
    text = "run_dir: a\nseed: 1\nstages: [ingest]\nseed: 2\n"
    with pytest.raises(ConfigError, match=r"duplicate key 'seed' \(first on line 2\).*line 4"):
        load_config(_write(tmp_path, text))
    nested = "stages:\n  - name: q\n    kind: filter\n    kind: filter\n"
    with pytest.raises(ConfigError, match="duplicate key 'kind'"):
        load_config(_write(tmp_path, nested))


@pytest.mark.parametrize("text", ["a: " + "[" * 20_000 + "]" * 20_000, "a:\n" + "".join(
    "  " * i + f"k{i}:\n" for i in range(1, 200)) + "  " * 200 + "x: 1\n"])
def test_yaml_nested_20k_deep_is_one_line_error(tmp_path, text):
    t0 = time.process_time()
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_CONFIG_DEPTH} levels"):
        load_config(_write(tmp_path, text))
    assert time.process_time() - t0 < 5


def test_a_huge_yaml_is_refused_by_size_before_parsing(tmp_path):
    big = _write(tmp_path, "description: '" + "x" * (10 << 20) + "'\n")
    t0 = time.process_time()
    with pytest.raises(ConfigError, match=r"larger than 262,144 bytes"):
        load_config(big)
    assert time.process_time() - t0 < 1


def test_a_config_at_the_size_limit_parses_in_about_a_second(tmp_path):
    from pipeline.config import MAX_CONFIG_BYTES

    cfg = _config(tmp_path)
    head = yaml.safe_dump(cfg)
    filler = "description: '" + "word " * ((MAX_CONFIG_BYTES - len(head) - 200) // 5) + "'\n"
    path = _write(tmp_path, head + filler)
    assert MAX_CONFIG_BYTES - 1000 < path.stat().st_size <= MAX_CONFIG_BYTES
    t0 = time.process_time()
    load_config(path)
    assert time.process_time() - t0 < 5


# ---------------------------------------------------------------------------
# loose values: no silent coercion, ranges, names


@pytest.mark.parametrize("key, value, match", [
    ("seed", 1.9, r"^seed: expected a whole number, got 1.9$"),
    ("seed", "abc", r"^seed: expected a whole number, got 'abc'$"),
    ("seed", [1], r"^seed: expected a whole number, got \[1\]$"),
    ("seed", True, r"^seed: expected a whole number, got True$"),
    ("workers", 2.7, r"^workers: expected a whole number, got 2.7$"),
    ("workers", True, r"^workers: expected a whole number, got True$"),
    ("workers", 0, r"^workers: expected a whole number >= 1, got 0$"),
])
def test_seed_and_workers_are_never_coerced(tmp_path, key, value, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(_config(tmp_path, **{key: value}), base=tmp_path)


@pytest.mark.parametrize("params, match", [
    ({"min_words": -5}, r"filter gopher_quality: `min_words` must be not negative, got -5"),
    ({"min_words": 500, "max_words": 100}, r"`min_words` \(500\) must not exceed `max_words` \(100\)"),
    ({"min_words": 50.5}, r"`min_words` must be a whole number, got 50.5"),
    ({"min_words": True}, r"`min_words` must be a whole number, got True"),
    ({"tokenizer": 5}, r"`tokenizer` must be a string, got 5"),
    ({"case_sensitive_stop_words": "yes"}, r"`case_sensitive_stop_words` must be true or false, got 'yes'"),
])
def test_filter_parameters_are_checked_against_their_defaults(params, match):
    from filters.gopher import GopherQuality

    with pytest.raises(ConfigProblem, match=match):
        GopherQuality(**params)


def test_languages_as_a_string_is_a_config_error_not_a_worker_failure(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = [{"langid": {"languages": "en"}}]
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == EXIT_CONFIG
    err = _one_line_error(capsys)
    assert "`languages` must be a list of language codes, e.g. [en], got 'en'" in err
    assert not (tmp_path / "run").exists()  # refused before anything ran


@pytest.mark.parametrize("name", ["ab\n", "ab\r", "a b", ""])
def test_a_stage_name_with_a_trailing_newline_is_refused(tmp_path, name):
    cfg = _config(tmp_path)
    cfg["stages"][1]["name"] = name
    with pytest.raises(ConfigError, match=r"stages\[1\]\.name: stage name .* is not a plain identifier"):
        config_from_dict(cfg, base=tmp_path)


# ---------------------------------------------------------------------------
# module:attr references: only plug-ins, checked before their module is imported


@pytest.mark.parametrize("ref", ["this:s", "os:popen", "code:interact", "shutil:rmtree", "os.path:join",
                                 "subprocess:run"])
def test_standard_library_callables_are_refused_without_importing(tmp_path, ref, capfd):
    sys.modules.pop("this", None)
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = [ref]
    with pytest.raises(ConfigError, match=f"filter reference '{ref}': '{ref.split('.')[0].split(':')[0]}' is part of "
                                          f"Python's standard library, not a winnow plug-in"):
        config_from_dict(cfg, base=tmp_path)
    assert "this" not in sys.modules  # `import this` prints the Zen of Python: it was never imported
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("kind", ["..os:system", "os:system", ".x:Y", "a-b:C", "a:b:c", "a:", ":b"])
def test_odd_stage_references_are_one_line_errors(tmp_path, kind, capsys):
    cfg = _config(tmp_path)
    cfg["stages"][1] = {"name": "d", "kind": kind}
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == EXIT_CONFIG
    _one_line_error(capsys)


def test_a_plain_function_is_refused_before_its_module_runs_and_a_marked_one_works(tmp_path, monkeypatch, capfd):
    (tmp_path / "side_effects.py").write_text(
        "print('IMPORTED side_effects')\n"
        "def no_short(doc):\n"
        "    return len(doc.text) > 80\n")
    (tmp_path / "marked.py").write_text(
        "from filters.base import function_filter\n"
        "@function_filter\n"
        "def no_short(doc):\n"
        "    return len(doc.text) > 80, 'short'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = ["side_effects:no_short"]
    with pytest.raises(ConfigError, match="'no_short' is a plain function; a function becomes a filter only when "
                                          "marked with `@function_filter`"):
        config_from_dict(cfg, base=tmp_path)
    assert "IMPORTED" not in capfd.readouterr().out and "side_effects" not in sys.modules

    cfg["stages"][1]["filters"] = ["marked:no_short"]
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == 0
    from pipeline.inspection import iter_rows

    removed = {r["id"]: r["reason"] for r in iter_rows(tmp_path / "run", "q", removed=True)}
    assert removed == {"d0": "no_short:short"}


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_mod.py").write_text("from filters.base import Filter\nraise RuntimeError('no GPU here')\n"
                                            "class F(Filter):\n    name = 'f'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = ["broken_mod:F"]
    with pytest.raises(ConfigError, match=r"importing module 'broken_mod' failed: RuntimeError: no GPU here"):
        config_from_dict(cfg, base=tmp_path)


# ---------------------------------------------------------------------------
# inspect, select and report on the wrong thing: one line each, exit 4 (or 2 for a bad option)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished three-stage run: ingest, a C4 stage (edits text) and a Gopher stage that removes documents."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = _config(tmp)
    # C4 removes d0 and d1 (fewer than 3 sentences), Gopher d2 (51 words < 60); d3 to d5 are kept
    cfg["stages"].append({"name": "g", "kind": "filter", "filters": [{"gopher_quality": {"min_words": 60}}]})
    path = _write(tmp, cfg)
    assert main(["run", str(path), "--no-progress"]) == 0
    return tmp / "run", path


def _copy_run(finished, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    return run


def test_select_without_stage_is_a_usage_error_that_runs_nothing(finished, capsys):
    run, cfg = finished
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["select", str(cfg), "--no-progress"]) == EXIT_USAGE
    err = _one_line_error(capsys)
    assert "winnow select needs --stage" in err and "stages of" in err and "ingest, q, g" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_select_on_a_missing_run_dir_leaves_no_folder(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["select", str(_write(tmp_path, cfg)), "--stage", "q", "--no-progress"]) == EXIT_INPUT
    assert "holds no winnow run yet" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, expected", [
    (["inspect", "{tmp}/nope"], "nope: no such folder"),
    (["inspect", "{cfg}"], "is a config file; give its run folder (this config's run folder is {run})"),
    (["inspect", "{tmp}/docs.jsonl"], "docs.jsonl is a file, not a run folder"),
    (["inspect", "/"], "/: not a winnow run folder (no pipeline.json)"),
    (["inspect", "{tmp}"], "not a winnow run folder (no pipeline.json)"),
    (["inspect", "{run}", "--stage", "dedup"], "no stage 'dedup' in {run}; its stages: ingest, q, g"),
    (["inspect", "{run}", "--stage", "qq"], "no stage 'qq' in {run} (did you mean `q`?); its stages: ingest, q, g"),
    # export opens the run and names its stage exactly as inspect does
    (["export", "{run}", "--stage", "qq", "--to", "{tmp}/exported"],
     "no stage 'qq' in {run} (did you mean `q`?); its stages: ingest, q, g"),
    (["export", "{cfg}", "--stage", "q", "--to", "{tmp}/exported"],
     "is a config file; give its run folder (this config's run folder is {run})"),
    (["export", "{tmp}/nope", "--stage", "q", "--to", "{tmp}/exported"], "nope: no such folder"),
    (["export", "{tmp}", "--stage", "q", "--to", "{tmp}/exported"], "not a winnow run folder (no pipeline.json)"),
    (["inspect", "{run}", "--clusters"], "has no dedup stage; name one with --stage"),
    (["inspect", "{run}", "--id", "zz"], "no document with id 'zz' in {run} (ids look like: 'd0', 'd1', 'd2')"),
    (["check", "{tmp}/nope"], "nope: no such folder"),
    (["check", "{cfg}"], "is a config file; give its run folder"),
    (["check", "{tmp}"], "not a winnow run folder (no pipeline.json)"),
    (["demo-corpus", "{tmp}/docs.jsonl"], "docs.jsonl exists and is not a folder"),
    (["report", "{tmp}/missing.yaml"], "missing.yaml: no such file or folder"),
    (["report", "{run}"], "a pipeline run folder, not an ablation's (no experiment.json)"),
    (["report", "{run}", "--export", "{tmp}/exported"], "a pipeline run folder, not an ablation's"),
])
def test_inspect_and_report_on_the_wrong_path_say_what_it_is(finished, argv, expected, capsys):
    run, cfg = finished
    fill = {"tmp": str(run.parent), "run": str(run), "cfg": str(cfg)}
    assert main([a.format(**fill) for a in argv]) == EXIT_INPUT
    assert expected.format(**fill) in _one_line_error(capsys)
    assert not (run.parent / "exported").exists()


def test_inspect_an_unfinished_stage(finished, tmp_path, capsys):
    run = _copy_run(finished, tmp_path)
    (run / "g" / "manifest.json").unlink()
    assert main(["inspect", str(run), "--stage", "g"]) == EXIT_INPUT
    assert "stage 'g' has not finished" in _one_line_error(capsys)
    assert main(["export", str(run), "--stage", "g", "--to", str(tmp_path / "exported")]) == EXIT_INPUT
    assert "stage 'g' has not finished" in _one_line_error(capsys)
    assert not (tmp_path / "exported").exists()
    assert main(["inspect", str(run), "--id", "d4"]) == 0
    assert "g               not finished" in capsys.readouterr().out


@pytest.mark.parametrize("damage, argv, expected", [
    (lambda r: (r / "pipeline.json").write_text('{"stages": 5}'), ["inspect", "{run}"],
     "pipeline.json is damaged (TypeError"),
    (lambda r: (r / "pipeline.json").write_text("{not json"), ["inspect", "{run}"], "pipeline.json is damaged"),
    (lambda r: (r / "q" / "stats.json").write_text("garbage"), ["inspect", "{run}"],
     "q/stats.json is damaged (JSONDecodeError); `winnow run` rebuilds it from the finished shards"),
    (lambda r: (r / "q" / "manifest.json").write_text("[]"), ["inspect", "{run}", "--stage", "q"],
     "q/manifest.json is damaged (not a JSON object but list)"),
    (lambda r: (r / "q" / "manifest.json").write_text('{"shards": "x"}'), ["inspect", "{run}", "--id", "d0"],
     "q/manifest.json is damaged (`shards` is not a list)"),
    (lambda r: [p.unlink() for p in (r / "q" / "kept").glob("*.parquet")], ["inspect", "{run}", "--stage", "q"],
     "stage q: cannot read a shard of {run} (FileNotFoundError"),
    (lambda r: [p.write_bytes(p.read_bytes()[:100]) for p in (r / "g" / "removed").glob("*.parquet")],
     ["inspect", "{run}", "--stage", "g", "--removed"], "stage g: cannot read a shard of {run}"),
    (lambda r: [p.write_bytes(p.read_bytes()[:100]) for p in (r / "g" / "kept").glob("*.parquet")],
     ["export", "{run}", "--stage", "g", "--to", "{run}/../exported"], "stage g: cannot read a shard of {run}"),
    (lambda r: (r / "q" / "manifest.json").write_text("[]"), ["export", "{run}", "--stage", "q", "--to", "{run}/../x"],
     "q/manifest.json is damaged (not a JSON object but list)"),
])
def test_inspect_on_a_damaged_run_names_the_damage(finished, tmp_path, damage, argv, expected, capsys):
    run = _copy_run(finished, tmp_path)
    damage(run)
    assert main([a.format(run=run) for a in argv]) == EXIT_INPUT
    assert expected.format(run=run) in _one_line_error(capsys)


@pytest.mark.parametrize("argv", [["inspect", "{run}", "--stage", "q", "-n", "0"],
                                  ["inspect", "{run}", "--stage", "q", "-n", "-1"],
                                  ["inspect", "{run}", "--stage", "q", "--chars", "-5"],
                                  ["inspect", "{run}", "--stage", "q", "-n", "x"],
                                  ["demo-corpus", "{run}/../web", "--docs", "0"],
                                  ["demo-corpus", "{run}/../web", "--docs", "-1"]])
def test_counts_on_the_command_line_must_be_sensible(finished, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([a.format(run=finished[0]) for a in argv])
    assert e.value.code == EXIT_USAGE
    assert "expected a whole number" in capsys.readouterr().err


def test_workers_zero_on_the_command_line_is_a_usage_error(finished, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(finished[1]), "--workers", "0"])
    assert e.value.code == EXIT_USAGE


# ---------------------------------------------------------------------------
# inspect --id: one document's journey


def test_inspect_id_traces_a_removed_document_to_its_stage_and_rule(finished, capsys):
    from pipeline.inspection import trace_document

    run, _ = finished
    removed = {r["id"]: r for r in __import__("pipeline.inspection", fromlist=["iter_rows"]).iter_rows(
        run, "g", removed=True)}
    doc_id = sorted(removed)[0]
    trace = trace_document(run, doc_id)
    assert [t["stage"] for t in trace] == ["ingest", "q", "g"]
    assert [t["status"] for t in trace] == ["kept", "kept", "removed"]
    assert trace[-1]["row"]["reason"] == removed[doc_id]["reason"].strip() and \
        trace[-1]["row"]["reason"].startswith("gopher_quality:")
    assert main(["inspect", str(run), "--id", doc_id, "--chars", "5000"]) == 0
    out = capsys.readouterr().out
    assert f"REMOVED  {removed[doc_id]['reason']}" in out and "gopher_word_count=" in out
    assert "text as it entered g, which removed it" in out
    assert removed[doc_id]["text"].split()[0] in out


def test_inspect_id_of_a_kept_document_shows_every_stage_kept(finished, capsys):
    run, _ = finished
    from pipeline.inspection import iter_rows, trace_document

    kept = next(iter(iter_rows(run, "g", removed=False)))
    trace = trace_document(run, kept["id"])
    assert [t["status"] for t in trace] == ["kept", "kept", "kept"]
    assert trace[-1]["row"]["text"] == kept["text"]


def test_inspect_id_marks_later_stages_not_reached(finished):
    from pipeline.inspection import trace_document

    run, _ = finished
    import pyarrow.parquet as pq

    m = json.loads((run / "q" / "manifest.json").read_text())
    removed_by_q = [r for sh in m["shards"] if sh["removed"]["rows"]
                    for r in pq.read_table(run / "q" / sh["removed"]["path"]).to_pylist()]
    if not removed_by_q:
        pytest.skip("C4 removed nothing in this corpus")
    trace = trace_document(run, removed_by_q[0]["id"])
    assert [t["status"] for t in trace] == ["kept", "removed", "not reached"]


# ---------------------------------------------------------------------------
# winnow ablation on a fresh run_dir runs the pipeline first


@pytest.mark.slow
def test_ablation_on_a_fresh_run_dir_runs_the_pipeline_before_making_its_folder(tmp_path, monkeypatch, capsys):
    import experiments.data

    class Reached(Exception):
        pass

    def stop(*a, **k):  # the pipeline is done and the ablation's own work begins: enough for this test
        assert (tmp_path / "run" / "pipeline.json").is_file() and (tmp_path / "run" / "g").is_dir()
        raise Reached

    monkeypatch.setattr(experiments.data, "build_eval_sets", stop)
    cfg = _config(tmp_path)
    cfg["stages"].append({"name": "g", "kind": "filter", "filters": ["gopher_quality"]})
    cfg["experiment"] = {"arms": [{"name": "raw", "stage": "ingest", "tokens": 1000},
                                  {"name": "clean", "stage": "g", "tokens": 1000}],
                         "compare": {"baseline": "raw", "candidate": "clean"}}
    from experiments.ablation import run_ablation

    with pytest.raises(Reached):
        run_ablation(load_config(_write(tmp_path, cfg)), log=lambda m: None)
    assert (tmp_path / "run" / "ablation").is_dir()  # made after the pipeline, inside run_dir, accepted on a rerun
    with pytest.raises(Reached):
        run_ablation(load_config(tmp_path / "c.yaml"), log=lambda m: None)


# ---------------------------------------------------------------------------
# make: from any folder, stage targets from the config


def _make(args, cwd, **env):
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    e = {**os.environ, "PWD": str(cwd), **env}  # a shell sets PWD; subprocess's cwd= does not
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=120)


def test_make_resolves_config_against_the_callers_folder(tmp_path):
    out = _make(["-n", "stage", "STAGE=q", "CONFIG=my.yaml"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"winnow run {tmp_path}/my.yaml --stage q" in out.stdout
    out = _make(["-n", "check", "RUN_DIR=runs/x"], tmp_path)
    assert f"winnow check {tmp_path}/runs/x" in out.stdout
    out = _make(["-n", "all"], tmp_path)  # the default config is the repository's demo
    assert f"winnow run {ROOT}/experiments/configs/demo.yaml" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "winnow").exists(), reason="needs the repository's .venv")
def test_make_runs_any_stage_named_in_the_config_and_refuses_others(tmp_path):
    cfg = _config(tmp_path)
    cfg["stages"][1]["name"] = "my_cleaning"  # no stage is called langid, quality or dedup here
    _write(tmp_path, cfg, "mine.yaml")
    old = ["-o", str(ROOT / ".venv" / ".installed")]  # never reinstall from a test
    out = _make([*old, "my_cleaning", "CONFIG=mine.yaml"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "my_cleaning" / "manifest.json").is_file()
    out = _make([*old, "langid", "CONFIG=mine.yaml"], tmp_path)
    assert out.returncode != 0
    assert "winnow: error: no stage named 'langid'; stages: ingest, my_cleaning" in out.stderr


# ---------------------------------------------------------------------------
# workers: capped at the cores, and never more processes than pending shards


def test_workers_are_capped_at_the_usable_cores_with_a_warning(monkeypatch):
    from pipeline import executors

    monkeypatch.setattr(executors, "usable_cores", lambda: 2)
    monkeypatch.delenv("WINNOW_MAX_WORKERS", raising=False)
    said = []
    ex = executors.make_executor("local", 12, progress=False, log=said.append)
    assert ex.workers == 2
    assert said == ["winnow: warning: workers: 12 is more than the 2 CPU core(s) this process may use; using 2"]
    said.clear()
    assert executors.make_executor("local", 2, progress=False, log=said.append).workers == 2 and said == []
    monkeypatch.setenv("WINNOW_MAX_WORKERS", "16")
    assert executors.make_executor("local", 12, progress=False, log=said.append).workers == 12 and said == []


def _square(x):
    return x * x


@pytest.mark.slow
def test_no_more_worker_processes_than_pending_tasks(monkeypatch):
    from pipeline import executors

    monkeypatch.setenv("WINNOW_MAX_WORKERS", "8")
    ex = executors.make_executor("local", 8, progress=False)
    try:
        assert executors.run_all(ex, _square, [(2,), (3,)], "t") == [4, 9]
        assert 1 <= len(ex._pool._processes) <= 2  # spawned on demand: two tasks, at most two processes
    finally:
        ex.close()


def test_progress_off_a_terminal_is_periodic_lines_without_carriage_returns(monkeypatch, capsys):
    from pipeline import executors

    monkeypatch.setattr(executors, "PROGRESS_LINE_SECONDS", 0.0)
    monkeypatch.setattr(executors._LineProgress.__init__, "__defaults__", (0.0, None))
    bar = executors._progress(3, "langid", enabled=True)  # pytest's captured stderr is not a terminal
    assert isinstance(bar, executors._LineProgress)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("[langid] 1/3 shards (33%), 0m0") and lines[-1].startswith("[langid] 3/3 shards (100%)")
    quiet = executors._LineProgress(3, "q", every=3600)  # short work prints nothing at all
    for _ in range(3):
        quiet.update(1)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_inspect_id_shows_the_original_text_of_a_document_a_text_editing_stage_removed(finished, capsys):
    """C4 edits text (line removal) and removes d0 (too few sentences): its journey ends with the text it had
    when it entered C4's stage, not C4's edit of it."""
    from pipeline.inspection import trace_document

    run, _ = finished
    trace = trace_document(run, "d0")
    assert [t["status"] for t in trace] == ["kept", "removed", "not reached"]
    entered = trace[0]["row"]["text"]
    assert trace[1]["row"]["reason"] == "c4:too_few_sentences"
    assert trace[1]["row"]["text"] == entered
    assert main(["inspect", str(run), "--id", "d0"]) == 0
    out = capsys.readouterr().out
    assert f"text as it entered q, which removed it ({len(entered):,} chars)" in out
    assert entered.split()[0] in out


def test_a_readme_script_on_a_wrong_path_is_one_line_too(tmp_path, capsys, monkeypatch):
    """`python -m experiments.filter_truth runs/demo` (in the README and `make demo`) goes through the same guard."""
    from experiments import filter_truth
    from pipeline.errors import run_guarded

    monkeypatch.setattr(sys, "argv", ["filter_truth", str(tmp_path / "nope")])
    assert run_guarded(filter_truth.main, prog="filter_truth") == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err == f"filter_truth: error: {tmp_path / 'nope'}: no such folder"
    (tmp_path / "c.yaml").write_text(f"run_dir: {tmp_path / 'run'}\nstages: [ingest]\n")
    monkeypatch.setattr(sys, "argv", ["filter_truth", str(tmp_path / "c.yaml")])
    assert run_guarded(filter_truth.main, prog="filter_truth") == EXIT_INPUT
    assert "c.yaml is a config file; give its run folder" in capsys.readouterr().err


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(stages="ingest"), r"^stages: expected a list of stages, got str 'ingest'$"),
    (lambda c: c["stages"][1].update(filters="c4"), r"`filters` must be a list \(e.g. \[c4, gopher_quality\]\), got str"),
    (lambda c: c.update(run_dir=""), r"^run_dir: empty; name a folder for this run$"),
    (lambda c: c.update(run_dir="  "), r"^run_dir: empty"),
])
def test_a_string_where_a_list_belongs_is_not_read_letter_by_letter(tmp_path, edit, match):
    cfg = _config(tmp_path)
    edit(cfg)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(cfg, base=tmp_path)


def test_a_language_the_backend_never_reports_is_a_config_error(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = [{"langid": {"languages": ["xx"]}}]
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == EXIT_CONFIG
    assert "langid: backend heliport never reports xx" in _one_line_error(capsys)


def test_select_on_the_source_stage_is_refused_and_an_up_to_date_stage_says_so(finished, capsys):
    run, cfg = finished
    assert main(["select", str(cfg), "--stage", "ingest", "--no-progress"]) == EXIT_USAGE
    assert "stage ingest reads the inputs: it has no cached scores to re-decide" in _one_line_error(capsys)
    assert main(["select", str(cfg), "--stage", "g", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "nothing to re-decide: stage g is up to date" in out and "now see a different input" not in out


def test_every_script_under_experiments_runs_its_main_through_the_guard():
    """A `python -m experiments...` script is a command too: a wrong path or config is one line and an exit code.
    (Scripts recorded beside a result under experiments/results/ are that result's record, not commands.)"""
    unguarded = []
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        src = path.read_text(encoding="utf-8")
        tail = src.partition('\nif __name__ == "__main__":')[2]
        if not tail or rel == "experiments/cli.py" or rel.startswith("experiments/results/"):
            continue
        if "run_guarded(" not in tail:
            unguarded.append(rel)
    assert unguarded == []


@pytest.mark.parametrize("module", ["experiments.benchmarks.quality_report", "experiments.quality_eval"])
def test_a_benchmark_given_a_missing_config_says_so_in_one_line(tmp_path, module):
    p = subprocess.run([sys.executable, "-m", module, str(tmp_path / "missing.yaml")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == EXIT_CONFIG, p.stderr
    assert "Traceback" not in p.stderr
    prog = module.rpartition(".")[2]
    assert p.stderr.strip().splitlines()[-1] == f"{prog}: error: config file not found: {tmp_path / 'missing.yaml'}"


@pytest.mark.parametrize("num_perm", [100_000_000_000, 4097, 1])
def test_a_huge_minhash_num_perm_is_a_config_error_before_any_work(tmp_path, capsys, num_perm):
    """`num_perm: 100000000000` used to pass validation and end in a MemoryError (745 GiB) inside a worker."""
    cfg = {"run_dir": str(tmp_path / "run"),
           "stages": [{"name": "ingest", "inputs": [{"path": str(_docs(tmp_path))}]},
                      {"name": "mh", "kind": "minhash_dedup", "num_perm": num_perm}]}
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == EXIT_CONFIG
    assert _one_line_error(capsys) == f"winnow: error: stage mh: `num_perm` must be an integer in [2, 4096], got {num_perm}"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# mistakes a new user makes with the README's commands (issue 23: "no command in the README gives a
# traceback on any mistake tried here"); each was a traceback, an internal error, a crash of the process
# or a silent exit 0 before


@pytest.mark.parametrize("argv, code, expected", [
    # --limit 0 used to redo ingest on nothing and replace a finished run's output with empty stages
    (["run", "{cfg}", "--limit", "0"], EXIT_USAGE, "argument --limit: expected a whole number >= 1, got 0"),
    (["run", "{cfg}", "--limit", "-1"], EXIT_USAGE, "argument --limit: expected a whole number >= 1, got -1"),
    # a vocabulary the trainer cannot take: an internal error (-5) or an abort of the whole process (10**10)
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/out", "--format", "tokens", "--train-tokenizer", "-5"],
     EXIT_CONFIG, "--train-tokenizer: a vocabulary of 257 to 1,048,576 tokens, got -5"),
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/out", "--format", "tokens", "--train-tokenizer", "10000000000"],
     EXIT_CONFIG, "--train-tokenizer: a vocabulary of 257 to 1,048,576 tokens, got 10,000,000,000"),
    # a missing tokenizer file was looked up on the hub
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/out", "--format", "tokens", "--tokenizer", "{tmp}/tok.json"],
     EXIT_CONFIG, "--tokenizer {tmp}/tok.json: no such file or folder"),
    # counts that mean nothing
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/out", "--token-budget", "-5"], EXIT_USAGE,
     "argument --token-budget: expected a whole number >= 1, got -5"),
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/out", "--shard-docs", "0"], EXIT_USAGE,
     "argument --shard-docs: expected a whole number >= 1, got 0"),
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/out", "--shard-tokens", "0"], EXIT_USAGE,
     "argument --shard-tokens: expected a whole number >= 1, got 0"),
    # a destination that cannot be made named the temporary folder winnow tried to create
    (["export", "{run}", "--stage", "g", "--to", "{tmp}/docs.jsonl/out"], EXIT_INPUT,
     "{tmp}/docs.jsonl/out: cannot write there ({tmp}/docs.jsonl is not a folder)"),
])
def test_readme_commands_with_a_new_users_mistakes(finished, argv, code, expected, capsys):
    run, cfg = finished
    fill = {"tmp": str(run.parent), "run": str(run), "cfg": str(cfg)}
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    if code == EXIT_USAGE:
        with pytest.raises(SystemExit) as e:
            main([a.format(**fill) for a in argv])
        assert e.value.code == EXIT_USAGE
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(expected.format(**fill))
    else:
        assert main([a.format(**fill) for a in argv]) == code
        assert _one_line_error(capsys) == "winnow: error: " + expected.format(**fill)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the finished run is untouched
    assert not (run.parent / "out").exists()


def test_inspect_a_reason_no_document_has_lists_the_stages_reasons(finished, capsys):
    run, _ = finished
    assert main(["inspect", str(run), "--stage", "q", "--reason", "gopher"]) == 0
    assert capsys.readouterr().out.strip() == ("no documents removed with reason 'gopher' in stage q; "
                                              "its reasons: c4:too_few_sentences")
    assert main(["inspect", str(run), "--stage", "ingest", "--reason", "empty"]) == 0
    assert capsys.readouterr().out.strip() == "no documents removed with reason 'empty' in stage ingest; it removed none"


@pytest.mark.parametrize("dest, expected", [
    ("{run}", "--export {run}: not empty and not an exported report (no experiment.json)"),
    ("{tmp}/docs.jsonl", "--export {tmp}/docs.jsonl: exists and is not a folder"),
    ("{abl}", "--export {abl}: that is the ablation folder itself"),
])
def test_report_export_never_writes_into_a_folder_that_is_not_a_report(finished, tmp_path, dest, expected, capsys):
    """`winnow report ABL --export RUN_DIR` used to copy the report, runs/ and experiment.json into a pipeline run."""
    run, _ = finished
    abl = tmp_path / "abl"
    abl.mkdir()
    (abl / "experiment.json").write_text("{}")
    fill = {"run": str(run), "tmp": str(run.parent), "abl": str(abl)}
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["report", str(abl), "--export", dest.format(**fill)]) == EXIT_INPUT
    assert _one_line_error(capsys).startswith("winnow: error: " + expected.format(**fill))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    assert sorted(p.name for p in abl.iterdir()) == ["experiment.json"]


def test_a_tilde_in_a_config_path_is_the_home_folder_not_a_folder_named_tilde(tmp_path, monkeypatch):
    """`run_dir: ~/runs/x` used to make a folder literally named `~` beside the config (and `path: ~/data.jsonl`
    was "file not found" at CONFIG_DIR/~/data.jsonl)."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    _docs(home / "data")
    cfgdir = tmp_path / "cfg"
    cfgdir.mkdir()
    cfg = {"run_dir": "~/runs/x", "stages": [
        {"name": "ingest", "inputs": [{"path": "~/data/docs.jsonl"}]},
        {"name": "q", "kind": "filter", "filters": [{"c4": {"badwords_path": "~/data/bad.txt"}}]}],
        "experiment": {"out_dir": "~/abl", "arms": [{"name": "raw", "stage": "ingest", "tokens": 10}]}}
    c = load_config(_write(cfgdir, cfg))
    assert c.run_dir == home / "runs" / "x"
    assert c.stages[0]["inputs"][0]["path"] == str(home / "data" / "docs.jsonl")
    assert c.stages[1]["filters"][0]["c4"]["badwords_path"] == str(home / "data" / "bad.txt")
    from experiments.settings import experiment_settings

    assert experiment_settings(c)["out_dir"] == str(home / "abl")
    assert not (cfgdir / "~").exists()


def test_a_ray_address_without_the_ray_executor_is_a_usage_error(tmp_path, capsys):
    """`winnow run CONFIG --address auto` (the README's Ray line without --executor ray) used to run locally."""
    path = _write(tmp_path, _config(tmp_path))
    assert main(["run", str(path), "--address", "auto", "--no-progress"]) == EXIT_USAGE
    assert _one_line_error(capsys) == ("winnow: error: --address auto: goes with the Ray executor (--executor ray, "
                                       "or `executor: ray` in the config); this run's executor is local")
    assert not (tmp_path / "run").exists()


_PATH_COMMANDS = [["run", "{p}"], ["select", "{p}", "--stage", "q"], ["check", "{p}"], ["inspect", "{p}"],
                  ["train-quality", "{p}"], ["ablation", "{p}"], ["ablation", "{p}", "--plan"], ["report", "{p}"],
                  ["quality-eval", "{p}"], ["export", "{p}", "--stage", "q", "--to", "{out}"]]
_WRONG_PATHS = {"missing": None, "empty folder": "", "binary file": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
                "empty file": b"", "a JSONL file": b'{"id": "a", "text": "hello"}\n'}


@pytest.mark.parametrize("what", list(_WRONG_PATHS))
@pytest.mark.parametrize("argv", _PATH_COMMANDS, ids=lambda a: " ".join(a[:1] + a[2:3]))
def test_every_command_given_the_wrong_kind_of_path_says_so_in_one_line(tmp_path, capsys, argv, what):
    """Issue 23's bar, kept: every README command that takes a path, given a path of the wrong kind, exits with
    a usage, config or input code and one `winnow: error:` line -- never a traceback or an internal error."""
    content = _WRONG_PATHS[what]
    p = tmp_path / ("x.yaml" if isinstance(content, bytes) else "x")
    if content == "":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    code = main([a.format(p=p, out=tmp_path / "out") for a in argv])
    assert code in (EXIT_USAGE, EXIT_CONFIG, EXIT_INPUT), capsys.readouterr().err
    _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", [{"filters": ["c4", "c4"]}, {"recipe": "c4", "filters": ["c4"]}])
def test_a_filter_named_twice_in_a_stage_says_so(tmp_path, stage):
    cfg = _config(tmp_path)
    cfg["stages"][1] = {"name": "q", "kind": "filter", **stage}
    with pytest.raises(ConfigError, match=r"^stage q: filter c4 is named twice .*; a stage runs each filter once$"):
        config_from_dict(cfg, base=tmp_path)


def test_a_language_name_instead_of_a_code_is_refused_before_ingest(tmp_path, capsys):
    """`languages: [english]` used to fail inside a worker, after ingest had run."""
    cfg = _config(tmp_path)
    cfg["stages"][1]["filters"] = [{"langid": {"languages": ["english"]}}]
    assert main(["run", str(_write(tmp_path, cfg)), "--no-progress"]) == EXIT_CONFIG
    assert "langid: 'english' is not a language code; use ISO 639-1 or 639-3 codes" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()
