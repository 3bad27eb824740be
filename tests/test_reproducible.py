"""Issue 20 end to end on a tiny ablation: a killed grid resumes to the same per-run values, a re-run with the
recorded settings reproduces them, every record names its code and machine, the plan is set against what ran,
and models that do not beat their n-gram baselines are flagged first in the verdict."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_engine import corpus, experiment_config, per_run_values, run, sequential  # noqa: F401
from tests.test_report_stats import verdict_of

pytestmark = pytest.mark.slow


def _ngram_values(out):
    res = {}
    for d in sorted((out / "runs").iterdir()):
        for f in sorted(d.glob("ngram*_items.npz")):
            with np.load(f, allow_pickle=False) as z:
                res[f"{d.name}/{f.name}"] = {k: z[k].tobytes() for k in z.files}
    return res


def test_a_killed_grid_resumes_to_the_same_per_run_values(corpus, sequential, tmp_path, monkeypatch):  # noqa: F811
    import experiments.train as train_mod
    from pipeline.executors import TaskError

    real, calls = train_mod._save_checkpoint, {"n": 0}

    def dies_on_the_fourth_checkpoint(*a, **k):  # in the middle of the second run of the grid
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    out = tmp_path / "killed"
    cfg = experiment_config(corpus, out)
    monkeypatch.setattr(train_mod, "_save_checkpoint", dies_on_the_fourth_checkpoint)
    with pytest.raises((KeyboardInterrupt, TaskError)):
        run(cfg, tmp_path / "k.yaml")
    monkeypatch.setattr(train_mod, "_save_checkpoint", real)
    assert len([d for d in (out / "runs").iterdir() if (d / "done.json").exists()]) < 6  # it really stopped early
    run(cfg, tmp_path / "k.yaml")
    assert per_run_values(out) == per_run_values(sequential)
    assert _ngram_values(out) == _ngram_values(sequential) and _ngram_values(out)


def test_recorded_settings_are_reused_by_default_and_reproduce_the_values(corpus, tmp_path):  # noqa: F811
    auto = {"steps": 6, "batch_size": 4, "eval_every": 3, "checkpoint_every": 3, "warmup_steps": 1, "bf16": "auto",
            "compile": False, "decay_budgets": [0.5]}
    first = tmp_path / "first"
    run(experiment_config(corpus, first, train=auto, seeds=[0]), tmp_path / "a.yaml")
    recorded = json.loads((first / "experiment.json").read_text())
    assert recorded["speed"]["reason"].startswith(("fp32", "bf16"))  # measured here, once
    # a fresh folder told where the recorded settings are trains exactly as the recorded run did
    again = tmp_path / "again"
    run(experiment_config(corpus, again, train=auto, seeds=[0], settings_from=str(first)), tmp_path / "b.yaml")
    speed = json.loads((again / "speed.json").read_text())
    assert speed["reused_from"] == str(first) and speed["bf16"] == recorded["speed"]["bf16"]
    assert per_run_values(again) == per_run_values(first)
    for d in (again / "runs").iterdir():
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["train"]["bf16"] == recorded["speed"]["bf16"] and cfg["train"]["threads"] == recorded["speed"]["threads"]
    # re-timing is explicit
    from experiments.ablation import resolve_speed

    s = {"base_dir": str(tmp_path), "settings_from": str(first)}
    rung = {"model": recorded["settings"]["model"], "train": {**recorded["settings"]["train"], "bf16": "auto"}}
    fresh = resolve_speed(s, tmp_path / "fresh-folder", rung, 400, __import__("torch").device("cpu"),
                          log=lambda m: None, retime=True)
    assert "reused_from" not in fresh and "ms_per_step" in fresh


def test_every_record_names_its_code_settings_and_machine(sequential):  # noqa: F811
    exp = json.loads((sequential / "experiment.json").read_text())
    prov = exp["provenance"]
    assert prov["winnow"]["commit"] and prov["winnow"]["dirty"] in (True, False)
    assert {"torch", "transformers", "tokenizers"} <= set(prov["packages"]) and prov["cpu"]
    for d in (sequential / "runs").iterdir():
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["provenance"]["winnow"]["commit"] == prov["winnow"]["commit"]
        assert cfg["train"]["bf16"] is False and cfg["train"]["compile"] is False and cfg["threads_used"] == 1
        assert cfg["device"] == "cpu"


def test_the_reproduce_line_pins_the_config_by_path_and_sha256_beside_the_commit(sequential, tmp_path):  # noqa: F811
    """`winnow report DIR` (no --command) names the command, the config's path and sha256, and the commit."""
    import hashlib
    import shutil

    from experiments.cli import main

    exp = json.loads((sequential / "experiment.json").read_text())
    config = sequential.parent / "seq.yaml"
    assert exp["config"] == str(config)
    assert exp["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    copy = tmp_path / "copy"
    shutil.copytree(sequential, copy)
    assert main(["report", str(copy)]) == 0
    line = next(x for x in (copy / "report.md").read_text().splitlines() if x.startswith("Reproduce: "))
    commit = exp["provenance"]["winnow"]["commit"][:12]
    assert line.startswith(f"Reproduce: `winnow ablation {config}` -- config `{config}`, ")
    assert f"sha256 `{exp['config_sha256']}`" in line and f"at commit {commit}" in line
    # results from before the sha256 was recorded say so instead of inventing one
    del exp["config_sha256"]
    (copy / "experiment.json").write_text(json.dumps(exp))
    assert main(["report", str(copy)]) == 0
    assert "sha256 not recorded" in (copy / "report.md").read_text()


def test_models_that_do_not_beat_their_ngram_baseline_are_flagged_first(sequential):  # noqa: F811
    """Six optimiser steps learn far less than a bigram table of the same tokens: the verdict must say so first."""
    from experiments.report import write_report

    report = write_report(sequential).read_text()
    verdict = verdict_of(report)
    assert verdict.startswith("- **Sanity gate: failed.**") and "data statistics" in verdict.splitlines()[0]
    assert "do not beat a Kneser-Ney" in verdict.splitlines()[0]
    assert "**As good as?" in verdict or "**As good as:" in verdict
    assert "## Sanity gate" in report and "does not beat" in report


def test_the_plan_predicts_the_grid_and_the_report_sets_it_against_what_ran(corpus, tmp_path):  # noqa: F811
    from experiments.plan import plan_ablation
    from experiments.report import write_report
    from pipeline.config import load_config
    from tests.conftest import write_config

    out = tmp_path / "planned"
    cfg = experiment_config(corpus, out, prior_spread={"sd": 0.05, "baseline": 3.0}, equivalence_margin=0.03)
    path = write_config(tmp_path / "p.yaml", cfg)
    plan = plan_ablation(load_config(path), log=lambda m: None, steps=(2, 5))
    assert not list((out / "runs").glob("*/done.json")) if (out / "runs").exists() else True  # trained nothing
    assert plan["grid"]["runs"] == 6 and plan["grid"]["predicted_s"] > 0
    arms = {a["arm"]: a for a in plan["arms"]}
    assert arms["clean"]["documents"] and arms["clean"]["epochs"][0] > arms["raw"]["epochs"][0]
    assert plan["power"]["margin"] == 0.03 and plan["power"]["mde"] > 0 and plan["power"]["seeds_for_margin"] > 2
    run(cfg, tmp_path / "p.yaml")
    report = write_report(out).read_text()
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["grid"]["trained_now"] == 6 and exp["plan"]["grid"]["predicted_s"] == plan["grid"]["predicted_s"]
    assert "## What ran, against the plan" in report and "against the prediction" in report
