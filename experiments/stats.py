"""Seed-level statistics for the ablation report.

The unit of replication is a training run (one arm, one seed): each run gives
one number per metric (aggregate bits per byte over the fixed evaluation set,
BLiMP accuracy). Two recipes are compared with Welch's t-test on those per-run
numbers, or a paired t-test when both arms ran the same seeds and the design
pairs them. With 2-5 seeds a t-test is the calibrated choice; resampling 2-3
values by percentile bootstrap is not (it under-states seed variance).

Secondary metrics are Holm-corrected; arms with fewer than ``MIN_SEEDS`` runs
are exploratory (no test enters the verdict).

BLiMP pairs come in templated paradigms, so a BLiMP interval over items is a
cluster bootstrap over paradigms, never over pairs.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

MIN_SEEDS = 3
ALPHA = 0.05


def mean_ci(values, level: float = 0.95) -> tuple[float, float | None]:
    """Mean and half-width of a t-interval over runs (None with one run)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def compare(a, b, paired: bool = False, level: float = 0.95) -> dict:
    """Difference of means ``b - a`` between two arms' per-run values, with a t-interval and p.

    ``paired``: ``a[i]`` and ``b[i]`` share seed i (paired t-test on the
    differences); otherwise Welch's unequal-variance t-test.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"diff": float(b.mean() - a.mean()), "n": [len(a), len(b)], "test": "paired t" if paired else "Welch t",
           "ci": None, "p": None, "df": None}
    if paired:
        if len(a) != len(b):
            raise ValueError("a paired comparison needs the same runs in both arms")
        d = b - a
        if len(d) < 2:
            return out
        sd = d.std(ddof=1)
        df, se = len(d) - 1, sd / math.sqrt(len(d))
        p = float(stats.ttest_rel(b, a).pvalue) if sd > 0 else (1.0 if d.mean() == 0 else 0.0)
    else:
        if len(a) < 2 or len(b) < 2:
            return out
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            df, p = len(a) + len(b) - 2, (1.0 if out["diff"] == 0 else 0.0)
        else:
            df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
            p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    out.update(ci=[out["diff"] - half, out["diff"] + half], p=p, df=float(df), se=float(se))
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def cluster_bootstrap_mean(values: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, list[float]]:
    """Mean of per-item ``values`` with a percentile interval from resampling whole clusters.

    Used for BLiMP (items = pairs, clusters = paradigms): pairs of one
    paradigm share a template, so they are not independent.
    """
    values = np.asarray(values, dtype=float)
    labels, inv = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(labels))
    counts = np.bincount(inv, minlength=len(labels)).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(labels), (n_boot, len(labels)))
    boot = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])
    return float(values.mean()), [float(lo), float(hi)]


# ---------------------------------------------------------------------------
# data efficiency: fitted curves of decayed checkpoints


def fit_power_law(tokens, values) -> tuple[float, float]:
    """Least-squares fit of ``log(value) = alpha + beta * log(tokens)`` (a power law); returns (alpha, beta)."""
    beta, alpha = np.polyfit(np.log(np.asarray(tokens, float)), np.log(np.asarray(values, float)), 1)
    return float(alpha), float(beta)


def _curve_values(xs, ys, ts: np.ndarray, curve: str) -> np.ndarray:
    """A run's score at token counts ``ts`` from its decayed points: a power-law fit, or (``interp``) straight
    lines between the measured points on a log-token axis (exact at every measured, decayed model)."""
    if curve == "power":
        a, b = fit_power_law(xs, ys)
        return np.exp(a + b * np.log(ts))
    order = np.argsort(xs)
    return np.interp(np.log(ts), np.log(np.asarray(xs, float)[order]), np.asarray(ys, float)[order])


def tokens_to_match(base_curves: list[tuple[list[float], list[float]]], targets: list[float],
                    lower_is_better: bool = True, level: float = 0.95, grid: int = 400, curve: str = "interp") -> dict:
    """Baseline tokens whose score equals the candidate's mean score, with an interval.

    ``base_curves``: one (tokens, values) curve of *decayed* checkpoints per
    baseline run, read as ``curve`` (see :func:`_curve_values`; early in
    training a power law can miss the points by more than the effects we
    measure, so straight lines between measured points are the default). ``targets``: the
    candidate's per-run final values. The point estimate is where the mean
    fitted curve crosses the mean target. The interval inverts Welch's test:
    it holds every token count t (within the measured range) at which
    "baseline at t equals the candidate" is not rejected, comparing the
    per-run fitted values at t with the per-run targets. Nothing is
    extrapolated: outside the measured range the answer is "<= first
    budget" or "not reached within the last budget".
    """
    lo_t = max(min(x) for x, _ in base_curves)
    hi_t = min(max(x) for x, _ in base_curves)
    ts = np.exp(np.linspace(math.log(lo_t), math.log(hi_t), grid))
    per_run = np.array([_curve_values(x, y, ts, curve) for x, y in base_curves])  # runs x grid
    fits = [fit_power_law(x, y) for x, y in base_curves]
    mean_curve = per_run.mean(0)
    target = float(np.mean(targets))
    sign = 1.0 if lower_is_better else -1.0
    # "reached" at t: the baseline's fitted score is at least as good as the target
    reached = sign * (mean_curve - target) <= 0
    out = {"target": target, "range": [float(lo_t), float(hi_t)], "curve": curve, "power_fits": fits,
           "runs": [len(base_curves), len(targets)]}
    if reached.all():
        out.update(kind="below", estimate=float(lo_t))
    elif not reached.any():
        out.update(kind="above", estimate=float(hi_t))
    else:
        i = int(np.argmax(reached))
        out.update(kind="inside", estimate=float(np.exp(np.interp(0.0, sign * (mean_curve[i - 1:i + 1] - target)[::-1],
                                                                np.log(ts[i - 1:i + 1])[::-1]))))
    if len(base_curves) >= 2 and len(targets) >= 2:
        ok = np.array([(compare(per_run[:, k], targets)["p"] or 0.0) >= 1 - level for k in range(grid)])
        if ok.any():
            out["interval"] = [float(ts[ok].min()), float(ts[ok].max())]
            out["interval_open"] = [bool(ok[0]), bool(ok[-1])]  # touches the measured range's ends
        else:
            out["interval"] = None
    return out
