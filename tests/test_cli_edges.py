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
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Document {i} has some words in it. " * (i + 1)}) + "\n"
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
    from experiments.cli import _exit_code_of_unowned
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
        return _exit_code_of_unowned(e, exit_code_for(e))

    assert code(failed_task(InputError("a.jsonl: truncated"))) == EXIT_INPUT
    assert code(failed_task(ConfigError("languages: ..."))) == EXIT_CONFIG
    assert code(failed_task(ZeroDivisionError("x"))) == EXIT_RUN
    assert code(ConfigError("x")) == EXIT_CONFIG
    assert code(FileNotFoundError("x")) == EXIT_INPUT
    assert code(OSError(28, "No space left on device")) == EXIT_RUN
    assert code(KeyError("x")) == EXIT_INTERNAL


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


# ---------------------------------------------------------------------------
# Ctrl-C: one friendly line, no worker traceback


def test_ctrl_c_is_quiet_and_the_rerun_resumes(tmp_path):
    cfg = {"run_dir": str(tmp_path / "run"), "workers": 2,
           "stages": [{"name": "ingest", "shard_docs": 1, "inputs": [{"path": str(_docs(tmp_path, 8))}]},
                      {"name": "slow", "kind": "filter",
                       "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 10, "sleep": 30}}]}]}
    path = _write(tmp_path, cfg)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", str(path), "--no-progress"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (tmp_path / "run" / "slow").exists():
            time.sleep(0.2)
        time.sleep(2.0)  # the workers have started their 30-second tasks
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        err = proc.communicate(timeout=30)[1]
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
        "    return len(doc.text) > 40\n")
    (tmp_path / "marked.py").write_text(
        "from filters.base import function_filter\n"
        "@function_filter\n"
        "def no_short(doc):\n"
        "    return len(doc.text) > 40, 'short'\n")
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
