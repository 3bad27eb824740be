"""Does a quality score agree with people? ``winnow quality-eval`` measures every scorer of a config.

For each labelled set (JSONL: ``text`` plus ``label`` 0/1 and/or ``score``,
optional ``id``/``source``) every scorer the configs define is run on the
documents exactly as a pipeline stage would run it -- each numeric score column
of every filter (langid, heuristics, the fastText classifier, the reference-LM
bits per byte, the combined score), each filter's pass/fail and the heuristic
stage's pass/fail -- plus the document's length. Reported: ROC AUC against the
label and Spearman correlation with the score, each with a 95% percentile
bootstrap interval over documents, and the paired difference of AUC against
length (same resamples), so "beats length" is a claim with an interval.

AUC reads a column as "higher = better": a column that measures badness
(``ref_bpb``, a boilerplate ratio) shows AUC below 0.5 when it works.

Built-in labelled sets (written as labelled JSONL under ``--labels-dir``):

* ``synthetic-web``: the demo corpus (``data/demo``); label = ``metadata.truth.kind == "clean"``.
* ``webpages-gold``: the 181 pages of ``raw/webpages-html`` with a hand-cleaned
  ``article_body_gold``, extracted as the ingest stage does (resiliparse); score =
  the share of the extracted text's characters on lines a person kept
  (:func:`filters.quality_features.content_fraction`); label = score >= 0.8.
  Never trained on by the shipped scorers.
* ``webpages2-heldout``: the same for ``raw/webpages2-html`` (``gold_text``),
  only pages of the held-out split (:mod:`pipeline.heldout`); the combined
  scorer is fitted on the other pages.

    python -m experiments.quality_eval experiments/configs/ablation_real.yaml experiments/configs/quality_mixed.yaml
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from filters.apply import apply_filters, filter_key
from filters.metrics import roc_auc
from filters.stage import FilterStage
from filters.quality_features import gold_pages
from pipeline.config import load_config
from pipeline.document import Document
from pipeline.heldout import reference_split

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GOOD_CONTENT_FRACTION = 0.8


# ---------------------------------------------------------------------------
# labelled sets


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """Atomic write of a gzipped JSONL file (temp + rename); fixed mtime so the bytes are reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(path)


def read_labelled(path: str | Path) -> list[dict]:
    """Rows of a labelled JSONL(.gz): each needs ``text`` and a ``label`` (0/1) or a ``score``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj.get("text"), str):
                raise ValueError(f"{path}:{n}: a labelled row needs a string `text`")
            if obj.get("label") is None and obj.get("score") is None:
                raise ValueError(f"{path}:{n}: a labelled row needs `label` (0/1) or `score`")
            obj.setdefault("id", f"{Path(path).name}:{n}")
            rows.append(obj)
    return rows


def gold_labelled(path: Path, gold_field: str, held_out_only: bool) -> list[dict]:
    rows = []
    for p in gold_pages(str(path), gold_field):
        if held_out_only and reference_split(p["id"]) != "eval":
            continue
        rows.append({"id": p["id"], "text": p["text"], "source": p["dataset"] or path.name.split(".")[0],
                     "score": round(p["content_fraction"], 6),
                     "label": int(p["content_fraction"] >= GOOD_CONTENT_FRACTION)})
    return rows


def synthetic_labelled(demo_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(demo_dir.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                kind = obj["truth"]["kind"]
                rows.append({"id": obj["id"], "text": obj["text"], "source": kind, "label": int(kind == "clean")})
    return rows


def builtin_sets(labels_dir: Path, demo_dir: Path, log=print) -> dict[str, Path]:
    """Write (once) and return the built-in labelled sets that the data on this machine allows."""
    makers = {
        "synthetic-web": (lambda: synthetic_labelled(demo_dir), demo_dir.exists()),
        "webpages-gold": (lambda: gold_labelled(SHARED / "raw" / "webpages-html.jsonl.gz", "article_body_gold", False),
                          (SHARED / "raw" / "webpages-html.jsonl.gz").exists()),
        "webpages2-heldout": (lambda: gold_labelled(SHARED / "raw" / "webpages2-html.jsonl.gz", "gold_text", True),
                              (SHARED / "raw" / "webpages2-html.jsonl.gz").exists()),
    }
    out = {}
    for name, (make, available) in makers.items():
        path = labels_dir / f"{name}.jsonl.gz"
        if not path.exists():
            if not available:
                log(f"quality-eval: skipping {name} (its data is not on this machine)")
                continue
            rows = make()
            write_jsonl_gz(path, rows)
            log(f"quality-eval: wrote {len(rows):,} labelled documents -> {path}")
        out[name] = path
    return out


# ---------------------------------------------------------------------------
# scorers


def config_scores(config_paths: list[str], docs: list[Document], log=print) -> tuple[dict[str, np.ndarray], dict]:
    """Every numeric column and pass/fail of every filter in the configs, on ``docs``.

    Each filter stage is applied exactly as the pipeline applies it (:func:`filters.apply.apply_filters`:
    filters in order, text edits carried to later filters). A stage whose columns an earlier config
    already scored is not scored again. Filters whose model is missing are skipped (listed in the second
    return value). A filter with a global cut-off (top fraction) gives its score but no pass/fail: the
    cut depends on the whole stage, not on one document.
    """
    scores: dict[str, np.ndarray] = {}
    info: dict = {"skipped": [], "seconds": {}}
    for config_path in config_paths:
        cfg = load_config(config_path)
        for spec in cfg.stages:
            stage = cfg.stage_object(spec)
            if not isinstance(stage, FilterStage):
                continue
            if all(c in scores for f in stage.filters for c in f.columns):
                continue  # scored from an earlier config; the stage verdict is theirs
            usable = []
            for f in stage.filters:
                try:
                    f.ensure_setup()
                except FileNotFoundError as e:
                    info["skipped"].append(f"{f.ref} ({Path(config_path).name}): {e}")
                    log(f"quality-eval: skipping {f.ref}: {e}")
                    continue
                usable.append(f)
            t0 = time.perf_counter()
            applied = apply_filters(docs, usable)
            info["seconds"][spec["name"]] = round(time.perf_counter() - t0, 2)
            for f in usable:
                for col, typ in f.columns.items():
                    if typ in ("float", "int", "bool") and col not in scores:
                        scores[col] = np.array([np.nan if v is None else float(v)
                                                for v in applied.scores.columns[col].to_pylist()])
            judged = [f for f in usable if not f.needs_plan()]
            for f in judged:
                scores[f"{f.ref} pass"] = applied.verdicts.keep_by_filter[filter_key(f)].astype(float)
            if len(judged) == len(stage.filters) > 1:
                stage_pass = np.ones(len(docs), bool)
                for f in judged:
                    stage_pass &= applied.verdicts.keep_by_filter[filter_key(f)]
                scores[f"{spec['name']} stage pass"] = stage_pass.astype(float)
    return scores, info


# ---------------------------------------------------------------------------
# statistics


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def spearman_many(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = _ranks(a), _ranks(b)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=-1) / np.sqrt((ra**2).sum(axis=-1) * (rb**2).sum(axis=-1))


def agreement(scores: dict[str, np.ndarray], label: np.ndarray | None, target: np.ndarray | None,
              baselines: tuple[str, ...] = ("length", "heuristics stage pass"), resamples: int = 1000,
              seed: int = 0) -> dict[str, dict]:
    """AUC / Spearman with 95% percentile bootstrap intervals, and AUC minus each baseline's AUC
    on the same resamples (``auc_minus_<baseline>``, with its interval).

    Missing scores (NaN) rank lowest, as a pipeline would treat them.
    """
    n = len(next(iter(scores.values())))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    out: dict[str, dict] = {}
    boot_auc: dict[str, np.ndarray] = {}
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(s)
        s = np.where(finite, s, (s[finite].min() - 1.0) if finite.any() else 0.0)
        row: dict = {}
        if label is not None:
            row["auc"] = float(roc_auc(label[None, :], s[None, :])[0])
            boot_auc[name] = roc_auc(label[idx], s[idx])
            row["auc_ci"] = [float(np.nanpercentile(boot_auc[name], 2.5)), float(np.nanpercentile(boot_auc[name], 97.5))]
        if target is not None:
            row["spearman"] = float(spearman_many(target[None, :], s[None, :])[0])
            boot = spearman_many(target[idx], s[idx])
            row["spearman_ci"] = [float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))]
        out[name] = row
    for base in baselines:
        if label is None or base not in out:
            continue
        for name, row in out.items():
            if name == base:
                continue
            diff = boot_auc[name] - boot_auc[base]
            row[f"auc_minus_{base}"] = row["auc"] - out[base]["auc"]
            row[f"auc_minus_{base}_ci"] = [float(np.nanpercentile(diff, 2.5)), float(np.nanpercentile(diff, 97.5))]
    return out


# ---------------------------------------------------------------------------
# the command


#: Shown first in the summary table when present: the shipped default and what it is measured against.
HEADLINE = ("quality_combined", "qc_content_frac", "qc_fasttext", "quality_score", "ref_bpb", "length",
            "heuristics stage pass")


def evaluate(config_paths: list[str], sets: dict[str, Path], resamples: int, log=print) -> dict:
    results: dict = {"configs": config_paths, "resamples": resamples, "sets": {}}
    for name, path in sets.items():
        rows = read_labelled(path)
        docs = [Document(id=str(r["id"]), text=r["text"], source=str(r.get("source", ""))) for r in rows]
        t0 = time.perf_counter()
        scores, info = config_scores(config_paths, docs, log=log)
        scores = {"length": np.array([len(r["text"]) for r in rows], float), **scores}
        label = np.array([r["label"] for r in rows], float) if all(r.get("label") is not None for r in rows) else None
        target = np.array([r["score"] for r in rows], float) if all(r.get("score") is not None for r in rows) else None
        table = agreement(scores, label, target, resamples=resamples)
        results["sets"][name] = {
            "path": str(path), "docs": len(rows),
            "positives": None if label is None else int(label.sum()),
            "score_field": target is not None, "skipped_scorers": info["skipped"],
            "scoring_seconds": round(time.perf_counter() - t0, 1), "scorers": table,
        }
        log(f"quality-eval: {name}: {len(rows):,} documents, {len(table)} scorers")
    return results


def line_cleaning(model_path: str, thresholds=(0.3, 0.4, 0.5, 0.6, 0.7)) -> dict:
    """What dropping the lines a line model calls boilerplate does to pages with a gold main text.

    Per threshold on P(content): share of the gold-content characters kept (recall), share of the kept
    characters that are gold content (precision), against the extracted page before cleaning. Pages:
    webpages2's held-out split and all of webpages-html's gold pages, neither ever fitted on.
    """
    from filters.quality_features import Logistic, gold_line_labels, line_features

    model = json.loads(Path(model_path).read_text(encoding="utf-8"))
    line_model = Logistic.from_json(model["line_model"])
    sets = {"webpages-gold": gold_pages(str(SHARED / "raw" / "webpages-html.jsonl.gz"), "article_body_gold"),
            "webpages2-heldout": [p for p in gold_pages(str(SHARED / "raw" / "webpages2-html.jsonl.gz"), "gold_text")
                                  if reference_split(p["id"]) == "eval"]}
    out = {}
    for name, pages in sets.items():
        chars, gold, prob = [], [], []
        for p in pages:
            lines, feats = line_features(p["text"])
            chars.append(np.array([len(x) for x in lines], float))
            gold.append(np.array(gold_line_labels(p["text"], p["gold"]), bool))
            prob.append(line_model.predict(feats) if len(feats) else np.zeros(0))
        c, g, pr = np.concatenate(chars), np.concatenate(gold), np.concatenate(prob)
        rows = {"pages": len(pages), "content_share_before": round(float(c[g].sum() / c.sum()), 4), "thresholds": {}}
        for t in thresholds:
            keep = pr >= t
            rows["thresholds"][str(t)] = {
                "gold_chars_kept": round(float(c[keep & g].sum() / c[g].sum()), 4),
                "content_share_after": round(float(c[keep & g].sum() / max(c[keep].sum(), 1)), 4),
                "chars_dropped": round(float(1 - c[keep].sum() / c.sum()), 4)}
        out[name] = rows
    return out


def _ci(row: dict, key: str) -> str:
    if key not in row or row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
        return "-"
    lo, hi = row[key + "_ci"]
    return f"{row[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(results: dict, command: str) -> str:
    lines = ["# Quality scores against human judgment", "",
             f"Reproduce: `{command}` (bootstrap: {results['resamples']} resamples of documents, 95% percentile "
             "intervals; AUC reads each column as higher = better, so a badness measure that works shows AUC < 0.5; "
             "`vs length` / `vs heuristics pass` is AUC minus the AUC of document length / of passing the heuristic "
             "stage, on the same resamples).", ""]
    lines += ["## Summary", "", "| labelled set | docs (good) | scorer | ROC AUC | vs length | vs heuristics pass | "
              "Spearman with score |", "|---|---|---|---|---|---|---|"]
    for name, s in results["sets"].items():
        for scorer in HEADLINE:
            row = s["scorers"].get(scorer)
            if row is None:
                continue
            lines.append(f"| {name} | {s['docs']:,} ({s['positives']}) | {scorer} | {_ci(row, 'auc')} | "
                         f"{_ci(row, 'auc_minus_length')} | {_ci(row, 'auc_minus_heuristics stage pass')} | "
                         f"{_ci(row, 'spearman')} |")
    if results.get("line_cleaning"):
        lc = results["line_cleaning"]
        lines += ["", "## Line cleaning (`line_cleaner`)", "",
                  f"Dropping the lines whose P(main content) under the line model of `{lc['model']}` is below a threshold, "
                  "on pages never fitted on; characters of non-blank lines of the extracted page.", "",
                  "| pages | threshold | gold-content characters kept | content share before -> after | characters dropped |",
                  "|---|---|---|---|---|"]
        for name, r in lc["sets"].items():
            for t, v in r["thresholds"].items():
                lines.append(f"| {name} ({r['pages']}) | {t} | {v['gold_chars_kept']:.1%} | "
                             f"{r['content_share_before']:.1%} -> {v['content_share_after']:.1%} | {v['chars_dropped']:.1%} |")
    for name, s in results["sets"].items():
        lines += ["", f"## {name}", "", f"`{s['path']}`: {s['docs']:,} documents, {s['positives']} labelled good"
                  + ("; `score` = content fraction" if s["score_field"] else "") + ".", ""]
        if s["skipped_scorers"]:
            lines += [f"Skipped (no model): {'; '.join(s['skipped_scorers'])}", ""]
        lines += ["| scorer | ROC AUC | vs length | vs heuristics pass | Spearman with score |", "|---|---|---|---|---|"]
        ranked = sorted(s["scorers"].items(), key=lambda kv: -abs(kv[1].get("auc", 0.5) - 0.5))
        for scorer, row in ranked:
            lines.append(f"| {scorer} | {_ci(row, 'auc')} | {_ci(row, 'auc_minus_length')} | "
                         f"{_ci(row, 'auc_minus_heuristics stage pass')} | {_ci(row, 'spearman')} |")
    return "\n".join(lines) + "\n"


def record_agreement(config_paths: list[str], results: dict) -> list[Path]:
    """Write each model's agreement with every labelled set into its training manifest (``agreement``)."""
    from experiments.quality_models import trainable_filters
    from filters.quality_scorers import manifest_path
    from pipeline.shards import atomic_write_json

    written = []
    for config_path in config_paths:
        for _, f in trainable_filters(load_config(config_path)):
            path = manifest_path(f.params["model_path"])
            column = f.score_column
            if not path.exists() or not column:
                continue
            manifest = json.loads(path.read_text(encoding="utf-8"))
            manifest["agreement"] = {
                "column": column, "command": results.get("command"), "resamples": results["resamples"],
                "sets": {name: {"docs": s["docs"], "good": s["positives"],
                                **{k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v])
                                   for k, v in s["scorers"][column].items()}}
                         for name, s in results["sets"].items() if column in s["scorers"]}}
            atomic_write_json(path, manifest)
            written.append(path)
    return written


def train_missing(config_paths: list[str], log=print) -> None:
    """Train the quality models of each config whose model files are not all there."""
    from experiments.quality_models import missing_models, train_quality

    for config_path in config_paths:
        cfg = load_config(config_path)
        if missing_models(cfg):
            log(f"quality-eval: training the quality models of {config_path}")
            train_quality(cfg, log=log)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The command's arguments, shared by ``winnow quality-eval`` and ``python -m experiments.quality_eval``."""
    ap.add_argument("configs", nargs="+", help="configs whose filters are the scorers (models trained by train-quality)")
    ap.add_argument("--labels", action="append", default=[], metavar="NAME=PATH",
                    help="a labelled JSONL(.gz) to evaluate on (repeatable); default: the built-in sets")
    ap.add_argument("--labels-dir", default="runs/quality_eval/labels", help="where the built-in sets are written")
    ap.add_argument("--demo-dir", default="data/demo", help="the synthetic web (winnow demo-corpus)")
    ap.add_argument("--train-missing", action="store_true",
                    help="first run `winnow train-quality` for every config with a model file missing")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--out", default="experiments/results/quality_eval", help="writes OUT.md and OUT.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.quality_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv), ap)


def run(args, ap: argparse.ArgumentParser) -> int:
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.train_missing:
        train_missing(args.configs, log=log)
    if args.labels:
        sets = {}
        for item in args.labels:
            name, sep, path = item.partition("=")
            if not sep:
                ap.error(f"--labels takes NAME=PATH, got {item!r}")
            sets[name] = Path(path)
    else:
        sets = builtin_sets(Path(args.labels_dir), Path(args.demo_dir), log=log)
    results = evaluate(args.configs, sets, args.resamples, log=log)
    command = "winnow quality-eval " + " ".join(args.configs) + "".join(f" --labels {x}" for x in args.labels)
    results["command"] = command
    from experiments.quality_models import trainable_filters

    combined = [f.params["model_path"] for c in args.configs for _, f in trainable_filters(load_config(c))
                if f.name == "quality_combined" and Path(f.params["model_path"]).exists()]
    if combined and (SHARED / "raw").exists():
        results["line_cleaning"] = {"model": Path(combined[0]).name, "sets": line_cleaning(combined[0])}
    for path in record_agreement(args.configs, results):
        log(f"quality-eval: agreement recorded in {path}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(results, command)
    tmp = out.with_name(out.name + ".md.tmp")
    tmp.write_text(md, encoding="utf-8")
    tmp.replace(out.with_suffix(".md"))
    tmp = out.with_name(out.name + ".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out.with_suffix(".json"))
    print(md.split("\n## ", 2)[0] + "\n## " + md.split("\n## ", 2)[1])
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="quality_eval"))
