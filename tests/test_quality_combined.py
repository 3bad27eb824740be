"""The combined quality scorer and quality-eval: gold line labels, line features, the logistic
regression, bootstrap agreement, training end to end, and re-cutting without re-scoring."""
from __future__ import annotations

import gzip
import json
import math
import random

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, spearmanr

from experiments.quality_eval import agreement, gold_labelled, read_labelled, spearman_many
from experiments.quality_models import train_quality
from filters.metrics import roc_auc
from filters.quality_features import (
    LINE_FEATURES,
    Logistic,
    content_fraction,
    gold_line_labels,
    gold_pages,
    line_features,
)
from filters.quality_model import LineCleaner, QualityCombined
from filters.quality_scorers import manifest_path, training_ids
from pipeline.config import load_config
from pipeline.document import Document
from pipeline.heldout import reference_split
from pipeline.rundir import RunFolder
from pipeline.runner import Runner
from pipeline.shards import read_json
from tests.conftest import write_config

NAV = ["Home | News | Sport | Contact", "Share on Facebook", "Copyright 2012 Example Media. All rights reserved.",
       "Login", "Next article »", "Privacy policy · Terms of use", "Comments (3)"]
PROSE = ("the council approved the new budget after a long debate about schools roads and the future of "
         "the harbour which many residents said had been neglected for years").split()


def _sentence(rng, words=18):
    s = " ".join(rng.choice(PROSE) for _ in range(words))
    return s[0].upper() + s[1:] + "."


def test_gold_line_labels_match_kept_paragraphs_not_short_words_inside_them():
    gold = "The mayor opened the new bridge on Monday morning.\nTraffic is expected to ease, officials said."
    text = ("Home\nThe mayor opened the new bridge on Monday morning.\n\nTraffic is expected to ease, "
            "officials said.\nmorning\n|\nShare this story")
    assert gold_line_labels(text, gold) == [False, True, True, False, False, False]
    # characters on kept lines / all characters of non-blank lines
    kept = len("The mayor opened the new bridge on Monday morning.") + len("Traffic is expected to ease, officials said.")
    total = sum(len(x) for x in text.splitlines() if x.strip())
    assert content_fraction(text, gold) == pytest.approx(kept / total)
    assert content_fraction(text, "") == 0.0
    assert math.isnan(content_fraction("  \n ", gold))


def test_line_features_separate_navigation_from_prose():
    rng = random.Random(0)
    text = "\n".join(NAV[:3] + [_sentence(rng) for _ in range(4)] + NAV[3:])
    lines, f = line_features(text)
    assert f.shape == (len(NAV) + 4, len(LINE_FEATURES))
    col = {name: f[:, i] for i, name in enumerate(LINE_FEATURES)}
    nav = np.array([ln in NAV for ln in lines])
    assert (col["boilerplate_hits"][nav] > 0).all() and (col["boilerplate_hits"][~nav] == 0).all()
    assert (col["ends_terminal"][~nav] == 1).all()
    assert col["position"][0] == 0 and col["position"][-1] == 1
    assert np.isfinite(f).all()
    assert line_features("")[1].shape == (0, len(LINE_FEATURES))


def test_logistic_regression_learns_the_sign_and_round_trips_through_json():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] - 2 * x[:, 2] + 0.3 * rng.normal(size=400)) > 0
    m = Logistic.fit(["a", "b", "c"], x, y, l2=1.0)
    assert m.weights[0] > 0 and m.weights[2] < 0 and abs(m.weights[1]) < abs(m.weights[2]) / 5
    assert roc_auc(y, m.predict(x)) > 0.97
    again = Logistic.from_json(json.loads(json.dumps(m.to_json())))
    assert np.array_equal(again.predict(x), m.predict(x))
    assert np.array_equal(Logistic.fit(["a", "b", "c"], x, y).weights, m.weights)  # deterministic


def test_bootstrap_agreement_matches_direct_statistics():
    rng = np.random.default_rng(1)
    target = rng.random(300)
    label = (target > 0.5).astype(float)
    good = target + 0.3 * rng.normal(size=300)
    noise = rng.normal(size=300)
    u = mannwhitneyu(good[label == 1], good[label == 0]).statistic  # an independent AUC: U / (n1 * n0)
    assert roc_auc(label, good) == pytest.approx(u / ((label == 1).sum() * (label == 0).sum()))
    assert roc_auc(label[None], good[None])[0] == pytest.approx(roc_auc(label, good))
    assert spearman_many(target[None], good[None])[0] == pytest.approx(spearmanr(target, good).statistic)
    out = agreement({"length": noise, "good": good}, label, target, resamples=300)
    lo, hi = out["good"]["auc_ci"]
    assert lo < out["good"]["auc"] < hi and lo > 0.8
    lo, hi = out["length"]["auc_ci"]
    assert lo < 0.5 < hi
    assert out["good"]["auc_minus_length"] == pytest.approx(out["good"]["auc"] - out["length"]["auc"])
    assert out["good"]["auc_minus_length_ci"][0] > 0


# ---------------------------------------------------------------------------
# training end to end on toy pages


def _page(rng, n_content, n_nav):
    content = [_sentence(rng) for _ in range(n_content)]
    nav = [rng.choice(NAV) for _ in range(n_nav)]
    body = "".join(f"<p>{c}</p>" for c in content) + "".join(f"<div>{b}</div>" for b in nav)
    return f"<html><body>{body}</body></html>", "\n".join(content)


def _write(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture
def toy_pages(tmp_path):
    rng = random.Random(0)
    ref = [{"id": f"ref-{i}", "text": " ".join(_sentence(rng) for _ in range(6))} for i in range(200)]
    _write(tmp_path / "ref.jsonl.gz", ref)
    pages = []
    for i in range(240):
        n_content = rng.randint(0, 6)
        html, gold = _page(rng, n_content, rng.randint(0, 8))
        pages.append({"id": f"page-{i}", "html": html, "gold": gold})
    _write(tmp_path / "pages.jsonl.gz", pages)
    spam = "buy cheap pills now click here free casino bonus win money best deal offer limited".split()
    _write(tmp_path / "spam.jsonl.gz", [{"id": f"spam-{i}", "text": " ".join(rng.choice(spam) for _ in range(40))}
                                        for i in range(150)])
    train = {
        "classifier": {"reference_path": "ref.jsonl.gz", "min_chars": 50, "negatives_from_stage": "ingest",
                       "max_per_class": 200, "validation_fraction": 0.2, "epoch": 3, "dim": 8, "bucket": 20000},
        "labelled": [{"path": "pages.jsonl.gz", "gold_field": "gold", "html_field": "html"}],
        "good_content_fraction": 0.5,
    }
    cfg = {
        "run_dir": "run", "workers": 1,
        "stages": [
            {"name": "ingest", "shard_docs": 60, "inputs": [{"path": "pages.jsonl.gz", "source": "web", "html_field": "html"},
                                                           {"path": "spam.jsonl.gz", "source": "spam"}]},
            {"name": "quality", "kind": "filter", "filters": [
                {"quality_combined": {"model_path": "models/combined.json", "classifier_path": "models/ft.bin",
                                      "top_fraction": 0.5, "train": train}}]},
        ],
    }
    return tmp_path, cfg


def test_combined_training_learns_content_holds_out_pages_and_recuts_without_scoring(toy_pages, monkeypatch):
    tmp_path, cfg = toy_pages
    config = load_config(write_config(tmp_path / "config.yaml", cfg))
    (manifest,) = train_quality(config, log=lambda m: None)
    assert manifest["kind"] == "quality_combined"
    assert manifest["held_out_auc"]["line_model"] > 0.9  # navigation lines are easy to tell from prose
    held = [p for p in gold_pages(str(tmp_path / "pages.jsonl.gz"), "gold") if reference_split(p["id"]) == "eval"]
    assert manifest["data"]["pages_held_out"] == len(held) > 0
    # labelled pages are never fastText negatives; the eval split is never fitted on
    used = training_ids(tmp_path / "models")
    assert not used.get("lq", set()) & {f"page-{i}" for i in range(240)}
    assert read_json(manifest_path(tmp_path / "models" / "ft.bin"))["data"]["negatives"]["excluded_ids_skipped"] > 0

    # the same line model cleans a page: navigation lines go, the prose stays; a page of navigation is removed
    cleaner = LineCleaner(model_path=str(tmp_path / "models" / "combined.json"))
    cleaner.ensure_setup()
    rng = random.Random(7)
    prose = [_sentence(rng, 20) for _ in range(3)]
    page = Document(id="p", text="\n".join(NAV[:3] + prose + NAV[3:]))
    nav_only = Document(id="n", text="\n".join(NAV))
    cleaned, empty = cleaner.score_batch([page, nav_only])
    assert cleaned["text"].splitlines() == prose and cleaned["lines_dropped"] == len(NAV)
    assert cleaner.decide(cleaned) is True
    assert empty["chars_left"] == 0 and cleaner.decide(empty)[1] == "too_little_left"

    Runner(config, progress=False, log=lambda m: None).run()
    run = config.run_dir
    n = read_json(run / "quality" / "manifest.json")["totals"]["rows_in"]
    assert read_json(run / "quality" / "manifest.json")["totals"]["kept"] >= math.ceil(0.5 * n)
    kept = list(RunFolder(run).rows("quality", ["id", "qc_content_frac"]))
    removed = list(RunFolder(run).rows("quality", ["id", "qc_content_frac"], part="removed"))
    assert np.mean([r["qc_content_frac"] for r in kept]) > np.mean([r["qc_content_frac"] for r in removed])

    def no_scoring(*a, **k):
        raise AssertionError("a scorer ran during select")

    for name in ("setup", "score_batch", "score"):
        monkeypatch.setattr(QualityCombined, name, no_scoring)
    cfg["stages"][1]["filters"][0]["quality_combined"]["top_fraction"] = 0.2
    Runner(load_config(write_config(tmp_path / "config.yaml", cfg)), progress=False, log=lambda m: None).run(
        select_only="quality")
    plan = read_json(run / "quality" / "plan" / "quality_combined.json")
    assert read_json(run / "quality" / "manifest.json")["totals"]["kept"] == plan["kept"] >= math.ceil(0.2 * n)
    assert plan["kept"] < 0.5 * n


# ---------------------------------------------------------------------------
# real data


@pytest.mark.shared_data
@pytest.mark.slow
def test_line_model_from_real_gold_pages_finds_main_content_on_unseen_pages(shared):
    pages = gold_pages(str(shared / "raw" / "webpages2-html.jsonl.gz"), "gold_text")[:900]
    assert len(pages) == 900 and all(0 <= p["content_fraction"] <= 1 for p in pages)
    train = [p for p in pages if reference_split(p["id"]) == "train"]
    x = np.vstack([line_features(p["text"])[1] for p in train])
    y = np.concatenate([gold_line_labels(p["text"], p["gold"]) for p in train])
    model = Logistic.fit(LINE_FEATURES, x, y)
    # pages of another benchmark set (webpages-html, article_body_gold), never fitted on
    other = gold_pages(str(shared / "raw" / "webpages-html.jsonl.gz"), "article_body_gold")
    xo = np.vstack([line_features(p["text"])[1] for p in other])
    yo = np.concatenate([gold_line_labels(p["text"], p["gold"]) for p in other])
    assert roc_auc(yo, model.predict(xo)) > 0.72
    assert roc_auc(yo, xo[:, LINE_FEATURES.index("log_chars")]) < roc_auc(yo, model.predict(xo))


@pytest.mark.shared_data
@pytest.mark.slow
def test_labelled_sets_are_well_formed_and_held_out(shared, tmp_path):
    rows = gold_labelled(shared / "raw" / "webpages2-html.jsonl.gz", "gold_text", held_out_only=True)
    assert rows and all(reference_split(r["id"]) == "eval" for r in rows)
    assert all(r["label"] == int(r["score"] >= 0.8) for r in rows)
    assert 0.2 < np.mean([r["label"] for r in rows]) < 0.8
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(ValueError, match="needs `label`"):
        read_labelled(path)


def test_quality_eval_command_scores_any_labelled_file_with_a_config_s_filters(tmp_path, capsys):
    from experiments.quality_eval import main

    rng = random.Random(3)
    rows = [{"id": f"good-{i}", "text": "\n".join(_sentence(rng, 25) for _ in range(8)), "label": 1} for i in range(30)]
    rows += [{"id": f"bad-{i}", "text": "\n".join(rng.choice(NAV) for _ in range(6)), "label": 0} for i in range(30)]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path / "c.yaml", {"run_dir": "run", "stages": [
        {"name": "ingest", "inputs": [{"path": "labelled.jsonl"}]},
        {"name": "heuristics", "kind": "filter", "filters": ["c4", "gopher_quality"]}]})
    out = tmp_path / "eval"
    assert main([str(config), "--labels", f"toy={labelled}", "--resamples", "50", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    table = results["sets"]["toy"]["scorers"]
    assert results["sets"]["toy"]["docs"] == 60 and results["sets"]["toy"]["positives"] == 30
    assert {"length", "c4 pass", "gopher_quality pass", "heuristics stage pass"} <= set(table)
    assert table["heuristics stage pass"]["auc"] > 0.9 and table["length"]["auc"] > 0.9
    assert table["c4 pass"]["auc_minus_heuristics stage pass"] == pytest.approx(
        table["c4 pass"]["auc"] - table["heuristics stage pass"]["auc"])
    assert "| toy | 60 (30) | heuristics stage pass |" in out.with_suffix(".md").read_text()
    assert "ROC AUC" in capsys.readouterr().out
