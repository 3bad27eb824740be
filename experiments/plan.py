"""The plan before any training: what the grid will cost, what it trains on, and what it can detect.

``winnow ablation CONFIG --plan`` trains nothing. It prepares what the runs would read anyway (evaluation sets,
tokenizer, subsets: cached, so the run that follows reuses them), times a few optimiser steps and one
evaluation per model size with the executor's parallelism on this machine, and prints, per arm: documents per
subset, epochs, tokens per parameter and the predicted time; for the grid: its predicted wall time; for the
verdict: the minimum detectable effect at the configured seeds and the seeds the equivalence margin needs,
from a declared prior spread (``experiment.prior_spread: {sd: ...}``) or a pilot's results
(``experiment.prior_spread: {pilot: RESULTS_DIR}``). The report carries the same table for what actually ran.

This module is the arithmetic; the timing lives with the training code it times.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from experiments.stats import MIN_SEEDS, minimum_detectable_effect, resolve_margin, seeds_for_margin


def run_shape(train_cfg: dict, steps: int) -> dict:
    """What one run does besides its ``steps`` trunk steps: the cool-down branches' optimiser steps and the
    number of evaluations (every ``eval_every`` steps, the end of each branch, and the final one)."""
    branch_steps, branches = 0, 0
    if train_cfg.get("schedule", "wsd") == "wsd":
        for f in train_cfg.get("decay_budgets") or []:
            b = max(1, round(float(f) * steps))
            if b < steps:
                branches += 1
                branch_steps += max(1, round(float(train_cfg.get("decay_frac", 0.2)) * b))
    every = int(train_cfg.get("eval_every") or steps)
    trunk_evals = len({*range(every, steps + 1, every), steps})  # includes the final evaluation
    return {"steps": steps, "branch_steps": branch_steps, "evals": trunk_evals - 1 + branches, "final_evals": 1}


def run_seconds(shape: dict, timing: dict) -> float:
    """Predicted wall seconds of one run from its shape and the measured per-step and per-evaluation costs."""
    return (timing.get("startup_s", 0.0) + (shape["steps"] + shape["branch_steps"]) * timing["step_s"]
            + shape["evals"] * timing["eval_s"] + shape["final_evals"] * timing["final_eval_s"]
            + timing.get("ngram_s", 0.0))


def grid_wall(durations: list[float], workers: int) -> float:
    """Wall time of tasks handed out in order to ``workers`` workers, each taking the next task when free (how
    the executors' map schedules them)."""
    free = [0.0] * max(1, int(workers))
    for d in durations:
        i = int(np.argmin(free))
        free[i] += d
    return max(free)


def spread_from_runs(base: list[float], cand: list[float], paired: bool) -> dict:
    """The per-seed spread the seed-level tests see: sd of the paired differences, or sqrt(sd_a^2 + sd_b^2)."""
    a, b = np.asarray(base, float), np.asarray(cand, float)
    if paired:
        sd = float(np.std(b - a, ddof=1)) if len(a) > 1 else float("nan")
        ratio = None
    else:
        sa = float(np.std(a, ddof=1)) if len(a) > 1 else float("nan")
        sb = float(np.std(b, ddof=1)) if len(b) > 1 else float("nan")
        sd, ratio = math.sqrt(sa ** 2 + sb ** 2), (sb / sa if sa > 0 else None)
    return {"sd": sd, "paired": paired, "sd_ratio": ratio, "baseline": float(a.mean()), "n": [len(a), len(b)]}


def prior_spread(settings: dict, base_dir: Path | None = None,
                 pilot_spread: Callable[[Path], dict] | None = None) -> dict | None:
    """The declared prior spread: ``{sd, paired?, baseline?}`` as given, or (``pilot``) measured from a pilot's
    results folder by ``pilot_spread(folder)``; None when nothing is declared."""
    p = settings.get("prior_spread")
    if not p:
        return None
    if p.get("pilot"):
        folder = Path(p["pilot"])
        if not folder.is_absolute() and base_dir is not None:
            folder = (base_dir / folder).resolve()
        if pilot_spread is None:
            raise ValueError("prior_spread.pilot needs a way to read the pilot's results")
        s = pilot_spread(folder)
        return {**s, "source": f"pilot {folder} ({s['n'][1]} vs {s['n'][0]} seeds)"}
    sd = float(p["sd"])
    if not sd > 0:
        raise ValueError(f"prior_spread.sd must be positive, got {p['sd']}")
    return {"sd": sd, "paired": p.get("paired"), "sd_ratio": None, "baseline": p.get("baseline"),
            "source": "declared (experiment.prior_spread.sd)"}


def power_summary(spread: dict | None, seeds: int, paired: bool, margin_spec) -> dict:
    """MDE at ``seeds`` seeds per arm and the seeds the margin needs (non-inferiority, and TOST equivalence), at
    80% power and alpha 0.05, for a spread; what cannot be computed says why."""
    out: dict = {"seeds": seeds, "paired": paired, "margin_spec": margin_spec}
    if spread is None or not (spread.get("sd") or 0) > 0:
        out["missing"] = ("no prior spread: declare experiment.prior_spread {sd: ...} or {pilot: RESULTS_DIR} "
                          "(a pilot's per-seed results)")
        return out
    sd, ratio = spread["sd"], spread.get("sd_ratio")
    out.update(sd=sd, source=spread.get("source", "observed"),
               mde=minimum_detectable_effect(sd, seeds, paired, sd_ratio=ratio) if seeds >= 2 else None)
    try:
        margin, how = resolve_margin(margin_spec, spread.get("baseline"))
    except ValueError as e:
        out["margin_missing"] = str(e) + " (give prior_spread.baseline or a pilot)"
        return out
    out.update(margin=margin, margin_how=how,
               seeds_for_margin=seeds_for_margin(sd, margin, paired, sd_ratio=ratio),
               seeds_for_equivalence=seeds_for_margin(sd, margin, paired, sd_ratio=ratio, equivalent=True))
    return out


def _dur(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _range(xs: list) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    lo, hi = min(xs), max(xs)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def table(plan: dict, title: str = "Plan") -> list[str]:
    """Markdown lines for a plan (``winnow ablation --plan``) or for what ran (the report): per arm, then the grid,
    then power. ``plan["arms"]``: one row per arm with per-seed lists; see :func:`summarise`."""
    L = [f"| arm | scale | seeds | subset tokens | documents per subset | tokens seen | epochs | "
         f"tokens per non-embedding parameter | {plan.get('seconds_label', 'predicted time per run')} |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in plan["arms"]:
        warn = " ⚠" if r.get("warnings") else ""
        L.append(f"| {r['arm']} | {r.get('scale') or '–'} | {r['seeds']} | {_range(r['subset_tokens'])} | "
                 f"{_range(r['documents'])}{warn} | {r['tokens_seen']:,} | {_range(r['epochs'])} | "
                 f"{r['tokens_per_param']:.2f} | {_dur(r['seconds']) if r.get('seconds') is not None else '–'} |")
    L.append("")
    warns = [f"- `{r['arm']}`: {w}" for r in plan["arms"] for w in r.get("warnings", [])]
    if warns:
        L += ["Warnings:", *sorted(set(warns)), ""]
    g = plan.get("grid") or {}
    if g:
        bits = []
        if g.get("predicted_s") is not None:
            bits.append(f"predicted wall time of the grid: **{_dur(g['predicted_s'])}** ({g['runs']} runs on "
                        f"{g['workers']} worker(s){', ' + g['timing_note'] if g.get('timing_note') else ''})")
        if g.get("measured_s") is not None:
            bits.append(f"measured: **{_dur(g['measured_s'])}**" + (
                f" ({100 * (g['measured_s'] / g['predicted_s'] - 1):+.0f}% against the prediction)"
                if g.get("predicted_s") else ""))
        if bits:
            L += ["; ".join(bits)[0].upper() + "; ".join(bits)[1:] + ".", ""]
    p = plan.get("power") or {}
    if p:
        if p.get("missing"):
            L += [f"Power: {p['missing']}.", ""]
        else:
            mde = f"{p['mde']:.4f}" if p.get("mde") is not None else "– (fewer than 2 seeds)"
            L += [f"Power ({'paired' if p['paired'] else 'unpaired'} seeds, spread {p['sd']:.4f} from "
                  f"{p['source']}; alpha 0.05, power 0.8):", "",
                  f"- minimum detectable effect at {p['seeds']} seeds per arm: **{mde}**"]
            if p.get("margin") is not None:
                n_ni, n_eq = p.get("seeds_for_margin"), p.get("seeds_for_equivalence")
                L += [f"- equivalence margin {p['margin']:.4f} ({p['margin_how']}): "
                      f"**{_n(n_ni)}** seeds per arm to show \"not worse by more than the margin\" "
                      f"(non-inferiority) when there is no true difference; {_n(n_eq)} for equivalence (TOST)"]
                if n_ni is not None and n_ni > p["seeds"]:
                    L.append(f"- at {p['seeds']} seeds an \"as good as\" verdict is unlikely even if the arms are "
                             "equal: expect \"inconclusive\"")
            elif p.get("margin_missing"):
                L.append(f"- seeds for the margin: {p['margin_missing']}")
            if p["seeds"] < MIN_SEEDS:
                L.append(f"- fewer than {MIN_SEEDS} seeds per arm: the verdict's arms are exploratory")
            L.append("")
    return L


def _n(n: int | None) -> str:
    return "more than 100,000" if n is None else f"{n:,}"


def summarise(rows: list[dict]) -> list[dict]:
    """Per-run rows (``arm, scale, seed, subset_tokens, documents, epochs, tokens_seen, params, seconds,
    warnings``) folded into one row per (arm, scale), in first-seen order."""
    out: dict[tuple, dict] = {}
    for r in rows:
        key = (r["arm"], r.get("scale"))
        a = out.setdefault(key, {"arm": r["arm"], "scale": r.get("scale"), "seeds": 0, "subset_tokens": [],
                                 "documents": [], "epochs": [], "tokens_seen": r["tokens_seen"],
                                 "tokens_per_param": r["tokens_seen"] / max(1, r["params"]), "seconds": None,
                                 "warnings": []})
        a["seeds"] += 1
        a["subset_tokens"].append(r.get("subset_tokens"))
        a["documents"].append(r.get("documents"))
        a["epochs"].append(None if r.get("epochs") is None else round(float(r["epochs"]), 2))
        if r.get("seconds") is not None:
            a["seconds"] = r["seconds"] if a["seconds"] is None else max(a["seconds"], r["seconds"])
        a["warnings"] += [w for w in r.get("warnings", []) if w not in a["warnings"]]
    return list(out.values())


# ---------------------------------------------------------------------------
# timing on this machine, with the executor's parallelism


def time_rung(spec: dict) -> dict:
    """One timing task (run by every worker at once, as the grid's runs will be): the real training function on
    ``n1`` and ``n2`` steps (the difference is the cost of a step, the rest a run's fixed cost: model, checkpoint,
    final point), one evaluation of every task on the curve's items and on the final items, the weights' save and
    load of an evaluation point, and the n-gram baselines on the largest subset."""
    import tempfile

    import torch

    from experiments.ablation import prepared_items
    from experiments.ngram_baseline import ORDERS, score_baselines
    from experiments.subsets import load_tokens
    from experiments.tasks import TaskContext, build_task, evaluate_model
    from experiments.tokenizer import load_tokenizer
    from experiments.train import build_model, train
    from pipeline.shards import read_json, sha256_file

    t_start = time.perf_counter()
    if isinstance(spec["train"].get("threads"), int):
        torch.set_num_threads(int(spec["train"]["threads"]))
    device = torch.device(spec["device"])
    tokens = load_tokens(Path(spec["subset_dir"]))
    out: dict = {spec["n1"]: [], spec["n2"]: []}
    with tempfile.TemporaryDirectory() as tmp:
        # a first short run pays the process's one-time costs (imports, kernels); then short and long, twice,
        # interleaved, so a change of load hits both
        for k, n in enumerate((2, spec["n1"], spec["n2"], spec["n1"], spec["n2"])):
            tc = {**spec["train"], "steps": n, "decay_budgets": [], "eval_every": n, "checkpoint_every": n,
                  "warmup_steps": 1}
            t = time.perf_counter()
            train(tokens, spec["vocab_size"], Path(tmp) / f"s{k}", spec["model"], tc, 0, on_point=lambda m, p: None,
                  log=lambda m: None, device=device)
            if k:
                out[n].append(time.perf_counter() - t)
        t1, t2 = float(np.median(out[spec["n1"]])), float(np.median(out[spec["n2"]]))
        step_s = max(0.0, (t2 - t1) / (spec["n2"] - spec["n1"]))
        fixed_s = max(0.0, t1 - spec["n1"] * step_s)
        t = time.perf_counter()
        tc = spec["task_context"]
        ctx = TaskContext(eval_sets=read_json(Path(spec["eval_sets_path"])), seed=tc["seed"],
                          eval_max_chars=tc["eval_max_chars"], base=Path(tc["base"]))
        tasks = [build_task(x, ctx) for x in spec["tasks"]]
        tok = load_tokenizer(Path(spec["tokenizer_path"]))
        key = (sha256_file(Path(spec["eval_sets_path"])), sha256_file(Path(spec["tokenizer_path"])))
        small = prepared_items(tasks, tok, spec["model"]["context"], False, key)
        final = prepared_items(tasks, tok, spec["model"]["context"], True, key)
        prepare_s = time.perf_counter() - t
        model = build_model(spec["model"], spec["vocab_size"], 0).to(device).eval()
        from experiments.ablation import load_weights, save_weights

        t = time.perf_counter()
        save_weights(model, Path(tmp) / "w.safetensors")
        load_weights(model, Path(tmp) / "w.safetensors", device)
        point_s = time.perf_counter() - t
        t = time.perf_counter()
        evaluate_model(tasks, small, model, device)
        eval_s = time.perf_counter() - t + point_s
        t = time.perf_counter()
        evaluate_model(tasks, final, model, device)
        final_eval_s = time.perf_counter() - t + point_s
        t = time.perf_counter()
        score_baselines(load_tokens(Path(spec["ngram_subset_dir"])), spec["vocab_size"], tasks, final, ORDERS)
        ngram_s = time.perf_counter() - t
    return {"step_s": step_s, "fixed_s": fixed_s, "eval_s": eval_s, "final_eval_s": final_eval_s,
            "prepare_s": prepare_s, "ngram_s": ngram_s, "task_s": time.perf_counter() - t_start,
            "loadavg": os.getloadavg()[0]}


def plan_ablation(cfg, log=print, workers: int | None = None, executor: str | None = None,
                  only_scales: list[str] | None = None, retime: bool = False, settings_from=None,
                  steps: tuple[int, int] = (4, 16)) -> dict:
    """The plan of ``cfg``'s grid (see the module docstring); written to ``plan.json`` in the experiment folder, from
    which the report sets it against what ran. Trains no model of the grid."""
    from experiments.ablation import (default_workers, experiment_settings, prepare_experiment, resolve_speed,
                                      rungs, run_pipeline, run_specs)
    from experiments.train import pick_device
    from pipeline.executors import make_executor, run_all
    from pipeline.shards import atomic_write_json

    s = experiment_settings(cfg)
    t0 = time.perf_counter()
    run_pipeline(cfg, log)
    prep = prepare_experiment(cfg, s, log, only_scales)
    out = prep["out"]
    device = pick_device()
    ex = s["execution"]
    kind = executor or ex["executor"] or "local"
    n_workers = workers or ex["workers"] or default_workers(cfg, device, ex)
    all_rungs = rungs(s, prep["vocab"], only_scales)
    speed = resolve_speed(s, out, all_rungs[0], prep["vocab"], device, log, retime, settings_from)
    specs = run_specs(cfg, s, prep, speed, None, device.type, only_scales=only_scales)
    prep_s = time.perf_counter() - t0
    log(f"prepared in {prep_s:.0f} s (pipeline, evaluation sets, tokenizer, {len(prep['subsets'])} subsets); "
        f"timing {steps[1]} steps and one evaluation per model size on {n_workers} {kind} worker(s) at once")

    # time each rung's model with every worker busy, as in the grid
    timing: dict[str, dict] = {}
    runner = make_executor(kind, n_workers, progress=False)
    try:
        for rung in all_rungs:
            mine = [sp for sp in specs if (sp["scale"] or "") == rung["name"]]
            biggest = max(mine, key=lambda sp: sp["subset"]["tokens"])
            tspec = {k: biggest[k] for k in ("model", "vocab_size", "tokenizer_path", "eval_sets_path", "tasks",
                                             "task_context", "subset_dir", "device")}
            tspec.update(train=mine[0]["train"], n1=steps[0], n2=steps[1], ngram_subset_dir=biggest["subset_dir"])
            t = time.perf_counter()
            res = run_all(runner, time_rung, [(tspec,)] * n_workers, "timing", [f"timing {i}" for i in range(n_workers)])
            wall = time.perf_counter() - t
            med = {k: float(np.median([r[k] for r in res])) for k in res[0]}
            med["spawn_s"] = max(0.0, wall - max(r["task_s"] for r in res))
            timing[rung["name"]] = med
    finally:
        close = getattr(runner, "close", None)
        if close:
            close()

    per_worker = max(1.0, len(specs) / n_workers)
    rows, durations = [], []
    for sp in specs:
        tm = timing[sp["scale"] or ""]
        shape = run_shape(sp["train"], sp["train"]["steps"])
        sec = run_seconds(shape, {"step_s": tm["step_s"], "eval_s": tm["eval_s"], "final_eval_s": tm["final_eval_s"],
                                  "ngram_s": tm["ngram_s"],
                                  "startup_s": tm["fixed_s"] + tm["prepare_s"] / per_worker})
        durations.append(sec)
        m = sp["subset"]
        params = next(r for r in all_rungs if r["name"] == (sp["scale"] or ""))
        n_params = (params.get("params") or _params(sp["model"], sp["vocab_size"]))["non_embedding"]
        tokens_seen = sp["train"]["steps"] * sp["train"]["batch_size"] * sp["model"]["context"]
        rows.append({"arm": sp["arm"]["name"], "scale": sp["scale"], "seed": sp["seed"], "subset_tokens": m["tokens"],
                     "documents": m["documents"], "epochs": tokens_seen / max(m["tokens"], 1),
                     "tokens_seen": tokens_seen, "params": n_params, "seconds": sec,
                     "warnings": m.get("warnings") or []})
    spawn = max(t["spawn_s"] for t in timing.values()) if n_workers > 1 else 0.0
    grid = {"predicted_s": grid_wall(durations, n_workers) + spawn, "runs": len(specs), "workers": n_workers,
            "timing_note": f"load average {os.getloadavg()[0]:.1f} while timing"}
    cmp_ = s["compare"]
    seeds = {a["name"]: a.get("seeds") or s["seeds"] for a in s["arms"]}
    base, cand = cmp_.get("baseline"), cmp_.get("candidate")
    power = None
    if base in seeds and cand in seeds:
        paired = seeds[base] == seeds[cand] if cmp_.get("paired", "auto") == "auto" else bool(cmp_["paired"])
        spread = prior_spread(s, Path(s["base_dir"]), lambda f: _pilot_spread(f, s))
        if spread and spread.get("paired") is not None and bool(spread["paired"]) != paired:
            log(f"note: the prior spread is {'paired' if spread['paired'] else 'unpaired'}; this design is "
                f"{'paired' if paired else 'unpaired'}")
        power = power_summary(spread, min(len(seeds[base]), len(seeds[cand])), paired,
                              s.get("equivalence_margin"))
    plan = {"arms": summarise(rows), "grid": grid, "power": power, "timing": timing, "runs": rows,
            "speed": speed, "prepare_seconds": round(prep_s, 1), "executor": kind}
    atomic_write_json(out / "plan.json", plan)
    return plan


def _params(model_cfg: dict, vocab: int) -> dict:
    from experiments.train import model_params

    return model_params(model_cfg, vocab)


def _pilot_spread(folder: Path, s: dict) -> dict:
    """The per-seed spread of a pilot's results folder on this experiment's primary metric, between its baseline and
    candidate arms (paired when they ran the same seeds)."""
    from experiments.ablation import load_results
    from pipeline.shards import read_json

    exp = read_json(folder / "experiment.json")
    cmp_ = exp["settings"].get("compare") or {}
    metric = s.get("primary_metric") or exp["settings"].get("primary_metric")
    runs = load_results(folder)
    by = {}
    for r in runs:
        if r.get("scale") is None:
            by.setdefault(r["arm"], []).append(r)
    a = sorted(by.get(cmp_.get("baseline"), []), key=lambda r: r["seed"])
    b = sorted(by.get(cmp_.get("candidate"), []), key=lambda r: r["seed"])
    if len(a) < 2 or len(b) < 2 or metric not in a[0]["values"]:
        raise ValueError(f"pilot {folder}: needs two or more seeds of its baseline and candidate on {metric}")
    paired = [r["seed"] for r in a] == [r["seed"] for r in b]
    return spread_from_runs([r["values"][metric] for r in a], [r["values"][metric] for r in b], paired)
