"""The ablation report: funnel, arms, per-arm results over seeds, seed-level tests
between arms, item-level tables (e.g. BLiMP by field), measured data efficiency,
training speed, a verdict per rung of the ladder that names its test, its seeds
and its multiple-comparison correction, and decision consistency across rungs.

The report knows no task by name: it loops over the metrics the evaluation
tasks declare (:mod:`experiments.tasks`), each saying whether higher is better,
its unit and resampling unit; per-run values come from the tasks' own
``aggregate`` over the per-item results.

Statistics (see :mod:`experiments.stats`): each training run is one
observation; every number in a test is a per-run value (aggregate bits per byte
over the fixed held-out documents, accuracy over the fixed pairs). The
primary metric is declared in the config before anything runs
(``experiment.primary_metric``); the verdict leads with it, at 5%. Secondary
metrics are Holm-corrected; arms with fewer than three seeds are exploratory and
stay out of the verdict.

Everything here is computed from the per-run files that :func:`export_results`
keeps (``runs/*/final_items.npz`` holds per-document bits and per-pair BLiMP
outcomes), so a committed results folder rebuilds its report with no training
run, checkpoint or pipeline output present.
"""
from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments import plots
from experiments.ablation import load_results, recorded_tasks
from experiments.stats import (ALPHA, DEFAULT_MARGIN, MIN_SEEDS, cluster_bootstrap_mean, compare, equivalence,
                               fit_power_law, holm, mean_ci, minimum_detectable_effect, resolve_margin,
                               seeds_for_margin, tokens_to_match)
from pipeline.shards import atomic_write_bytes, atomic_write_json, read_json

# ---------------------------------------------------------------------------
# per-run values


def metric_value(run: dict, metric: str) -> float:
    """One run's value of a metric (computed by its task from the run's per-item results)."""
    return float(run["values"][metric])


#: metric name -> its declaration (Metric.to_dict()); set by write_report from the experiment's tasks
_INFO: dict[str, dict] = {}


def declare_metrics(metrics: list[dict]) -> None:
    """The metrics (``Metric.to_dict()``) the report's functions know: their direction, unit and items. write_report
    declares the experiment's own; a caller testing the statistics on synthetic runs declares its tasks'."""
    _INFO.clear()
    _INFO.update({m["name"]: m for m in metrics})


def lower_is_better(metric: str, info: dict[str, dict] | None = None) -> bool:
    m = (info or _INFO).get(metric)
    if m is None:
        raise KeyError(f"metric {metric!r} is declared by no evaluation task of this experiment")
    return not m["higher_is_better"]


def _by_arm(runs: list[dict], order: list[str]) -> dict[str, list[dict]]:
    """Runs grouped by arm, arms in config order, seeds ascending."""
    out: dict[str, list[dict]] = {a: [] for a in order}
    for r in runs:
        out.setdefault(r["arm"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["seed"])
    return {a: v for a, v in out.items() if v}


def compare_arms(a_runs: list[dict], b_runs: list[dict], metric: str, paired: str | bool = "auto") -> dict:
    """Seed-level test of ``b - a`` on one metric.

    ``paired``: "auto" pairs the runs when both arms ran exactly the same seeds
    (same initialisation and data-order seed); True/False force it.
    """
    seeds_a, seeds_b = [r["seed"] for r in a_runs], [r["seed"] for r in b_runs]
    use_pair = (seeds_a == seeds_b) if paired == "auto" else bool(paired) and seeds_a == seeds_b
    res = compare([metric_value(r, metric) for r in a_runs], [metric_value(r, metric) for r in b_runs], paired=use_pair)
    res["exploratory"] = min(len(a_runs), len(b_runs)) < MIN_SEEDS
    res["metric"] = metric
    return res


def verdict_tests(base_runs: list[dict], cand_runs: list[dict], metrics: list[str], primary: str,
                  paired: str | bool = "auto") -> dict:
    """The tests the verdict rests on: the primary metric at ALPHA, the others Holm-corrected.

    Returns {"primary": result, "secondary": [results with "p_holm"], "exploratory": bool}.
    A result is "significant" when its (adjusted) p < ALPHA and the arm is not exploratory.
    """
    prim = compare_arms(base_runs, cand_runs, primary, paired)
    prim["p_adj"] = prim["p"]
    prim["significant"] = bool(not prim["exploratory"] and prim["p"] is not None and prim["p"] < ALPHA)
    sec = [compare_arms(base_runs, cand_runs, m, paired) for m in metrics if m != primary]
    testable = [r for r in sec if r["p"] is not None and not r["exploratory"]]
    for r, p in zip(testable, holm([r["p"] for r in testable])):
        r["p_adj"] = p
    for r in sec:
        r.setdefault("p_adj", None)
        r["significant"] = bool(r["p_adj"] is not None and r["p_adj"] < ALPHA)
    return {"primary": prim, "secondary": sec, "exploratory": prim["exploratory"]}


def equivalence_test(base_runs: list[dict], cand_runs: list[dict], metric: str, margin_spec=None,
                     paired: str | bool = "auto", seeds_needed: bool = True, lower: bool | None = None) -> dict:
    """The "as good as" verdict on one metric (:func:`experiments.stats.equivalence`), with the declared margin
    resolved against the baseline's mean when it is relative; pairing as in :func:`compare_arms`. ``lower``:
    whether lower is better (default: as the metric's task declares)."""
    seeds_a, seeds_b = [r["seed"] for r in base_runs], [r["seed"] for r in cand_runs]
    use_pair = (seeds_a == seeds_b) if paired == "auto" else bool(paired) and seeds_a == seeds_b
    a = [metric_value(r, metric) for r in base_runs]
    b = [metric_value(r, metric) for r in cand_runs]
    margin, how = resolve_margin(margin_spec, float(np.mean(a)))
    res = equivalence(a, b, margin, paired=use_pair, lower_is_better=lower_is_better(metric) if lower is None else lower,
                      seeds_needed=seeds_needed)
    res.update(metric=metric, margin_how=how, margin_spec=DEFAULT_MARGIN if margin_spec is None else margin_spec,
               margin_declared=margin_spec is not None,
               exploratory=min(len(a), len(b)) < MIN_SEEDS)
    if res["exploratory"] and res["verdict"] != "inconclusive":
        res.update(verdict="inconclusive", reason=f"fewer than {MIN_SEEDS} seeds in an arm (exploratory)")
    if seeds_needed and res.get("sd") and res["sd"] > 0 and min(res["n"]) >= 2:
        ratio = None
        if not use_pair:
            sa, sb = float(np.std(a, ddof=1)), float(np.std(b, ddof=1))
            ratio = sb / sa if sa > 0 else None
        res["mde"] = minimum_detectable_effect(res["sd"], min(res["n"]), use_pair, sd_ratio=ratio)
        res["seeds_for_margin"] = seeds_for_margin(res["sd"], margin, use_pair, sd_ratio=ratio)
        res["seeds_for_equivalence"] = seeds_for_margin(res["sd"], margin, use_pair, sd_ratio=ratio, equivalent=True)
    return res


# ---------------------------------------------------------------------------
# formatting


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.3g}"


def _fmt(v: float | None, ci: float | None = None, digits: int = 4) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None else "")


def _ci(r: dict, digits: int = 4) -> str:
    return f"[{r['ci'][0]:+.{digits}f}, {r['ci'][1]:+.{digits}f}]" if r.get("ci") else "– (too few seeds)"


def _tok(x: float) -> str:
    return f"{x:,.0f}"


def _direction(metric: str, diff: float) -> str:
    return "better" if ((diff < 0) if lower_is_better(metric) else (diff > 0)) else "worse"


def _unit(metric: str) -> str:
    return (_INFO.get(metric) or {}).get("label") or "units"


# ---------------------------------------------------------------------------
# plots


def _decayed_points(run: dict, metric: str) -> tuple[list[float], list[float]]:
    pts = [(e["tokens_seen"], e[metric]) for e in run["evals"] if e.get("decayed") and metric in e]
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts]


# ---------------------------------------------------------------------------
# report sections


def _variance_sources(by_arm: dict[str, list[dict]], arms_cfg: list[dict], metric: str) -> list[str]:
    """Data-versus-initialisation variance, where the config has an arm with ``data: fixed`` beside its twin."""
    rows = []
    spec = {a["name"]: a for a in arms_cfg}
    for name, a in spec.items():
        if a.get("data") != "fixed" or name not in by_arm:
            continue
        twin = next((n for n, b in spec.items() if n != name and b.get("data", "per_seed") == "per_seed"
                     and (b["stage"], b["tokens"], b.get("steps")) == (a["stage"], a["tokens"], a.get("steps"))
                     and n in by_arm), None)
        if twin is None or len(by_arm[name]) < 2 or len(by_arm[twin]) < 2:
            continue
        v_init = float(np.var([metric_value(r, metric) for r in by_arm[name]], ddof=1))
        v_all = float(np.var([metric_value(r, metric) for r in by_arm[twin]], ddof=1))
        share = max(0.0, 1 - v_init / v_all) if v_all > 0 else 0.0
        rows.append(f"| {twin} / {name} | {len(by_arm[twin])} / {len(by_arm[name])} | {np.sqrt(v_all):.4f} | "
                    f"{np.sqrt(v_init):.4f} | {100 * share:.0f}% |")
    if not rows:
        return []
    return ["## Where the seed-to-seed variance comes from", "",
            f"On {metric}: an arm that redraws its subset per seed (data + initialisation vary) beside a twin with "
            "`data: fixed` (one subset, only initialisation and order vary). Data share = 1 − var(init only) / "
            "var(data + init), floored at 0.", "",
            "| arms (per-seed data / fixed data) | seeds | sd, data + init | sd, init only | data share |",
            "|---|---|---:|---:|---:|", *rows, "",
            "With a handful of seeds each variance is itself uncertain (a ratio of two 3-seed variances is within "
            "a factor of 39 of the truth only 95% of the time); read the share as an order of magnitude.", ""]


def _composition_section(by_arm: dict[str, list[dict]]) -> list[str]:
    """What each arm's training text is made of (seed 0's subset; share of tokens), so a selection effect shows."""
    comps = {a: rs[0]["subset"].get("composition_tokens") for a, rs in by_arm.items()}
    comps = {a: c for a, c in comps.items() if c}
    if not comps:
        return []
    L = ["## Composition of the training subsets (share of tokens; seed 0's draw)", ""]
    for key in ("source", "language", "length", "truth"):  # truth: the synthetic web's ground-truth kind
        totals = defaultdict(int)
        if not any(key in c for c in comps.values()):
            continue
        for c in comps.values():
            for k, v in c.get(key, {}).items():
                totals[k] += v
        if key == "length":  # buckets in their natural order
            cols = sorted(totals, key=lambda k: int(k.lstrip(">= ").split("-")[0].split(" ")[0]))
        else:
            cols = sorted(totals, key=lambda k: (-totals[k], k))
        shown, rest = cols[:8], cols[8:]
        L += [f"| arm (by {key}) | " + " | ".join(shown) + (" | other |" if rest else " |"),
              "|---|" + "---:|" * (len(shown) + bool(rest))]
        for arm, c in comps.items():
            part = c.get(key, {})
            n = sum(part.values()) or 1
            cells = [f"{100 * part.get(k, 0) / n:.1f}%" for k in shown]
            if rest:
                cells.append(f"{100 * sum(part.get(k, 0) for k in rest) / n:.1f}%")
            L.append(f"| {arm} | " + " | ".join(cells) + " |")
        L.append("")
    return L


def _item_sections(by_arm: dict[str, list[dict]], metrics: list[str]) -> list[str]:
    """For every metric that is a mean over clustered items (e.g. BLiMP's pairs in paradigms): the mean over seeds
    with an interval that resamples whole clusters, and a breakdown by the task's category array."""
    L: list[str] = []
    for metric in metrics:
        info = _INFO.get(metric) or {}
        arr, cluster, part = info.get("item_array"), info.get("cluster"), info.get("breakdown")
        if not arr or not cluster:
            continue
        key = lambda a: f"{info['task']}/{a}"  # noqa: E731
        arms = [a for a, rs in by_arm.items() if all(key(arr) in r["items"] for r in rs)]
        if not arms:
            continue
        first = by_arm[arms[0]][0]["items"]
        clusters = first[key(cluster)]
        cats = sorted(set(first[key(part)].tolist())) if part and key(part) in first else []
        L += [f"## {metric}: items", "",
              f"{len(clusters):,} items in {len(set(clusters.tolist()))} {cluster}s at the final checkpoint. The "
              f"{info.get('label') or 'score'} is the mean over seeds; the interval resamples whole {cluster}s "
              f"(items of one {cluster} share a template, so they are not independent) and describes how far the "
              f"figure would move on other {cluster}s like these; seed-to-seed differences between arms are tested "
              "in the comparison table.", "",
              f"| arm | {info.get('label') or metric} [95% {cluster}-cluster interval] | " + " | ".join(cats) + " |",
              "|---|---|" + "---:|" * len(cats)]
        for arm in arms:
            rs = by_arm[arm]
            vals = np.mean([np.asarray(r["items"][key(arr)], dtype=float) for r in rs], axis=0)
            mean, (lo, hi) = cluster_bootstrap_mean(vals, rs[0]["items"][key(cluster)])
            cells = []
            if cats:
                labels = rs[0]["items"][key(part)]
                cells = [f"{vals[labels == c].mean():.3f}" for c in cats]
            L.append(f"| {arm} | {mean:.4f} [{lo:.4f}, {hi:.4f}] | " + " | ".join(cells) + " |")
        if info.get("chance") is not None:
            L += ["", f"Chance is {info['chance']:g}" + ("; a tie counts as wrong." if arr == "correct" else ".")]
        L.append("")
    return L


def _efficiency_section(by_arm: dict[str, list[dict]], base: str, primary: str) -> list[str]:
    base_runs = by_arm[base]
    curves = [_decayed_points(r, primary) for r in base_runs]
    if not all(len(x) >= 2 for x, _ in curves):
        return ["## Data efficiency", "", f"Not measured: `{base}` has fewer than two decayed checkpoints on "
                f"{primary} (set `train.schedule: wsd` with `decay_budgets`).", ""]
    lower = lower_is_better(primary)
    L = ["## Data efficiency (measured on decayed checkpoints)", "",
         f"Every point of `{base}`'s curve is a fully decayed model: the warmup-stable-decay schedule branches a "
         f"cool-down at each budget ({', '.join(_tok(x) for x in curves[0][0])} tokens). Each seed's curve joins "
         f"its measured points with straight lines on a log-token axis; the table gives the tokens at which the "
         f"mean curve reaches each arm's mean final {primary}. The interval holds every token count at which "
         "Welch's test does not reject \"baseline equals the arm\" (per-seed curve values vs per-seed finals); "
         "nothing is extrapolated beyond the measured budgets.", "",
         f"| arm | seeds | final {primary} | tokens seen | `{base}` tokens to match [95% interval] | ratio to tokens seen |",
         "|---|---:|---:|---:|---|---:|"]
    lo_all, hi_all = curves[0][0][0], curves[0][0][-1]
    for arm, rs in by_arm.items():
        if arm == base:
            continue
        finals = [metric_value(r, primary) for r in rs]
        seen = rs[0]["done"]["tokens_seen"]
        m = tokens_to_match(curves, finals, lower)
        if m["kind"] == "below":
            need, ratio = f"<= {_tok(m['range'][0])}", f"<= {m['range'][0] / seen:.2f}×"
        elif m["kind"] == "above":
            need, ratio = f"not reached within {_tok(m['range'][1])}", f"> {m['range'][1] / seen:.2f}×"
        else:
            need, ratio = _tok(m["estimate"]), f"{m['estimate'] / seen:.2f}×"
        iv = m.get("interval")
        if iv:
            lo = f"<= {_tok(iv[0])}" if m["interval_open"][0] else _tok(iv[0])
            hi = f"> {_tok(iv[1])}" if m["interval_open"][1] else _tok(iv[1])
            need += f" [{lo}, {hi}]"
        elif "interval" in m:
            need += " [no budget in range is compatible]"
        elif len(rs) < 2:
            need += " (one seed: no interval)"
        L.append(f"| {arm} | {len(rs)} | {np.mean(finals):.4f} | {seen:,} | {need} | {ratio} |")
    resid = max(abs(np.exp(a + b * np.log(x)) - y) for (xs, ys), (a, b) in
                zip(curves, [fit_power_law(x, y) for x, y in curves]) for x, y in zip(xs, ys))
    L += ["", f"(`{base}` measured from {_tok(lo_all)} to {_tok(hi_all)} tokens. A power law (log {primary} "
          f"linear in log tokens) would miss a seed's measured points by up to {resid:.4f} here, which is why the "
          "curve is read between measured points rather than from a fit.)", ""]
    return L


def funnel_rows(out: Path, run_dir: Path) -> list[dict]:
    """The pipeline funnel, from the run folder when present, else from the copy kept beside the results."""
    from pipeline.inspection import funnel

    saved = out / "funnel.json"
    if run_dir.exists():
        rows = funnel(run_dir)
        if rows:
            keep = [{k: r[k] for k in ("stage", "docs_in", "kept", "chars_in", "kept_chars")} for r in rows]
            atomic_write_json(saved, keep)
            return keep
    return read_json(saved) if saved.exists() else []


def write_report(out: Path, command: str | None = None) -> Path:
    out = Path(out)
    if not (out / "experiment.json").exists():
        raise ValueError(f"{out}: no experiment.json -- run `winnow ablation CONFIG` first")
    exp = read_json(out / "experiment.json")
    s = exp["settings"]
    runs = load_results(out)
    if not runs:
        raise ValueError(f"{out}: no finished training runs")
    _, metric_dicts = recorded_tasks(out)
    declare_metrics(metric_dicts)
    metrics = [m["name"] for m in metric_dicts if all(m["name"] in r["values"] for r in runs)]
    eval_names = list(read_json(out / "eval_sets.json"))
    stages = funnel_rows(out, Path(exp["run_dir"]))
    cmp_ = s.get("compare") or {}
    base, cand = cmp_.get("baseline"), cmp_.get("candidate")
    primary = s.get("primary_metric") or cmp_.get("metric") or metrics[0]
    paired = cmp_.get("paired", "auto")
    arm_order = [a["name"] for a in s["arms"]]
    scales = [r["name"] for r in (s.get("scales") or [])] or [None]
    ladder = scales != [None]

    L = ["# winnow ablation report", ""]
    command = command or default_command(exp)
    if command:
        L += [_reproduce_line(exp, command), ""]
    L += [_made_by(exp), ""]
    if stages:
        L += ["## Filtering funnel", "", "| stage | docs in | kept | chars kept | share of raw chars |",
              "|---|---:|---:|---:|---:|"]
        raw_chars = stages[0]["chars_in"] or 1
        for x in stages:
            L.append(f"| {x['stage']} | {x['docs_in']:,} | {x['kept']:,} | {x['kept_chars']:,} | "
                     f"{100 * x['kept_chars'] / raw_chars:.1f}% |")
        L += ["", "![funnel](funnel.png)", ""]
        plots.funnel_plot(out, stages)
    verdicts: list[tuple[str | None, str]] = []
    rung_arms: dict[str | None, dict[str, list[dict]]] = {}
    for scale in scales:
        rs = [r for r in runs if r.get("scale") == scale]
        if not rs:
            continue
        by_arm = _by_arm(rs, arm_order)
        rung_arms[scale] = by_arm
        body, verdict = _rung_sections(out, exp, by_arm, metrics, eval_names, primary, base, cand, paired,
                                       stages, scale if ladder else None)
        if verdict:
            verdicts.append((scale, verdict))
        L += ([f"# Rung {scale}", ""] if ladder else []) + body
    if ladder:
        L += _consistency_section(rung_arms, primary, scales)
    if verdicts:
        if ladder:
            lines = ["", "**Verdict per rung:**", ""] + [f"- **{sc}**:\n" + "\n".join("  " + x for x in v.splitlines())
                                                         for sc, v in verdicts]
        else:
            lines = ["", "**Verdict:**", "", verdicts[0][1]]
        L[1:1] = lines
    atomic_write_bytes(out / "report.md", ("\n".join(L) + "\n").encode("utf-8"))
    return out / "report.md"


def default_command(exp: dict) -> str | None:
    """The command that made these results, from experiment.json (so `winnow report DIR` needs no --command)."""
    if not exp.get("config"):
        return None
    return f"winnow ablation {exp['config']}" + (" --aa" if exp["settings"].get("aa") else "")


def _reproduce_line(exp: dict, command: str) -> str:
    """The command, and what pins it: the config's path and sha256 beside the commit that ran it, so a reader can
    check (`sha256sum CONFIG`, `git checkout COMMIT`) that what they hold is what made the numbers."""
    g = (exp.get("provenance") or {}).get("winnow") or {}
    commit = (f"commit {g['commit'][:12]}" + (" (dirty tree: uncommitted changes)" if g.get("dirty") else "")
              if g.get("commit") else "commit not recorded")
    sha = exp.get("config_sha256")
    pin = (f"sha256 `{sha}`" + (f" ({exp['config_sha256_from']})" if exp.get("config_sha256_from") else "")
           if sha else "sha256 not recorded")
    where = f"config `{exp['config']}`, {pin}, at {commit}" if exp.get("config") else commit
    return f"Reproduce: `{command}` -- {where}."


def _made_by(exp: dict) -> str:
    """Which code and machine made these results (experiment.json's provenance), and the settings a re-run reuses."""
    from pipeline.provenance import describe

    rec = exp.get("provenance")
    speed = exp.get("speed") or {}
    used = (f" Training settings recorded for re-runs: {'bf16' if speed.get('bf16') else 'fp32'}, "
            f"{speed.get('threads')} thread(s) per run, compile {bool(speed.get('compile'))}"
            + (f" (reused from {speed['reused_from']})" if speed.get("reused_from") else "") + "." if speed else "")
    if not rec:
        return ("Made by: code not recorded (these results predate provenance records; the folder's README names the "
                "commit that made them)." + used)
    return f"Made by: {describe(rec)}." + used


def _rung_sections(out: Path, exp: dict, by_arm: dict[str, list[dict]], metrics: list[str], eval_names: list[str],
                   primary: str, base: str | None, cand: str | None, paired, stages: list[dict],
                   scale: str | None) -> tuple[list[str], str | None]:
    """Every section of one rung (the whole report without a ladder) and its verdict line."""
    s = exp["settings"]
    suffix = f"-{scale}" if scale else ""
    title = f" -- rung {scale}" if scale else ""
    plots.curves_plot(out, by_arm, metrics, _INFO, suffix, title)
    plots.loss_plot(out, by_arm, suffix, title)
    L: list[str] = []
    cfg0 = next(iter(by_arm.values()))[0]["config"]
    tc = cfg0["train"]
    sched = tc.get("schedule", "cosine")
    sched_txt = (f"warmup-stable-decay schedule (linear warm-up {tc['warmup_steps']} steps, constant, then the last "
                 f"{100 * tc.get('decay_frac', 0.2):.0f}% of the steps decay to {tc['min_lr_ratio']}× lr)"
                 if sched == "wsd" else "cosine schedule")
    speed = cfg0.get("speed") or {}
    micro = tc.get("micro_batch_size")
    L += [f"Model: {cfg0['model']['arch']}, d={cfg0['model']['d_model']}, {cfg0['model']['n_layers']} layers, "
          f"context {cfg0['model']['context']}, {cfg0['params']['non_embedding']:,} non-embedding parameters "
          f"({cfg0['params']['total']:,} total), vocab {cfg0['vocab_size']:,}; batch {tc['batch_size']}"
          + (f" (as micro-batches of {micro})" if micro and micro < tc["batch_size"] else "")
          + f", lr {tc['lr']}, {sched_txt}, AdamW; device {cfg0['device']}, training precision "
          f"{'bf16 autocast' if tc.get('bf16') else 'fp32'}{', torch.compile' if tc.get('compile') else ''}"
          + (f" ({speed['reason']})" if speed.get("reason") else "") + "; evaluation always in fp32.", ""]
    # arms
    L += ["## Arms", "", "Each seed draws its own training subset (seeded by the run's seed; the held-out split never "
          "changes) unless the arm says `data: fixed`, and initialises and orders the model with the same seed.", "",
          "| arm | stage | subset tokens | docs (seed 0) | optimiser steps | tokens seen | tokens/param | epochs | seeds |",
          "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for arm, rs in by_arm.items():
        sub = rs[0]["subset"]
        tag = "" if len(rs) >= MIN_SEEDS else " (exploratory)"
        tpp = rs[0]["done"]["tokens_seen"] / max(rs[0]["config"]["params"]["non_embedding"], 1)
        L.append(f"| {arm}{tag} | {rs[0]['stage']} | {sub['tokens']:,} | {sub['documents']:,} | "
                 f"{rs[0]['done']['steps']:,} | {rs[0]['done']['tokens_seen']:,} | {tpp:.2f} | {rs[0]['done']['epochs']} | "
                 f"{', '.join(str(r['seed']) for r in rs)} |")
    L += ["", f"Arms with fewer than {MIN_SEEDS} seeds are exploratory: shown, never tested in the verdict. "
          "Tokens per parameter: tokens seen per non-embedding parameter.", ""]
    L += _plan_section(exp, by_arm, primary, base, cand, paired, scale)
    L += _speed_section(by_arm)
    # results
    L += ["## Results (final checkpoint; mean ± 95% t-interval over seeds)", "",
          "| arm | " + " | ".join(("**" + m + "** (primary)") if m == primary else m for m in metrics) + " |",
          "|---|" + "---:|" * len(metrics)]
    for arm, rs in by_arm.items():
        L.append(f"| {arm} | " + " | ".join(_fmt(*mean_ci([metric_value(r, m) for r in rs])) for m in metrics) + " |")
    L += ["", "Direction: " + "; ".join(
        f"{m} ({_INFO[m].get('label') or m}): {'higher' if _INFO[m]['higher_is_better'] else 'lower'} is better"
        for m in metrics) + ".", "", f"![curves](curves{suffix}.png)", "", f"![loss](loss{suffix}.png)", ""]
    L += _variance_sources(by_arm, s["arms"], primary)
    L += _composition_section(by_arm)
    # contamination
    L += ["## Contamination (13-gram overlap of each training subset with each evaluation set; seed 0's subset)", "",
          "| arm | " + " | ".join(eval_names) + " |", "|---|" + "---:|" * len(eval_names)]
    for arm, rs in by_arm.items():
        c = rs[0]["subset"].get("contamination_13gram", {})
        worst = {n: max(r["subset"].get("contamination_13gram", {}).get(n, {}).get("rate", 0) for r in rs)
                 for n in eval_names}
        L.append(f"| {arm} | " + " | ".join(
            f"{100 * c[n]['rate']:.1f}% ({c[n]['contaminated_docs']}; max over seeds {100 * worst[n]:.1f}%)"
            if n in c else "–" for n in eval_names) + " |")
    L += ["", "Share of evaluation documents with at least one 13-word sequence that also occurs in the arm's "
          "training text (held-out ids are excluded from training; this catches copies under other ids).", ""]
    gate = None
    if base in by_arm and cand in by_arm:
        from experiments.sanity import gate as sanity_gate, section as sanity_section

        gate = sanity_gate(by_arm, primary, eval_names, (base, cand), metric_value, _INFO,
                           s.get("contamination_gap"))
        L += _equivalence_section(by_arm, primary, base, cand, paired, s)
        eq = equivalence_test(by_arm[base], by_arm[cand], primary, s.get("equivalence_margin"), paired,
                              seeds_needed=False)
        best = (gate["rows"].get(base, {}).get("ngram") or {}).get("best")
        name = plots.verdict_plot(out, by_arm, primary, _INFO, metric_value, base, eq["margin"], best, suffix, title)
        L += [f"![verdict]({name})", ""] if name else []
        L += sanity_section(gate, by_arm, metric_value, metrics)
    # comparisons against the baseline
    if base in by_arm:
        rows = []
        for arm in by_arm:
            if arm == base:
                continue
            vt = verdict_tests(by_arm[base], by_arm[arm], metrics, primary, paired)
            for r in [vt["primary"], *vt["secondary"]]:
                rows.append((arm, r))
        L += [f"## Comparisons against `{base}` (arm − {base}; seed-level tests)", "",
              "| arm | metric | difference | 95% CI | test | seeds | p | p (Holm) |", "|---|---|---:|---|---|---|---:|---:|"]
        for arm, r in rows:
            expl = " (exploratory)" if r["exploratory"] else ""
            p_adj = "primary" if r["metric"] == primary and not r["exploratory"] else _p(r["p_adj"])
            L.append(f"| {arm}{expl} | {r['metric']} | {r['diff']:+.4f} | {_ci(r)} | {r['test'] if r['ci'] else '–'} | "
                     f"{r['n'][1]} vs {r['n'][0]} | {_p(r['p'])} | {p_adj} |")
        L += ["", f"Each run is one observation (its aggregate over the same held-out items). "
              f"Paired t-test when both arms ran the same seeds, else Welch's t-test; 95% t-intervals. The primary "
              f"metric ({primary}) is tested alone at {ALPHA:g}; the other metrics of each arm are Holm-corrected "
              f"together. Intervals are unadjusted. Rows marked exploratory (< {MIN_SEEDS} seeds) carry no "
              "adjusted p and no claim.", ""]
        L += _efficiency_section(by_arm, base, primary)
    L += _item_sections(by_arm, metrics)
    return L, _verdict(by_arm, metrics, primary, base, cand, paired, s, gate)


def _verdict(by_arm: dict[str, list[dict]], metrics: list[str], primary: str, base: str | None, cand: str | None,
             paired, s: dict | None = None, gate: dict | None = None) -> str | None:
    """The verdict on the primary metric, as bullets: the sanity gate first, then "as good as?" (the equivalence
    test against the declared margin, with the minimum detectable effect at the seeds used), a contamination gap
    above the declared level, and the difference tests (secondary metrics Holm-corrected)."""
    if base not in by_arm or cand not in by_arm:
        return None
    from experiments.sanity import verdict_lines

    lines = verdict_lines(gate) if gate else []
    eq = equivalence_test(by_arm[base], by_arm[cand], primary, (s or {}).get("equivalence_margin"), paired)
    lines.insert(1 if gate else 0, _as_good_as_line(eq, base, cand, primary))
    if gate and gate["data_statistics"] and eq["verdict"] == "inconclusive":
        need = eq.get("seeds_for_margin")
        lines.insert(2, f"**At this scale winnow cannot decide** whether `{cand}` is as good as `{base}`: the models "
                     "do not beat n-gram tables of their own training data and the equivalence test is inconclusive. "
                     "Deciding needs models that beat their n-gram baselines (more parameters and tokens per run: "
                     "`experiment.scales`)" + (f" and, at the observed spread, about {_n(need)} seeds per arm to show "
                                               f"\"not worse by more than {eq['margin']:.4f}\" when the arms are equal"
                                               if eq.get("sd") else "") + ".")
    lines.append("**Difference tests:** " + _difference_verdict(by_arm, metrics, primary, base, cand, paired))
    return "\n".join(f"- {x}" for x in lines)


def _as_good_as_line(eq: dict, base: str, cand: str, primary: str) -> str:
    """One sentence: the equivalence verdict, its margin, its interval, the MDE at the seeds used, and (when
    inconclusive) the seeds that would decide it at the observed spread."""
    unit = _unit(primary)
    nb, nc = eq["n"]
    margin = (f"margin {eq['margin']:.4f} {unit} ({eq['margin_how']}; "
              + ("declared before the run)" if eq.get("margin_declared") else "the default: none was declared)"))
    worse = f"`{cand}` − `{base}` = {eq['worse_by']:+.4f} {unit} in the worse direction"
    if eq.get("ci90") is None:
        return (f"**As good as? Inconclusive** on {primary} (primary): {worse}; {margin}; "
                f"{eq.get('reason', 'no test')} ({nc} vs {nb} seeds).")
    ci = f"90% CI [{eq['ci90'][0]:+.4f}, {eq['ci90'][1]:+.4f}]"
    mde = eq.get("mde")
    tail = f" The minimum detectable effect at {min(nb, nc)} {'paired ' if eq['test'] == 'paired t' else ''}seeds " \
           f"is {mde:.4f} {unit} (two-sided test, 80% power, at the observed spread {eq['sd']:.4f})." if mde else ""
    v = eq["verdict"]
    if v == "as good as":
        how = ("equivalent within the margin (TOST p = " + _p(eq["p_equivalent"]) + ")" if eq["equivalent"] else
               "not worse by more than the margin (non-inferiority p = " + _p(eq["p_noninferior"]) + "), though "
               "not shown to be within it on the better side")
        extra = (f"; a difference smaller than the margin is detected (p = {_p(eq['p_difference'])})"
                 if eq["difference_detected"] else "")
        head = f"**As good as: yes** on {primary} (primary): `{cand}` is {how}{extra}"
    elif v == "better by more than the margin":
        head = (f"**As good as: better by more than the margin** on {primary} (primary) (p = "
                f"{_p(eq['p_better_by_margin'])})")
    elif v == "worse":
        head = (f"**As good as: no, worse** on {primary} (primary): p = {_p(eq['p_difference'])}"
                + (", and worse by more than the margin" if eq.get("worse_than_margin") else
                   "; whether by more than the margin is not shown"))
    else:
        need = eq.get("seeds_to_decide")
        head = (f"**As good as? Inconclusive** on {primary} (primary): neither \"not worse by more than the "
                f"margin\" (non-inferiority p = {_p(eq['p_noninferior'])}) nor a difference (p = "
                f"{_p(eq['p_difference'])}) is shown; at the observed spread about "
                + (f"{need:,}" if need else "more than 100,000") + " seeds per arm would decide it (80% probability)")
    return f"{head}. {worse} ({ci}, {eq['test']}-test, {nc} vs {nb} seeds); {margin}.{tail}"


def _difference_verdict(by_arm: dict[str, list[dict]], metrics: list[str], primary: str, base: str, cand: str,
                        paired) -> str:
    """The difference tests' verdict: the primary metric at ALPHA, the secondary metrics Holm-corrected."""
    vt = verdict_tests(by_arm[base], by_arm[cand], metrics, primary, paired)
    r = vt["primary"]
    nb, nc = len(by_arm[base]), len(by_arm[cand])
    how = (f"{r['test']}-test over seeds, {nc} vs {nb} seeds, primary metric at {ALPHA:g}; "
           f"secondary metrics Holm-corrected")
    if vt["exploratory"]:
        return (f"No verdict: `{cand}` ({nc} seeds) vs `{base}` ({nb} seeds) is exploratory (fewer than "
                f"{MIN_SEEDS} seeds in an arm); observed difference on {primary} {r['diff']:+.4f}.")
    if r["significant"]:
        verdict = (f"On {primary} (primary), `{cand}` ({by_arm[cand][0]['subset']['tokens']:,} unique tokens) "
                   f"is {_direction(primary, r['diff'])} than `{base}` "
                   f"({by_arm[base][0]['subset']['tokens']:,}) by {abs(r['diff']):.4f} {_unit(primary)} "
                   f"(95% CI {_ci(r)}, p = {_p(r['p'])}; {how})")
    else:
        verdict = (f"On {primary} (primary), no difference between `{cand}` and `{base}` is detected: "
                   f"{r['diff']:+.4f} (95% CI {_ci(r)}, p = {_p(r['p'])}; {how})")
    sig = [f"{_direction(x['metric'], x['diff'])} on {x['metric']} ({x['diff']:+.4f}, Holm p = {_p(x['p_adj'])})"
           for x in vt["secondary"] if x["significant"]]
    rest = [x["metric"] for x in vt["secondary"] if not x["significant"]]
    if sig:
        verdict += "; secondary: " + "; ".join(sig)
    if rest:
        verdict += "; no detected difference on " + ", ".join(rest)
    return verdict + "."


def _equivalence_section(by_arm: dict[str, list[dict]], primary: str, base: str, cand: str, paired, s: dict) -> list[str]:
    """"As good as?" in detail: the margin and why, both one-sided tests, the verdict's four outcomes, and what the
    seeds used can and cannot show at the observed spread."""
    from experiments.stats import DEFAULT_MARGIN_REASON

    eq = equivalence_test(by_arm[base], by_arm[cand], primary, s.get("equivalence_margin"), paired)
    unit = _unit(primary)
    declared = s.get("equivalence_margin")
    L = [f"## As good as? `{cand}` against `{base}` within a declared margin", "",
         f"The question is one-sided: is `{cand}` not worse than `{base}` on {primary} by more than a margin declared "
         f"before the run? Margin: **{eq['margin']:.4f} {unit}** ("
         + (f"`experiment.equivalence_margin: {declared}`, {eq['margin_how']}" if declared is not None else
            f"the default, {DEFAULT_MARGIN_REASON}; {eq['margin_how']}") + "). Per-seed values, "
         f"{eq['test']}-tests over seeds ({eq['n'][1]} vs {eq['n'][0]}), each one-sided test at {ALPHA:g}:", "",
         "| test | null hypothesis | p |", "|---|---|---:|",
         f"| non-inferiority (the claim) | `{cand}` worse by the margin or more | {_p(eq['p_noninferior'])} |",
         f"| equivalence (TOST, both sides) | worse or better by the margin or more | {_p(eq['p_equivalent'])} |",
         f"| better by more than the margin | not better by more than the margin | {_p(eq['p_better_by_margin'])} |",
         f"| difference (two-sided) | no difference | {_p(eq['p_difference'])} |", "",
         f"Observed: `{cand}` − `{base}` = {eq['worse_by']:+.4f} {unit} in the worse direction"
         + (f", 90% CI [{eq['ci90'][0]:+.4f}, {eq['ci90'][1]:+.4f}], 95% CI [{eq['ci95'][0]:+.4f}, "
            f"{eq['ci95'][1]:+.4f}]; per-seed spread {eq['sd']:.4f}" if eq.get("ci90") else "")
         + f". Verdict: **{eq['verdict']}**. \"As good as\" needs the non-inferiority test; \"worse\" needs the "
         "difference test and a failed non-inferiority test; anything else is inconclusive.", ""]
    if eq.get("mde") is not None:
        L += [f"At this spread, with {min(eq['n'])} seeds per arm: the smallest difference the two-sided test detects "
              f"with 80% power is **{eq['mde']:.4f} {unit}**; showing \"not worse by more than the margin\" with 80% "
              f"power when the arms are truly equal needs **{_n(eq.get('seeds_for_margin'))}** seeds per arm "
              f"({_n(eq.get('seeds_for_equivalence'))} for equivalence on both sides)"
              + (f"; at the observed difference, {_n(eq.get('seeds_to_decide'))} seeds per arm would reach a "
                 "decided verdict with 80% probability" if eq["verdict"] == "inconclusive" else "") + ".", ""]
    return L


def _n(n) -> str:
    return "more than 100,000" if n is None else f"{n:,}"


def _plan_section(exp: dict, by_arm: dict[str, list[dict]], primary: str, base: str | None, cand: str | None,
                  paired, scale: str | None) -> list[str]:
    """The plan's table for what actually ran: documents per subset, epochs, tokens per parameter and time per
    arm; the grid's measured wall time against the plan's prediction (when ``--plan`` ran first); and power at the
    observed spread."""
    from experiments.plan import power_summary, spread_from_runs, summarise, table

    rows = []
    for arm, rs in by_arm.items():
        for r in rs:
            d = r["done"]
            ev = (r.get("eval") or {}).get("seconds") or 0.0
            rows.append({"arm": arm, "scale": scale, "seed": r["seed"], "subset_tokens": r["subset"].get("tokens"),
                         "documents": r["subset"].get("documents"), "epochs": d.get("epochs"),
                         "tokens_seen": d["tokens_seen"], "params": r["config"]["params"]["non_embedding"],
                         "seconds": d.get("seconds_training", 0) + d.get("seconds_points_and_branches", 0) + ev,
                         "warnings": r["subset"].get("warnings") or []})
    plan = {"arms": summarise(rows), "seconds_label": "measured time per run (slowest seed)"}
    predicted = (exp.get("plan") or {}).get("grid") or {}
    grid = exp.get("grid") or {}
    full = grid.get("seconds") is not None and grid.get("trained_now") == grid.get("runs")
    if full or predicted.get("predicted_s") is not None:  # a resumed grid's wall time measures only its rest
        plan["grid"] = {"predicted_s": predicted.get("predicted_s"), "measured_s": grid["seconds"] if full else None,
                        "runs": grid.get("runs") or predicted.get("runs"), "workers": grid.get("workers")
                        or predicted.get("workers")}
    if base in by_arm and cand in by_arm:
        a = [metric_value(r, primary) for r in by_arm[base]]
        b = [metric_value(r, primary) for r in by_arm[cand]]
        use_pair = ([r["seed"] for r in by_arm[base]] == [r["seed"] for r in by_arm[cand]]) if paired == "auto" \
            else bool(paired)
        if min(len(a), len(b)) >= 2:
            sp = {**spread_from_runs(a, b, use_pair), "source": "the observed seeds"}
            plan["power"] = power_summary(sp, min(len(a), len(b)), use_pair,
                                          exp["settings"].get("equivalence_margin"))
    return ["## What ran, against the plan", "",
            "The table `winnow ablation CONFIG --plan` prints before any training, for what actually ran (documents "
            "per subset over seeds; ⚠ marks subsets with a warning).", "", *table(plan)]


def _speed_section(by_arm: dict[str, list[dict]]) -> list[str]:
    """Training throughput, model FLOPs utilisation and the share of each run spent evaluating."""
    rows = []
    for arm, rs in by_arm.items():
        tps = np.mean([r["done"]["tokens_per_second"] for r in rs])
        mfu = [r["done"]["mfu"] for r in rs if r["done"].get("mfu") is not None]
        share = []
        for r in rs:
            ev = (r.get("eval") or {}).get("seconds")
            if ev is not None:
                total = r["done"].get("seconds_training", 0) + r["done"].get("seconds_points_and_branches", 0) + ev
                share.append(ev / total if total else 0.0)
        rows.append(f"| {arm} | {tps:,.0f} | " + (f"{100 * np.mean(mfu):.1f}%" if mfu else "–") + " | "
                    + (f"{100 * np.mean(share):.0f}%" if share else "–") + " |")
    cfg0 = next(iter(by_arm.values()))[0]["config"]
    peak = cfg0.get("peak") or {}
    return ["## Training speed", "",
            "| arm | training tokens/s | MFU | evaluation share of the run |", "|---|---:|---:|---:|", *rows, "",
            "Tokens/s counts optimiser steps of the main schedule (evaluation, saved points and cool-down branches "
            "excluded). MFU: model FLOPs per second (6 per matmul weight per token, output head included, plus "
            "attention scores) over the device's peak"
            + (f" ({peak['flops'] / 1e9:,.0f} GFLOP/s, {peak['source']})" if peak.get("flops") else "") + ".", ""]


def _consistency_section(rung_arms: dict[str | None, dict[str, list[dict]]], primary: str,
                         scales: list[str | None]) -> list[str]:
    """Decision consistency across the ladder, as DataDecide measures it: for every pair of arms, does a rung rank
    them (by mean over seeds on the primary metric) as the largest rung does? Reported per rung as the share of
    pairs that agree, with each rung's ranking."""
    present = [sc for sc in scales if sc in rung_arms]
    if len(present) < 2:
        return []
    lower = lower_is_better(primary)
    means = {sc: {a: float(np.mean([metric_value(r, primary) for r in rs])) for a, rs in rung_arms[sc].items()}
             for sc in present}
    target = present[-1]
    L = ["# Decision consistency across rungs", "",
         f"Arms ranked by their mean {primary} over seeds at each rung (best first), and the share of arm pairs a "
         f"rung orders as the largest rung (`{target}`) does -- DataDecide's decision accuracy. A small rung whose "
         "decisions agree with the large one's can stand in for it; one that disagrees cannot.", "",
         "| rung | ranking (best first) | pairs agreeing with the largest rung |", "|---|---|---:|"]
    for sc in present:
        order = sorted(means[sc], key=lambda a: means[sc][a] if lower else -means[sc][a])
        common = [a for a in means[sc] if a in means[target]]
        pairs = [(a, b) for i, a in enumerate(common) for b in common[i + 1:]]
        agree = sum(np.sign(means[sc][a] - means[sc][b]) == np.sign(means[target][a] - means[target][b])
                    for a, b in pairs)
        cell = f"{agree}/{len(pairs)} ({100 * agree / len(pairs):.0f}%)" if pairs else "–"
        L.append(f"| {sc} | " + " > ".join(f"{a} ({means[sc][a]:.4f})" for a in order) + f" | {cell} |")
    L += ["", "Rankings use means only; whether a difference within a rung is real is the comparison tables' "
          "business.", ""]
    return L


# files of an ablation folder that a committed results folder keeps (small; enough to rebuild the report)
KEEP_TOP = ("experiment.json", "plan.json", "eval_sets.json", "eval_sets.manifest.json", "funnel.json",
            "tokenizer.manifest.json")
KEEP_RUN = ("run.json", "arm.json", "config.json", "done.json", "train_log.jsonl", "points.jsonl", "evals.jsonl",
            "eval.json", "final_items.npz", "final_eval.json", "ngram.json", "ngram2_items.npz", "ngram3_items.npz")


def export_results(out: Path, dest: Path) -> Path:
    """Copy what the report needs (no checkpoints, no token arrays) from an ablation folder to ``dest``.

    Evaluation sets are kept as ids only (``eval_sets.json`` with the text
    dropped): the report needs their names and sizes, not their text.
    """
    out, dest = Path(out), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    funnel_rows(out, Path(read_json(out / "experiment.json")["run_dir"]))
    for name in KEEP_TOP:
        if not (out / name).exists():
            continue
        if name == "eval_sets.json":
            sets = read_json(out / name)
            atomic_write_json(dest / name, {k: [{"id": d["id"], "source": d.get("source")} for d in v]
                                            for k, v in sets.items()})
        else:
            shutil.copyfile(out / name, dest / name)
    for d in sorted((out / "runs").glob("*")):
        if (d / "done.json").exists():
            (dest / "runs" / d.name).mkdir(parents=True, exist_ok=True)
            for name in KEEP_RUN:
                if (d / name).exists():
                    shutil.copyfile(d / name, dest / "runs" / d.name / name)
    return dest
