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
    """Pseudo-runs carrying the order-``order`` baseline's per-item values, so the report's metric code scores
    them exactly as it scores the models."""
    return [{**r, "items": r["ngram"][order]} for r in runs]


def gate(by_arm: dict[str, list[dict]], primary: str, eval_names: list[str], verdict_arms: tuple[str, str],
         value: Callable[[dict, str], float], lower_is_better: bool = True,
         contamination_level: float | None = None) -> dict:
    """Per-arm checks and the gate's outcome for the verdict's arms (baseline, candidate).

    ``value(run, metric)`` is the report's per-run metric. Arms whose runs lack n-gram values (results made
    before the baselines existed) are reported as unchecked, and the gate says so rather than passing them.
    """
    level = DEFAULT_CONTAMINATION_GAP if contamination_level is None else float(contamination_level)
    sets = primary_sets(primary, eval_names)
    rows: dict[str, dict] = {}
    for arm, runs in by_arm.items():
        row: dict = {"seeds": len(runs)}
        orders = sorted(set.intersection(*[set(r.get("ngram") or {}) for r in runs])) if runs else []
        if orders and primary != "blimp":
            model = [value(r, primary) for r in runs]
            per = {}
            for o in orders:
                per[o] = beats(model, [value(r, primary) for r in ngram_runs(runs, o)], lower_is_better)
            best = min(orders, key=lambda o: (per[o]["reference"] if lower_is_better else -per[o]["reference"]))
            row["ngram"] = {"orders": per, "best": best, "status": per[best]["status"]}
        if all("blimp" in r["items"] for r in runs):
            row["blimp"] = above_chance([r["items"]["blimp"]["correct"] for r in runs],
                                        runs[0]["items"]["blimp"]["paradigm"])
            if orders and all("blimp" in r["ngram"][orders[-1]] for r in runs):
                row["blimp_ngram"] = float(np.mean([r["ngram"][orders[-1]]["blimp"]["correct"] for r in runs]))
        rates = [x for x in (_contamination(r, sets) for r in runs) if x is not None]
        row["contamination"] = float(np.mean(rates)) if rates else None
        rows[arm] = row
    base, cand = verdict_arms
    failed, unchecked = [], []
    for arm in (base, cand):
        row = rows.get(arm)
        if row is None:
            continue
        if "ngram" not in row and primary != "blimp":
            unchecked.append(arm)
        elif "ngram" in row and row["ngram"]["status"] != "beats":
            failed.append(("ngram", arm))
        if "blimp" in row and not row["blimp"]["above"]:
            failed.append(("blimp", arm))
    gap = None
    if base in rows and cand in rows and rows[base]["contamination"] is not None \
            and rows[cand]["contamination"] is not None:
        gap = rows[cand]["contamination"] - rows[base]["contamination"]
    return {"rows": rows, "primary": primary, "sets": sets, "failed": failed, "unchecked": unchecked,
            "passed": not failed and not unchecked, "data_statistics": any(k == "ngram" for k, _ in failed)
            or any(k == "blimp" for k, _ in failed), "contamination_gap": gap, "contamination_level": level,
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
            parts.append("the models of " + " and ".join(
                f"`{a}` ({_bpb(rows[a]['ngram']['orders'][rows[a]['ngram']['best']]['model'])} on {g['primary']}) "
                f"do not beat a Kneser-Ney {rows[a]['ngram']['best']}-gram fitted to the same subsets "
                f"({_bpb(rows[a]['ngram']['orders'][rows[a]['ngram']['best']]['reference'])})" for a in ng))
        bl = [a for k, a in g["failed"] if k == "blimp"]
        if bl:
            parts.append("minimal pairs (BLiMP) are at chance for " + " and ".join(
                f"`{a}` ({rows[a]['blimp']['accuracy']:.3f})" for a in bl))
        out.append("**Sanity gate: failed.** " + "; ".join(parts)[0].upper() + "; ".join(parts)[1:]
                   + ". At this scale the comparison below is one of the subsets' token statistics (data "
                   "statistics), not of what trained models learn from them.")
    elif g["unchecked"]:
        out.append("**Sanity gate: not checked** for " + ", ".join(f"`{a}`" for a in g["unchecked"])
                   + " (no n-gram baselines in these results).")
    else:
        out.append(f"**Sanity gate: passed** (`{base}` and `{cand}` beat their n-gram baselines on {g['primary']}"
                   + ("; BLiMP above chance" if "blimp" in rows.get(cand, {}) else "") + ").")
    if g["contamination_flag"]:
        more, less = (cand, base) if g["contamination_gap"] > 0 else (base, cand)
        out.append(f"**Contamination gap:** `{more}`'s subsets share a 13-gram with "
                   f"{100 * rows[more]['contamination']:.0f}% of the {g['primary']} evaluation documents against "
                   f"{100 * rows[less]['contamination']:.0f}% for `{less}` (gap {100 * abs(g['contamination_gap']):.0f} "
                   f"points, above the declared {100 * g['contamination_level']:.0f}): part of the difference may be "
                   "text the models saw in training.")
    return out


def section(g: dict, by_arm: dict[str, list[dict]], value: Callable[[dict, str], float],
            metrics: list[str]) -> list[str]:
    """The report's sanity-gate section: each arm against its n-gram baselines, BLiMP against chance, the
    contamination of the primary sets, and whether the n-gram baselines reproduce the verdict arms' differences."""
    rows = g["rows"]
    orders = sorted({o for r in rows.values() if "ngram" in r for o in r["ngram"]["orders"]})
    L = ["## Sanity gate: models against n-gram baselines, minimal pairs against chance", "",
         f"For every arm and seed, interpolated modified Kneser-Ney models (orders {', '.join(map(str, orders)) or '–'}) "
         "are fitted to exactly the tokens the model trained on (same tokenizer, same end-of-text separators) and "
         "scored on exactly the tokens the model is scored on. An arm passes when its models beat the stronger "
         "baseline on the primary metric (one-sided paired t-test over seeds at 0.05); BLiMP passes when the "
         "seed-averaged accuracy is above 0.5 (one-sided t-test over paradigm means).", "",
         f"| arm | seeds | model {g['primary']} | " + " | ".join(f"KN {o}-gram" for o in orders)
         + " | vs n-gram | BLiMP (p vs chance) | KN BLiMP | contamination of the primary sets |",
         "|---|---:|---:|" + "---:|" * len(orders) + "---|---|---:|---:|"]
    for arm, r in rows.items():
        ng = r.get("ngram")
        cells = [f"{_bpb(ng['orders'][ng['best']]['model'])}" if ng else "–"]
        cells += [_bpb(ng["orders"][o]["reference"]) if ng and o in ng["orders"] else "–" for o in orders]
        if ng:
            b = ng["orders"][ng["best"]]
            p = f", p = {b['p']:.3g}" if b["p"] is not None else ""
            cells.append(f"{ng['status']} ({b['advantage']:+.4f}{p})")
        else:
            cells.append("not checked")
        bl = r.get("blimp")
        cells.append(f"{bl['accuracy']:.3f} ({'above chance' if bl['above'] else 'at chance'}"
                     + (f", p = {bl['p']:.3g}" if bl["p"] is not None else "") + ")" if bl else "–")
        cells.append(f"{r['blimp_ngram']:.3f}" if r.get("blimp_ngram") is not None else "–")
        cells.append(f"{100 * r['contamination']:.1f}%" if r["contamination"] is not None else "–")
        L.append(f"| {arm} | {r['seeds']} | " + " | ".join(cells) + " |")
    L += ["", "Advantage: how much lower (better) the model's bits per byte are than the stronger baseline's. "
          f"Contamination: share of the primary metric's evaluation documents ({', '.join(g['sets']) or '–'}) with "
          "a 13-gram in the arm's training subset, mean over seeds; a gap between the verdict's arms above "
          f"{100 * g['contamination_level']:.0f} points is named in the verdict.", ""]
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
            if m == "blimp":
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
