"""The report's figures, drawn for a reviewer.

* every curve shows each seed's points and a 95% t-interval band over seeds around the mean, so the spread the
  tests work with is visible;
* one unit per family: bits per byte for every bits-per-byte metric (and for the training loss, converted with
  the subset's bytes per token; bits per token, labelled so, when the bytes are not recorded), accuracy for
  minimal pairs; every panel of a family shares one y-range, so panels can be compared by eye;
* ``verdict.png`` puts the verdict's question in one panel: each arm's per-seed primary values with their mean
  and interval, the n-gram baselines fitted to the same subsets, and the baseline's mean +- the equivalence margin;
* titles and legends sit outside the panels (constrained layout), and token axes carry a few readable ticks.

Nothing here computes a statistic the report does not already state; it only draws the per-run values.
"""
from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

LN2 = math.log(2.0)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tokens_label(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:.3g}B"
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e3:
        return f"{x / 1e3:.3g}k"
    return f"{x:.0f}"


def _token_axis(ax, xs) -> None:
    """Log token axis with ticks only at the measured budgets (at most five, spread out), labelled 38k, 1.2M."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    xs = sorted(set(float(x) for x in xs))
    if len(xs) > 5:
        idx = np.unique(np.round(np.linspace(0, len(xs) - 1, 5)).astype(int))
        xs = [xs[i] for i in idx]
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_tokens_label(x) for x in xs])
    if xs:
        ax.set_xlim(xs[0] / 1.25, xs[-1] * 1.25)


def _colors(plt, arms) -> dict:
    """One colour per arm from tab10 without its grey (grey marks the n-gram baselines and the margin band)."""
    palette = [plt.cm.tab10(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    return {arm: palette[i % len(palette)] for i, arm in enumerate(arms)}


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _t_band(values: np.ndarray) -> float | None:
    """Half-width of the 95% t-interval of the mean of ``values`` (None with fewer than two)."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return None
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def metric_family(metric: str, info: dict) -> str:
    """Metrics drawn on one y-range: bits per byte of one group of evaluation sets (a domains folder and its macro
    mean), bits per byte of the other held-out sets, or one task's metric of another unit."""
    i = info.get(metric) or {}
    task, label = i.get("task", metric.split("/")[0]), (i.get("label") or "")
    if "bits per byte" in label:
        rest = metric.split("/", 1)[1] if "/" in metric else ""
        if metric.startswith(f"{task}_macro/"):
            return f"{task}/{rest}"
        return f"{task}/{rest.split('/')[0]}" if "/" in rest else f"{task} (held-out sets)"
    return metric


def _family_label(family: str, info: dict, metric: str) -> str:
    label = (info.get(metric) or {}).get("label") or metric
    return "bits per byte" if "bits per byte" in label else label


def _points(run: dict, metric: str, decayed: bool) -> dict[float, float]:
    return {float(e["tokens_seen"]): float(e[metric]) for e in run["evals"]
            if metric in e and bool(e.get("decayed")) == decayed}


def funnel_plot(out: Path, stages: list[dict]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    names = [s["stage"] for s in stages]
    ax.bar(names, [s["kept_chars"] / 1e6 for s in stages], color="#4477aa")
    ax.set_ylabel("characters kept (millions)")
    top = max((s["kept_chars"] for s in stages), default=1) / 1e6
    ax.set_ylim(0, top * 1.15)
    for i, s in enumerate(stages):
        ax.text(i, s["kept_chars"] / 1e6, f"{s['kept']:,} docs", ha="center", va="bottom", fontsize=8)
    ax.set_title("Filtering funnel: characters and documents kept after each stage")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.savefig(out / "funnel.png", dpi=110)
    plt.close(fig)
    return "funnel.png"


def curves_plot(out: Path, by_arm: dict[str, list[dict]], metrics: list[str], info: dict, suffix: str = "",
                title: str = "") -> str | None:
    """Every metric against tokens seen: each seed's decayed checkpoints (dots), the mean over seeds (line) with its
    95% t-interval (band), and the undecayed trunk's mean (dotted); one y-range per metric family."""
    plt = _plt()
    families: dict[str, list[str]] = defaultdict(list)
    for m in metrics:
        families[metric_family(m, info)].append(m)
    ncols = min(4, max(len(v) for v in families.values())) if families else 1
    rows = [(fam, ms[i:i + ncols]) for fam, ms in families.items() for i in range(0, len(ms), ncols)]
    if not rows:
        return None
    colors = _colors(plt, by_arm)
    arms = list(by_arm)
    width = max(8.0, 3.6 * ncols)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(width, 2.9 * len(rows) + 1.2), squeeze=False,
                             layout="constrained")
    fam_axes: dict[str, list] = defaultdict(list)
    fam_vals: dict[str, list[float]] = defaultdict(list)
    all_x: set[float] = set()
    for r, (fam, ms) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(ms):
                ax.set_visible(False)
                continue
            metric = ms[c]
            fam_axes[fam].append(ax)
            for k, arm in enumerate(arms):
                runs = by_arm[arm]
                jitter = 1 + 0.025 * (k - (len(arms) - 1) / 2)  # arms side by side at a shared budget
                per = [_points(run, metric, True) for run in runs]
                xs = sorted(set().union(*per)) if per else []
                for p in per:
                    ax.scatter([x * jitter for x in p], list(p.values()), s=7, color=colors[arm], alpha=0.55,
                               linewidths=0)
                    fam_vals[fam] += list(p.values())
                common = [x for x in xs if all(x in p for p in per)]
                if common:
                    means = np.array([np.mean([p[x] for p in per]) for x in common])
                    half = [_t_band([p[x] for p in per]) for x in common]
                    ax.plot([x * jitter for x in common], means, color=colors[arm], lw=1.4)
                    if all(h is not None for h in half):
                        h = np.array(half)
                        ax.fill_between([x * jitter for x in common], means - h, means + h, color=colors[arm],
                                        alpha=0.13, linewidth=0)
                        fam_vals[fam] += list(means - h) + list(means + h)
                    all_x.update(common)
                trunk = [_points(run, metric, False) for run in runs]
                tx = [x for x in sorted(set().union(*trunk)) if all(x in p for p in trunk)] if trunk else []
                if tx:
                    ax.plot(tx, [np.mean([p[x] for p in trunk]) for x in tx], color=colors[arm], lw=0.8, ls=":")
            chance = (info.get(metric) or {}).get("chance")
            if chance is not None:
                ax.axhline(chance, color="grey", lw=0.8, ls="--")
                fam_vals[fam].append(chance)
            ax.set_title(metric, fontsize=9)
            ax.tick_params(labelsize=8)
            if c == 0:
                ax.set_ylabel(_family_label(fam, info, metric), fontsize=8)
            if r == len(rows) - 1 or (r + 1 < len(rows) and c >= len(rows[r + 1][1])):
                ax.set_xlabel("tokens seen", fontsize=8)
    for fam, axs in fam_axes.items():
        v = [x for x in fam_vals[fam] if np.isfinite(x)]
        if v:
            lo, hi = min(v), max(v)
            pad = 0.05 * (hi - lo or abs(hi) or 1)
            for ax in axs:
                ax.set_ylim(lo - pad, hi + pad)
                _token_axis(ax, all_x)
    handles = [plt.Line2D([], [], color=colors[a], marker="o", ms=4, lw=1.4, label=f"{a} ({_seeds(len(by_arm[a]))})")
               for a in arms]
    per_row = max(1, int(width // 2.6))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(per_row, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle(textwrap.fill("Decayed checkpoints per seed (dots), mean over seeds (line) and 95% t-interval "
                               "(band); dotted: the undecayed trunk's mean; one y-range per metric family" + title,
                               int(width * 13)), fontsize=9)
    name = f"curves{suffix}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def loss_plot(out: Path, by_arm: dict[str, list[dict]], suffix: str = "", title: str = "") -> str | None:
    """Training loss of the trunk per seed (thin) and the mean over seeds (thick), in bits per byte of the training
    text when every run's subset records its bytes, else in bits per token (labelled so)."""
    plt = _plt()
    colors = _colors(plt, by_arm)
    per_byte = all(r["subset"].get("bytes") for rs in by_arm.values() for r in rs)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    xs_all: set[float] = set()
    for arm, runs in by_arm.items():
        curves = []
        for r in runs:
            scale = 1 / LN2 * (r["subset"]["tokens"] / r["subset"]["bytes"] if per_byte else 1.0)
            pts = {float(l["tokens_seen"]): l["loss"] * scale for l in r["log"]}
            curves.append(pts)
            ax.plot(list(pts), list(pts.values()), color=colors[arm], lw=0.6, alpha=0.45)
        common = sorted(set.intersection(*[set(c) for c in curves])) if curves else []
        if common:
            ax.plot(common, [np.mean([c[x] for c in curves]) for x in common], color=colors[arm], lw=1.6,
                    label=f"{arm} ({_seeds(len(runs))})")
            xs_all.update(common)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _tokens_label(x)))
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("bits per byte" if per_byte else "bits per token")
    # two lines: one line ran past the figure's edge at this width
    ax.set_title("Training loss of the trunk, " + ("bits per byte of the arm's training text" if per_byte else
                 "bits per token (these subsets did not record their bytes)")
                 + "\neach seed (thin), mean over seeds (thick)" + title, fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    fig.savefig(out / f"loss{suffix}.png", dpi=100)
    plt.close(fig)
    return f"loss{suffix}.png"


def verdict_plot(out: Path, by_arm: dict[str, list[dict]], primary: str, info: dict, value, base: str | None,
                 margin: float | None, ngram_order: int | None, suffix: str = "", title: str = "") -> str | None:
    """The primary metric per arm: each seed's final value (dots), the mean with its 95% t-interval (bar), the
    n-gram baseline fitted to the same subsets (grey crosses), and the baseline arm's mean +- the margin (band)."""
    plt = _plt()
    arms = list(by_arm)
    if not arms:
        return None
    width = max(7.0, 1.1 * len(arms) + 2)
    fig, ax = plt.subplots(figsize=(width, 4.6), layout="constrained")
    colors = _colors(plt, by_arm)
    if base in by_arm and margin:
        b = float(np.mean([value(r, primary) for r in by_arm[base]]))
        ax.axhspan(b - margin, b + margin, color="grey", alpha=0.15, linewidth=0,
                   label=f"{base} mean ± margin ({margin:.4f})")
        ax.axhline(b, color="grey", lw=0.8)
    for i, arm in enumerate(arms):
        v = np.array([value(r, primary) for r in by_arm[arm]])
        x = i + np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.array([float(i)])
        ax.scatter(x, v, s=16, color=colors[arm], zorder=3)
        h = _t_band(v)
        ax.errorbar(i + 0.25, v.mean(), yerr=h if h is not None else None, fmt="s", ms=5, color=colors[arm],
                    capsize=4, zorder=3)
        if ngram_order is not None and all(ngram_order in (r.get("ngram") or {}) for r in by_arm[arm]):
            g = [r["ngram"][ngram_order]["values"].get(primary) for r in by_arm[arm]]
            if all(x is not None for x in g):
                ax.scatter(i + np.linspace(-0.12, 0.12, len(g)) if len(g) > 1 else [i], g, marker="x", s=22,
                           color="black", zorder=2, label=f"KN {ngram_order}-gram on the same subset" if i == 0 else None)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([f"{a}\n({_seeds(len(by_arm[a]))})" for a in arms], fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    label = (info.get(primary) or {}).get("label") or primary
    ax.set_ylabel(f"{primary} ({label})", fontsize=9)
    direction = "lower" if not (info.get(primary) or {}).get("higher_is_better") else "higher"
    ax.set_title(textwrap.fill(f"Primary metric {primary} ({direction} is better): each seed (dots), mean and 95% "
                               f"t-interval over seeds (squares)" + title, int(width * 12)), fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    name = f"verdict{suffix}.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name
