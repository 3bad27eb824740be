"""The report's statistics: calibrated under the null, Holm, paradigm clusters, measured data efficiency,
an A/A ablation that finds nothing, and a committed results folder that rebuilds its report."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments.report import verdict_tests, write_report
from experiments.stats import cluster_bootstrap_mean, compare, holm, tokens_to_match

# Realistic spreads, from the earlier real-data results (experiments/results/ablation_real/report.md at 3611618, 3 seeds per
# arm, mean ± 95% t half-width): raw-large bpb/wikipedia ± 0.0845 -> seed sd = 0.0845 * sqrt(3) / t(0.975, 2) =
# 0.034; blimp ± 0.0390 -> seed sd 0.0157. Items: 150 held-out documents (per-document bpb spread 0.5 around 2.3,
# lengths log-normal around 1.8 kB) and BLiMP's 67 paradigms (20 pairs each here).
SEED_SD_BPB, SEED_SD_BLIMP = 0.034, 0.0157
N_DOCS, N_PARADIGMS, PAIRS = 150, 67, 20
METRICS = ["bpb/a", "bpb/b", "blimp"]


def _null_experiment(rng, seeds_a, seeds_b, shared_seed_share=0.0):
    """Two arms with one recipe (no true difference): per-document bits and per-pair outcomes for every run.

    Run-level shifts are the seed effect; ``shared_seed_share`` of its variance is common to runs of both arms
    with the same seed (what pairing by seed exploits). Per-item noise per run comes on top."""
    doc_bpb = {m: 2.3 + rng.normal(0, 0.5, N_DOCS) for m in METRICS[:2]}
    nbytes = np.exp(rng.normal(7.5, 0.6, N_DOCS)).round() + 50
    para_p = np.clip(0.5 + rng.normal(0, 0.15, N_PARADIGMS), 0.02, 0.98)
    paradigm = np.repeat([f"p{i}" for i in range(N_PARADIGMS)], PAIRS)
    shared = {s: rng.normal(0, 1, 3) for s in set(seeds_a) | set(seeds_b)}
    k = np.sqrt(shared_seed_share)
    runs = {"A": [], "B": []}
    for arm, seeds in (("A", seeds_a), ("B", seeds_b)):
        for s in seeds:
            z = k * shared[s] + np.sqrt(1 - k ** 2) * rng.normal(0, 1, 3)
            items = {}
            for j, m in enumerate(METRICS[:2]):
                per_doc = doc_bpb[m] + SEED_SD_BPB * z[j] + rng.normal(0, 0.05, N_DOCS)
                items[f"{m}/bits"] = (per_doc * nbytes).astype(np.float32)
                items[f"{m}/bytes"] = nbytes.astype(np.int32)
            p = np.clip(np.repeat(para_p, PAIRS) + SEED_SD_BLIMP * z[2], 0, 1)
            items["blimp/correct"] = (rng.random(len(p)) < p).astype(np.uint8)
            items["blimp/paradigm"] = paradigm
            items["blimp/field"] = np.where(np.arange(len(p)) % 2, "syntax", "morphology")
            runs[arm].append(with_values({"arm": arm, "seed": s, "items": items}))
    return runs["A"], runs["B"]


def with_values(run: dict) -> dict:
    """A run's per-metric values, computed by the built-in tasks from its items (as load_results does)."""
    from experiments.report import declare_metrics
    from experiments.tasks import BitsPerByte, MinimalPairs, TaskContext, task_values

    ctx = TaskContext(eval_sets={"a": [], "b": []})
    tasks = [BitsPerByte("bpb", {}, ctx), MinimalPairs("blimp", {"path": "unused.jsonl"}, ctx)]
    declare_metrics([m.to_dict() for t in tasks for m in t.metrics()])
    run["values"] = task_values(tasks, run["items"])
    return run


def verdict_of(report: str) -> str:
    """The report's verdict block: the bullets after **Verdict:** (sanity gate, as good as?, difference tests)."""
    return report.split("**Verdict:**", 1)[1].lstrip("\n").split("\n\n", 1)[0]


DESIGNS = {  # name: (seeds A, seeds B, shared share, paired)
    "3 vs 3, Welch": ([0, 1, 2], [10, 11, 12], 0.0, "auto"),
    "3 vs 3, paired by seed": ([0, 1, 2], [0, 1, 2], 0.5, "auto"),
    "5 vs 5, paired by seed": ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], 0.3, "auto"),
    "3 vs 5, Welch": ([0, 1, 2], [10, 11, 12, 13, 14], 0.0, "auto"),
}


@pytest.mark.slow
@pytest.mark.parametrize("design", list(DESIGNS))
def test_verdict_false_positive_rate_under_the_null_is_at_most_nominal(design, capsys):
    """Null experiments through the same function the report's verdict uses: primary at 5%, secondary Holm."""
    seeds_a, seeds_b, share, paired = DESIGNS[design]
    rng = np.random.default_rng(12)
    n = 1000
    primary_fp = family_fp = 0
    for _ in range(n):
        a, b = _null_experiment(rng, seeds_a, seeds_b, share)
        vt = verdict_tests(a, b, METRICS, "bpb/a", paired)
        assert vt["primary"]["test"] == ("paired t" if seeds_a == seeds_b else "Welch t")
        primary_fp += vt["primary"]["significant"]
        family_fp += any(r["significant"] for r in vt["secondary"])
    rate, fam = primary_fp / n, family_fp / n
    with capsys.disabled():  # shown in every test run, not only with -s
        print(f"\n[calibration] {design}: null false-positive rate at nominal 5%: primary {rate:.1%}, "
              f"any secondary (Holm) {fam:.1%} over {n} simulated experiments")
    assert rate <= 0.06 and fam <= 0.06
    assert rate >= 0.02  # a test that never fires would also pass the line above


def test_the_verdict_detects_a_real_difference():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        a, b = _null_experiment(rng, [0, 1, 2], [10, 11, 12])
        for r in b:  # B is better by 3 seed standard deviations on the primary metric
            r["items"]["bpb/a/bits"] = r["items"]["bpb/a/bits"] - np.float32(3 * SEED_SD_BPB) * r["items"]["bpb/a/bytes"]
            with_values(r)
        hits += verdict_tests(a, b, METRICS, "bpb/a")["primary"]["significant"]
    assert hits / 200 > 0.6


def test_welch_and_paired_match_scipy_and_exploratory_arms_get_no_test():
    from scipy import stats

    a, b = [2.0, 2.1, 2.3], [1.8, 1.9, 2.2, 1.7]
    w = compare(a, b)
    assert w["p"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert w["ci"][0] < w["diff"] < w["ci"][1] and w["test"] == "Welch t"
    p = compare(a, b[:3], paired=True)
    assert p["p"] == pytest.approx(stats.ttest_rel(b[:3], a).pvalue) and p["df"] == 2
    assert compare([2.0], b)["p"] is None  # one seed: no test at all
    runs = lambda arm, vals: [{"arm": arm, "seed": i, "values": {"bpb/x": v}} for i, v in enumerate(vals)]
    vt = verdict_tests(runs("a", [2.0, 2.1]), runs("b", [1.0, 1.1]), ["bpb/x"], "bpb/x")
    assert vt["exploratory"] and not vt["primary"]["significant"]


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_blimp_interval_resamples_paradigms_not_pairs():
    rng = np.random.default_rng(0)
    # paradigms differ a lot, pairs within one agree: the paradigm interval must be much wider than a pair one
    para = np.repeat(np.arange(40), 50)
    correct = (rng.random(40) < 0.5)[para].astype(float)
    _, (lo, hi) = cluster_bootstrap_mean(correct, para)
    _, (plo, phi) = cluster_bootstrap_mean(correct, np.arange(len(correct)))
    assert (hi - lo) > 4 * (phi - plo)


@pytest.mark.slow
def test_tokens_to_match_reads_the_decayed_curves_and_never_extrapolates():
    xs = [1e5, 2e5, 4e5, 8e5]
    curve = lambda a: [a * x ** -0.1 for x in xs]
    base = [(xs, curve(a)) for a in (6.0, 6.05, 5.95)]
    target = 6.0 * 3e5 ** -0.1
    m = tokens_to_match(base, [target - 0.002, target, target + 0.002])
    assert m["kind"] == "inside" and m["estimate"] == pytest.approx(3e5, rel=0.02)
    assert tokens_to_match(base, [target] * 3, curve="power")["estimate"] == pytest.approx(3e5, rel=1e-3)
    assert m["interval"][0] < 3e5 < m["interval"][1]
    better = tokens_to_match(base, [1.0, 1.01, 0.99])
    assert better["kind"] == "above" and better["estimate"] == 8e5  # "not reached within 800k"
    worse = tokens_to_match(base, [9.0, 9.1, 8.9])
    assert worse["kind"] == "below" and worse["estimate"] == 1e5  # "<= 100k", never xs[0] as a point


def _write_synthetic_ablation(out: Path, runs_a, runs_b, names=("base", "copy")):
    """A results folder in the layout `winnow report` reads, from synthetic runs (no training)."""
    from experiments.ablation import save_items
    from pipeline.shards import atomic_write_json

    arms = [{"name": names[0], "stage": "ingest", "tokens": 1000}, {"name": names[1], "stage": "ingest", "tokens": 1000}]
    atomic_write_json(out / "experiment.json", {"settings": {"arms": arms, "primary_metric": "bpb/a", "compare": {
        "baseline": names[0], "candidate": names[1]}}, "run_dir": str(out / "no-run-dir"),
        "tasks": [{"name": "bpb", "task": "bpb"}, {"name": "blimp", "task": "minimal_pairs", "path": "blimp.jsonl"}]})
    atomic_write_json(out / "eval_sets.json", {"a": [], "b": []})
    for arm, rs in zip(names, (runs_a, runs_b)):
        for r in rs:
            d = out / "runs" / f"{arm}-seed{r['seed']}"
            d.mkdir(parents=True)
            save_items(d, r["items"])
            atomic_write_json(d / "arm.json", {"arm": arm, "stage": "ingest", "seed": r["seed"],
                                               "subset": {"tokens": 1000, "documents": 10, "seed": r["seed"]}})
            atomic_write_json(d / "done.json", {"steps": 10, "tokens_seen": 8000, "epochs": 8.0,
                                                "tokens_per_second": 1000, "final_loss": 3.0})
            atomic_write_json(d / "config.json", {"model": {"arch": "llama", "d_model": 8, "n_layers": 1, "context": 8},
                                                  "train": {"batch_size": 1, "lr": 0.1, "warmup_steps": 1,
                                                            "min_lr_ratio": 0.1, "bf16": False},
                                                  "params": {"total": 1, "non_embedding": 1}, "vocab_size": 8,
                                                  "device": "cpu"})
            (d / "train_log.jsonl").write_text('{"step": 10, "loss": 3.0, "tokens_seen": 8000}\n')
            (d / "evals.jsonl").write_text("")


def test_aa_mode_makes_a_copy_arm_with_its_own_seeds_and_the_report_finds_no_difference(tmp_path):
    from experiments.ablation import AA_SEED_OFFSET, experiment_settings
    from pipeline.config import load_config
    from tests.conftest import write_config

    cfg = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "ingest", "inputs": [{"path": "x.jsonl"}]}],
           "experiment": {"seeds": [0, 1, 2], "aa": True, "arms": [{"name": "raw", "stage": "ingest", "tokens": 10},
                                                                   {"name": "other", "stage": "ingest", "tokens": 5}],
                          "compare": {"baseline": "raw", "candidate": "other", "metric": "bpb/x"}}}
    s = experiment_settings(load_config(write_config(tmp_path / "aa.yaml", cfg)))
    assert [a["name"] for a in s["arms"]] == ["raw", "raw-again"]
    assert s["arms"][1]["seeds"] == [AA_SEED_OFFSET + i for i in range(3)]
    assert {k: v for k, v in s["arms"][1].items() if k not in ("name", "seeds")} == \
        {k: v for k, v in s["arms"][0].items() if k != "name"}
    assert s["compare"]["candidate"] == "raw-again" and s["primary_metric"] == "bpb/x"
    # the report on an A/A experiment (synthetic per-run results, no true difference)
    # one fixed draw; how often a calibrated test flags an A/A pair (about 5%) is the calibration test's business
    a, b = _null_experiment(np.random.default_rng(0), [0, 1, 2], [1000, 1001, 1002])
    _write_synthetic_ablation(tmp_path / "abl", a, b)
    report = write_report(tmp_path / "abl").read_text()
    verdict = verdict_of(report)
    assert "no difference between `copy` and `base` is detected" in verdict
    assert "Welch t-test over seeds, 3 vs 3 seeds" in verdict and "Holm" in verdict
    assert "## blimp: items" in report and "paradigm-cluster" in report


DATA = Path(__file__).parent / "data"


COMMITTED = {"demo_ablation_results": DATA / "demo_ablation_results", "demo_aa_results": DATA / "demo_aa_results",
             "ablation_real": Path(__file__).parents[1] / "experiments" / "results" / "ablation_real"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMITTED))
def test_committed_results_rebuild_their_report_exactly(name, tmp_path):
    """The committed results (the demo fixtures and the real-data result) hold per-run, per-item values: `winnow
    report DIR` rebuilds the report from them alone, its Reproduce line (command, config sha256, commit) from
    experiment.json."""
    committed = COMMITTED[name]
    work = tmp_path / "results"
    shutil.copytree(committed, work)
    (work / "report.md").unlink()
    rebuilt = write_report(work).read_text()
    assert rebuilt == (committed / "report.md").read_text()
    assert "sha256 `" in rebuilt.split("Reproduce: ")[1].splitlines()[0]
    verdict = verdict_of(rebuilt)
    seeds = "5 vs 5 seeds" if name == "ablation_real" else "3 vs 3 seeds"
    assert f"t-test over seeds, {seeds}" in verdict and "Holm-corrected" in verdict


def test_the_demo_aa_run_finds_no_difference():
    """A real A/A ablation (demo harness: raw-large against itself with other seeds) through the report code."""
    report = (DATA / "demo_aa_results" / "report.md").read_text()
    verdict = verdict_of(report)
    assert "no difference between `raw-large-again` and `raw-large` is detected" in verdict
    assert "no detected difference on bpb/raw" in verdict


def test_control_arm_kinds_take_the_candidates_budget(tmp_path):
    from experiments.ablation import experiment_settings
    from pipeline.config import load_config
    from tests.conftest import write_config

    cfg = {"run_dir": str(tmp_path / "run"), "stages": [{"name": "ingest", "inputs": [{"path": "x.jsonl"}]},
                                                          {"name": "q", "kind": "filter", "filters": ["c4"]}],
           "experiment": {"arms": [{"name": "raw-large", "stage": "ingest", "tokens": 400},
                                   {"name": "clean-small", "stage": "q", "tokens": 100},
                                   {"kind": "raw-small"}, {"kind": "reference-only", "source": "wikipedia"}],
                          "compare": {"baseline": "raw-large", "candidate": "clean-small"}}}
    arms = {a["name"]: a for a in experiment_settings(load_config(write_config(tmp_path / "c.yaml", cfg)))["arms"]}
    assert arms["raw-small"]["stage"] == "ingest" and arms["raw-small"]["tokens"] == 100
    assert arms["reference-only"]["sources"] == ["wikipedia"] and arms["reference-only"]["tokens"] == 100
    cfg["experiment"]["arms"][3] = {"kind": "reference-only"}
    with pytest.raises(ValueError, match="needs `source`"):
        experiment_settings(load_config(write_config(tmp_path / "d.yaml", cfg)))


def test_compare_gives_scipys_p_and_no_warning_when_one_arm_repeats_itself():
    """Deterministic training can give identical values in one arm: the p-value stays the t-test's, silently."""
    import warnings

    import numpy as np
    from scipy import stats as st

    from experiments.stats import compare

    rng = np.random.default_rng(3)
    for _ in range(200):
        a, b = rng.normal(0, 1, 5), rng.normal(0.5, 2, 4)
        assert compare(a, b)["p"] == pytest.approx(st.ttest_ind(b, a, equal_var=False).pvalue, abs=1e-12)
        assert compare(a[:4], b, paired=True)["p"] == pytest.approx(st.ttest_rel(b, a[:4]).pvalue, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = compare([1.0, 1.1, 0.9], [1.0, 1.0, 1.0])
    assert same["p"] == 1.0 and same["ci"][0] < 0 < same["ci"][1]
