"""What the quality stage selected, shown so a reader can judge it by eye, and what scoring costs.

For a config whose last filter stage holds ``quality_combined`` (run it first:
``winnow train-quality CONFIG && winnow run CONFIG``), writes a markdown file with

* the composition by source of the raw corpus, of the quality stage's input and
  of what it kept;
* per decile of the stage's score: documents, share kept, the sources, and a few
  sampled documents (seeded draw; first characters), kept and removed;
* scoring speed per document of the combined scorer against the fastText
  classifier alone (the recipe it replaced), on the same documents in the same
  process, alternating rounds, so the ratio is measured under the same load.

    python -m experiments.benchmarks.quality_report experiments/configs/ablation_real.yaml \\
        --baseline-config experiments/configs/quality_mixed.yaml --out experiments/results/quality_selection.md
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from filters.base import filter_class
from experiments.quality_models import trainable_filters
from filters.quality_scorers import manifest_path
from filters.stage import FilterStage
from pipeline.config import load_config
from pipeline.document import Document
from pipeline.heldout import order_key
from pipeline.rundir import RunFolder

SCORE = "quality_combined"


def _quality_stage(cfg) -> tuple[str, dict]:
    for stage, f in trainable_filters(cfg):
        if f.name == "quality_combined":
            return stage, f.params
    raise ValueError("no quality_combined filter in this config")


def _composition(counts: dict[str, Counter], order: list[str]) -> list[str]:
    sources = sorted(set().union(*counts.values()), key=lambda s: -counts[order[0]][s])
    lines = ["| source | " + " | ".join(order) + " | kept / stage input |", "|---|" + "---|" * (len(order) + 1)]
    for s in sources + ["**all**"]:
        cells = []
        for name in order:
            total = sum(counts[name].values())
            n = total if s == "**all**" else counts[name][s]
            cells.append(f"{n:,} ({100 * n / total:.1f}%)" if total else "0")
        inp, kept = (sum(counts[o].values()) if s == "**all**" else counts[o][s] for o in order[1:3])
        cells.append(f"{100 * kept / inp:.1f}%" if inp else "-")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def _snippet(text: str, chars: int) -> str:
    one = " ".join(text.split())
    one = one[:chars] + ("…" if len(one) > chars else "")
    return one.replace("|", "\\|").replace("<", "&lt;")


def _timing(cfg_filter, base_filter, docs: list[Document], rounds: int) -> dict:
    """docs/s of each scorer, alternating rounds on the same documents; median over rounds."""
    cfg_filter.ensure_setup()
    base_filter.ensure_setup()
    times: dict[str, list[float]] = {"combined": [], "baseline": []}
    for _ in range(rounds):
        for name, flt in (("baseline", base_filter), ("combined", cfg_filter)):
            t0 = time.perf_counter()
            for i in range(0, len(docs), 500):
                flt.score_batch(docs[i : i + 500])
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"docs": len(docs), "mean_chars": round(float(np.mean([len(d.text) for d in docs]))),
            "rounds": rounds, "seconds_per_round": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "docs_per_s": {k: round(len(docs) / v, 1) for k, v in med.items()},
            "time_ratio_combined_over_baseline": round(med["combined"] / med["baseline"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--baseline-config", help="config whose quality_classifier is the speed baseline")
    ap.add_argument("--out", default="experiments/results/quality_selection.md")
    ap.add_argument("--per-decile", type=int, default=3, help="sampled documents per decile and verdict")
    ap.add_argument("--chars", type=int, default=280, help="characters shown per sampled document")
    ap.add_argument("--timing-docs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    stage, params = _quality_stage(cfg)
    names = cfg.stage_names()
    run = RunFolder(cfg.run_dir)
    prev = names[names.index(stage) - 1]
    raw = run.table(names[0], ["source"]).column("source").to_pylist()
    cols = ["id", "text", "source", SCORE, "qc_fasttext", "qc_content_frac"]
    kept = run.table(stage, cols).to_pylist()
    removed = run.table(stage, cols + ["reason"], part="removed").to_pylist()
    for r in kept:
        r["kept"] = True
    for r in removed:
        r["kept"] = False
    rows = kept + removed
    counts = {"raw corpus (ingest)": Counter(raw), f"stage input ({prev})": Counter(r["source"] for r in rows),
              f"kept by {stage}": Counter(r["source"] for r in kept)}
    order = list(counts)

    manifest_file = manifest_path(params["model_path"])
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
    plan_file = FilterStage.plan_file(run.plan_dir(stage), filter_class("quality_combined")(**{
        k: v for k, v in params.items() if k != "train"}))
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}

    rule = f"top fraction {params['top_fraction']}" if params.get("top_fraction") else f"threshold {params.get('threshold')}"
    out = ["# What the combined quality score selects on the web-only raw corpus", "",
           f"Config `{args.config}`, stage `{stage}` ({rule}); "
           f"cut-off {plan.get('cutoff', float('nan')):.4f} on `{SCORE}`. Reproduce: "
           f"`winnow train-quality {args.config} && winnow run {args.config} && "
           f"python -m experiments.benchmarks.quality_report {args.config}"
           + (f" --baseline-config {args.baseline_config}" if args.baseline_config else "") + "`.", "",
           "## Composition by source", ""] + _composition(counts, order)

    scores = np.array([r[SCORE] for r in rows], float)
    edges = np.quantile(scores, np.linspace(0, 1, 11))
    decile = np.clip(np.searchsorted(edges[1:-1], scores, side="right"), 0, 9)
    out += ["", "## By decile of the score (stage input)", "",
            "| decile | score range | docs | kept | sources (top 3) | median content frac | median fastText P(hq) |",
            "|---|---|---|---|---|---|---|"]
    for d in range(9, -1, -1):
        idx = np.flatnonzero(decile == d)
        src = Counter(rows[i]["source"] for i in idx).most_common(3)
        out.append(f"| {d + 1} | {scores[idx].min():.3f}–{scores[idx].max():.3f} | {len(idx):,} | "
                   f"{np.mean([rows[i]['kept'] for i in idx]):.0%} | "
                   + ", ".join(f"{s} {n}" for s, n in src)
                   + f" | {np.median([rows[i]['qc_content_frac'] for i in idx]):.2f} | "
                   f"{np.median([rows[i]['qc_fasttext'] for i in idx]):.3f} |")
    out += ["", "## Sampled documents per decile", "",
            f"{args.per_decile} kept and {args.per_decile} removed per decile where there are any (seeded draw, "
            f"seed {args.seed}); first {args.chars} characters, whitespace collapsed.", ""]
    for d in range(9, -1, -1):
        out += [f"### Decile {d + 1} (score {edges[d]:.3f}–{edges[d + 1]:.3f})", ""]
        for verdict in (True, False):
            idx = [i for i in np.flatnonzero(decile == d) if rows[i]["kept"] == verdict]
            idx.sort(key=lambda i: order_key(args.seed, rows[i]["id"], "quality_report"))
            for i in idx[: args.per_decile]:
                r = rows[i]
                out.append(f"- **{'kept' if verdict else 'removed'}** · {r['source']} · score {r[SCORE]:.3f} "
                           f"(content {r['qc_content_frac']:.2f}, fastText {r['qc_fasttext']:.3f}) · "
                           f"{len(r['text']):,} chars: {_snippet(r['text'], args.chars)}")
        out.append("")

    if args.baseline_config:
        base_cfg = load_config(args.baseline_config)
        base = [f.params for _, f in trainable_filters(base_cfg) if f.name == "quality_classifier"][0]
        pick = sorted(range(len(rows)), key=lambda i: order_key(args.seed, rows[i]["id"], "timing"))[: args.timing_docs]
        docs = [Document(id=rows[i]["id"], text=rows[i]["text"], source=rows[i]["source"]) for i in pick]
        combined = filter_class("quality_combined")(**{k: v for k, v in params.items() if k != "train"})
        baseline = filter_class("quality_classifier")(model_path=base["model_path"])
        t = _timing(combined, baseline, docs, args.rounds)
        out += ["## Scoring speed", "",
                f"{t['docs']:,} documents of the stage input (mean {t['mean_chars']:,} characters), one process, "
                f"{t['rounds']} alternating rounds, batches of 500, median round:", "",
                "| scorer | docs/s |", "|---|---|",
                f"| fastText classifier alone (`{args.baseline_config}`) | {t['docs_per_s']['baseline']:,} |",
                f"| quality_combined (fastText + line model + statistics) | {t['docs_per_s']['combined']:,} |",
                "", f"Time per document, combined / classifier alone: **{t['time_ratio_combined_over_baseline']}x** "
                f"(rounds, s: {t['seconds_per_round']}).", ""]
        (Path(args.out).with_suffix(".timing.json")).write_text(json.dumps(t, indent=1) + "\n")

    if manifest:
        out += ["## The model", "", "Trained by `winnow train-quality` (manifest "
                f"`{manifest_file.name}`): {manifest['data']['pages_train']:,} labelled pages "
                f"({manifest['data']['lines_train']:,} lines) of the train split; held-out AUC (page is good = content "
                f"fraction >= {manifest['data']['good_content_fraction']}) by feature group: "
                + ", ".join(f"{k} {v}" for k, v in manifest["held_out_auc"]["document_model_by_features"].items())
                + f"; line model (line kept by a person) {manifest['held_out_auc']['line_model']}.", "",
                "Document-model weights (standardised features): "
                + ", ".join(f"{k} {v:+.2f}" for k, v in manifest["weights"]["doc_model"].items()) + ".", ""]
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="quality_report"))
