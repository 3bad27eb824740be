"""The matched-model ablation as an engine: validated, fingerprinted, resumable, spread over executors.

pipeline -> held-out evaluation sets -> tokenizer -> token-budget subsets (with a
contamination check) -> one run per (rung, arm, seed) -> report.

**Fingerprints.** Like pipeline stages, every artifact records a fingerprint of
what made it, and is redone exactly when that changes:

- evaluation sets: their specs, the seed, the source stage's output, external
  files' checksums, the ids the quality scorers trained on;
- the tokenizer: its settings, the seed, its stage's output;
- each subset: arm (stage, budget, sources, reference), draw seed, the
  tokenizer, its stage's output (its contamination report separately: the
  subset and the evaluation sets);
- each run's training: model, training settings, steps, seed, the subset;
- each run's evaluation: every task's parameters and data, the tokenizer, the
  run's training.

So a new evaluation set re-scores the saved evaluation points of every run
without retraining; a new tokenizer size redoes tokenizer, subsets, runs and
evaluations; a changed arm redoes only that arm. ``winnow check`` verifies the
chain and the checksums (:mod:`experiments.check`).

**Runs are executor tasks** (:func:`execute_run`, a module-level function of a
picklable spec): the local executor runs ``execution.workers`` at once (one
thread each on CPU by default; one per GPU with k GPUs, each run claiming a free
GPU by a lock file), Ray schedules them with ``num_cpus``/``num_gpus`` per run.
A run's numbers do not depend on where or beside what it ran.

The experiment config's schema is in :mod:`experiments.settings` and the README.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.settings import AA_SEED_OFFSET, ARM_KINDS, experiment_settings  # noqa: F401  (re-exported)
from pipeline.config import PipelineConfig
from pipeline.shards import atomic_write_bytes, atomic_write_json, fingerprint, read_json, remove_inside, sha256_file

RUN_FILES = ("run.json", "config.json", "done.json", "train_log.jsonl", "points.jsonl", "evals.jsonl",
             "eval.json", "final_items.npz", "final_eval.json", "ngram.json", "ngram2_items.npz", "ngram3_items.npz")


def _trained_filter_model_paths(cfg: PipelineConfig) -> list[str]:
    from experiments.quality_models import trainable_filters

    return [f.params["model_path"] for _, f in trainable_filters(cfg) if f.params.get("model_path")]


def run_pipeline(cfg: PipelineConfig, log) -> None:
    """Train the quality scorers if the config has any (and they are missing), then run every stage."""
    from pipeline.runner import Runner

    missing = [p for p in _trained_filter_model_paths(cfg) if not Path(p).exists()]
    if missing:
        from experiments.quality_models import train_quality

        log(f"training quality scorers: {', '.join(missing)}")
        train_quality(cfg, log=log)
    Runner(cfg, log=log).run()


def _stage_fp(run_dir: Path, stage: str) -> str:
    from pipeline.rundir import RunFolder

    return RunFolder(run_dir).manifest(stage).get("output_fingerprint", "")


def _fresh(manifest: Path, fp: str) -> bool:
    return manifest.exists() and read_json(manifest).get("fingerprint") == fp


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# ---------------------------------------------------------------------------
# the experiment, driver side


def prepare_experiment(cfg: PipelineConfig, s: dict, log=print, only_scales: list[str] | None = None) -> dict:
    """Evaluation sets, tokenizer and subsets, each redone only when its fingerprint changed. Returns what the
    runs need: ``{"out", "eval_sets", "fingerprints", "tok_path", "vocab", "subsets"}``."""
    from experiments.data import ContaminationIndex, build_eval_sets
    from experiments.subsets import SUBSET_MANIFEST, with_warnings, build_subset
    from experiments.tokenizer import load_tokenizer, train_tokenizer

    out = Path(s["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    # 1. held-out evaluation sets, decided before anything is drawn for training
    exclude: set[str] = set()
    models = []
    for p in _trained_filter_model_paths(cfg):
        from filters.quality_model import reference_ids

        if Path(p).exists():
            exclude |= reference_ids(p)
            models.append(sha256_file(p))
    stages_read = sorted({es["stage"] or s["tokenizer"]["stage"] for es in s["eval_sets"] if es["kind"] == "raw"})
    files = {}
    for es in s["eval_sets"]:
        if es["kind"] == "file":
            files[es["name"]] = sha256_file(Path(es["path"]))
        elif es["kind"] == "domains":
            files[es["name"]] = {f.name: sha256_file(f) for f in sorted(Path(es["path"]).glob("*.jsonl.gz"))}
    es_fp = fingerprint("eval_sets", s["eval_sets"], cfg.seed, {st: _stage_fp(cfg.run_dir, st) for st in stages_read},
                        files, models)
    sets_path, sets_manifest = out / "eval_sets.json", out / "eval_sets.manifest.json"
    if _fresh(sets_manifest, es_fp) and sets_path.exists():
        eval_sets = read_json(sets_path)
    else:
        specs = [{k: v for k, v in es.items() if v is not None} for es in s["eval_sets"]]
        eval_sets = build_eval_sets(cfg.run_dir, specs, cfg.seed, exclude, default_stage=s["tokenizer"]["stage"])
        atomic_write_json(sets_path, eval_sets)
        atomic_write_json(sets_manifest, {"fingerprint": es_fp, "sha256": sha256_file(sets_path),
                                          "sets": {k: len(v) for k, v in eval_sets.items()}})
    log("evaluation sets: " + ", ".join(f"{k} {len(v)} docs" for k, v in eval_sets.items()))

    # 2. one tokenizer for every arm
    t = s["tokenizer"]
    tok_fp = fingerprint("tokenizer", t, cfg.seed, _stage_fp(cfg.run_dir, t["stage"]))
    tok_path, tok_manifest = out / "tokenizer.json", out / "tokenizer.manifest.json"
    if not (_fresh(tok_manifest, tok_fp) and tok_path.exists()):
        info = train_tokenizer(cfg.run_dir, t["stage"], tok_path, int(t["vocab_size"]), int(t["sample_docs"]), cfg.seed)
        atomic_write_json(tok_manifest, {**info, "fingerprint": tok_fp})
        log(f"tokenizer: vocab {info['vocab_size']}, trained on {info['sample_docs']:,} documents")
    tok = load_tokenizer(tok_path)
    vocab = tok.get_vocab_size()

    # 3. token-budget subsets, one per (rung, arm, seed); each checked for 13-gram overlap with every eval set
    contamination = None
    subsets: dict[tuple, dict] = {}
    # candidates before the controls matching their budget or mix
    order = sorted(s["arms"], key=lambda a: bool(a.get("budget_of") or a.get("mix_of")))
    # metadata keys a source-matched control mixes over: its candidate's subsets count their tokens per value
    count_keys: dict[str, list[str]] = {}
    for a in s["arms"]:
        if a.get("mix_of"):
            count_keys.setdefault(a["mix_of"], []).append(a["key"])
    for rung in rungs(s, vocab, only_scales):
        for arm in order:
            for seed in arm.get("seeds") or s["seeds"]:
                budget = arm_budget(arm, rung)
                matched = subsets.get((rung["name"], arm.get("budget_of"), seed))
                if matched is not None:  # what the candidate actually holds at this rung and seed
                    budget = min(budget, int(matched["manifest"]["tokens"]))
                mix = None
                if arm.get("mix_of"):  # the mix of the candidate's subset of this rung and seed
                    shares = subsets[(rung["name"], arm["mix_of"], seed)]["manifest"]["composition_tokens"].get(
                        arm["key"]) or {}
                    mix = {"key": arm["key"], "shares": shares}
                cap = arm.get("doc_cap") if arm.get("doc_cap") is not None else s.get("doc_cap")
                draw = cfg.seed if arm.get("data") == "fixed" else int(seed)
                d = subset_dir(out, arm, draw, rung["name"] if s["scales"] else None)
                key = (rung["name"], arm["name"], seed)
                ref = arm.get("reference")
                keys = count_keys.get(arm["name"])
                guards = [{"doc_cap": cap, "mix": mix, "count_keys": keys}] if cap or mix or keys else []
                data_fp = fingerprint("subset", arm["stage"], budget, arm.get("sources"), ref,
                                      sha256_file(Path(ref["path"])) if ref else None, draw, tok_fp,
                                      _stage_fp(cfg.run_dir, arm["stage"]), *guards)
                c_fp = fingerprint("contamination", data_fp, es_fp, s["contamination_ngram"])
                m_path = d / SUBSET_MANIFEST
                if _fresh(m_path, data_fp) and read_json(m_path).get("contamination_fingerprint") == c_fp and (
                        d / "tokens.npy").exists():
                    m = read_json(m_path)
                else:
                    if contamination is None:
                        contamination = ContaminationIndex(eval_sets, n=int(s["contamination_ngram"]))
                    m = build_subset(cfg.run_dir, arm["stage"], budget, tok, tok_path, d, draw, contamination,
                                     sources=arm.get("sources"), reference=ref, doc_cap=cap, mix=mix,
                                     count_keys=keys, min_docs=s.get("min_docs"),
                                     fingerprints={"fingerprint": data_fp, "contamination_fingerprint": c_fp})
                    worst = max((v["rate"] for v in m.get("contamination_13gram", {}).values()), default=0.0)
                    log(f"subset {arm['name']}{' @ ' + rung['name'] if s['scales'] else ''} (draw {draw}): "
                        f"{m['tokens']:,} tokens from {m['documents']:,} docs of {arm['stage']}"
                        + f"; max 13-gram contamination {worst:.1%}")
                m = with_warnings(m, s.get("min_docs"))
                for w in m["warnings"]:
                    log(f"  warning: subset {arm['name']} (draw {draw}): {w}")
                subsets[key] = {"dir": str(d), "manifest": m}
    return {"out": out, "eval_sets": eval_sets, "tok_path": tok_path, "vocab": vocab, "subsets": subsets,
            "fingerprints": {"eval_sets": es_fp, "tokenizer": tok_fp}}


def rungs(s: dict, vocab: int, only: list[str] | None = None) -> list[dict]:
    """The ladder's rungs, each with its model, training settings and steps; one unnamed rung without ``scales``.
    ``only``: just these rungs (``winnow ablation --scale``)."""
    from experiments.train import model_params

    if not s["scales"]:
        return [{"name": "", "model": s["model"], "train": s["train"], "steps": s["train"]["steps"]}]
    names = [r["name"] for r in s["scales"]]
    for n in only or []:
        if n not in names:
            raise ValueError(f"--scale {n}: no such rung (rungs: {', '.join(names)})")
    out = []
    for r in s["scales"]:
        if only and r["name"] not in only:
            continue
        params = model_params(r["model"], vocab)
        tokens_per_step = r["train"]["batch_size"] * r["model"]["context"]
        steps = r["steps"] or max(1, round(r["tokens_per_param"] * params["non_embedding"] / tokens_per_step))
        out.append({"name": r["name"], "model": r["model"], "train": {**r["train"], "steps": steps}, "steps": steps,
                    "params": params, "tokens_per_param": round(steps * tokens_per_step / params["non_embedding"], 2)})
    return out


def arm_budget(arm: dict, rung: dict) -> int:
    """An arm's unique tokens: ``tokens``, or ``tokens_fraction`` of the tokens a run of this rung trains on."""
    if arm.get("tokens") is not None:
        return int(arm["tokens"])
    t = rung["train"]
    return max(1, round(float(arm["tokens_fraction"]) * rung["steps"] * t["batch_size"] * rung["model"]["context"]))


def subset_dir(out: Path, arm: dict, draw: int, rung: str | None = None) -> Path:
    base = out / "subsets" / (_slug(rung) if rung else "")
    return base / _slug(arm["name"]) / f"seed{draw}"


def run_id(arm: str, seed: int, rung: str | None = None) -> str:
    return (f"{_slug(rung)}-" if rung else "") + f"{_slug(arm)}-seed{seed}"


def run_specs(cfg: PipelineConfig, s: dict, prep: dict, speed: dict | None, peak: dict | None, device: str,
              only_arms: list[str] | None = None, ray: bool = False, only_scales: list[str] | None = None) -> list[dict]:
    """One picklable spec per (rung, arm, seed): everything :func:`execute_run` needs, and its fingerprints."""
    out = prep["out"]
    specs = []
    task_fps = _task_fingerprints(s, prep)
    for rung in rungs(s, prep["vocab"], only_scales):
        tc = dict(rung["train"])
        if speed:
            tc.update(bf16=speed["bf16"], compile=speed["compile"], threads=speed["threads"])
        for arm in s["arms"]:
            if only_arms and arm["name"] not in only_arms:
                continue
            for seed in arm.get("seeds") or s["seeds"]:
                sub = prep["subsets"][rung["name"], arm["name"], seed]
                m = sub["manifest"]
                steps = rung["steps"]
                if arm.get("steps") == "one_epoch":
                    steps = max(1, (m["tokens"] - 1) // rung["model"]["context"] // tc["batch_size"])
                elif arm.get("steps"):
                    steps = int(arm["steps"])
                train_cfg = {**tc, "steps": steps}
                train_fp = fingerprint("run", rung["model"], {k: v for k, v in train_cfg.items() if k != "threads"},
                                       seed, m["fingerprint"] if "fingerprint" in m else m.get("tokens_sha256"),
                                       prep["fingerprints"]["tokenizer"])
                eval_fp = fingerprint("evaluation", task_fps, train_fp, s["eval_max_chars"], cfg.seed)
                rid = run_id(arm["name"], seed, rung["name"] or None)
                specs.append({
                    "id": rid, "run_dir": str(out / "runs" / rid), "out_dir": str(out), "arm": arm, "seed": int(seed),
                    "scale": rung["name"] or None, "subset_dir": sub["dir"], "subset": m, "model": rung["model"],
                    "train": train_cfg, "vocab_size": prep["vocab"], "tokenizer_path": str(prep["tok_path"]),
                    "eval_sets_path": str(out / "eval_sets.json"), "tasks": s["tasks"],
                    "task_context": {"seed": cfg.seed, "eval_max_chars": s["eval_max_chars"], "base": s["base_dir"]},
                    "fingerprint": train_fp, "eval_fingerprint": eval_fp, "keep_points": s["keep_points"],
                    "peak": peak, "speed": speed, "device": device, "ray": ray,
                    "gpus_per_run": s["execution"]["gpus_per_run"],
                })
    return specs


def _task_fingerprints(s: dict, prep: dict) -> list:
    from experiments.tasks import TaskContext, build_task

    ctx = TaskContext(eval_sets=prep["eval_sets"], seed=0, eval_max_chars=s["eval_max_chars"], base=Path(s["base_dir"]))
    return [[t, build_task(t, ctx).data_fingerprint()] for t in s["tasks"]]


def metric_specs(s: dict, eval_set_names: list[str]) -> list[dict]:
    """Every metric the tasks report, in task order (what the report loops over)."""
    from experiments.tasks import TaskContext, build_task

    ctx = TaskContext(eval_sets={n: [] for n in eval_set_names}, base=Path(s.get("base_dir", ".")))
    return [m.to_dict() for t in s["tasks"] for m in build_task(t, ctx).metrics()]


def config_sha256(path) -> str | None:
    """The sha256 of the config file's bytes as the run read them: with the recorded commit, the report's
    "Reproduce:" line lets a reader check that the config they hold is the one that made the numbers."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return None


def _write_experiment_json(out: Path, experiment: dict) -> None:
    """The one place experiment.json is written, with the provenance of the code and machine that wrote it (winnow
    version, git commit and whether the tree was dirty, torch / transformers / tokenizers versions, host, CPU) and
    the plan made before it (``plan.json`` from ``--plan``), so the report can set prediction against outcome."""
    from pipeline.provenance import stamped

    if (out / "plan.json").exists():
        experiment = {**experiment, "plan": read_json(out / "plan.json")}
    atomic_write_json(out / "experiment.json", stamped(experiment))


def resolve_speed(s: dict, out: Path, first: dict, vocab: int, device, log=print, retime: bool = False,
                  settings_from: str | Path | None = None) -> dict | None:
    """Precision / compile / threads for every run, when any is "auto": the settings recorded in this folder
    (``speed.json``) by default, else those recorded in ``settings_from`` (a results folder's experiment.json, or the
    config's ``experiment.settings_from``), else measured now on the first rung's model and recorded. A re-run of a
    config therefore trains exactly as the recorded run did; ``retime`` measures again (explicitly)."""
    from experiments.train import choose_speed_settings

    tc = first["train"]
    if "auto" not in (tc["bf16"], tc["compile"], tc["threads"]):
        return None
    speed_path = out / "speed.json"
    src = settings_from or s.get("settings_from")
    if speed_path.exists() and not retime:
        speed = read_json(speed_path)
    elif src and not retime:
        folder = Path(src) if Path(src).is_absolute() or settings_from else Path(s["base_dir"]) / src
        rec = read_json(folder / "experiment.json") if (folder / "experiment.json").exists() else {}
        speed = rec.get("speed")
        if not speed:
            raise ValueError(f"{folder}: no recorded speed settings (experiment.json with `speed`) to reuse; "
                             "use --retime to measure them here")
        speed = {**speed, "reused_from": str(folder)}
        log(f"training speed: reusing the settings recorded in {folder} ({'bf16' if speed['bf16'] else 'fp32'}, "
            f"{speed['threads']} thread(s), compile {speed['compile']})")
    else:
        speed = choose_speed_settings(first["model"], tc, vocab, device, log=log)
    atomic_write_json(speed_path, speed)
    return speed


def run_ablation(cfg: PipelineConfig, log=print, only_arms: list[str] | None = None, workers: int | None = None,
                 executor: str | None = None, only_scales: list[str] | None = None, retime: bool = False,
                 settings_from: str | Path | None = None) -> Path:
    """Run the experiment of ``cfg`` (resuming; redoing exactly what a changed config invalidates). Training
    precision, compile and threads come from the recorded settings unless ``retime`` (see :func:`resolve_speed`)."""
    from experiments.train import device_peak_flops, pick_device
    from pipeline.executors import make_executor, run_all

    s = experiment_settings(cfg)
    t_start = time.perf_counter()
    run_pipeline(cfg, log)
    prep = prepare_experiment(cfg, s, log, only_scales)
    out = prep["out"]
    device = pick_device()
    ex = s["execution"]
    kind = executor or ex["executor"] or "local"
    n_workers = workers or ex["workers"] or default_workers(cfg, device, ex)

    first = rungs(s, prep["vocab"], only_scales)[0]
    tc = first["train"]
    speed = resolve_speed(s, out, first, prep["vocab"], device, log, retime, settings_from)
    bf16 = bool(speed["bf16"] if speed else tc["bf16"])
    threads = (speed or {}).get("threads") or tc["threads"]
    peak = device_peak_flops(device, bf16, threads if device.type == "cpu" else None)
    peak["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if device.type == "cpu":
        peak["loadavg"] = os.getloadavg()[0]
    log(f"device peak: {peak['flops'] / 1e9:,.0f} GFLOP/s ({peak['source']})")
    specs = run_specs(cfg, s, prep, speed, peak, device.type, only_arms, ray=kind == "ray", only_scales=only_scales)
    metrics = metric_specs(s, list(prep["eval_sets"]))
    experiment = {"settings": s, "config": str(cfg.path), "config_sha256": config_sha256(cfg.path),
                  "run_dir": str(cfg.run_dir), "device": device.type,
                  "speed": speed, "peak": peak, "tasks": s["tasks"], "metrics": metrics,
                  "fingerprints": prep["fingerprints"],
                  "execution": {"executor": kind, "workers": n_workers, "threads_per_run": threads},
                  "rungs": [{k: v for k, v in r.items() if k != "train"} for r in rungs(s, prep["vocab"])]
                  if s["scales"] else None}
    _write_experiment_json(out, experiment)  # a partial report works from here on

    log(f"{len(specs)} runs on {n_workers} {kind} worker{'s' if n_workers > 1 else ''}"
        + (f", {threads} thread(s) each" if device.type == "cpu" else ""))
    options = {"address": ex["address"]} if kind == "ray" and ex["address"] else {}
    runner = make_executor(kind, n_workers, progress=False, options=options)
    resources = {"num_cpus": int(threads) if isinstance(threads, int) else 1,
                 "num_gpus": ex["gpus_per_run"] if device.type == "cuda" else 0}
    t_grid, load0 = time.perf_counter(), os.getloadavg()[0]
    todo = sum(not (Path(sp["run_dir"]) / "done.json").exists() for sp in specs)
    try:
        results = run_all(runner, execute_run, [(sp,) for sp in specs], "training runs", [sp["id"] for sp in specs],
                          **({"resources": resources} if kind == "ray" else {}))
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()
    experiment["runs"] = {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in results}
    # the grid's wall time (what --plan predicts); only comparable when this invocation trained every run
    experiment["grid"] = {"seconds": round(time.perf_counter() - t_grid, 1), "runs": len(specs), "trained_now": todo,
                          "workers": n_workers, "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    experiment["seconds_this_invocation"] = round(time.perf_counter() - t_start, 1)
    _write_experiment_json(out, experiment)
    return out


def default_workers(cfg: PipelineConfig, device, ex: dict) -> int:
    if device.type == "cuda":
        import torch

        return max(1, int(torch.cuda.device_count() // max(ex["gpus_per_run"], 1e-9)))
    return max(1, int(cfg.workers))


# ---------------------------------------------------------------------------
# one run: an executor task


_GPU_LOCK = None


def _claim_gpu(spec: dict):
    """The device this run trains on: the CPU; on Ray the GPU Ray assigned (cuda:0 of what it exposes); locally a
    free slot on this machine's GPUs -- ``1 / gpus_per_run`` slots per GPU (one by default; 0.25 puts four small runs
    on each GPU), each a lock file held until the process exits, so k GPUs never take more runs than slots."""
    import fcntl

    import torch

    global _GPU_LOCK
    if spec["device"] != "cuda" or not torch.cuda.is_available():
        return torch.device("cpu")
    if spec.get("ray"):
        return torch.device("cuda:0")
    if _GPU_LOCK is not None:
        return torch.device(f"cuda:{_GPU_LOCK[1]}")
    slots = max(1, int(round(1 / spec.get("gpus_per_run") if spec.get("gpus_per_run") else 1)))
    for slot in range(slots):  # fill every GPU's first slot before any GPU's second
        for i in range(torch.cuda.device_count()):
            f = open(Path(tempfile.gettempdir()) / f"winnow-gpu-{os.getuid()}-{i}" f"{f'-{slot}' if slot else ''}.lock",
                     "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _GPU_LOCK = (f, i)
            return torch.device(f"cuda:{i}")
    raise RuntimeError(f"no free GPU among {torch.cuda.device_count()} ({slots} run(s) each): more local workers "
                       "than GPU slots")


def _point_file(run_dir: Path, p: dict) -> Path:
    tag = f"-branch{p['branch_from']}" if "branch_from" in p else ""
    return run_dir / "points" / f"step-{p['step']:07d}{tag}.safetensors"


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state))


def load_weights(model, path: Path, device) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path), device=str(device)))


def save_final_model(model, tok_path: Path, dest: Path) -> None:
    """The model and its tokenizer in Hugging Face format (``AutoModelForCausalLM`` / ``AutoTokenizer`` load it),
    written to a temporary folder and renamed, so a killed run never leaves half a model."""
    import shutil

    from experiments.tokenizer import hf_tokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Writing model shards" bar per run is noise in the ablation's log
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    hf_tokenizer(tok_path).save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


_PREPARED: dict = {}


def prepared_items(tasks, tok, context: int, final: bool, data_key: tuple) -> dict:
    """Each task's prepared items, once per process (the same for every run of a worker with the same evaluation
    sets and tokenizer: ``data_key`` holds their checksums)."""
    out = {}
    for t in tasks:
        key = (t.name, json.dumps(t.params, sort_keys=True, default=str), data_key, context, final)
        if key not in _PREPARED:
            _PREPARED[key] = t.prepare(tok, context, final)
        out[t.name] = _PREPARED[key]
    return out


_EVAL_SETS: dict = {}


def execute_run(spec: dict) -> dict:
    """Train one (rung, arm, seed) run, save its evaluation points and final model, evaluate them; resumable and
    fingerprinted. A module-level function of a picklable spec: what every executor runs."""
    import torch

    from experiments.subsets import load_tokens
    from experiments.tasks import TaskContext, build_task, evaluate_model
    from experiments.tokenizer import load_tokenizer
    from experiments.train import build_model, train

    log = _worker_log
    run_dir = Path(spec["run_dir"])
    runs_root = Path(spec["out_dir"])
    if spec["device"] == "cpu" and isinstance(spec["train"].get("threads"), int):
        torch.set_num_threads(int(spec["train"]["threads"]))
    device = _claim_gpu(spec)
    rec_path = run_dir / "run.json"
    if rec_path.exists() and read_json(rec_path).get("fingerprint") != spec["fingerprint"]:
        log(f"  {spec['id']}: its config, subset or tokenizer changed: training again")
        remove_inside(runs_root, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "done.json").exists() and not _points_present(run_dir, spec):
        log(f"  {spec['id']}: evaluation changed but its points were not kept (keep_points: false): training again")
        remove_inside(runs_root, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rec_path, {"arm": spec["arm"]["name"], "stage": spec["arm"]["stage"], "seed": spec["seed"],
                                 "scale": spec["scale"], "data": spec["arm"].get("data", "per_seed"),
                                 "arm_spec": spec["arm"], "subset": spec["subset"], "fingerprint": spec["fingerprint"],
                                 "subset_dir": Path(spec["subset_dir"]).relative_to(runs_root).as_posix()})
    tok_path = Path(spec["tokenizer_path"])
    t0 = time.perf_counter()
    trained_now = not (run_dir / "done.json").exists()
    if trained_now:
        tokens = load_tokens(Path(spec["subset_dir"]))
        arm = spec["arm"]
        tps = spec["train"]["batch_size"] * spec["model"]["context"]
        log(f"training {spec['id']}: {spec['train']['steps']} steps x {tps:,} tokens = "
            f"{spec['train']['steps'] * tps:,} tokens ({spec['train']['steps'] * tps / max(len(tokens), 1):.2f} "
            f"epochs of {arm['name']}'s subset)")

        def on_point(model, p):
            save_weights(model, _point_file(run_dir, p))
            if p["decayed"] and "branch_from" not in p:
                save_final_model(model, tok_path, run_dir / "final")

        train(tokens, spec["vocab_size"], run_dir, spec["model"], {**spec["train"], "speed": spec["speed"]},
              spec["seed"], on_point=on_point, log=log, device=device, peak=spec["peak"])
    seconds_train = time.perf_counter() - t0

    # evaluation of every saved point, redone when a task, an evaluation set or the run changed
    t1 = time.perf_counter()
    ev_path = run_dir / "eval.json"
    if not _fresh(ev_path, spec["eval_fingerprint"]):
        key = (spec["eval_sets_path"], sha256_file(Path(spec["eval_sets_path"])))
        if key not in _EVAL_SETS:
            _EVAL_SETS.clear()
            _EVAL_SETS[key] = read_json(Path(key[0]))
        data_key = (key[1], sha256_file(tok_path))
        tc = spec["task_context"]
        ctx = TaskContext(eval_sets=_EVAL_SETS[key], seed=tc["seed"], eval_max_chars=tc["eval_max_chars"],
                          base=Path(tc["base"]))
        tasks = [build_task(t, ctx) for t in spec["tasks"]]
        tok = load_tokenizer(tok_path)
        ctx_len = spec["model"]["context"]
        points = _read_jsonl(run_dir / "points.jsonl")
        model = build_model(spec["model"], spec["vocab_size"], 0).to(device).eval()
        evals, final_items = [], None
        steps = spec["train"]["steps"]
        for p in points:
            final = p["step"] == steps and "branch_from" not in p
            load_weights(model, _point_file(run_dir, p), device)
            metrics, items = evaluate_model(tasks, prepared_items(tasks, tok, ctx_len, final, data_key), model, device)
            evals.append({"step": p["step"], "tokens_seen": p["tokens_seen"], **metrics,
                          **({"decayed": True} if p["decayed"] else {}),
                          **({"branch_from": p["branch_from"]} if "branch_from" in p else {})})
            if final:
                final_items = items
                final_metrics = metrics
        if final_items is None:
            raise RuntimeError(f"{spec['id']}: no final point in {run_dir / 'points.jsonl'}")
        save_items(run_dir, final_items)
        atomic_write_json(run_dir / "final_eval.json", final_metrics)
        atomic_write_bytes(run_dir / "evals.jsonl", "".join(json.dumps(e) + "\n" for e in evals).encode())
        seconds_eval = round(time.perf_counter() - t1, 2)
        atomic_write_json(ev_path, {"fingerprint": spec["eval_fingerprint"], "seconds": seconds_eval,
                                    "points": len(points), "items_sha256": sha256_file(run_dir / "final_items.npz")})
        if not spec["keep_points"]:
            for p in points:
                _point_file(run_dir, p).unlink(missing_ok=True)
    _ngram_baselines(spec, run_dir)
    done = read_json(run_dir / "done.json")
    ev = read_json(ev_path)
    if trained_now:
        total = done["seconds_training"] + done.get("seconds_points_and_branches", 0) + ev["seconds"]
        log(f"  {spec['id']}: evaluation {ev['seconds']:.1f} s = {100 * ev['seconds'] / max(total, 1e-9):.0f}% of the "
            f"run; MFU {100 * (done.get('mfu') or 0):.1f}%")
    return {"id": spec["id"], "seconds_run": round(seconds_train, 2), "seconds_eval": ev["seconds"],
            "final": read_json(run_dir / "final_eval.json"), "mfu": done.get("mfu"),
            "tokens_per_second": done["tokens_per_second"]}


def _ngram_baselines(spec: dict, run_dir: Path) -> None:
    """The sanity gate's reference (:mod:`experiments.ngram_baseline`): Kneser-Ney n-grams fitted to this run's
    training subset and scored by the same tasks on the same final items as the model; redone with the evaluation
    (same fingerprint). Seconds on CPU, so every run of every arm gets them."""
    from experiments.ngram_baseline import ORDERS, score_baselines
    from experiments.subsets import load_tokens
    from experiments.tasks import TaskContext, build_task
    from experiments.tokenizer import load_tokenizer

    marker = run_dir / "ngram.json"
    if _fresh(marker, spec["eval_fingerprint"]) and all((run_dir / f"ngram{o}_items.npz").exists() for o in ORDERS):
        return
    t0 = time.perf_counter()
    tok_path = Path(spec["tokenizer_path"])
    key = (spec["eval_sets_path"], sha256_file(Path(spec["eval_sets_path"])))
    if key not in _EVAL_SETS:
        _EVAL_SETS.clear()
        _EVAL_SETS[key] = read_json(Path(key[0]))
    tc = spec["task_context"]
    ctx = TaskContext(eval_sets=_EVAL_SETS[key], seed=tc["seed"], eval_max_chars=tc["eval_max_chars"],
                      base=Path(tc["base"]))
    tasks = [build_task(t, ctx) for t in spec["tasks"]]
    prepared = prepared_items(tasks, load_tokenizer(tok_path), spec["model"]["context"], True,
                         (key[1], sha256_file(tok_path)))
    res = score_baselines(load_tokens(Path(spec["subset_dir"])), spec["vocab_size"], tasks, prepared, ORDERS)
    for order, (_, items) in res.items():
        save_items(run_dir, items, f"ngram{order}_items.npz")
    atomic_write_json(marker, {"fingerprint": spec["eval_fingerprint"], "orders": list(res),
                               "final": {str(o): m for o, (m, _) in res.items()},
                               "seconds": round(time.perf_counter() - t0, 2)})


def _points_present(run_dir: Path, spec: dict) -> bool:
    if _fresh(run_dir / "eval.json", spec["eval_fingerprint"]):
        return True
    return all(_point_file(run_dir, p).exists() for p in _read_jsonl(run_dir / "points.jsonl"))


def _worker_log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# per-run results


def save_items(run_dir: Path, items: dict[str, np.ndarray], name: str = "final_items.npz") -> None:
    """Per-item results of the final evaluation (``<task>/<array>``), small enough to commit; ``name``: the file
    (the n-gram baselines' items sit beside the model's in the same layout)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in sorted(items.items())})
    atomic_write_bytes(Path(run_dir) / name, buf.getvalue())


def load_items(run_dir: Path, name: str = "final_items.npz") -> dict[str, np.ndarray]:
    """``{"<task>/<array>": array}`` from final_items.npz (or ``name``; empty when absent)."""
    path = Path(run_dir) / name
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def recorded_tasks(out: Path) -> tuple[list, list[dict]]:
    """The evaluation tasks an experiment folder was evaluated with, and their metrics (as dicts), from its
    experiment.json; for a folder written before tasks were recorded, the built-ins its settings imply
    (``bpb`` over the evaluation sets, ``blimp`` as minimal pairs)."""
    from experiments.tasks import TaskContext, build_task

    out = Path(out)
    exp = read_json(out / "experiment.json")
    s = exp.get("settings", {})
    specs = exp.get("tasks")
    if specs is None:
        specs = [{"name": "bpb", "task": "bpb"}]
        if (s.get("blimp") or {}).get("path"):
            specs.append({"name": "blimp", "task": "minimal_pairs", "path": s["blimp"]["path"]})
    names = list(read_json(out / "eval_sets.json")) if (out / "eval_sets.json").exists() else []
    ctx = TaskContext(eval_sets={n: [] for n in names}, base=Path(s.get("base_dir", ".")))
    tasks = [build_task(t, ctx) for t in specs]
    return tasks, [m.to_dict() for t in tasks for m in t.metrics()]


def load_results(out: Path) -> list[dict]:
    """Every finished run: its record (arm, seed, rung, subset), config, log, evaluation curve, final items, and
    ``values``: every metric of every task, computed by the tasks from the items."""
    from experiments.tasks import task_values

    tasks, _ = recorded_tasks(out)
    runs = []
    for d in sorted((Path(out) / "runs").glob("*")):
        if not (d / "done.json").exists() or not (d / "final_items.npz").exists():
            continue
        rec = read_json(d / "run.json") if (d / "run.json").exists() else read_json(d / "arm.json")
        runs.append({
            "dir": d, "scale": None, **rec, "done": read_json(d / "done.json"), "config": read_json(d / "config.json"),
            "log": _read_jsonl(d / "train_log.jsonl"), "evals": _read_jsonl(d / "evals.jsonl"),
            "items": load_items(d), "eval": read_json(d / "eval.json") if (d / "eval.json").exists() else None,
        })
        runs[-1]["values"] = task_values(tasks, runs[-1]["items"])
        ngram = {}
        for f in sorted(d.glob("ngram*_items.npz")):
            items = load_items(d, f.name)
            ngram[int(f.name[len("ngram"):-len("_items.npz")])] = {"items": items, "values": task_values(tasks, items)}
        runs[-1]["ngram"] = ngram
    return runs
