"""Measure the model-based quality signals of a config trained by `winnow train-quality`.

Reports the classifier's validation accuracy and AUC (from its training
manifest), scores every document of the raw mixed corpus (the config's first
stage) plus held-out Wikipedia articles (eval split, never trained on) with both
signals, plots the score distributions per source, times scoring in docs/s on
one process, and checks that no training id is an evaluation id.

    python -m experiments.benchmarks.quality_report experiments/configs/quality_mixed.yaml
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from filters.quality_model import QualityClassifier, RefPerplexity, ids_path, manifest_path, reference_ids, training_ids
from filters.quality_training import auc_score, iter_reference, quality_models_in_config
from pipeline.rundir import RunFolder
from pipeline.config import load_config
from pipeline.document import Document
from pipeline.shards import read_json, read_parquet

EVAL_GROUP = "wikipedia (eval split)"


def _timed_scores(flt, docs: list[Document], column: str, batch: int) -> tuple[np.ndarray, float, float]:
    """Scores of ``docs`` in batches as a stage would see them; returns (scores, load s, score s)."""
    t0 = time.perf_counter()
    flt.ensure_setup()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(docs), batch):
        out += [r[column] for r in flt.score_batch(docs[i : i + batch])]
    return np.array([np.nan if v is None else v for v in out], float), load_s, time.perf_counter() - t0


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    ra, rb = np.argsort(np.argsort(a[ok])), np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def _plot(groups: dict[str, np.ndarray], q: np.ndarray, bpb: np.ndarray, cuts: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, mask in groups.items():
        label = f"{name} (n={int(mask.sum()):,})"
        axes[0].hist(q[mask], bins=np.linspace(0, 1, 41), density=True, histtype="step", lw=1.6, label=label)
        b = bpb[mask]
        axes[1].hist(b[~np.isnan(b)], bins=np.linspace(1, 8, 57), density=True, histtype="step", lw=1.6, label=label)
    axes[0].set_xlabel("quality_score = P(hq), fastText bigram classifier")
    axes[0].set_ylabel("density")
    axes[0].set_yscale("log")
    axes[1].set_xlabel("ref_bpb: bits/byte under the Wikipedia byte 5-gram LM (lower = closer)")
    for (name, x), style in zip(cuts.items(), ("--", ":")):
        axes[1].axvline(x, color="grey", ls=style, lw=1.2, label=f"{name} tercile cut ({x:.2f})")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle("Model-based quality signals per source of the mixed raw corpus")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out-dir", default="experiments/results")
    ap.add_argument("--eval-docs", type=int, default=1000, help="held-out Wikipedia articles to score")
    ap.add_argument("--batch", type=int, default=2000, help="documents per score_batch call (a shard)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    models = {ref: (params, settings) for _, ref, params, settings in quality_models_in_config(cfg)}
    clf_params, clf_settings = models["quality_classifier"]
    lm_params, lm_settings = models["ref_perplexity"]
    clf_manifest = read_json(manifest_path(clf_params["model_path"]))
    lm_manifest = read_json(manifest_path(lm_params["model_path"]))

    raw = RunFolder(cfg.run_dir).table(cfg.stage_names()[0], ["id", "text", "source"])
    ids, texts, sources = (raw.column(c).to_pylist() for c in ("id", "text", "source"))
    raw_ids = set(ids)
    eval_docs = []
    for doc_id, text, split in iter_reference(clf_settings["reference_path"], min_chars=clf_settings["min_chars"]):
        if split == "eval" and doc_id not in raw_ids:
            eval_docs.append((doc_id, text))
            if len(eval_docs) >= args.eval_docs:
                break
    ids += [d[0] for d in eval_docs]
    texts += [d[1] for d in eval_docs]
    sources += [EVAL_GROUP] * len(eval_docs)
    docs = [Document(id=i, text=t, source=s) for i, t, s in zip(ids, texts, sources)]
    n_chars = sum(len(t) for t in texts)

    # the split is enforced: no id any scorer trained on is an evaluation id
    used = training_ids(Path(clf_params["model_path"]).parent)
    all_used = set().union(*used.values())
    eval_ids = {d[0] for d in eval_docs}
    leaks = {"eval_split_ids_in_training": len(all_used & eval_ids),
             "raw_corpus_ids_among_positives": len(reference_ids(Path(clf_params["model_path"]).parent) & raw_ids)}

    clf = QualityClassifier(model_path=clf_params["model_path"], max_chars=clf_params.get("max_chars", 20000))
    lm = RefPerplexity(model_path=lm_params["model_path"], max_bytes=lm_params.get("max_bytes", 20000))
    q, q_load, q_secs = _timed_scores(clf, docs, "quality_score", args.batch)
    bpb, lm_load, lm_secs = _timed_scores(lm, docs, "ref_bpb", args.batch)

    raw_mask = np.array([s != EVAL_GROUP for s in sources])
    terciles = np.nanquantile(bpb[raw_mask], [1 / 3, 2 / 3])
    top10 = np.sort(q[raw_mask])[::-1][int(np.ceil(0.1 * raw_mask.sum())) - 1]
    groups = {name: np.array([s == name for s in sources]) for name in dict.fromkeys(sources)}
    per_source = {}
    for name, mask in groups.items():
        b = bpb[mask]
        per_source[name] = {
            "docs": int(mask.sum()),
            "quality_score_median": round(float(np.median(q[mask])), 4),
            "share_in_raw_top10pct": round(float(np.mean(q[mask] >= top10)), 4),
            "ref_bpb_median": round(float(np.nanmedian(b)), 3),
            "buckets": {k: round(float(v), 3) for k, v in zip(
                ("head", "middle", "tail"),
                (np.mean(b <= terciles[0]), np.mean((b > terciles[0]) & (b <= terciles[1])), np.mean(b > terciles[1])))},
        }

    # held-out AUC per source: Wikipedia eval split against that source's documents the classifier never trained on
    ids_table = read_parquet(ids_path(clf_params["model_path"]), columns=["id", "split"])
    trained_on = {i for i, sp in zip(ids_table.column("id").to_pylist(), ids_table.column("split").to_pylist())
                  if sp == "train"}
    unseen = np.array([i not in trained_on for i in ids])
    wiki_eval = groups[EVAL_GROUP]
    for name, mask in groups.items():
        if name in (EVAL_GROUP, "wikipedia"):
            continue
        neg = mask & unseen
        labels = np.concatenate([np.ones(wiki_eval.sum(), bool), np.zeros(neg.sum(), bool)])
        per_source[name]["held_out_docs"] = int(neg.sum())
        per_source[name]["auc_vs_wikipedia_eval"] = round(auc_score(labels, np.concatenate([q[wiki_eval], q[neg]])), 4)
        per_source[name]["auc_bpb_vs_wikipedia_eval"] = round(
            auc_score(labels, -np.nan_to_num(np.concatenate([bpb[wiki_eval], bpb[neg]]), nan=np.inf)), 4)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "quality_scores_by_source.png"
    _plot(groups, q, bpb, {"head|middle": terciles[0], "middle|tail": terciles[1]}, png)
    results = {
        "config": str(args.config),
        "classifier": {"validation": clf_manifest["validation"], "counts": clf_manifest["counts"],
                       "negatives_by_source": clf_manifest["data"]["negatives"]["by_source"],
                       "train_seconds": clf_manifest["train_seconds"], "model_sha256": clf_manifest["model_sha256"]},
        "reference_lm": {"counts": lm_manifest["counts"], "hyperparameters": lm_manifest["hyperparameters"],
                         "train_seconds": lm_manifest["train_seconds"]},
        "throughput": {
            "docs": len(docs), "mean_chars": round(n_chars / len(docs)),
            "quality_classifier": {"docs_per_s": round(len(docs) / q_secs, 1),
                                   "mb_per_s": round(n_chars / q_secs / 1e6, 2), "load_s": round(q_load, 2)},
            "ref_perplexity": {"docs_per_s": round(len(docs) / lm_secs, 1),
                               "mb_per_s": round(n_chars / lm_secs / 1e6, 2), "load_s": round(lm_load, 2)},
        },
        "raw_bpb_terciles": [round(float(x), 3) for x in terciles],
        "raw_top10pct_cutoff": round(float(top10), 4),
        "spearman_quality_vs_neg_bpb_raw": round(_spearman(q[raw_mask], -bpb[raw_mask]), 3),
        "per_source": per_source,
        "split_check": leaks,
        "plot": str(png),
    }
    (out_dir / "quality_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if not any(leaks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
