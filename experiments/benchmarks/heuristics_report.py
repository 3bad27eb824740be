"""Removal rate of every heuristic rule on real web pages and Usenet posts.

    python -m experiments.benchmarks.heuristics_report --out experiments/results/heuristics.md

Corpora (../shared/data/raw): the raw HTML pages extracted as ``winnow`` ingest
does (resiliparse, ``html_field: html``), the same pages' main text from
trafilatura (``text_main``), and 20 Newsgroups posts. ``text_all_visible`` is
not used: it has no line breaks, so every line rule would see one line. Heuristics run after
language ID in Gopher, C4 and FineWeb, so only documents langid (default
backend) keeps as English (score >= 0.65) are counted. Rule-by-rule agreement
with datatrove's implementations is in heuristics_conformance.py.

Each filter is applied alone to the unfiltered text, so its rate does not depend
on the others (C4's line edits are not passed on). Within a filter a document is
charged to the first rule it fails, in the filter's order, which is the reason
``winnow`` would record. Published rates are given only where a paper states
them; they are measured on Common Crawl, in the unit shown.
"""
from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from experiments.benchmarks import emit
from filters.apply import apply_filters, score_filters
from filters.base import filter_class
from filters.langid import LanguageID
from pipeline.document import Document
from pipeline.ingest.html import extract_text

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FILTERS = ("gopher_quality", "gopher_repetition", "c4", "fineweb", "ratios")
CORPORA = {
    "web (resiliparse, as ingested)": ("webpages-html.jsonl.gz", "html"),
    "web (trafilatura main text)": ("webpages-extracted.jsonl.gz", "text_main"),
    "usenet": ("usenet-20news.jsonl.gz", "text"),
}
#: Published removal rates on Common Crawl, with unit and source.
PUBLISHED = {
    "c4:no_terminal_punct": "~30% of tokens, terminal-punctuation rule alone (Penedo et al. 2024, FineWeb, Sec. 3.4)",
    "fineweb": "~22% of tokens, the three custom rules together (Penedo et al. 2024, Sec. 3.5)",
    "c4": "C4.en keeps 365M of 1.1B documents of c4.en.noclean (filters + dedup; Dodge et al. 2021, Table 1)",
}


def load(name: str, limit: int | None) -> list[Document]:
    file, field = CORPORA[name]
    docs = []
    with gzip.open(SHARED / "raw" / file, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            text = json.loads(line).get(field) or ""
            if field == "html":
                text = extract_text(text, "resiliparse")
            if text.strip():
                docs.append(Document(f"{name}-{i}", text))
            if limit and len(docs) >= limit:
                break
    return docs


def english(docs: list[Document]) -> list[Document]:
    keep = apply_filters(docs, [LanguageID()]).verdicts.keep
    return [d for d, k in zip(docs, keep) if k]


def reasons_for(texts: list[str]) -> dict[str, list[str | None]]:
    """filter -> reason per document (None = kept); runs in a worker process."""
    out = {}
    for name in FILTERS:
        docs = [Document(str(i), t) for i, t in enumerate(texts)]
        out[name] = apply_filters(docs, [filter_class(name)()]).verdicts.reasons
    return out


def removal_rates(docs: list[Document], workers: int) -> dict[str, Counter]:
    texts = [d.text for d in docs]
    chunks = [texts[i::workers] for i in range(workers)]
    totals: dict[str, Counter] = {name: Counter() for name in FILTERS}
    with ProcessPoolExecutor(workers) as pool:
        for part in pool.map(reasons_for, chunks):
            for name, reasons in part.items():
                totals[name].update(r for r in reasons if r)
    return totals


def rule_order() -> list[tuple[str, str]]:
    """(filter, full rule reason) in the order each filter checks its rules."""
    from filters.gopher import DUP_NGRAM_MAX, TOP_NGRAM_MAX

    rules = {
        "gopher_quality": ["word_count", "mean_word_length", "symbol_word_ratio", "bullet_lines",
                           "ellipsis_lines", "alpha_words", "stop_words"],
        "gopher_repetition": ["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
                              *(f"top_{n}gram" for n in TOP_NGRAM_MAX), *(f"dup_{n}gram" for n in DUP_NGRAM_MAX)],
        "c4": ["lorem_ipsum", "curly_bracket", "badwords", "too_few_sentences"],
        "fineweb": ["line_punct", "dup_line_chars", "short_lines", "list_like"],
        "ratios": ["non_alnum", "digits", "urls", "long_word"],
    }
    return [(f, f"{f}:{r}") for f in FILTERS for r in rules[f]]


def c4_line_rates(docs: list[Document]) -> dict[str, float]:
    """Share of non-blank lines each C4 line rule drops (these edit text, they do not remove documents)."""
    from filters.c4 import C4, LINE_RULES

    f = C4()
    f.ensure_setup()
    dropped, lines = Counter(), 0
    cols = score_filters([Document(d.id, d.text) for d in docs], [f]).rows()
    for k in range(len(docs)):
        lines += cols["c4_lines_kept"][k] + sum(cols[f"c4_lines_{r}"][k] for r in LINE_RULES)
        dropped.update({r: cols[f"c4_lines_{r}"][k] for r in LINE_RULES})
    return {r: dropped[r] / max(lines, 1) for r in LINE_RULES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, help="documents per corpus (default: all)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    results, sizes, line_rates = {}, {}, {}
    for name in CORPORA:
        raw = load(name, args.limit)
        docs = english(raw)
        sizes[name] = (len(raw), len(docs))
        results[name] = removal_rates(docs, args.workers)
        line_rates[name] = c4_line_rates(docs)

    names = list(CORPORA)
    cmd = ".venv/bin/python -m experiments.benchmarks.heuristics_report" + (f" --limit {args.limit}" if args.limit else "")
    out = ["# Heuristic filters: removal rates on real documents", "",
           f"Command: `{cmd} --out {args.out}`", "",
           "English documents only (langid en >= 0.65): " + "; ".join(
               f"{n}: {e:,} of {r:,}" for n, (r, e) in sizes.items()) + ".",
           "Each filter applied alone to unfiltered text; a document is charged to the first rule it fails "
           "within its filter. Percentages are of English documents.", "",
           "| rule | " + " | ".join(names) + " | published (Common Crawl) |",
           "|---|" + "---:|" * len(names) + "---|"]
    for filt in FILTERS:
        totals = [sum(results[n][filt].values()) / max(sizes[n][1], 1) for n in names]
        out.append(f"| **{filt}** (any rule) | " + " | ".join(f"**{100 * t:.1f}%**" for t in totals)
                   + f" | {PUBLISHED.get(filt, '')} |")
        for f, rule in rule_order():
            if f != filt:
                continue
            rates = [results[n][filt][rule] / max(sizes[n][1], 1) for n in names]
            out.append(f"| {rule} | " + " | ".join(f"{100 * r:.1f}%" for r in rates) + f" | {PUBLISHED.get(rule, '')} |")
    out += ["", "C4 line rules (share of non-blank lines dropped; they edit the text):", "",
            "| line rule | " + " | ".join(names) + " | published |", "|---|" + "---:|" * len(names) + "---|"]
    from filters.c4 import LINE_RULES

    for r in LINE_RULES:
        out.append(f"| c4:{r} | " + " | ".join(f"{100 * line_rates[n][r]:.1f}%" for n in names)
                   + f" | {PUBLISHED.get('c4:' + r, '')} |")
    text = "\n".join(out) + "\n"
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="heuristics_report"))
