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

import functools
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
        # the t-test's p from t and df directly: scipy's own test warns about "precision loss" when one arm's
        # runs are identical (deterministic training), though the statistic is exact then
        p = float(2 * stats.t.sf(abs(d.mean()) / se, df)) if sd > 0 else (1.0 if d.mean() == 0 else 0.0)
    else:
        if len(a) < 2 or len(b) < 2:
            return out
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            df, p = len(a) + len(b) - 2, (1.0 if out["diff"] == 0 else 0.0)
        else:
            df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
            p = float(2 * stats.t.sf(abs(out["diff"]) / se, df))
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


# ---------------------------------------------------------------------------
# "as good as": equivalence and non-inferiority against a declared margin, power, seeds needed
#
# "No difference detected" is not "equal": with 5 seeds and a seed-to-seed spread of 0.08 bpb nothing smaller
# than about 0.14 bpb is detectable. The mission's claim is one-sided -- "the cleaned corpus is not worse than
# the raw one by more than a margin declared before the run" -- so the verdict rests on the non-inferiority test
# (and, for "equivalent", on two one-sided tests, TOST: Schuirmann 1987), at the seed level, paired when the seeds
# pair. Differences are oriented so that a positive ``worse_by`` means the candidate is worse.

# The default margin and why: 1% of the baseline's value. Under a data-scaling exponent of about 0.1 (loss
# proportional to D^-0.095, Kaplan et al. 2020), a 1% loss difference is what roughly 11% more training data buys:
# a difference that small is worth less than the data a 4x smaller corpus saves. Declare your own (an absolute
# number in the metric's unit, or "N%" of the baseline) in `experiment.equivalence_margin` before the run.
DEFAULT_MARGIN = "1%"
DEFAULT_MARGIN_REASON = ("1% of the baseline: under a data-scaling exponent of about 0.1 (Kaplan et al. 2020) a "
                         "1% loss difference is what about 11% more training data buys")
POWER = 0.8
VERDICTS = ("as good as", "worse", "better by more than the margin", "inconclusive")


def resolve_margin(spec, baseline_mean: float | None) -> tuple[float, str]:
    """The margin in the metric's unit and how it was set: ``0.03`` (absolute), ``"1%"`` or ``{"relative": 0.01}``
    (relative to the baseline arm's mean), ``{"absolute": 0.03}``."""
    spec = DEFAULT_MARGIN if spec is None else spec
    if isinstance(spec, dict):
        if set(spec) == {"absolute"}:
            spec = float(spec["absolute"])
        elif set(spec) == {"relative"}:
            spec = f"{100 * float(spec['relative'])}%"
        else:
            raise ValueError(f"equivalence_margin: give a number, 'N%' or {{absolute: X}} / {{relative: X}}, got {spec}")
    if isinstance(spec, str):
        s = spec.strip()
        if not s.endswith("%"):
            try:
                spec = float(s)
            except ValueError:
                raise ValueError(f"equivalence_margin: {spec!r} is neither a number nor 'N%'") from None
        else:
            rel = float(s[:-1]) / 100
            if not rel > 0:
                raise ValueError(f"equivalence_margin must be positive, got {spec!r}")
            if baseline_mean is None:
                raise ValueError("a relative equivalence_margin needs the baseline's value")
            return rel * abs(float(baseline_mean)), f"{s} of the baseline's mean, {float(baseline_mean):.4f}"
    m = float(spec)
    if not m > 0:
        raise ValueError(f"equivalence_margin must be positive, got {spec!r}")
    return m, "absolute"


def _design(a, b, paired: bool) -> dict:
    """Mean difference ``b - a``, its standard error, degrees of freedom and the per-seed spread that produced them."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if len(a) != len(b):
            raise ValueError("a paired comparison needs the same runs in both arms")
        d = b - a
        n = len(d)
        sd = float(d.std(ddof=1)) if n > 1 else float("nan")
        return {"diff": float(d.mean()), "se": sd / math.sqrt(n) if n > 1 else float("nan"),
                "df": float(n - 1), "sd": sd, "sd_a": None, "sd_b": None, "n": [n, n], "paired": True}
    na, nb = len(a), len(b)
    sa = float(a.std(ddof=1)) if na > 1 else float("nan")
    sb = float(b.std(ddof=1)) if nb > 1 else float("nan")
    va, vb = sa ** 2 / na, sb ** 2 / nb
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if na > 1 and nb > 1 and se > 0 else float(na + nb - 2)
    return {"diff": float(b.mean() - a.mean()), "se": se, "df": float(df), "sd": math.sqrt(sa ** 2 + sb ** 2),
            "sd_a": sa, "sd_b": sb, "n": [na, nb], "paired": False}


def equivalence(a, b, margin: float, paired: bool = False, lower_is_better: bool = True, alpha: float = ALPHA,
                power: float = POWER, seeds_needed: bool = True) -> dict:
    """The "as good as" verdict for candidate ``b`` against baseline ``a`` on per-run values, with margin ``margin``.

    * **as good as**: non-inferiority -- "b is worse than a by ``margin`` or more" is rejected at ``alpha`` (the
      upper end of the 90% interval of ``worse_by`` is below the margin). ``equivalent`` adds the other one-sided
      test (TOST: the whole 90% interval inside +-margin); ``difference_detected`` says whether a difference smaller
      than the margin was nevertheless detected (two-sided test at ``alpha``).
    * **better by more than the margin**: "b is better by less than the margin" is rejected.
    * **worse**: b is detectably worse (two-sided test at ``alpha``) and not non-inferior; ``worse_than_margin``
      when "b is worse by at most the margin" is rejected too.
    * **inconclusive**: none of these; ``seeds_to_decide`` is the seeds per arm at which, were the observed
      difference and spread true, a run would reach one of the others with probability ``power``.
    """
    d = _design(a, b, paired)
    sign = 1.0 if lower_is_better else -1.0
    w = sign * d["diff"]
    out = {"margin": float(margin), "diff": d["diff"], "worse_by": w, "test": "paired t" if paired else "Welch t",
           "n": d["n"], "df": d["df"], "se": d["se"], "sd": d["sd"], "alpha": alpha, "ci90": None, "ci95": None,
           "p_noninferior": None, "p_equivalent": None, "p_better_by_margin": None, "p_difference": None,
           "verdict": "inconclusive", "equivalent": False, "difference_detected": False}
    if not (d["se"] > 0) or not math.isfinite(d["se"]):
        out["reason"] = "fewer than two seeds per arm" if min(d["n"]) < 2 else "no spread between seeds"
        return out
    se, df = d["se"], d["df"]
    t90, t95 = stats.t.ppf(1 - alpha, df), stats.t.ppf(1 - alpha / 2, df)
    out["ci90"] = [float(w - t90 * se), float(w + t90 * se)]
    out["ci95"] = [float(w - t95 * se), float(w + t95 * se)]
    p_ni = float(stats.t.cdf((w - margin) / se, df))           # H0: worse_by >= margin
    p_lo = float(stats.t.sf((w + margin) / se, df))            # H0: worse_by <= -margin
    p_better = float(stats.t.cdf((w + margin) / se, df))       # H0: worse_by >= -margin
    p_diff = float(2 * stats.t.sf(abs(w) / se, df))
    p_worse_margin = float(stats.t.sf((w - margin) / se, df))  # H0: worse_by <= margin
    out.update(p_noninferior=p_ni, p_equivalent=max(p_ni, p_lo), p_better_by_margin=p_better, p_difference=p_diff,
               equivalent=max(p_ni, p_lo) < alpha, difference_detected=p_diff < alpha)
    if p_better < alpha:
        out["verdict"] = "better by more than the margin"
    elif p_ni < alpha:
        out["verdict"] = "as good as"
    elif p_diff < alpha and w > 0:
        out["verdict"] = "worse"
        out["worse_than_margin"] = p_worse_margin < alpha
    elif seeds_needed:
        n = seeds_to_decide(w, d["sd"], margin, paired, alpha=alpha, power=power, sd_ratio=_sd_ratio(d))
        out["seeds_to_decide"] = n
    return out


def _sd_ratio(d: dict) -> float | None:
    return None if d["paired"] or not d["sd_a"] else d["sd_b"] / d["sd_a"]


def _df(n: int, paired: bool, sd_ratio: float | None) -> float:
    if paired:
        return float(n - 1)
    r2 = (sd_ratio or 1.0) ** 2  # Welch-Satterthwaite with n runs per arm
    return (1 + r2) ** 2 * (n - 1) / (1 + r2 ** 2)


# quadrature nodes for the sample standard deviation: s = sd * sqrt(X / df), X ~ chi-square(df), at K quantiles
_K = 256


@functools.lru_cache(maxsize=4096)
def _s_nodes(df: float) -> np.ndarray:
    return np.sqrt(stats.chi2.ppf((np.arange(_K) + 0.5) / _K, df) / df)


def prob_verdicts(delta: float, sd: float, n: int, margin: float, paired: bool = True, alpha: float = ALPHA,
                  sd_ratio: float | None = None) -> dict:
    """Probabilities of the verdicts of :func:`equivalence` for a true ``worse_by`` of ``delta``, a per-seed
    spread ``sd`` (of the paired differences; unpaired: sqrt(sd_a^2 + sd_b^2)) and ``n`` seeds per arm.

    Exact up to quadrature: the mean difference is normal and independent of the sample spread, which is a scaled
    chi; the probability of each region of the mean is integrated over 256 quantiles of the spread.
    """
    df = _df(n, paired, sd_ratio)
    sig = sd / math.sqrt(n)
    se = sig * _s_nodes(df)
    t90, t95 = stats.t.ppf(1 - alpha, df), stats.t.ppf(1 - alpha / 2, df)
    cdf = lambda x: stats.norm.cdf((x - delta) / sig)
    better = cdf(-margin - t90 * se)                      # upper 90% end below -margin
    as_good = cdf(margin - t90 * se) - better             # upper 90% end below the margin (not better by more)
    lo_w = np.maximum(t95 * se, margin - t90 * se)        # lower 95% end above 0 and not non-inferior
    worse = 1 - cdf(lo_w)
    equivalent = np.clip(cdf(margin - t90 * se) - cdf(-margin + t90 * se), 0, None)
    p = {"as good as": float(as_good.mean()), "better by more than the margin": float(better.mean()),
         "worse": float(worse.mean()), "equivalent (TOST)": float(equivalent.mean())}
    p["inconclusive"] = max(0.0, 1 - p["as good as"] - p["better by more than the margin"] - p["worse"])
    return p


N_MAX = 100_000


def _smallest_n(ok, n_min: int = 2) -> int | None:
    """Smallest n >= n_min with ok(n), assuming ok is (close to) monotone; None beyond N_MAX."""
    if ok(n_min):
        return n_min
    lo, hi = n_min, n_min * 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > N_MAX:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def seeds_to_decide(delta: float, sd: float, margin: float, paired: bool = True, alpha: float = ALPHA,
                    power: float = POWER, sd_ratio: float | None = None) -> int | None:
    """Seeds per arm at which a true ``worse_by`` of ``delta`` with spread ``sd`` gives a decided verdict (anything
    but inconclusive) with probability ``power``; None when more than N_MAX would be needed."""
    if not (sd > 0):
        return None
    return _smallest_n(lambda n: prob_verdicts(delta, sd, n, margin, paired, alpha, sd_ratio)["inconclusive"]
                       <= 1 - power)


def seeds_for_margin(sd: float, margin: float, paired: bool = True, alpha: float = ALPHA, power: float = POWER,
                     sd_ratio: float | None = None, equivalent: bool = False) -> int | None:
    """Seeds per arm for which two arms with no true difference are found "as good as" (non-inferior; with
    ``equivalent``, TOST-equivalent) with probability ``power``: what a margin costs before any run."""
    if not (sd > 0):
        return None
    key = "equivalent (TOST)" if equivalent else "as good as"

    def ok(n):
        p = prob_verdicts(0.0, sd, n, margin, paired, alpha, sd_ratio)
        return (p[key] if equivalent else p["as good as"] + p["better by more than the margin"]) >= power
    return _smallest_n(ok)


def power_difference(delta: float, sd: float, n: int, paired: bool = True, alpha: float = ALPHA,
                     sd_ratio: float | None = None) -> float:
    """Power of the two-sided t-test (the report's difference test) at a true difference ``delta``."""
    df = _df(n, paired, sd_ratio)
    sig = sd / math.sqrt(n)
    se = sig * _s_nodes(df)
    t95 = stats.t.ppf(1 - alpha / 2, df)
    p = stats.norm.sf((t95 * se - delta) / sig) + stats.norm.cdf((-t95 * se - delta) / sig)
    return float(p.mean())


def minimum_detectable_effect(sd: float, n: int, paired: bool = True, alpha: float = ALPHA, power: float = POWER,
                              sd_ratio: float | None = None) -> float | None:
    """The smallest true difference the two-sided seed-level t-test detects with probability ``power``."""
    if not (sd > 0) or n < 2:
        return None
    from scipy.optimize import brentq

    f = lambda d: power_difference(d, sd, n, paired, alpha, sd_ratio) - power
    hi = sd
    while f(hi) < 0:
        hi *= 2
    return float(brentq(f, 0.0, hi, xtol=sd * 1e-6))


# ---------------------------------------------------------------------------
# sanity checks that gate the verdict


def beats(model, reference, lower_is_better: bool = True, alpha: float = ALPHA) -> dict:
    """Do per-seed ``model`` values beat per-seed ``reference`` values (same seeds, same order: the reference was
    fitted to the same subset)? One-sided paired t-test at ``alpha``; with one seed, the sign of the difference.

    ``status``: "beats" (significantly better), "not shown" (better on average, not significantly), "does not
    beat" (not better on average)."""
    m, r = np.asarray(model, float), np.asarray(reference, float)
    if len(m) != len(r) or not len(m):
        raise ValueError("beats() needs one reference value per model value")
    sign = 1.0 if lower_is_better else -1.0
    d = sign * (m - r)  # negative: the model is better
    out = {"model": float(m.mean()), "reference": float(r.mean()), "advantage": float(-d.mean()), "n": len(d),
           "p": None}
    if len(d) >= 2 and d.std(ddof=1) > 0:
        out["p"] = float(stats.t.cdf(d.mean() / (d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1))
        better = out["p"] < alpha
    else:
        better = bool((d < 0).all())
    out["status"] = "beats" if better else ("not shown" if d.mean() < 0 else "does not beat")
    return out


def above_chance(correct, clusters, chance: float = 0.5, alpha: float = ALPHA) -> dict:
    """Is minimal-pair accuracy above ``chance``? ``correct``: seeds x pairs (0/1), ``clusters``: each pair's
    paradigm. Pairs of one paradigm share a template, so the test is a one-sided t-test over paradigm means (the
    seed-averaged accuracy per paradigm), not a binomial test over pairs."""
    c = np.atleast_2d(np.asarray(correct, float)).mean(0)
    labels, inv = np.unique(np.asarray(clusters), return_inverse=True)
    per = np.bincount(inv, weights=c, minlength=len(labels)) / np.bincount(inv, minlength=len(labels))
    out = {"accuracy": float(c.mean()), "paradigms": len(labels), "chance": chance, "p": None}
    if len(per) >= 2 and per.std(ddof=1) > 0:
        out["p"] = float(stats.t.sf((per.mean() - chance) / (per.std(ddof=1) / math.sqrt(len(per))), len(per) - 1))
    out["above"] = bool(out["p"] is not None and out["p"] < alpha)
    return out
