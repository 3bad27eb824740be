"""Filters from outside the package plug in from config alone, and `winnow select` never re-scores."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from experiments.cli import main
from pipeline.inspection import iter_rows

DATA = Path(__file__).resolve().parent / "data"

DOCS = [
    {"id": "calm", "text": "A quiet paragraph about gardening, written in ordinary sentence case."},
    {"id": "loud", "text": "BUY NOW!!! LIMITED OFFER, EVERYTHING MUST GO TODAY."},
    {"id": "mixed", "text": "SALE starts Monday at the Corner Shop on Main Street, come early."},
]


def write_inputs(tmp_path: Path) -> Path:
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    return src


def write_config(tmp_path: Path, filter_entry: dict, workers: int = 1) -> Path:
    cfg = {
        "run_dir": str(tmp_path / "run"), "workers": workers,
        "stages": [{"name": "ingest", "inputs": [{"path": str(write_inputs(tmp_path))}]},
                   {"name": "custom", "kind": "filter", "filters": [filter_entry]}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def reasons(run_dir: Path, stage: str = "custom") -> dict[str, str]:
    return {r["id"]: r["reason"] for r in iter_rows(run_dir, stage, removed=True)}


def test_readme_example_runs_from_config(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(DATA))
    config = write_config(tmp_path, {"readme_filter:Shouting": {"max_upper_frac": 0.5}})
    assert main(["run", str(config), "--no-progress"]) == 0
    assert reasons(tmp_path / "run") == {"loud": "shouting:too_loud"}


@pytest.mark.slow
def test_module_outside_winnow_in_a_separate_process(tmp_path):
    """`winnow run` as a user runs it: the plugin is found only through PYTHONPATH."""
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "mymod.py").write_text(textwrap.dedent('''
        from filters.base import Filter

        class MyFilter(Filter):
            name = "my_filter"
            columns = {"exclamations": "int"}
            defaults = {"max_exclamations": 1}
            decision_params = ("max_exclamations",)

            def score(self, doc):
                return {"exclamations": doc.text.count("!")}

            def decide(self, scores):
                return scores["exclamations"] <= self.params["max_exclamations"], "shouty_punctuation"
    '''), encoding="utf-8")
    config = write_config(tmp_path, {"mymod:MyFilter": None}, workers=2)
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    winnow = Path(sys.executable).with_name("winnow")
    proc = subprocess.run([str(winnow), "run", str(config), "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert reasons(tmp_path / "run") == {"loud": "my_filter:shouty_punctuation"}


def test_select_re_decides_without_scoring(tmp_path, monkeypatch):
    """Scoring and setup append to a log; a new threshold via `winnow select` must not add a line."""
    log = tmp_path / "calls.log"
    (tmp_path / "countingmod.py").write_text(textwrap.dedent(f'''
        from filters.base import Filter

        class Counting(Filter):
            name = "counting"
            columns = {{"upper_frac": "float"}}
            defaults = {{"max_upper_frac": 0.5}}
            decision_params = ("max_upper_frac",)

            def setup(self):
                with open({str(log)!r}, "a") as f:
                    f.write("setup\\n")

            def score(self, doc):
                with open({str(log)!r}, "a") as f:
                    f.write("score " + doc.id + "\\n")
                letters = [c for c in doc.text if c.isalpha()]
                return {{"upper_frac": sum(c.isupper() for c in letters) / max(len(letters), 1)}}

            def decide(self, scores):
                return scores["upper_frac"] <= self.params["max_upper_frac"], "too_loud"
    '''), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path, {"countingmod:Counting": {"max_upper_frac": 0.5}})
    assert main(["run", str(config), "--no-progress"]) == 0
    calls = log.read_text().splitlines()
    assert calls.count("setup") == 1 and len(calls) == 1 + len(DOCS)
    assert reasons(tmp_path / "run") == {"loud": "counting:too_loud"}

    config = write_config(tmp_path, {"countingmod:Counting": {"max_upper_frac": 0.1}})
    assert main(["select", str(config), "--stage", "custom", "--no-progress"]) == 0
    assert log.read_text().splitlines() == calls  # no setup, no score
    assert reasons(tmp_path / "run") == {"loud": "counting:too_loud", "mixed": "counting:too_loud"}
