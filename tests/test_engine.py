"""The ablation as an engine: a validated config, fingerprinted artifacts that a config change redoes exactly,
runs as executor tasks whose values do not depend on the executor, evaluation tasks from a user's own module,
models that lm-evaluation-harness reads, and a ladder of scales with decision consistency."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from experiments.synthetic_web import write_corpus
from tests.conftest import write_config
from tests.test_report_stats import verdict_of

TINY = {"arch": "llama", "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "context": 32}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    write_corpus(d / "corpus", n_docs=400, seed=11)
    return d


def experiment_config(d: Path, out: Path, **exp) -> dict:
    """A tiny two-arm ablation (plus a control) on the synthetic web: seconds per run on one CPU thread."""
    e = {"out_dir": str(out), "seeds": [0, 1],
         "tokenizer": {"stage": "ingest", "vocab_size": 400, "sample_docs": 200},
         "eval_sets": [{"name": "held", "source": "web", "max_docs": 6}], "eval_max_chars": 300,
         "model": TINY, "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "checkpoint_every": 3,
                                  "warmup_steps": 1, "bf16": False, "compile": False, "decay_budgets": [0.5]},
         "arms": [{"name": "raw", "stage": "ingest", "tokens": 6000},
                  {"name": "clean", "stage": "length", "tokens": 1500}, {"kind": "raw-small"}],
         "compare": {"baseline": "raw", "candidate": "clean"}, "primary_metric": "bpb/held",
         "execution": {"workers": 1}}
    e.update(exp)
    e = copy.deepcopy(e)
    return {"run_dir": str(d / "run"), "workers": 1, "stages": [
        {"name": "ingest", "shard_docs": 200, "inputs": [{"path": str(d / "corpus" / "web-*.jsonl.gz"), "source": "web"}]},
        {"name": "length", "kind": "filter", "filters": [{"tests.data.slow_filter:SlowLengthFilter": {"min_chars": 600}}]},
    ], "experiment": e}


def run(cfg: dict, path: Path, **kw) -> Path:
    from experiments.ablation import run_ablation
    from pipeline.config import load_config

    return run_ablation(load_config(write_config(path, cfg)), log=lambda m: None, **kw)


def per_run_values(out: Path) -> dict[str, dict]:
    """Each run's final per-item arrays and evaluation curve, byte for byte."""
    res = {}
    for d in sorted((out / "runs").iterdir()):
        with np.load(d / "final_items.npz", allow_pickle=False) as z:
            items = {k: z[k].tobytes() for k in z.files}
        res[d.name] = {"items": items, "evals": (d / "evals.jsonl").read_text(),
                       "loss": [json.loads(x)["loss"] for x in (d / "train_log.jsonl").read_text().splitlines()]}
    return res


@pytest.fixture(scope="module")
def sequential(corpus):
    out = corpus / "seq"
    return run(experiment_config(corpus, out), corpus / "seq.yaml")


# ---------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize("section, key, near", [
    ("experiment", "seed", "seeds"), ("model", "d_modle", "d_model"), ("train", "warmup_step", "warmup_steps"),
    ("tokenizer", "vocab", "vocab_size"), ("arms", "token", "tokens"), ("execution", "worker", "workers"),
    ("eval_sets", "max_doc", "max_docs"), ("scales", "tokens_per_parm", "tokens_per_param"),
])
def test_a_typo_in_any_experiment_key_is_one_line_naming_the_nearest_key(corpus, tmp_path, capsys, section, key, near):
    from experiments.cli import main

    cfg = experiment_config(corpus, tmp_path / "out")
    e = cfg["experiment"]
    if section == "experiment":
        e[key] = [0]
    elif section in ("arms", "eval_sets"):
        e[section][0][key] = 1
    elif section == "scales":
        e["scales"] = [{"name": "s", "steps": 3, key: 1}]
    else:
        e[section][key] = 1
    assert main(["ablation", str(write_config(tmp_path / "typo.yaml", cfg)), "--no-report"]) == 3  # a config problem (pipeline/errors.py)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"unknown key `{key}`" in err[0] and f"did you mean `{near}`" in err[0], err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "lr", -1, "a number in (0, 10]"), ("model", "arch", "rnn", "one of 'llama', 'gpt2'"),
    ("train", "batch_size", 2.5, "an integer >= 1"), ("train", "bf16", "yes", "true, false or auto"),
    ("model", "n_heads", 3, "multiple of `n_heads`"),
])
def test_out_of_range_and_wrongly_typed_values_are_refused(corpus, tmp_path, section, key, value, expected):
    from experiments.settings import experiment_settings
    from pipeline.config import load_config
    from pipeline.params import ParamError

    cfg = experiment_config(corpus, tmp_path / "out")
    cfg["experiment"][section][key] = value
    with pytest.raises(ParamError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        experiment_settings(load_config(write_config(tmp_path / "bad.yaml", cfg)))


@pytest.mark.parametrize("argv, code, expected", [
    (["--arm", "clen"], 2, "--arm clen: no such arm (did you mean `clean`?); arms: raw, clean, raw-small"),
    (["--scale", "big"], 2, "--scale big: the experiment has no `scales:` (it is one rung)"),
    (["--plan", "--scale", "big"], 2, "--scale big: the experiment has no `scales:` (it is one rung)"),
    (["--settings-from", "{tmp}"], 4, "--settings-from {tmp}: no experiment.json there"),
    (["--aa", "--arm", "clean"], 2, "--arm clean: no such arm; arms: raw, raw-again"),
])
def test_ablation_choices_that_name_nothing_are_refused_before_anything_runs(corpus, tmp_path, capsys, argv, code,
                                                                           expected):
    """`--arm` with a typo used to run the pipeline and stop at "no finished training runs"; `--scale` on a one-rung
    experiment and a missing `--settings-from` folder were ignored, and every arm trained."""
    from experiments.cli import main

    cfg = experiment_config(corpus, tmp_path / "out")
    cfg["run_dir"] = str(tmp_path / "run")
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["ablation", str(path), *[a.format(tmp=tmp_path) for a in argv]]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("winnow: error: " + expected.format(tmp=tmp_path)), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_a_primary_metric_no_task_reports_is_refused_before_anything_runs(corpus, tmp_path):
    """`primary_metric: bpb/hled` used to be found out by the report, after every run had trained."""
    from experiments.settings import experiment_settings
    from pipeline.config import load_config
    from pipeline.params import ParamError

    def settings(metric):
        cfg = experiment_config(corpus, tmp_path / "out", primary_metric=metric)
        return experiment_settings(load_config(write_config(tmp_path / "m.yaml", cfg)))

    with pytest.raises(ParamError, match=r"^experiment.primary_metric: no task reports 'bpb/hled' "
                                         r"\(did you mean `bpb/held`\?\); the tasks' metrics: bpb/held$"):
        settings("bpb/hled")
    with pytest.raises(ParamError, match="no task reports 'blimp'"):
        settings("blimp")
    # per-domain metrics are named once the data is read: a name under a task's own passes
    assert settings("bpb/held/news")["primary_metric"] == "bpb/held/news"
    assert settings("bpb_macro/held")["primary_metric"] == "bpb_macro/held"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# fingerprints: a changed config redoes exactly what depends on it


def _stamps(out: Path) -> dict[str, float]:
    files = ["tokenizer.json", "eval_sets.json"] + [str(p.relative_to(out)) for p in out.glob("subsets/**/tokens.npy")]
    for d in (out / "runs").iterdir():
        files += [f"runs/{d.name}/done.json", f"runs/{d.name}/eval.json", f"runs/{d.name}/final_items.npz"]
    return {f: (out / f).stat().st_mtime_ns for f in files}


@pytest.mark.slow
def test_a_changed_eval_set_reevaluates_without_retraining_and_a_new_tokenizer_redoes_everything(corpus, tmp_path):
    from experiments.check import check_experiment

    out = tmp_path / "fp"
    cfg = experiment_config(corpus, out, seeds=[0])
    run(cfg, tmp_path / "a.yaml")
    before = _stamps(out)
    assert check_experiment(out) == []
    run(cfg, tmp_path / "a.yaml")  # unchanged: nothing is redone
    assert _stamps(out) == before
    # another evaluation set size: the sets and every evaluation again, from the saved points; no training
    cfg["experiment"]["eval_sets"][0]["max_docs"] = 4
    run(cfg, tmp_path / "b.yaml")
    after = _stamps(out)
    changed = {f for f in before if after[f] != before[f]}
    assert "eval_sets.json" in changed and "tokenizer.json" not in changed
    assert not any(f.endswith(("done.json", "tokens.npy")) for f in changed)  # no retraining, no redraw
    assert all(after[f"runs/{d.name}/eval.json"] != before[f"runs/{d.name}/eval.json"] for d in (out / "runs").iterdir())
    with np.load(out / "runs" / "raw-seed0" / "final_items.npz") as z:
        assert len(z["bpb/held/bits"]) == 4
    # another tokenizer size: tokenizer, subsets, runs and evaluations all again (the held-out sets stay)
    cfg["experiment"]["tokenizer"]["vocab_size"] = 380
    run(cfg, tmp_path / "c.yaml")
    final = _stamps(out)
    assert {f for f in after if final[f] == after[f]} == {"eval_sets.json"}
    assert json.loads((out / "tokenizer.manifest.json").read_text())["vocab_size"] <= 380
    # one arm's budget: only that arm's subset and runs
    cfg["experiment"]["arms"][0]["tokens"] = 5000
    run(cfg, tmp_path / "d.yaml")
    last = _stamps(out)
    changed = {f for f in final if last[f] != final[f]}
    assert changed and all("raw-seed0" in f or "/raw/" in f for f in changed), changed
    from experiments.cli import main

    assert check_experiment(out) == [] and main(["check", str(out)]) == 0
    assert main(["check", str(corpus / "run")]) == 0  # the pipeline run (its ablation folder lives elsewhere here)
    # winnow check finds an altered artifact
    items = out / "runs" / "clean-seed0" / "final_items.npz"
    data = bytearray(items.read_bytes())
    data[len(data) // 2] ^= 0xFF
    items.write_bytes(bytes(data))
    problems = check_experiment(out)
    assert len(problems) == 1 and "runs/clean-seed0/final_items.npz: checksum differs" in problems[0]


# ---------------------------------------------------------------------------
# executors


@pytest.mark.slow
def test_two_local_workers_give_the_same_per_run_values_as_one(corpus, sequential):
    out = corpus / "par"
    cfg = experiment_config(corpus, out, execution={"workers": 2})
    run(cfg, corpus / "par.yaml")
    seq, par = per_run_values(sequential), per_run_values(out)
    assert sorted(seq) == sorted(par) == ["clean-seed0", "clean-seed1", "raw-seed0", "raw-seed1", "raw-small-seed0",
                                          "raw-small-seed1"]
    assert seq == par
    exp = json.loads((out / "experiment.json").read_text())
    assert exp["execution"] == {"executor": "local", "workers": 2, "threads_per_run": 1}


@pytest.mark.slow
def test_a_ray_run_gives_the_same_per_run_values(corpus, sequential):
    pytest.importorskip("ray")
    import ray

    out = corpus / "ray"
    try:
        run(experiment_config(corpus, out, execution={"workers": 2, "executor": "ray"}), corpus / "ray.yaml")
    finally:
        ray.shutdown()
    assert per_run_values(sequential) == per_run_values(out)


def test_gpu_claims_are_exclusive_per_process(tmp_path, monkeypatch):
    """k local workers on k GPUs: each run claims a GPU nobody else holds (lock files), so none is shared."""
    import fcntl

    import experiments.ablation as ab

    monkeypatch.setattr(ab.tempfile, "gettempdir", lambda: str(tmp_path))
    held = open(tmp_path / f"winnow-gpu-{os.getuid()}-0.lock", "w")  # another worker holds GPU 0
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ab, "_GPU_LOCK", None)
    assert str(ab._claim_gpu({"device": "cuda"})) == "cuda:1"
    assert str(ab._claim_gpu({"device": "cuda", "ray": True})) == "cuda:0"  # Ray assigns; we use what it exposes
    first = ab._GPU_LOCK  # this worker keeps GPU 1; a third worker (a fresh claim) finds none free
    monkeypatch.setattr(ab, "_GPU_LOCK", None)
    with pytest.raises(RuntimeError, match="no free GPU"):
        ab._claim_gpu({"device": "cuda"})
    # small models share a GPU: gpus_per_run 0.5 gives each GPU a second slot, filled only once every first is taken
    monkeypatch.setattr(ab, "_GPU_LOCK", None)
    assert str(ab._claim_gpu({"device": "cuda", "gpus_per_run": 0.5})) == "cuda:0"
    second = ab._GPU_LOCK
    monkeypatch.setattr(ab, "_GPU_LOCK", None)
    assert str(ab._claim_gpu({"device": "cuda", "gpus_per_run": 0.5})) == "cuda:1"
    monkeypatch.setattr(ab, "_GPU_LOCK", None)
    with pytest.raises(RuntimeError, match="2 run"):
        ab._claim_gpu({"device": "cuda", "gpus_per_run": 0.5})
    for lock in (first, second, ab._GPU_LOCK):
        if lock:
            lock[0].close()


# ---------------------------------------------------------------------------
# evaluation tasks as plug-ins, and the report loops over them


@pytest.mark.slow
def test_a_task_from_a_users_module_runs_through_the_ablation_and_the_report(corpus, tmp_path):
    from experiments.report import write_report

    cloze = tmp_path / "cloze.jsonl"
    cloze.write_text("".join(json.dumps({"context": c, "choices": ch, "answer": a}) + "\n" for c, ch, a in [
        ("The cat sat on the", ["mat.", "seventeen quickly."], 0), ("Water is", ["wet.", "purple loudly."], 0),
        ("She opened the", ["door.", "of of of."], 0)]))
    out = tmp_path / "user"
    cfg = experiment_config(corpus, out, seeds=[0, 1, 2], tasks=[
        {"task": "tests.data.my_task:CopyGain", "name": "copy"},
        {"task": "cloze", "name": "tiny_cloze", "path": str(cloze)}],
        arms=[{"name": "raw", "stage": "ingest", "tokens": 6000}, {"name": "clean", "stage": "length", "tokens": 1500}],
        primary_metric="copy/gain")
    run(cfg, tmp_path / "u.yaml")
    report = write_report(out).read_text()
    assert "**copy/gain** (primary)" in report and "tiny_cloze/p_correct" in report
    assert "copy/gain (bits per byte saved on the second copy): higher is better" in report
    verdict = verdict_of(report)
    assert "**Difference tests:** On copy/gain (primary)" in verdict and "**As good as?" in verdict
    with np.load(out / "runs" / "raw-seed0" / "final_items.npz") as z:
        assert z["copy/gain"].shape == (2,) and z["tiny_cloze/logp"].shape == (3, 2)


def test_cloze_metrics_are_computed_from_the_per_choice_log_probabilities():
    from experiments.tasks import Cloze, TaskContext

    t = Cloze("c", {"path": "unused.jsonl"}, TaskContext(eval_sets={}))
    items = {"logp": np.log(np.array([[0.6, 0.2, 0.2], [0.1, 0.3, np.nan]])), "answer": np.array([0, 0]),
             "bytes": np.array([[4, 4, 4], [8, 8, 0]])}
    m = t.aggregate(items)
    assert m["c/acc"] == 0.5
    assert m["c/p_correct"] == pytest.approx((0.6 + 0.25) / 2)  # the second item's choices normalised: 0.1 / 0.4
    assert m["c/bpb_correct"] == pytest.approx(-(np.log(0.6) + np.log(0.1)) / np.log(2) / 12)


# ---------------------------------------------------------------------------
# models in Hugging Face format; lm-evaluation-harness reads them


@pytest.mark.slow
def test_final_models_load_with_auto_classes_and_score_as_winnow_does(sequential):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experiments.evaluate import continuation_logprobs
    from experiments.tokenizer import eos_id, load_tokenizer

    final = sequential / "runs" / "clean-seed1" / "final"
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    hf_tok = AutoTokenizer.from_pretrained(final)
    tok = load_tokenizer(sequential / "tokenizer.json")
    text = "The river rose slowly over the old stone wall."
    ids = hf_tok(text)["input_ids"]
    assert ids == [eos_id(tok)] + tok.encode(text).ids  # end-of-text first, as winnow scores a text
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
    theirs = float(lp.gather(-1, torch.tensor(ids[1:])[:, None]).sum())
    assert theirs == pytest.approx(continuation_logprobs(model, [ids], 1, torch.device("cpu"))[0], abs=1e-4)


@pytest.mark.slow
def test_lm_evaluation_harness_runs_on_an_exported_model_and_agrees_with_winnow(sequential, tmp_path, monkeypatch):
    """A tiny multiple-choice task on a local file, through lm_eval's own Hugging Face model class: its
    per-choice log-likelihoods equal winnow's cloze task's within 1e-4 nats."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from experiments.tasks import Cloze, TaskContext
    from experiments.tokenizer import load_tokenizer

    rows = [{"context": "The cat sat on the", "choices": ["mat.", "dog barked loudly."], "answer": 0},
            {"context": "Water flows down the", "choices": ["hill.", "seven.", "river bank."], "answer": 2},
            {"context": "She opened the door and", "choices": ["smiled.", "of the the."], "answer": 0}]
    data = tmp_path / "cloze.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "winnow_tiny.yaml").write_text(
        "task: winnow_tiny_cloze\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    final = sequential / "runs" / "raw-seed0" / "final"
    res = simple_evaluate(model="hf", model_args=f"pretrained={final},add_bos_token=True,dtype=float32",
                          tasks=["winnow_tiny_cloze"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                          device="cpu", batch_size=4, log_samples=True)
    samples = sorted(res["samples"]["winnow_tiny_cloze"], key=lambda s: s["doc_id"])
    theirs = [[r[0][0] for r in s["resps"]] for s in samples]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(final).eval()
    task = Cloze("c", {"path": str(data)}, TaskContext(eval_sets={}))
    items = task.score(model, task.prepare(load_tokenizer(sequential / "tokenizer.json"), 32, True), torch.device("cpu"))
    for row, lp in zip(items["logp"], theirs):
        assert np.allclose(row[: len(lp)], lp, atol=1e-4), (row, lp)
    assert res["results"]["winnow_tiny_cloze"]["acc,none"] == pytest.approx(task.aggregate(items)["c/acc"])


# ---------------------------------------------------------------------------
# a ladder of scales


@pytest.mark.slow
def test_a_two_rung_ladder_runs_the_same_arms_and_seeds_and_reports_decision_consistency(corpus, tmp_path):
    from experiments.ablation import load_results
    from experiments.report import write_report

    out = tmp_path / "ladder"
    cfg = experiment_config(corpus, out, seeds=[0, 1, 2], scales=[
        {"name": "xs", "model": {"d_model": 16, "d_ff": 32}, "tokens_per_param": 2},
        {"name": "s", "tokens_per_param": 1}],
        arms=[{"name": "raw", "stage": "ingest", "tokens_fraction": 1.0},
              {"name": "clean", "stage": "length", "tokens_fraction": 0.25}])
    run(cfg, tmp_path / "l.yaml")
    runs = load_results(out)
    by_rung = {sc: sorted((r["arm"], r["seed"]) for r in runs if r["scale"] == sc) for sc in ("xs", "s")}
    assert by_rung["xs"] == by_rung["s"] == [(a, s) for a in ("clean", "raw") for s in (0, 1, 2)]
    for r in runs:  # tokens per parameter as declared per rung; the raw arm sees one epoch, clean four
        tpp = r["done"]["tokens_seen"] / r["config"]["params"]["non_embedding"]
        assert tpp == pytest.approx({"xs": 2, "s": 1}[r["scale"]], rel=0.1)
        assert r["done"]["epochs"] == pytest.approx({"raw": 1.0, "clean": 4.0}[r["arm"]], rel=0.1)
    assert {r["config"]["model"]["d_model"] for r in runs if r["scale"] == "xs"} == {16}
    report = write_report(out).read_text()
    assert "**Verdict per rung:**" in report and "- **xs**:" in report and "- **s**:" in report
    assert "# Decision consistency across rungs" in report and "| s | " in report and "1/1 (100%)" in report
    assert (out / "curves-xs.png").exists() and (out / "curves-s.png").exists()


# ---------------------------------------------------------------------------
# speed accounting


@pytest.mark.slow
def test_every_run_reports_flops_and_mfu_against_a_measured_peak(sequential):
    from experiments.train import flops_per_token

    exp = json.loads((sequential / "experiment.json").read_text())
    assert exp["peak"]["flops"] > 1e8 and exp["peak"]["source"].startswith("measured")
    for d in (sequential / "runs").iterdir():
        done = json.loads((d / "done.json").read_text())
        cfg = json.loads((d / "config.json").read_text())
        assert done["flops_per_token"] == flops_per_token(cfg["model"], cfg["vocab_size"], cfg["params"])
        assert done["achieved_flops"] == pytest.approx(done["tokens_per_second"] * done["flops_per_token"], rel=1e-3)
        assert 0 < done["mfu"] == pytest.approx(done["achieved_flops"] / exp["peak"]["flops"], rel=1e-3)


def test_micro_batches_give_the_same_step_as_the_whole_batch():
    """Gradient accumulation over micro-batches: the same loss and the same gradient as one whole batch (compared
    before the optimiser, whose first Adam step would turn a rounding difference in a tiny gradient into a sign)."""
    import torch

    from experiments.train import make_step, make_optimizer, build_model

    x = torch.randint(0, 300, (8, 33), generator=torch.Generator().manual_seed(0))
    out = []
    for micro in (None, 2):
        m = build_model(TINY, 300, seed=0)
        c = {"bf16": False, "compile": False, "grad_clip": 0.0, "weight_decay": 0.1, "lr": 1e-3, "beta2": 0.95,
             "micro_batch_size": micro}
        opt = make_optimizer(m, c)
        opt.step = opt.zero_grad = lambda *a, **k: None  # keep the accumulated gradients to look at
        loss = float(make_step(m, opt, c, torch.device("cpu"))(x))
        out.append((loss, {n: p.grad.clone() for n, p in m.named_parameters()}))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)
    assert all(torch.allclose(out[0][1][k], out[1][1][k], rtol=1e-4, atol=1e-7) for k in out[0][1])


@pytest.mark.slow
def test_a_control_arm_matches_what_an_exhausted_candidate_actually_holds(corpus, tmp_path):
    """Data-constrained: the candidate asks for more than its stage holds; raw-small draws what it got, not what it
    asked for, so the comparison stays at equal size."""
    from experiments.ablation import load_results

    out = tmp_path / "exhausted"
    cfg = experiment_config(corpus, out, seeds=[0], arms=[
        {"name": "raw", "stage": "ingest", "tokens": 6000}, {"name": "clean", "stage": "length", "tokens": 10 ** 7},
        {"kind": "raw-small"}])
    run(cfg, tmp_path / "x.yaml")
    runs = {r["arm"]: r["subset"] for r in load_results(out)}
    assert runs["clean"]["exhausted"] and runs["clean"]["tokens"] < 10 ** 7
    assert runs["raw-small"]["tokens"] == runs["clean"]["tokens"] and not runs["raw-small"]["exhausted"]


def test_a_known_gpus_peak_comes_from_its_data_sheet(monkeypatch):
    import torch

    from experiments.train import device_peak_flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert device_peak_flops("cuda", bf16=True)["flops"] == 989e12
    assert device_peak_flops("cuda", bf16=False)["flops"] == 494e12  # fp32 matmuls run as TF32
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA L40S")
    assert "L40S" in device_peak_flops("cuda", bf16=True)["source"]
