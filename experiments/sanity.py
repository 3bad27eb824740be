"""The sanity gate in front of the verdict: are these models worth comparing?

A comparison of two recipes is a comparison of *models* only when the models have learned more than their
training subset's local token statistics. Three checks, each from per-run values the results folder keeps:

* **n-gram baseline**: every (arm, seed) has Kneser-Ney bigram and trigram models fitted to exactly its training
  tokens (:mod:`experiments.ngram_baseline`); the arm's models must beat the stronger of them on the primary
  metric (one-sided paired t-test over seeds: the baseline of seed k was fitted to seed k's subset).
* **minimal pairs**: BLiMP accuracy (seed-averaged) must be above chance (one-sided t-test over paradigm means).
* **contamination gap**: the verdict's two arms must not differ by more than a declared level in how many of the
  primary metric's evaluation documents share a 13-gram with their training subsets.

When a verdict arm fails one of the first two, the verdict says so before anything else and calls the
comparison one of data statistics; a contamination gap above the level is named in the verdict.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from experiments.stats import above_chance, beats

DEFAULT_CONTAMINATION_GAP = 0.05  # 5 percentage points of evaluation documents


def primary_sets(metric: str, eval_names: list[str]) -> list[str]:
    """The evaluation sets a metric is computed from (none for BLiMP)."""
    if metric.startswith("bpb_macro/"):
        g = metric.split("/", 1)[1]
        return [n for n in eval_names if n.startswith(f"{g}/")]
    if metric.startswith("bpb/"):
        return [metric[4:]]
    return []


def _contamination(run: dict, sets: list[str]) -> float | None:
    c = (run.get("subset") or {}).get("contamination_13gram") or {}
    rates = [c[s]["rate"] for s in sets if s in c]
    return float(np.mean(rates)) if rates else None


def ngram_runs(runs: list[dict], order: int) -> list[dict]:
    """Pseudo-runs carrying the order-``order`` baseline's per-item results and values (computed by the same
    tasks from the same kind of items), so the report's metric code reads them exactly as it reads the models."""
    return [{**r, "items": r["ngram"][order]["items"], "values": r["ngram"][order]["values"]} for r in runs]


def chance_metrics(info: dict[str, dict]) -> list[str]:
    """Metrics with a chance level and clustered per-item outcomes (minimal pairs): tested against chance."""
    return [m for m, i in info.items() if i.get("chance") is not None and i.get("item_array") and i.get("cluster")]


def gate(by_arm: dict[str, list[dict]], primary: str, eval_names: list[str], verdict_arms: tuple[str, str],
         value: Callable[[dict, str], float], info: dict[str, dict], contamination_level: float | None = None) -> dict:
    """Per-arm checks and the gate's outcome for the verdict's arms (baseline, candidate).

    ``value(run, metric)`` is the report's per-run metric; ``info`` the tasks' metric declarations (direction,
    chance level, item arrays). Arms whose runs lack n-gram results (made before the baselines existed) are
    reported as unchecked, and the gate says so rather than passing them.
    """
    level = DEFAULT_CONTAMINATION_GAP if contamination_level is None else float(contamination_level)
    lower = not info[primary]["higher_is_better"]
    sets = primary_sets(primary, eval_names)
    pairs = chance_metrics(info)
    rows: dict[str, dict] = {}
    for arm, runs in by_arm.items():
        row: dict = {"seeds": len(runs), "chance": {}}
        orders = sorted(set.intersection(*[set(r.get("ngram") or {}) for r in runs])) if runs else []
        if orders and all(primary in r["ngram"][o]["values"] for r in runs for o in orders):
            model = [value(r, primary) for r in runs]
            per = {o: beats(model, [value(r, primary) for r in ngram_runs(runs, o)], lower) for o in orders}
            best = min(orders, key=lambda o: per[o]["reference"] if lower else -per[o]["reference"])
            row["ngram"] = {"orders": per, "best": best, "status": per[best]["status"]}
        for m in pairs:
            i = info[m]
            arr, cl = f"{i['task']}/{i['item_array']}", f"{i['task']}/{i['cluster']}"
            if not all(arr in r["items"] for r in runs):
                continue
            row["chance"][m] = above_chance([r["items"][arr] for r in runs], runs[0]["items"][cl], i["chance"])
            if orders and all(m in r["ngram"][orders[-1]]["values"] for r in runs):
                row["chance"][m]["ngram"] = float(np.mean([r["ngram"][orders[-1]]["values"][m] for r in runs]))
        rates = [x for x in (_contamination(r, sets) for r in runs) if x is not None]
        row["contamination"] = float(np.mean(rates)) if rates else None
        rows[arm] = row
    base, cand = verdict_arms
    failed, unchecked = [], []
    for arm in (base, cand):
        row = rows.get(arm)
        if row is None:
            continue
        if "ngram" not in row:
            unchecked.append(arm)
        elif row["ngram"]["status"] != "beats":
            failed.append(("ngram", arm))
        for m, c in row["chance"].items():
            if not c["above"]:
                failed.append((m, arm))
    gap = None
    if base in rows and cand in rows and rows[base]["contamination"] is not None \
            and rows[cand]["contamination"] is not None:
        gap = rows[cand]["contamination"] - rows[base]["contamination"]
    return {"rows": rows, "primary": primary, "sets": sets, "chance_metrics": pairs, "failed": failed,
            "unchecked": unchecked, "passed": not failed and not unchecked, "data_statistics": bool(failed),
            "contamination_gap": gap, "contamination_level": level, "contamination_declared": contamination_level is not None,
            "contamination_flag": gap is not None and abs(gap) > level, "verdict_arms": verdict_arms}


def _bpb(x: float) -> str:
    return f"{x:.4f}"


def verdict_lines(g: dict) -> list[str]:
    """What the verdict says first: the gate's outcome, then a contamination gap above the declared level."""
    rows, base, cand = g["rows"], *g["verdict_arms"]
    out = []
    if g["failed"]:
        parts = []
        ng = [a for k, a in g["failed"] if k == "ngram"]
        if ng:
            def one(a):
                n = rows[a]["ngram"]
                b = n["orders"][n["best"]]
                how = "worse" if n["status"] == "does not beat" else "not significantly better"
                return f"`{a}` {b['model']:.4f} against {b['reference']:.4f} for the {n['best']}-gram ({how})"
            parts.append(f"trained models do not beat a Kneser-Ney n-gram fitted to their own training subsets on "
                         f"{g['primary']}: " + "; ".join(one(a) for a in ng))
        for m in g["chance_metrics"]:
            bl = [a for k, a in g["failed"] if k == m]
            if bl:
                parts.append(f"{m} (minimal pairs) is at chance for " + " and ".join(
                    f"`{a}` ({rows[a]['chance'][m]['accuracy']:.3f})" for a in bl))
        text = "; ".join(parts)
        out.append("**Sanity gate: failed.** " + text[0].upper() + text[1:] + ". At this scale the comparison below is one of the subsets' token statistics (data "
                   "statistics), not of what trained models learn from them.")
    elif g["unchecked"]:
        out.append("**Sanity gate: not checked** for " + ", ".join(f"`{a}`" for a in g["unchecked"])
                   + " (no n-gram baselines in these results).")
    else:
        out.append(f"**Sanity gate: passed** (`{base}` and `{cand}` beat their n-gram baselines on {g['primary']}"
                   + "".join(f"; {m} above chance" for m in rows.get(cand, {}).get("chance", {})) + ").")
    if g["contamination_flag"]:
        more, less = (cand, base) if g["contamination_gap"] > 0 else (base, cand)
        out.append(f"**Contamination gap:** `{more}`'s subsets share a 13-gram with "
                   f"{100 * rows[more]['contamination']:.0f}% of the {g['primary']} evaluation documents against "
                   f"{100 * rows[less]['contamination']:.0f}% for `{less}` (gap {100 * abs(g['contamination_gap']):.0f} "
                   f"points, above the {100 * g['contamination_level']:.0f} points set by `experiment.contamination_gap`"
                   + ("" if g.get("contamination_declared") else ", its default") + "): part of the difference may be "
                   "text the models saw in training.")
    return out


def section(g: dict, by_arm: dict[str, list[dict]], value: Callable[[dict, str], float],
            metrics: list[str]) -> list[str]:
    """The report's sanity-gate section: each arm against its n-gram baselines, minimal pairs against chance, the
    contamination of the primary sets, and whether the n-gram baselines reproduce the verdict arms' differences."""
    rows = g["rows"]
    orders = sorted({o for r in rows.values() if "ngram" in r for o in r["ngram"]["orders"]})
    pm = g["chance_metrics"]
    L = ["## Sanity gate: models against n-gram baselines, minimal pairs against chance", "",
         f"For every arm and seed, interpolated modified Kneser-Ney models (orders {', '.join(map(str, orders)) or '–'}) "
         "are fitted to exactly the tokens the model trained on (same tokenizer, same end-of-text separators) and "
         "scored by the same evaluation tasks on the same sequences as the model. An arm passes when its models "
         "beat the stronger baseline on the primary metric (one-sided paired t-test over seeds at 0.05); minimal "
         "pairs pass when the seed-averaged accuracy is above chance (one-sided t-test over paradigm means).", "",
         f"| arm | seeds | model {g['primary']} | " + " | ".join(f"KN {o}-gram" for o in orders)
         + " | models vs n-gram | " + "".join(f"{m} (vs chance) | KN {m} | " for m in pm)
         + "contamination of the primary sets |",
         "|---|---:|---:|" + "---:|" * len(orders) + "---|" + "---|---:|" * len(pm) + "---:|"]
    for arm, r in rows.items():
        ng = r.get("ngram")
        cells = [f"{_bpb(ng['orders'][ng['best']]['model'])}" if ng else "–"]
        cells += [_bpb(ng["orders"][o]["reference"]) if ng and o in ng["orders"] else "–" for o in orders]
        if ng:
            b = ng["orders"][ng["best"]]
            p = f", p = {b['p']:.3g}" if b["p"] is not None else ""
            cells.append(f"**{ng['status']}** ({b['advantage']:+.4f}{p})")
        else:
            cells.append("not checked")
        for m in pm:
            c = r["chance"].get(m)
            cells.append(f"{c['accuracy']:.3f} ({'above chance' if c['above'] else '**at chance**'}"
                         + (f", p = {c['p']:.3g}" if c["p"] is not None else "") + ")" if c else "–")
            cells.append(f"{c['ngram']:.3f}" if c and c.get("ngram") is not None else "–")
        cells.append(f"{100 * r['contamination']:.1f}%" if r["contamination"] is not None else "–")
        L.append(f"| {arm} | {r['seeds']} | " + " | ".join(cells) + " |")
    L += ["", "Advantage: how much better the model's primary metric is than the stronger baseline's (positive: the "
          f"model is better). Contamination: share of the primary metric's evaluation documents "
          f"({', '.join(g['sets']) or '–'}) with a 13-gram in the arm's training subset, mean over seeds; a gap "
          f"between the verdict's arms above {100 * g['contamination_level']:.0f} points is named in the verdict.",
          ""]
    base, cand = g["verdict_arms"]
    if base in by_arm and cand in by_arm and orders and all("ngram" in rows.get(a, {}) for a in (base, cand)):
        o = rows[base]["ngram"]["best"]
        L += [f"### Do the n-gram baselines reproduce `{cand}` − `{base}`?", "",
              f"Mean over seeds of each metric's difference between the arms, for the trained models and for the "
              f"KN {o}-grams fitted to the same subsets. Where the two columns agree, the models' difference is "
              "already in the subsets' token statistics.", "",
              f"| metric | models: {cand} − {base} | KN {o}-grams: {cand} − {base} |", "|---|---:|---:|"]
        md, nd = [], []
        for m in metrics:
            if m in pm:
                continue
            try:
                a = np.mean([value(r, m) for r in by_arm[cand]]) - np.mean([value(r, m) for r in by_arm[base]])
                b = np.mean([value(r, m) for r in ngram_runs(by_arm[cand], o)]) - np.mean(
                    [value(r, m) for r in ngram_runs(by_arm[base], o)])
            except KeyError:
                continue
            md.append(a)
            nd.append(b)
            L.append(f"| {m} | {a:+.4f} | {b:+.4f} |")
        if len(md) >= 3 and np.std(md) > 0 and np.std(nd) > 0:
            L += ["", f"Correlation of the two columns over these {len(md)} metrics: {np.corrcoef(md, nd)[0, 1]:+.2f}."]
        L.append("")
    return L
