"""The plan's arithmetic: run shapes, the executor's schedule, power before the run, and its table."""
from __future__ import annotations

import pytest

from experiments.plan import grid_wall, power_summary, prior_spread, run_shape, spread_from_runs, summarise, table


def test_run_shape_counts_branches_and_evaluations():
    c = {"schedule": "wsd", "decay_budgets": [0.25, 0.5], "decay_frac": 0.2, "eval_every": 150}
    s = run_shape(c, 150)
    # branches at 38 and 75 steps decay over 8 and 15 steps; evaluations: one per branch + the final one
    assert s == {"steps": 150, "branch_steps": 8 + 15, "evals": 2, "final_evals": 1}
    s = run_shape({**c, "eval_every": 50}, 150)
    assert s["evals"] == 2 + 2  # at 50 and 100 on the trunk, plus the two branches
    assert run_shape({"schedule": "cosine", "eval_every": 40}, 100)["evals"] == 2  # 40, 80 (+ final at 100)


def test_grid_wall_hands_tasks_to_the_next_free_worker():
    assert grid_wall([10, 10, 10, 10], 2) == 20
    assert grid_wall([30, 10, 10, 10], 2) == 30
    assert grid_wall([10, 10, 10], 1) == 30
    assert grid_wall([5], 4) == 5


def test_power_from_a_declared_spread_or_a_pilot(tmp_path):
    s = prior_spread({"prior_spread": {"sd": 0.081, "baseline": 2.94}})
    p = power_summary({**s, "paired": True}, seeds=5, paired=True, margin_spec="1%")
    assert p["mde"] == pytest.approx(0.136, abs=0.005) and p["margin"] == pytest.approx(0.0294)
    assert p["seeds_for_margin"] > 40 and p["seeds_for_equivalence"] > p["seeds_for_margin"]
    lines = "\n".join(table({"arms": [], "power": p}))
    assert "minimum detectable effect at 5 seeds per arm: **0.13" in lines and "expect \"inconclusive\"" in lines
    # a relative margin needs a baseline value
    p = power_summary({"sd": 0.08, "source": "x"}, seeds=5, paired=True, margin_spec="1%")
    assert "margin_missing" in p and p["mde"] > 0
    assert "no prior spread" in power_summary(None, 5, True, "1%")["missing"]
    # a pilot: the spread of its paired per-seed differences
    pilot = lambda folder: {**spread_from_runs([2.9, 3.0, 2.95], [3.0, 3.05, 3.1], paired=True)}
    s = prior_spread({"prior_spread": {"pilot": "results"}}, tmp_path, pilot)
    assert s["sd"] == pytest.approx(0.05) and s["baseline"] == pytest.approx(2.95) and "pilot" in s["source"]


def test_table_folds_seeds_per_arm_and_shows_warnings():
    rows = [{"arm": "clean", "seed": k, "subset_tokens": 1000, "documents": d, "epochs": 4.0, "tokens_seen": 4000,
             "params": 1000, "seconds": 10 + k, "warnings": ["only 3 documents"] if d < 5 else []}
            for k, d in enumerate([3, 7])]
    arms = summarise(rows)
    assert arms[0]["seeds"] == 2 and arms[0]["documents"] == [3, 7] and arms[0]["seconds"] == 11
    text = "\n".join(table({"arms": arms, "grid": {"predicted_s": 100, "measured_s": 120, "runs": 2, "workers": 1}}))
    assert "| clean | – | 2 | 1,000 | 3–7 ⚠ | 4,000 | 4.0 | 4.00 | 11 s |" in text
    assert "only 3 documents" in text and "+20% against the prediction" in text
