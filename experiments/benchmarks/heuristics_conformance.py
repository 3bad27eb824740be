"""winnow's ``recipe: fineweb`` against datatrove's FineWeb filters: removed-set overlap per rule, per filter and
for the whole chain, every disagreement class with examples, and speed measured in CPU seconds.

    PYTHONPATH=. .venv/bin/python -m experiments.benchmarks.heuristics_conformance \\
        --datatrove-python /tmp/dtv/bin/python --out experiments/results/heuristics_conformance.md

datatrove and spaCy are not winnow dependencies, so they live in their own
virtual environment: ``python3 -m venv /tmp/dtv && /tmp/dtv/bin/pip install
datatrove==0.10.1 spacy regex``. This script writes the documents to a JSONL
file and runs itself under that interpreter (``--reference``): that process
imports datatrove only and records, per document, the decision of every rule
of FineWeb's recipe run *alone* (the other rules of its filter switched off
through datatrove's own parameters, FineWeb's settings otherwise), of each of
the four filters as FineWeb configures them, of the whole chain in FineWeb's
order (C4's cleaned text passed on, as datatrove does), and spaCy's tokens; and
it dumps the tables winnow re-implements (spaCy's special cases, sentence-final
marks, datatrove's punctuation sets) so they are compared too.

Agreement alone flatters a rule that removes little, so every row also gives
both sides' removal counts, the overlap of the removed sets (Jaccard: both
remove / either removes) and Cohen's kappa, and every class of disagreement
(rule, which side removes) is counted and shown with examples.

Speed: each side runs FineWeb's chain in a fresh single-threaded process
(``--time-side``), over ``--rounds`` interleaved rounds that alternate which
side goes first; the figure is CPU seconds of the filtering loop
(``time.process_time``: the load of other jobs barely changes it), with wall
time and the load average beside it. datatrove runs as FineWeb ran it: each
document goes through the filters until one removes it. winnow runs as its
filter stage does: every filter scores every document (so any threshold can
change later without re-scoring; the documents are one shard, as the stage
scores them), then the decisions are taken in order.
``--all-score`` also times datatrove with every filter on every document.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SOURCES = (("usenet", "raw/usenet-20news.jsonl.gz", "text"), ("wikipedia", "ref/wikipedia-en.jsonl.gz", "text"),
           ("web pages", "raw/webpages-html.jsonl.gz", "html"), ("oscar", "raw/oscar-sample.jsonl.gz", "text"))
FILTERS = ("gopher_repetition", "gopher_quality", "c4", "fineweb")  # FineWeb's order

# ---------------------------------------------------------------------------
# FineWeb's recipe in datatrove's terms: kwargs of each filter as FineWeb runs it, and how to run one rule alone

DT_CLASS = {"gopher_repetition": "GopherRepetitionFilter", "gopher_quality": "GopherQualityFilter",
            "c4": "C4QualityFilter", "fineweb": "FineWebQualityFilter"}
DT_FINEWEB = {"gopher_repetition": {}, "gopher_quality": {}, "c4": {"filter_no_terminal_punct": False},
              "fineweb": {}}
GQ_OFF = dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
              max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
              max_non_alpha_words_ratio=None, min_stop_words=None)
GR_OFF = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
              top_n_grams=(), dup_n_grams=())
C4_OFF = dict(filter_no_terminal_punct=False, filter_lorem_ipsum=False, filter_curly_bracket=False,
              min_num_sentences=-1)
FW_OFF = dict(line_punct_thr=0.0, short_line_thr=1.0, char_duplicates_ratio=1.0, new_line_ratio=1e9)
TOP_N = {2: 0.2, 3: 0.18, 4: 0.16}
DUP_N = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
#: rule -> datatrove kwargs that run it alone, with FineWeb's thresholds
RULES_ALONE = {
    "gopher_repetition:dup_para_frac": {**GR_OFF, "dup_para_frac": 0.3},
    "gopher_repetition:dup_para_char_frac": {**GR_OFF, "dup_para_char_frac": 0.2},
    "gopher_repetition:dup_line_frac": {**GR_OFF, "dup_line_frac": 0.3},
    "gopher_repetition:dup_line_char_frac": {**GR_OFF, "dup_line_char_frac": 0.2},
    **{f"gopher_repetition:top_{n}gram": {**GR_OFF, "top_n_grams": ((n, t),)} for n, t in TOP_N.items()},
    **{f"gopher_repetition:dup_{n}gram": {**GR_OFF, "dup_n_grams": ((n, t),)} for n, t in DUP_N.items()},
    "gopher_quality:word_count": {**GQ_OFF, "min_doc_words": 50, "max_doc_words": 100_000},
    "gopher_quality:mean_word_length": {**GQ_OFF, "min_avg_word_length": 3, "max_avg_word_length": 10},
    "gopher_quality:symbol_word_ratio": {**GQ_OFF, "max_symbol_word_ratio": 0.1},
    "gopher_quality:bullet_lines": {**GQ_OFF, "max_bullet_lines_ratio": 0.9},
    "gopher_quality:ellipsis_lines": {**GQ_OFF, "max_ellipsis_lines_ratio": 0.3},
    "gopher_quality:alpha_words": {**GQ_OFF, "max_non_alpha_words_ratio": 0.8},
    "gopher_quality:stop_words": {**GQ_OFF, "min_stop_words": 2},
    "c4:lorem_ipsum": {**C4_OFF, "filter_lorem_ipsum": True},
    "c4:curly_bracket": {**C4_OFF, "filter_curly_bracket": True},
    "c4:too_few_sentences": {**C4_OFF, "min_num_sentences": 5},
    "fineweb:line_punct": {**FW_OFF, "line_punct_thr": 0.12},
    "fineweb:short_lines": {**FW_OFF, "short_line_thr": 0.67},
    "fineweb:dup_line_chars": {**FW_OFF, "char_duplicates_ratio": 0.01},
    "fineweb:list_like": {**FW_OFF, "new_line_ratio": 0.3},
}
#: datatrove's removal reasons -> winnow's rule names
DT_REASONS = {
    "dup_para_frac": "dup_para_frac", "dup_para_char_frac": "dup_para_char_frac", "dup_line_frac": "dup_line_frac",
    "dup_line_char_frac": "dup_line_char_frac", **{f"top_{n}_gram": f"top_{n}gram" for n in TOP_N},
    **{f"duplicated_{n}_n_grams": f"dup_{n}gram" for n in DUP_N},
    "gopher_short_doc": "word_count", "gopher_long_doc": "word_count",
    "gopher_below_avg_threshold": "mean_word_length", "gopher_above_avg_threshold": "mean_word_length",
    "gopher_too_many_hashes": "symbol_word_ratio", "gopher_too_many_ellipsis": "symbol_word_ratio",
    "gopher_too_many_bullets": "bullet_lines", "gopher_too_many_end_ellipsis": "ellipsis_lines",
    "gopher_below_alpha_threshold": "alpha_words", "gopher_enough_stop_words": "stop_words",
    "lorem_ipsum": "lorem_ipsum", "curly_bracket": "curly_bracket", "too_few_sentences": "too_few_sentences",
    "line_punct_ratio": "line_punct", "short_line_ratio": "short_lines", "char_dup_ratio": "dup_line_chars",
    "list_ratio": "list_like", "empty": "empty",
}


# ---------------------------------------------------------------------------
# the datatrove side (runs under the datatrove interpreter; imports no winnow module)


def _dt_filters(kwargs_by_name: dict) -> dict:
    import datatrove.pipeline.filters as dtf

    return {name: getattr(dtf, DT_CLASS[name])(**kw) for name, kw in kwargs_by_name.items()}


def _dt_run(f, text: str) -> tuple[bool, str | None, str]:
    """(keep, reason, text after) of one datatrove filter; a rule that raises (a ratio over zero words) -> None."""
    from datatrove.data import Document

    doc = Document(text=text, id="d")
    try:
        out = f.filter(doc)
    except (ZeroDivisionError, ValueError):
        return None, "error", text
    keep, reason = (out, None) if isinstance(out, bool) else (bool(out[0]), out[1] if len(out) > 1 else None)
    return keep, None if keep else reason, doc.text


def run_reference(docs_path: Path, out_path: Path) -> None:
    import datatrove
    import spacy
    from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION
    from datatrove.utils.word_tokenizers import load_word_tokenizer
    from spacy.pipeline.sentencizer import Sentencizer
    from spacy.symbols import ORTH

    texts = [json.loads(line)["text"] for line in docs_path.open(encoding="utf-8")]
    alone = {rule: _dt_filters({rule.split(":")[0]: kw})[rule.split(":")[0]] for rule, kw in RULES_ALONE.items()}
    recipe = _dt_filters(DT_FINEWEB)
    tokenizer = load_word_tokenizer("en")
    with out_path.open("w", encoding="utf-8") as out:
        for text in texts:
            row = {"alone": {rule: _dt_run(f, text)[0] for rule, f in alone.items()}, "filters": {}}
            for name, f in recipe.items():
                keep, reason, _ = _dt_run(f, text)
                row["filters"][name] = [keep, reason]
            chain, current = None, text
            for name, f in recipe.items():  # FineWeb's order; C4's cleaned text goes on to FineWeb's filter
                keep, reason, current = _dt_run(f, current)
                if not keep:
                    chain = [name, reason]
                    break
            row["chain"] = chain
            row["tokens"] = tokenizer.word_tokenize(text)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    nlp = spacy.blank("en")
    tables = {
        "versions": {"datatrove": datatrove.__version__ if hasattr(datatrove, "__version__") else
                     _dist_version("datatrove"), "spacy": spacy.__version__, "python": platform.python_version()},
        "special_cases": {k: [t[ORTH] for t in v] for k, v in nlp.tokenizer.rules.items()},
        "sentence_final": sorted(Sentencizer.default_punct_chars),
        "terminal_punctuation": sorted(TERMINAL_PUNCTUATION),
        "punctuation_set": sorted(PUNCTUATION_SET),
    }
    out_path.with_suffix(".tables.json").write_text(json.dumps(tables, ensure_ascii=False))


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# ---------------------------------------------------------------------------
# timing: one side, one fresh process


#: A page for each side's one-time set-up before the clock starts (lazy imports: spaCy's tokenizer in
#: datatrove, pyarrow's pandas shim in winnow): MB/s is the cost per MB of text, and the set-up is reported apart.
SETUP_PAGE = "A short page to set up with.\nIt has two lines, and both end with a full stop."


def machine_check() -> float:
    """CPU seconds of a fixed pure-Python workload (integer arithmetic, string hashing, dict inserts), timed in
    each process before its run: the same work on any round, so it shows how fast the machine itself was then
    (a shared VM's speed drifts over minutes, at the same load average)."""
    c0 = time.process_time()
    table: dict[str, int] = {}
    total = 0
    for i in range(600_000):
        total += i * i % 7
        table[f"w{i % 150_000}-{i & 7}"] = i
    return time.process_time() - c0


def _set_up_winnow(chain: list) -> None:
    """winnow's one-time set-up outside the clock: one short page through the chain, then every memoised chunk
    and token forgotten, so the timed run still starts cold."""
    from filters.apply import apply_filters
    from filters.words import clear_caches
    from pipeline.document import Document

    apply_filters([Document("setup", SETUP_PAGE)], chain)
    clear_caches()


def time_side(side: str, docs_path: Path, all_score: bool) -> dict:
    """CPU and wall seconds of FineWeb's chain over the documents, in this (fresh) process; the one-time set-up
    (one small page through the chain, outside the clock) is timed apart."""
    texts = [json.loads(line)["text"] for line in docs_path.open(encoding="utf-8")]
    extra: dict = {}
    if side == "datatrove":
        from datatrove.data import Document

        chain = list(_dt_filters(DT_FINEWEB).values())

        def run():
            for i, text in enumerate(texts):
                doc = Document(text=text, id=str(i))
                for f in chain:
                    try:
                        out = f.filter(doc)
                    except (ZeroDivisionError, ValueError):
                        out = False
                    if not all_score and not (out if isinstance(out, bool) else out[0]):
                        break

        def setup():  # every filter once, whatever the earlier ones decide
            for f in chain:
                try:
                    f.filter(Document(text=SETUP_PAGE, id="setup"))
                except (ZeroDivisionError, ValueError):
                    pass
    else:
        from filters.apply import apply_filters
        from pipeline.document import Document

        chain = list(winnow_recipe().values())
        docs = [Document(str(i), text) for i, text in enumerate(texts)]

        def run():  # what a filter stage does with a shard: every filter scores every document, then decides
            apply_filters(docs, chain)

        def setup():
            _set_up_winnow(chain)

        from filters.words import compiled

        extra["compiled"] = compiled()

    reference = machine_check()
    c0 = time.process_time()
    setup()
    setup_cpu = time.process_time() - c0
    load = os.getloadavg()[0]
    c0, w0 = time.process_time(), time.perf_counter()
    run()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"side": side, "cpu_s": cpu, "wall_s": wall, "setup_cpu_s": setup_cpu, "machine_check_s": reference,
            "load": load, "docs": len(texts), "mb": sum(len(t.encode("utf-8")) for t in texts) / 1e6, **extra}


def time_parts(side: str, docs_path: Path) -> dict:
    """Where each side's CPU time goes on the chain (one fresh process, not interleaved: a profile, not a race).

    datatrove: spaCy tokenising each document once (what its filters share through a cache), then each filter's
    time within the chain. winnow: tokenising (shared by the filters of a stage), each filter's scoring of the
    whole shard in stage order, and the decisions.
    """
    texts = [json.loads(line)["text"] for line in docs_path.open(encoding="utf-8")]
    parts: dict[str, float] = {}
    clock = time.process_time
    if side == "datatrove":
        from datatrove.data import Document
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        tokenizer = load_word_tokenizer("en")
        tokenizer.word_tokenize(SETUP_PAGE)  # set-up outside the clock, as in time_side
        c = clock()
        for text in texts:
            tokenizer.word_tokenize(text)
        parts["spaCy tokens of every document (alone, for scale)"] = clock() - c
        chain = _dt_filters(DT_FINEWEB)
        parts.update(dict.fromkeys(chain, 0.0))
        for i, text in enumerate(texts):
            doc = Document(text=text, id=str(i))
            for name, f in chain.items():
                c = clock()
                try:
                    out = f.filter(doc)
                except (ZeroDivisionError, ValueError):
                    out = False
                parts[name] += clock() - c
                if not (out if isinstance(out, bool) else out[0]):
                    break
    else:
        from filters.apply import decide_filters
        from filters.words import doc_tokens_batch
        from pipeline.document import Document

        chain = winnow_recipe()
        docs = [Document(str(i), text) for i, text in enumerate(texts)]
        _set_up_winnow(list(chain.values()))
        c = clock()
        doc_tokens_batch([d.text for d in docs])  # as the first filter of the stage tokenises the shard
        parts["tokens (shared by the filters)"] = clock() - c
        results = []
        for name, f in chain.items():
            c = clock()
            res = f.score_batch(docs)
            if f.edits_text:
                for d, r in zip(docs, res):
                    d.text = r.pop("text", d.text)
            results.append(res)
            parts[name] = clock() - c
        c = clock()
        rows = {k: [r[k] for r in res] for res in results for k in res[0]}
        decide_filters(rows, [d.id for d in docs], list(chain.values()))
        parts["decisions"] = clock() - c
    return {"side": side, "parts": parts}


_INTERPRETER_PROBE = (
    "import os, platform, sys; maps = open('/proc/self/maps').read() if os.path.exists('/proc/self/maps') else '';"
    "shared = 'unknown' if not maps else ('shared' if 'libpython' in maps else 'static');"
    "print(f'CPython {platform.python_version()} ({os.path.realpath(sys.executable)}, libpython {shared})')")


def interpreter(python: str) -> str:
    """Which CPython build ``python`` is: its version, binary, and whether it runs libpython from a shared library.

    The build moves every CPU figure here: on the same machine, Debian's static ``python3.11`` took 0.92x the
    CPU of pyenv's default build (libpython shared, no PGO) on the winnow chain
    (``experiments/results/interpreter_build.md``)."""
    try:
        out = subprocess.run([python, "-c", _INTERPRETER_PROBE], capture_output=True, text=True)
    except OSError as e:
        return f"{python} (not probed: {e.strerror})"
    return out.stdout.strip() or f"{python} (not probed: {out.stderr.strip()[-200:]})"


def timed_side(python: str, side: str, docs: Path, all_score: bool, parts: bool = False) -> dict:
    """One side's timing (``parts``: its profile) in a fresh single-threaded process of ``python``: its JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [python, "-m", "experiments.benchmarks.heuristics_conformance", "--time-parts" if parts else "--time-side",
           side, str(docs)]
    if all_score:
        cmd.append("--all-score")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# the winnow side


def load_documents(per_source: int) -> list[tuple[str, str]]:
    """(source, text) for up to ``per_source`` non-blank documents of each source (web pages: resiliparse text,
    as winnow ingests them)."""
    from pipeline.ingest.html import extract_text

    docs = []
    for name, rel, field in SOURCES:
        taken = 0
        with gzip.open(SHARED / rel, "rt", encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get(field) or ""
                if field == "html":
                    text = extract_text(text, "resiliparse")
                if text.strip():
                    docs.append((name, text))
                    taken += 1
                if taken >= per_source:
                    break
    return docs


def winnow_recipe():
    from filters.base import filter_class
    from filters.recipes import expand

    out = {}
    for entry in expand({"recipe": "fineweb"}):
        (ref, params), = entry.items()
        out[ref] = filter_class(ref)(**params)
        out[ref].ensure_setup()
    return out


def decide_alone(f, rule: str, s: dict) -> bool:
    """Keep decision of one rule of ``f`` alone, from its score columns and ``f``'s thresholds."""
    p = f.params
    if f.name == "gopher_quality":
        return {
            "word_count": p["min_words"] <= s["gopher_word_count"] <= p["max_words"],
            "mean_word_length": (s["gopher_word_count"] == 0 or p["min_mean_word_length"]
                                 <= s["gopher_mean_word_length"] <= p["max_mean_word_length"]),
            "symbol_word_ratio": s["gopher_symbol_word_ratio"] <= p["max_symbol_word_ratio"],
            "bullet_lines": s["gopher_bullet_line_frac"] <= p["max_bullet_line_frac"],
            "ellipsis_lines": s["gopher_ellipsis_line_frac"] <= p["max_ellipsis_line_frac"],
            "alpha_words": s["gopher_alpha_word_frac"] >= p["min_alpha_word_frac"],
            "stop_words": s["gopher_stop_word_count"] >= p["min_stop_words"],
        }[rule]
    if f.name == "gopher_repetition":
        if rule.startswith(("top_", "dup_")) and rule.endswith("gram"):
            kind, n = rule[:3], rule[4:-4]
            return s[f"gopher_{kind}_{n}gram_frac"] <= p[f"max_{kind}_{n}gram_frac"]
        return s[f"gopher_{rule}"] <= p[f"max_{rule}"]
    if f.name == "c4":
        return {"lorem_ipsum": not s["c4_lorem_ipsum"], "curly_bracket": not s["c4_curly_bracket"],
                "too_few_sentences": s["c4_sentence_count"] >= p["min_sentences"]}[rule]
    if f.name == "fineweb":
        return {"line_punct": s["fineweb_line_punct_frac"] >= p["min_line_punct_frac"],
                "short_lines": s["fineweb_short_line_frac"] <= p["max_short_line_frac"],
                "dup_line_chars": s["fineweb_dup_line_char_frac"] <= p["max_dup_line_char_frac"],
                "list_like": s["fineweb_newline_word_ratio"] <= p["max_newline_word_ratio"]}[rule]
    raise KeyError(f.name)


#: the score column that decides each rule (shown beside disagreement examples)
RULE_COLUMN = {
    "word_count": "gopher_word_count", "mean_word_length": "gopher_mean_word_length",
    "symbol_word_ratio": "gopher_symbol_word_ratio", "bullet_lines": "gopher_bullet_line_frac",
    "ellipsis_lines": "gopher_ellipsis_line_frac", "alpha_words": "gopher_alpha_word_frac",
    "stop_words": "gopher_stop_word_count", "lorem_ipsum": "c4_lorem_ipsum", "curly_bracket": "c4_curly_bracket",
    "too_few_sentences": "c4_sentence_count", "line_punct": "fineweb_line_punct_frac",
    "short_lines": "fineweb_short_line_frac", "dup_line_chars": "fineweb_dup_line_char_frac",
    "list_like": "fineweb_newline_word_ratio",
}


def column_of(rule: str) -> str:
    name = rule.split(":")[1]
    if name.startswith(("top_", "dup_")) and name.endswith("gram"):
        return f"gopher_{name[:3]}_{name[4:-4]}gram_frac"
    return RULE_COLUMN.get(name, f"gopher_{name}")


class Overlap:
    """Counts of two removal decisions over the same documents."""

    def __init__(self):
        self.both = self.only_dt = self.only_wn = self.neither = 0

    def add(self, dt_removes: bool, wn_removes: bool) -> None:
        if dt_removes and wn_removes:
            self.both += 1
        elif dt_removes:
            self.only_dt += 1
        elif wn_removes:
            self.only_wn += 1
        else:
            self.neither += 1

    @property
    def n(self) -> int:
        return self.both + self.only_dt + self.only_wn + self.neither

    def row(self) -> list[str]:
        n, either = self.n, self.both + self.only_dt + self.only_wn
        agree = (self.both + self.neither) / n if n else 1.0
        jaccard = f"{self.both / either:.4f}" if either else "n/a (none removed)"
        p_dt, p_wn = (self.both + self.only_dt) / max(n, 1), (self.both + self.only_wn) / max(n, 1)
        expected = p_dt * p_wn + (1 - p_dt) * (1 - p_wn)
        kappa = f"{(agree - expected) / (1 - expected):.4f}" if expected < 1 else "n/a"
        return [f"{n:,}", f"{100 * agree:.2f}%", f"{self.both + self.only_dt:,}", f"{self.both + self.only_wn:,}",
                f"{self.both:,}", f"{self.only_dt:,}", f"{self.only_wn:,}", jaccard, kappa]

    @property
    def jaccard(self) -> float | None:
        either = self.both + self.only_dt + self.only_wn
        return self.both / either if either else None


OVERLAP_HEAD = ("| {what} | documents | agreement | datatrove removes | winnow removes | both | only datatrove | "
                "only winnow | Jaccard | Cohen's kappa |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def token_diff(ref: list[str], mine: list[str]) -> str:
    """The first differing stretch of two token lists, as "spaCy [..] / winnow [..]"."""
    import difflib

    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=mine, autojunk=False).get_opcodes():
        if op != "equal":
            return f"spaCy {ref[max(i1 - 1, 0):i2 + 1]} / winnow {mine[max(j1 - 1, 0):j2 + 1]}"
    return ""


def compare_tables(tables: dict) -> list[str]:
    """Lines saying whether winnow's copies of spaCy's and datatrove's tables equal the installed ones."""
    from filters.words import PUNCTUATION_SET, SENTENCE_FINAL, SPECIAL_CASES, TERMINAL_PUNCTUATION

    spacy_rules = {k: tuple(v) for k, v in tables["special_cases"].items() if not k.isspace()}
    ours = dict(SPECIAL_CASES)
    out = []
    differ = sorted(k for k in set(spacy_rules) | set(ours) if spacy_rules.get(k) != ours.get(k))
    out.append(f"- spaCy's English special cases (whitespace entries aside): {len(spacy_rules):,} in spaCy, "
               f"{len(ours):,} in winnow, " + ("identical." if not differ else f"{len(differ)} differ: {differ[:10]}"))
    for label, theirs, mine in (("spaCy's sentencizer marks", tables["sentence_final"], SENTENCE_FINAL),
                                ("datatrove's TERMINAL_PUNCTUATION", tables["terminal_punctuation"],
                                 TERMINAL_PUNCTUATION),
                                ("datatrove's PUNCTUATION_SET", tables["punctuation_set"], PUNCTUATION_SET)):
        a, b = set(theirs), set(mine)
        out.append(f"- {label}: {len(a)} characters, " + ("identical in winnow." if a == b else
                   f"winnow lacks {sorted(a - b)!r}, adds {sorted(b - a)!r}."))
    return out


def ngram_join_effect(texts: list[str], reference: list[dict]) -> list[str]:
    """How many documents datatrove's glued n-gram comparison changes, and agreement with and without it."""
    from filters.base import filter_class
    from filters.recipes import expand

    params = next(e["gopher_repetition"] for e in expand({"recipe": "fineweb"}) if "gopher_repetition" in e)
    spaced = filter_class("gopher_repetition")(**params)
    glued = filter_class("gopher_repetition")(**{**params, "dup_ngram_join": "none"})
    from pipeline.document import Document

    lines = []
    changed: Counter = Counter()
    agree = {"space": Counter(), "none": Counter()}
    examples = []
    for i, (text, ref) in enumerate(zip(texts, reference)):
        a, b = spaced.score(Document("d", text)), glued.score(Document("d", text))
        for n in DUP_N:
            rule = f"gopher_repetition:dup_{n}gram"
            keep_a, keep_b = decide_alone(spaced, f"dup_{n}gram", a), decide_alone(glued, f"dup_{n}gram", b)
            changed[rule] += keep_a != keep_b
            want = ref["alone"][rule]
            if want is not None:
                agree["space"][rule] += keep_a == want
                agree["none"][rule] += keep_b == want
            if keep_a != keep_b and len(examples) < 3:
                examples.append(f"document {i}: dup_{n}gram {a[f'gopher_dup_{n}gram_frac']:.4f} as word sequences, "
                                f"{b[f'gopher_dup_{n}gram_frac']:.4f} glued (threshold {DUP_N[n]})")
    lines.append("| rule | documents whose decision the glued comparison changes | agreement, word sequences "
                 "(winnow) | agreement, glued (`dup_ngram_join: none`) |")
    lines.append("|---|---:|---:|---:|")
    for n in DUP_N:
        rule = f"gopher_repetition:dup_{n}gram"
        lines.append(f"| {rule} | {changed[rule]:,} | {agree['space'][rule]:,} / {len(texts):,} | "
                     f"{agree['none'][rule]:,} / {len(texts):,} |")
    return lines + [""] + [f"- {e}" for e in examples]


def conformance(docs: list[tuple[str, str]], reference: list[dict], tables: dict) -> tuple[list[str], dict]:
    from filters.words import words
    from pipeline.document import Document

    filters = winnow_recipe()
    rule_overlap = defaultdict(Overlap)
    rule_source = defaultdict(Overlap)
    filter_overlap = {name: Overlap() for name in FILTERS}
    filter_reason = {name: Counter() for name in FILTERS}
    chain_overlap = Overlap()
    chain_pairs = []  # per document: (datatrove's chain outcome, winnow's)
    classes = defaultdict(list)
    skipped = Counter()
    tok_same = tok_diff_docs = 0
    for i, ((source, text), ref) in enumerate(zip(docs, reference)):
        mine = words(text)
        same_tokens = mine == ref["tokens"]
        tok_same += same_tokens
        scores, chain_scores, chain_doc = {}, {}, Document("d", text)
        for name, f in filters.items():  # each filter alone on the raw text
            scores[name] = f.score(Document("d", text))
        for name, f in filters.items():  # the stage: filters in order, C4's text passed on
            s = f.score(chain_doc)
            if "text" in s:
                chain_doc.text = s["text"]
            chain_scores.update({k: v for k, v in s.items() if k != "text"})
        for rule, want in ref["alone"].items():
            name, short = rule.split(":")
            if want is None:
                skipped[rule] += 1
                continue
            keep = decide_alone(filters[name], short, scores[name])
            rule_overlap[rule].add(not want, not keep)
            rule_source[(rule, source)].add(not want, not keep)
            if keep != want:
                classes[("rule alone", rule, "only datatrove removes" if keep else "only winnow removes")].append(
                    (i, source, scores[name].get(column_of(rule)), "" if same_tokens else token_diff(ref["tokens"], mine)))
        for name, f in filters.items():
            from filters.base import normalise_decision
            keep, reason, _ = normalise_decision(f, f.decide(scores[name]))
            dt_keep, dt_reason = ref["filters"][name]
            filter_overlap[name].add(not dt_keep, not keep)
            if not keep and not dt_keep:
                filter_reason[name][(DT_REASONS.get(dt_reason, dt_reason), reason.split(":")[1])] += 1
        wn_chain = None
        for name, f in filters.items():
            keep, reason, _ = normalise_decision(f, f.decide(chain_scores))
            if not keep:
                wn_chain = reason
                break
        dt_chain = None if ref["chain"] is None else f"{ref['chain'][0]}:{DT_REASONS.get(ref['chain'][1], ref['chain'][1])}"
        chain_overlap.add(dt_chain is not None, wn_chain is not None)
        chain_pairs.append((dt_chain, wn_chain))
        if dt_chain != wn_chain:
            col = column_of(wn_chain or dt_chain) if (wn_chain or dt_chain).split(":")[1] != "empty" else None
            classes[("chain", f"datatrove {dt_chain or 'keeps'}", f"winnow {wn_chain or 'keeps'}")].append(
                (i, source, chain_scores.get(col) if col else None,
                 "" if same_tokens else token_diff(ref["tokens"], mine)))
    chain_rule = {}
    for rule in {r for pair in chain_pairs for r in pair} - {None}:  # the rule each side charges, over all documents
        chain_rule[rule] = Overlap()
        for dt_chain, wn_chain in chain_pairs:
            chain_rule[rule].add(dt_chain == rule, wn_chain == rule)
    stats = {"rules": {r: o.jaccard for r, o in rule_overlap.items()}, "chain": chain_overlap,
             "classes": classes, "tok_same": tok_same}
    sources = list(dict.fromkeys(s for s, _ in docs))
    out = ["## Each rule alone", "",
           "Each rule of FineWeb's recipe decided alone on the unfiltered text: datatrove's filter with its other "
           "rules switched off (FineWeb's settings otherwise), winnow's score column against the recipe's "
           "threshold. Documents on which datatrove's rule raises (a ratio over zero words) are left out of that "
           "rule" + (": " + ", ".join(f"{r} {n}" for r, n in skipped.items()) if skipped else " (none here)") + ".",
           "", OVERLAP_HEAD.format(what="rule")]
    for rule in RULES_ALONE:
        out.append(f"| {rule} | " + " | ".join(rule_overlap[rule].row()) + " |")
    out += ["", "Agreement per source:", "",
            "| rule | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for rule in RULES_ALONE:
        cells = []
        for s in sources:
            o = rule_source[(rule, s)]
            cells.append(f"{100 * (o.both + o.neither) / o.n:.1f}%" if o.n else "n/a")
        out.append(f"| {rule} | " + " | ".join(cells) + " |")
    out += ["", "## Each filter as FineWeb configures it (alone, on the unfiltered text)", "",
            OVERLAP_HEAD.format(what="filter")]
    for name in FILTERS:
        out.append(f"| {name} | " + " | ".join(filter_overlap[name].row()) + " |")
    out += ["", "Removal reasons where both remove (datatrove's reason -> winnow's; equal unless listed):", ""]
    for name in FILTERS:
        mism = {k: v for k, v in filter_reason[name].items() if k[0] != k[1]}
        total = sum(filter_reason[name].values())
        out.append(f"- {name}: {total - sum(mism.values()):,} of {total:,} with the same rule"
                   + ("" if not mism else "; " + ", ".join(f"{a} -> {b}: {n}" for (a, b), n in mism.items())))
    out += ["", "## The whole chain (`recipe: fineweb`)", "",
            "FineWeb's order: Gopher repetition, Gopher quality, C4 (cleaned text passed on), FineWeb. A document "
            "is charged to the first rule that removes it.", "", OVERLAP_HEAD.format(what="chain"),
            "| removed by any rule | " + " | ".join(chain_overlap.row()) + " |"]
    order = list(RULES_ALONE)
    for rule in sorted(chain_rule, key=lambda r: (FILTERS.index(r.split(":")[0]), order.index(r) if r in order else 99)):
        out.append(f"| charged to {rule} | " + " | ".join(chain_rule[rule].row()) + " |")
    out += ["", "## Every disagreement, by class", "",
            "A class is a rule decided alone and the side that removes, or a pair of chain outcomes. Examples "
            "give the document (its position in the set), its source, winnow's score for the rule, and where "
            "winnow's tokens differ from spaCy's (blank: identical tokens).", ""]
    if not classes:
        out.append("None.")
    for key in sorted(classes, key=lambda k: (k[0] != "rule alone", -len(classes[k]), k)):
        cases = classes[key]
        out.append(f"- **{key[0]}: {key[1]}, {key[2]}**: {len(cases)} document{'s' * (len(cases) != 1)}")
        for i, source, value, diff in cases[:3]:
            v = "" if value is None else f", score {value:.4g}" if isinstance(value, float) else f", score {value}"
            out.append(f"  - document {i} ({source}{v})" + (f"; tokens: {diff}" if diff else ""))
    out += ["", "## Tokenizer and tables", "",
            f"winnow's `spacy_like` tokens equal spaCy's (as datatrove calls it) for {tok_same:,} of {len(docs):,} "
            "documents.", ""]
    out += compare_tables(tables)
    return out, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datatrove-python", default="/tmp/dtv/bin/python",
                   help="interpreter of a venv with datatrove==0.10.1, spacy and regex")
    p.add_argument("--per-source", type=int, default=1000, help="documents per source (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--all-score", action="store_true",
                   help="also time datatrove scoring every filter on every document, as winnow's stage does")
    p.add_argument("--no-timing", action="store_true", help="conformance only")
    p.add_argument("--reference-cache", type=Path,
                   help="keep datatrove's decisions in this file and reuse them when it exists (they take half an "
                        "hour; the file is tied to the documents by a hash)")
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    p.add_argument("--reference", nargs=2, type=Path, metavar=("DOCS", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--time-side", nargs=2, metavar=("SIDE", "DOCS"), help=argparse.SUPPRESS)
    p.add_argument("--time-parts", nargs=2, metavar=("SIDE", "DOCS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference:
        run_reference(*args.reference)
        return 0
    if args.time_side:
        print(json.dumps(time_side(args.time_side[0], Path(args.time_side[1]), args.all_score)))
        return 0
    if args.time_parts:
        print(json.dumps(time_parts(args.time_parts[0], Path(args.time_parts[1]))))
        return 0

    from experiments.benchmarks import emit
    from pipeline.errors import UsageError

    missing = [str(SHARED / rel) for _, rel, _ in SOURCES if not (SHARED / rel).is_file()]
    if missing:
        raise UsageError(f"the real data is not here: {', '.join(missing)} (see ../shared/data/README.md)")
    if not args.no_timing or not (args.reference_cache and args.reference_cache.exists()):
        if not Path(args.datatrove_python).is_file():
            raise UsageError(f"--datatrove-python {args.datatrove_python}: no such interpreter (make "
                             f"bench-heuristics makes one; or `python3 -m venv DIR && DIR/bin/pip install "
                             f"datatrove==0.10.1 spacy regex`)")

    t_start = time.time()
    docs = load_documents(args.per_source)
    texts = [t for _, t in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    counts = Counter(s for s, _ in docs)
    with tempfile.TemporaryDirectory() as tmp:
        docs_path, ref_path = Path(tmp) / "docs.jsonl", Path(tmp) / "reference.jsonl"
        with docs_path.open("w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        digest = hashlib.sha256(docs_path.read_bytes()).hexdigest()[:16]
        cache = args.reference_cache
        reused = bool(cache and cache.exists() and cache.with_suffix(".sha").read_text() == digest)
        if reused:
            print(f"reference decisions from {cache}", file=sys.stderr)
            shutil.copy(cache, ref_path)
            shutil.copy(cache.with_suffix(".tables.json"), ref_path.with_suffix(".tables.json"))
        else:
            print(f"reference decisions (datatrove, {len(docs):,} documents) ...", file=sys.stderr)
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
            subprocess.run([args.datatrove_python, "-m", "experiments.benchmarks.heuristics_conformance",
                            "--reference", str(docs_path), str(ref_path)], check=True, env=env,
                           cwd=Path(__file__).resolve().parents[2])
            if cache:
                shutil.copy(ref_path, cache)
                shutil.copy(ref_path.with_suffix(".tables.json"), cache.with_suffix(".tables.json"))
                cache.with_suffix(".sha").write_text(digest)
        reference = [json.loads(line) for line in ref_path.open(encoding="utf-8")]
        tables = json.loads(ref_path.with_suffix(".tables.json").read_text())
        print("winnow decisions ...", file=sys.stderr)
        body, stats = conformance(docs, reference, tables)
        join_lines = ngram_join_effect(texts, reference)
        timing, profile = [], []
        if not args.no_timing:
            web_path = Path(tmp) / "web.jsonl"
            with web_path.open("w", encoding="utf-8") as f:
                for s, t in docs:
                    if s == "web pages":
                        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
            pythons = {"datatrove": args.datatrove_python, "winnow": sys.executable}
            plan = [("all documents", docs_path, False), ("web pages", web_path, False)]
            if args.all_score:
                plan.append(("all documents, datatrove scoring every filter", docs_path, True))
            for label, path, all_score in plan:
                for r in range(args.rounds):
                    order = ("datatrove", "winnow") if r % 2 == 0 else ("winnow", "datatrove")
                    for side in order:
                        if all_score and side == "winnow":
                            continue
                        print(f"timing {label}, round {r + 1}, {side} ...", file=sys.stderr)
                        res = timed_side(pythons[side], side, path, all_score)
                        timing.append({"set": label, "round": r + 1, **res})
            print("where the time goes ...", file=sys.stderr)
            profile = [timed_side(pythons[side], side, docs_path, False, parts=True) for side in ("datatrove", "winnow")]
    elapsed = time.time() - t_start

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    venv_python = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    shown = ".venv/bin/python" if os.path.abspath(sys.executable) == str(venv_python) else sys.executable
    cmd = (f"PYTHONPATH=. {shown} -m experiments.benchmarks.heuristics_conformance --datatrove-python "
           f"{args.datatrove_python}" + (f" --per-source {args.per_source}" if args.per_source != 1000 else "")
           + (f" --rounds {args.rounds}" if args.rounds != 3 else "") + (" --all-score" if args.all_score else "")
           + (" --no-timing" if args.no_timing else "")
           + (f" --reference-cache {args.reference_cache}" if args.reference_cache else "")
           + (f" --out {args.out}" if args.out else ""))
    from filters.words import compiled

    timed_kernel = {t.get("compiled") for t in timing if t["side"] == "winnow"} if timing else {compiled()}
    kernel = ("compiled (filters/chunk_kernel.c)" if timed_kernel == {True} else "in Python (filters/chunk_kernel.c not built "
              "or WINNOW_COMPILED=0)" if timed_kernel == {False} else "compiled in some rounds only")
    chain = stats["chain"]
    worst = min((j for j in stats["rules"].values() if j is not None), default=None)
    versions = tables["versions"]
    out = ["# Heuristic filters: `recipe: fineweb` against datatrove's FineWeb filters", "",
           f"Command: `{cmd}`", "",
           f"Code: winnow {commit}{' (uncommitted changes)' if dirty else ''}; datatrove {versions['datatrove']}, "
           f"spaCy {versions['spacy']} (venv: `pip install datatrove==0.10.1 spacy regex`); interpreters: winnow "
           f"{interpreter(sys.executable)}, datatrove {interpreter(args.datatrove_python)}; winnow's chunk table "
           f"{kernel}; {os.cpu_count()} cores; "
           f"run took {elapsed / 60:.0f} min"
           + (f" (datatrove's decisions read from {args.reference_cache}, written by an earlier run of this command "
              f"on the same documents, sha256 {digest}...)" if reused else "") + ".", "",
           f"Documents: {len(docs):,} (" + ", ".join(f"{s} {n:,}" for s, n in counts.items())
           + f"), {mb:.1f} MB of UTF-8 text; web pages are resiliparse's text, as winnow ingests them.", "",
           "## Summary", "",
           f"- Whole chain: {100 * (chain.both + chain.neither) / chain.n:.2f}% agreement; removed sets overlap "
           f"{chain.jaccard:.4f} (Jaccard); datatrove removes {chain.both + chain.only_dt:,}, winnow "
           f"{chain.both + chain.only_wn:,}.",
           f"- Each rule alone: lowest removed-set overlap {worst:.4f}" if worst is not None else "- (no rule removes)",
           ""]
    if timing:
        out += speed_section(timing) + parts_section(profile)
    out += body
    out += ["", "## datatrove's glued n-grams", "",
            "datatrove's duplicated-n-gram rules compare n-grams as their words glued together without a "
            "separator, so distinct n-grams can be taken for repeats. winnow compares word sequences "
            "(`dup_ngram_join: space`, the recipe's setting); `dup_ngram_join: none` reproduces datatrove.", ""]
    out += join_lines
    emit("\n".join(out) + "\n", args.out)
    return 0


def parts_section(profile: list[dict]) -> list[str]:
    out = ["Where the time goes (CPU seconds, all documents, one fresh process per side; a profile, not part of the "
           "race above):", "", "| side | part | CPU s | share |", "|---|---|---:|---:|"]
    for p in profile:
        total = sum(v for k, v in p["parts"].items() if "alone" not in k)
        for k, v in p["parts"].items():
            share = "" if "alone" in k else f"{100 * v / total:.0f}%"
            out.append(f"| {p['side']} | {k} | {v:.2f} | {share} |")
    return out + [""]


def speed_section(timing: list[dict]) -> list[str]:
    from statistics import median

    out = ["## Speed (CPU seconds, fresh single-threaded processes, interleaved rounds)", "",
           "CPU seconds of the filtering loop in a fresh process per side and round (the first side alternates); "
           "MB/s per core = MB of text / CPU seconds. Wall time and the 1-minute load average when each process "
           "started are given beside (on a shared machine CPU seconds rise with the load too: run it idle). "
           "datatrove runs FineWeb's chain as FineWeb ran "
           "it (a document stops at the first filter that removes it); winnow runs it as its filter stage does "
           "(every filter scores every document, then decisions in order). Each process first sends one short "
           "page through its chain outside the clock (set-up: datatrove loads spaCy's tokenizer, winnow's pyarrow "
           "imports pandas on its first array), so MB/s is the cost per MB of text; the set-up, paid once per "
           "process, is in its own column. `machine check s`: CPU seconds of the same fixed pure-Python workload "
           "timed in each process before its run; it varies only with the machine's own speed at that moment "
           "(on this VM it drifts by a third over tens of minutes at the same load), so rounds can be read "
           "against it.", "",
           "| set | round | side | CPU s | MB/s per core | wall s | load | set-up CPU s | machine check s |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for t in timing:
        out.append(f"| {t['set']} | {t['round']} | {t['side']} | {t['cpu_s']:.2f} | {t['mb'] / t['cpu_s']:.2f} | "
                   f"{t['wall_s']:.2f} | {t['load']:.1f} | {t.get('setup_cpu_s', float('nan')):.2f} | "
                   f"{t.get('machine_check_s', float('nan')):.2f} |")
    out += ["", "| set | MB | datatrove MB/s per core (median) | winnow MB/s per core (median) | winnow / datatrove "
            "(median of rounds) |", "|---|---:|---:|---:|---:|"]
    sets = list(dict.fromkeys(t["set"] for t in timing))
    winnow_all = {t["round"]: t for t in timing if t["set"] == "all documents" and t["side"] == "winnow"}
    for s in sets:
        dt = {t["round"]: t for t in timing if t["set"] == s and t["side"] == "datatrove"}
        wn = {t["round"]: t for t in timing if t["set"] == s and t["side"] == "winnow"} or winnow_all
        rounds = sorted(set(dt) & set(wn))
        if not rounds:
            continue
        mb = dt[rounds[0]]["mb"]
        ratio = median(dt[r]["cpu_s"] / wn[r]["cpu_s"] for r in rounds)
        out.append(f"| {s} | {mb:.1f} | {median(mb / dt[r]['cpu_s'] for r in rounds):.2f} | "
                   f"{median(mb / wn[r]['cpu_s'] for r in rounds):.2f} | {ratio:.1f}x |")
    return out + [""]


if __name__ == "__main__":
    try:  # datatrove's own venv runs this module too (its timing and decision sides), without winnow's dependencies
        from pipeline.errors import run_guarded
    except ImportError:
        raise SystemExit(main())
    raise SystemExit(run_guarded(main, prog="heuristics_conformance"))
