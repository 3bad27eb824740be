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
