"""The ablation report: funnel, loss curves, metric-versus-tokens curves, a results
table with 95% confidence intervals over seeds, paired tests between arms, the
data-efficiency ratio and a one-sentence verdict with its uncertainty.

Paired, not just overlapping intervals: every arm is evaluated on the same
held-out documents and the same BLiMP pairs, so differences are tested item by
item (paired bootstrap over documents for bits per byte; McNemar's exact test
and a paired bootstrap over pairs for BLiMP).
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from experiments.ablation import load_results
from pipeline.inspection import funnel
from pipeline.shards import atomic_write_bytes, read_json

N_BOOT = 10_000


# ---------------------------------------------------------------------------
# statistics


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and half-width of a t-interval over seeds (None with one seed)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), None
    from scipy import stats

    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def _two_level_bootstrap(items_a: np.ndarray, items_b: np.ndarray, stat, seed: int = 0) -> dict:
    """Bootstrap a paired statistic over seeds *and* items.

    ``items_a``/``items_b`` are (seeds x items) arrays of per-item values for
    the same items. Each replicate resamples each arm's seeds (so seed-to-seed
    variance counts) and then the items, paired across arms.
    """
    rng = np.random.default_rng(seed)
    (sa, n), sb = items_a.shape, items_b.shape[0]
    diff = stat(items_b.mean(0), items_a.mean(0), np.arange(n))
    boot = np.empty(N_BOOT)
    for k in range(N_BOOT):
        a = items_a[rng.integers(0, sa, sa)].mean(0)
        b = items_b[rng.integers(0, sb, sb)].mean(0)
        boot[k] = stat(b, a, rng.integers(0, n, n))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    p = 2 * min((boot <= 0).mean(), (boot >= 0).mean())
    return {"diff": float(diff), "ci": [float(lo), float(hi)], "p": float(max(min(1.0, p), 1 / N_BOOT)),
            "n": int(n), "seeds": [int(sa), int(sb)]}


def paired_bootstrap_bpb(bits_a: np.ndarray, bits_b: np.ndarray, nbytes: np.ndarray, seed: int = 0) -> dict:
    """Difference in aggregate bits per byte (b - a); ``bits_*`` are (seeds x documents)."""
    def stat(b, a, idx):
        return b[idx].sum() / nbytes[idx].sum() - a[idx].sum() / nbytes[idx].sum()

    return _two_level_bootstrap(np.atleast_2d(bits_a), np.atleast_2d(bits_b), stat, seed)


def paired_bootstrap_acc(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0) -> dict:
    """Difference in accuracy (b - a); ``correct_*`` are (seeds x pairs) of 0/1."""
    def stat(b, a, idx):
        return b[idx].mean() - a[idx].mean()

    return _two_level_bootstrap(np.atleast_2d(correct_a).astype(float), np.atleast_2d(correct_b).astype(float),
                                stat, seed)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact two-sided McNemar test on the discordant pairs."""
    from scipy import stats

    b = int(((correct_a == 1) & (correct_b == 0)).sum())
    c = int(((correct_a == 0) & (correct_b == 1)).sum())
    p = stats.binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    return {"a_only": b, "b_only": c, "p": float(p)}


# ---------------------------------------------------------------------------


def _by_arm(runs: list[dict], order: list[str]) -> dict[str, list[dict]]:
    """Runs grouped by arm, arms in config order, seeds ascending."""
    out: dict[str, list[dict]] = {a: [] for a in order}
    for r in runs:
        out.setdefault(r["arm"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["seed"])
    return {a: v for a, v in out.items() if v}


def _final_metrics(run: dict) -> dict:
    return {k: v for k, v in run["evals"][-1].items() if k not in ("step", "tokens_seen")} if run["evals"] else {}


def _curve(runs: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of a metric against tokens seen (steps every seed shares)."""
    per_step: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for e in r["evals"]:
            if metric in e:
                per_step[e["tokens_seen"]].append(e[metric])
    xs = sorted(t for t, v in per_step.items() if len(v) == len(runs))
    return np.array(xs, dtype=float), np.array([np.mean(per_step[x]) for x in xs])


def tokens_to_reach(xs: np.ndarray, ys: np.ndarray, target: float, lower_is_better: bool) -> float | None:
    """First tokens-seen at which a curve reaches ``target`` (linear interpolation), None if never."""
    good = (ys <= target) if lower_is_better else (ys >= target)
    if not good.any():
        return None
    i = int(np.argmax(good))
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)


def _paired(a_runs: list[dict], b_runs: list[dict], eval_sets: list[str]) -> dict:
    out = {}
    for name in eval_sets:
        if not all(name in r["final"] for r in a_runs + b_runs):
            continue
        bits_a = np.array([r["final"][name]["doc_bits"] for r in a_runs])
        bits_b = np.array([r["final"][name]["doc_bits"] for r in b_runs])
        nbytes = np.asarray(a_runs[0]["final"][name]["doc_bytes"], dtype=float)
        out[f"bpb/{name}"] = paired_bootstrap_bpb(bits_a, bits_b, nbytes)
    if all("blimp" in r["final"] for r in a_runs + b_runs):
        ca = np.array([r["final"]["blimp"]["correct"] for r in a_runs])
        cb = np.array([r["final"]["blimp"]["correct"] for r in b_runs])
        res = paired_bootstrap_acc(ca, cb)
        seeds = sorted({r["seed"] for r in a_runs} & {r["seed"] for r in b_runs})
        res["mcnemar_by_seed"] = {
            s: mcnemar_exact(np.asarray(next(r for r in a_runs if r["seed"] == s)["final"]["blimp"]["correct"]),
                             np.asarray(next(r for r in b_runs if r["seed"] == s)["final"]["blimp"]["correct"]))
            for s in seeds}
        out["blimp"] = res
    return out


def _p(p: float) -> str:
    return f"< {1 / N_BOOT:g}" if p <= 1 / N_BOOT else f"{p:.3g}"


def _fmt(v: float | None, ci: float | None = None, digits: int = 4) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None else "")


def _plots(out: Path, run_dir: Path, by_arm: dict[str, list[dict]], metrics: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    stages = funnel(run_dir)
    if stages:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        names = [s["stage"] for s in stages]
        ax.bar(names, [s["kept_chars"] / 1e6 for s in stages], color="#4477aa", label="characters kept (M)")
        ax.set_ylabel("characters kept (millions)")
        for i, s in enumerate(stages):
            ax.text(i, s["kept_chars"] / 1e6, f"{s['kept']:,} docs", ha="center", va="bottom", fontsize=8)
        ax.set_title("Filtering funnel")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(out / "funnel.png", dpi=110)
        plt.close(fig)
        files.append("funnel.png")
    colors = {arm: plt.cm.tab10(i % 10) for i, arm in enumerate(by_arm)}
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, runs in by_arm.items():
        for j, r in enumerate(runs):
            ax.plot([l["tokens_seen"] for l in r["log"]], [l["loss"] for l in r["log"]], color=colors[arm],
                    alpha=0.8, lw=1, label=arm if j == 0 else None)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Training loss (each seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    files.append("loss.png")
    n = len(metrics)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        for arm, runs in by_arm.items():
            xs, ys = _curve(runs, metric)
            if len(xs):
                ax.plot(xs, ys, marker="o", ms=3, color=colors[arm], label=f"{arm} ({len(runs)} seeds)")
        ax.set_title(metric)
        ax.set_xlabel("tokens seen")
        if metric == "blimp":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    files.append("curves.png")
    return files


def write_report(out: Path, command: str | None = None) -> Path:
    out = Path(out)
    if not (out / "experiment.json").exists():
        raise ValueError(f"{out}: no experiment.json -- run `winnow ablation CONFIG` first")
    exp = read_json(out / "experiment.json")
    s = exp["settings"]
    run_dir = Path(exp["run_dir"])
    runs = load_results(out)
    if not runs:
        raise ValueError(f"{out}: no finished training runs")
    by_arm = _by_arm(runs, [a["name"] for a in s["arms"]])
    eval_names = list(read_json(out / "eval_sets.json"))
    metrics = [f"bpb/{n}" for n in eval_names] + (["blimp"] if any("blimp" in r["final"] for r in runs) else [])
    _plots(out, run_dir, by_arm, metrics)
    cmp_ = s.get("compare") or {}
    base, cand = cmp_.get("baseline"), cmp_.get("candidate")
    primary = cmp_.get("metric", metrics[0])
    lower_better = primary != "blimp"

    L = ["# winnow ablation report", ""]
    if command:
        L += [f"Reproduce: `{command}`", ""]
    cfg0 = runs[0]["config"]
    L += [f"Model: {cfg0['model']['arch']}, d={cfg0['model']['d_model']}, {cfg0['model']['n_layers']} layers, "
          f"context {cfg0['model']['context']}, {cfg0['params']['non_embedding']:,} non-embedding parameters "
          f"({cfg0['params']['total']:,} total), vocab {cfg0['vocab_size']:,}; batch {cfg0['train']['batch_size']}, "
          f"lr {cfg0['train']['lr']}, cosine schedule, AdamW; device {cfg0['device']}.", ""]
    # funnel
    st = funnel(run_dir)
    if st:
        L += ["## Filtering funnel", "", "| stage | docs in | kept | chars kept | share of raw chars |", "|---|---:|---:|---:|---:|"]
        raw_chars = st[0]["chars_in"] or 1
        for x in st:
            L.append(f"| {x['stage']} | {x['docs_in']:,} | {x['kept']:,} | {x['kept_chars']:,} | "
                     f"{100 * x['kept_chars'] / raw_chars:.1f}% |")
        L += ["", "![funnel](funnel.png)", ""]
    # arms
    L += ["## Arms", "", "| arm | stage | subset tokens | docs | optimiser steps | tokens seen | epochs | seeds | train tok/s |",
          "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for arm, rs in by_arm.items():
        sub = rs[0]["subset"]
        L.append(f"| {arm} | {rs[0]['stage']} | {sub['tokens']:,} | {sub['documents']:,} | {rs[0]['done']['steps']:,} | "
                 f"{rs[0]['done']['tokens_seen']:,} | {rs[0]['done']['epochs']} | {', '.join(str(r['seed']) for r in rs)} | "
                 f"{np.mean([r['done']['tokens_per_second'] for r in rs]):,.0f} |")
    L += [""]
    # results
    L += ["## Results (final checkpoint; mean ± 95% t-interval over seeds)", "",
          "| arm | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    finals = {arm: [_final_metrics(r) for r in rs] for arm, rs in by_arm.items()}
    for arm, fs in finals.items():
        cells = []
        for m in metrics:
            vals = [f[m] for f in fs if m in f]
            cells.append(_fmt(*mean_ci(vals)) if vals else "–")
        L.append(f"| {arm} | " + " | ".join(cells) + " |")
    b = s.get("blimp") or {}
    blimp_note = (f" BLiMP uses {b.get('pairs_per_paradigm', 20)} pairs per paradigm at intermediate checkpoints and "
                  f"{b.get('final_pairs_per_paradigm', 100)} at the final one (the same pairs for every arm), so the "
                  f"last point of its curve is the more precise." if "blimp" in metrics else "")
    L += ["", "Bits per byte: lower is better. BLiMP: share of minimal pairs where the grammatical sentence gets the "
          "higher log-probability (a tie counts as wrong; chance = 0.5)." + blimp_note, "", "![curves](curves.png)", "",
          "![loss](loss.png)", ""]
    # contamination
    L += ["## Contamination (13-gram overlap of each training subset with each evaluation set)", "",
          "| arm | " + " | ".join(eval_names) + " |", "|---|" + "---:|" * len(eval_names)]
    for arm, rs in by_arm.items():
        c = rs[0]["subset"].get("contamination_13gram", {})
        L.append(f"| {arm} | " + " | ".join(f"{100 * c[n]['rate']:.1f}% ({c[n]['contaminated_docs']})" if n in c else "–"
                                            for n in eval_names) + " |")
    L += ["", "Share of evaluation documents with at least one 13-word sequence that also occurs in the arm's "
          "training text (held-out ids are excluded from training; this catches copies under other ids).", ""]
    # paired comparisons
    verdict = None
    comparisons = []
    if base in by_arm:
        for arm in by_arm:
            if arm != base:
                comparisons.append((arm, _paired(by_arm[base], by_arm[arm], eval_names)))
    if comparisons:
        L += [f"## Paired comparisons against `{base}` (arm − {base}; same documents and pairs)", "",
              "| arm | metric | difference | 95% CI | p | items x seeds |", "|---|---|---:|---|---:|---:|"]
        for arm, res in comparisons:
            for m, r in res.items():
                L.append(f"| {arm} | {m} | {r['diff']:+.4f} | [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {_p(r['p'])} | {r['n']:,} x {r['seeds'][1]}/{r['seeds'][0]} seeds |")
        L += ["", "Two-level paired bootstrap (10,000 replicates): each replicate resamples each arm's seeds, then the "
              "evaluation documents (bpb) or BLiMP pairs, the same items for both arms, so both seed-to-seed and "
              "item-to-item variation count. With one seed, only item variation is captured. McNemar's exact test "
              "per seed for BLiMP below.", ""]
        for arm, res in comparisons:
            if "blimp" in res and res["blimp"].get("mcnemar_by_seed"):
                parts = [f"seed {sd}: {v['b_only']} vs {v['a_only']} discordant, p={v['p']:.3g}"
                         for sd, v in res["blimp"]["mcnemar_by_seed"].items()]
                L.append(f"- McNemar {arm} vs {base}: " + "; ".join(parts))
        L.append("")
    # data efficiency: how many baseline tokens reach each arm's final score
    if base in by_arm:
        xs, ys = _curve(by_arm[base], primary)
        base_data = by_arm[base][0]["subset"]["tokens"]
        L += ["## Data efficiency", "",
              f"Tokens `{base}` needs (interpolated along its mean {primary} curve) to reach each arm's final "
              f"{primary}, against the tokens that arm saw.", "",
              f"| arm | final {primary} | tokens seen | unique tokens | `{base}` tokens to match | ratio |",
              "|---|---:|---:|---:|---:|---:|"]
        for arm, rs in by_arm.items():
            if arm == base:
                continue
            final = float(np.mean([_final_metrics(r)[primary] for r in rs]))
            seen, data = rs[0]["done"]["tokens_seen"], rs[0]["subset"]["tokens"]
            reach = tokens_to_reach(xs, ys, final, lower_better)
            if reach is None:
                need, ratio = f"> {xs[-1]:,.0f} (never)", f"> {xs[-1] / seen:.2f}×"
            else:
                need, ratio = f"{reach:,.0f}", f"{reach / seen:.2f}×"
            L.append(f"| {arm} | {final:.4f} | {seen:,} | {data:,} | {need} | {ratio} |")
        L += ["", f"(`{base}` drew from {base_data:,} unique tokens; its curve is sampled every "
              f"{int(xs[1] - xs[0]) if len(xs) > 1 else 0:,} tokens, so ratios are interpolations.)", ""]

    # the verdict: the primary metric, then every other metric where the candidate differs beyond noise
    res_all = dict(comparisons).get(cand, {})
    res = res_all.get(primary)
    if res:
        cand_data = by_arm[cand][0]["subset"]["tokens"]

        def direction(metric: str, r: dict) -> str:
            lower = metric != "blimp"
            better = (r["diff"] < 0) if lower else (r["diff"] > 0)
            return "better" if better else "worse"

        def significant(r: dict) -> bool:
            return r["ci"][0] > 0 or r["ci"][1] < 0

        unit = "bits per byte" if lower_better else "accuracy"
        if significant(res):
            verdict = (f"On {primary}, `{cand}` ({cand_data:,} unique tokens) is {direction(primary, res)} than "
                       f"`{base}` ({by_arm[base][0]['subset']['tokens']:,}) by {abs(res['diff']):.4f} {unit} "
                       f"(95% CI [{res['ci'][0]:+.4f}, {res['ci'][1]:+.4f}], paired bootstrap, "
                       f"{len(by_arm[cand])} vs {len(by_arm[base])} seeds, same compute)")
        else:
            verdict = (f"On {primary}, `{cand}` and `{base}` are indistinguishable at this scale: the difference "
                       f"({res['diff']:+.4f}, 95% CI [{res['ci'][0]:+.4f}, {res['ci'][1]:+.4f}]) is within noise")
        others = []
        for m, r in res_all.items():
            if m == primary:
                continue
            tag = direction(m, r) if significant(r) else "no different (within noise)"
            others.append(f"{tag} on {m} ({r['diff']:+.4f} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}])")
        if others:
            verdict += "; it is " + "; ".join(others)
        verdict += "."
    if verdict:
        L[1:1] = ["", f"**Verdict:** {verdict}"]
    atomic_write_bytes(out / "report.md", ("\n".join(L) + "\n").encode("utf-8"))
    return out / "report.md"
