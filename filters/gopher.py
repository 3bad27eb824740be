"""Gopher's quality and repetition rules (Rae et al. 2021, "Scaling Language
Models: Methods, Analysis & Insights from Training Gopher", Appendix A.1.1 and
Table A1). Every default threshold below is the paper's number.

Gopher's own code is not public; the paper states each rule in a sentence, and
how they are measured is taken from the implementation the field runs,
datatrove 0.10.1's ``GopherQualityFilter`` and ``GopherRepetitionFilter`` (the
ones that made FineWeb), re-implemented from their behaviour and checked rule
by rule on real documents by ``experiments/benchmarks/heuristics_conformance.py``:

* words are spaCy tokens (``tokenizer: spacy_like``, see filters/words.py),
  so punctuation marks are words; the word-count and mean-length rules count
  only tokens with a character outside datatrove's punctuation set;
* the "#" and ellipsis ratios are per token and checked separately (the score
  column holds the larger of the two);
* lines for the bullet and ellipsis rules are all lines, blank ones included;
  bullets are "•" and "-";
* stop words: one deliberate difference in the default. datatrove matches
  them case-sensitively ("The" is not "the"); winnow lower-cases first, since
  the paper lists words, not spellings, and a sentence-initial "The" is the
  word "the" (on the demo's synthetic web, datatrove's matching removes twice
  as many clean pages). ``case_sensitive_stop_words: true`` gives datatrove's
  rule, and ``recipe: fineweb`` and ``recipe: gopher`` set it;
* repetition fractions are over all characters of the text; duplicate
  paragraphs are blocks split at two or more newlines, duplicate lines are split
  at runs of newlines, neither stripped;
* the top n-gram's characters count its words and the spaces between them, and
  count even when it occurs once (ties: the n-gram seen first); duplicated
  n-gram characters are counted left to right, skipping past each repeat, so
  overlapping repeats count once.

Another difference, kept in every setting: datatrove compares the n-grams of the
duplicated-n-gram rules as their words glued together without a separator, so
distinct n-grams can collide ("ab c" and "a bc"); winnow compares word
sequences. ``dup_ngram_join: none`` reproduces datatrove's comparison (slower:
it builds every n-gram's string); the benchmark counts the documents on which
the two differ.

``tokenizer: whitespace`` gives the paper's literal whitespace words instead.
Each rule writes its own score column and removes with its own reason
(``gopher_quality:word_count``, ``gopher_repetition:dup_line_frac``, ...).
"""
from __future__ import annotations

import re
from bisect import bisect_right
from itertools import groupby

import numpy as np
import regex

from filters.base import Filter
from filters.words import TOKENIZERS, doc_tokens, doc_tokens_batch
from pipeline.params import one_of

#: Gopher's stop-word rule: a document must contain at least two of these (Rae et al. 2021, A.1.1).
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
#: How the duplicated-n-gram rules compare n-grams: as word sequences, or glued without a separator (datatrove).
NGRAM_JOINS = ("space", "none")

#: Characters that start a bulleted line.
BULLETS = ("•", "-")

#: Line boundaries of ``str.splitlines``, and whitespace inside a line.
_EOL = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_BLANK = "[" + regex.escape("".join(c for c in map(chr, range(0x3001)) if c.isspace() and c not in _EOL)) + "]"
#: A line whose first non-blank character is a bullet; a line whose last non-blank characters are an ellipsis.
_BULLET_LINE = regex.compile(rf"(?<=(?:^|[{_EOL}]){_BLANK}*)[{''.join(BULLETS)}]")
_ELLIPSIS_LINE = re.compile(rf"(?:\.\.\.|…){_BLANK}*(?=[{_EOL}]|\Z)")


def bullet_lines(text: str, lines: list[str] | None = None) -> int:
    """Lines whose first character that is not a blank is a bullet (``lines``: ``text.splitlines()``, if the
    caller has them). The lines ``str.splitlines`` makes are those of :data:`_BULLET_LINE`: split at the same
    breaks, and ``str.lstrip`` strips exactly the blanks (every other whitespace character is a break)."""
    if not any(b in text for b in BULLETS):
        return 0
    return sum(1 for ln in (text.splitlines() if lines is None else lines) if ln.lstrip()[:1] in BULLETS)


def split_lines(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


def split_paragraphs(text: str) -> list[str]:
    """Blocks separated by two or more newlines (text stripped first, blocks not): the runs of non-empty lines
    (``re.split(r"\n{2,}", ...)``, without a regular expression scanning every character)."""
    text = text.strip()
    if "\n\n" not in text:
        return [text]
    return ["\n".join(block) for nonempty, block in groupby(text.split("\n"), bool) if nonempty]


def split_line_runs(text: str) -> list[str]:
    """The text split at runs of newlines (``re.split(r"\n+", text)``: an empty first or last item where the
    text starts or ends with one)."""
    lines = text.split("\n")
    if "\n\n" not in text:
        return lines
    return [lines[0], *filter(None, lines[1:-1]), lines[-1]]


def duplicate_stats(items: list[str]) -> tuple[int, int]:
    """(number of items, characters in items) that repeat an earlier item.

    The first occurrence is not counted, so a document made of one line repeated
    three times has two duplicate lines out of three.
    """
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for it in items:
        if it in seen:
            dup_items += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup_items, dup_chars


def ngram_repetition(words, text_len: int, top_ns, dup_ns, dup_join: str = "space") -> dict[int, float]:
    """n -> repetition fraction of ``text_len`` for the word n-grams of ``words`` (one document; see
    :func:`ngram_repetition_batch`). ``words`` is a :class:`filters.words.DocTokens` or a list of strings."""
    return ngram_repetition_batch([(words, text_len)], top_ns, dup_ns, dup_join)[0]


def ngram_repetition_batch(docs, top_ns, dup_ns, dup_join: str = "space") -> list[dict[int, float]]:
    """For each ``(words, text_len)``: n -> repetition fraction of ``text_len`` for the word n-grams.

    For n in ``top_ns``: characters of the most frequent n-gram (words plus the
    spaces between them) times its count (ties: the first to occur). For n in
    ``dup_ns``: characters of the words in repeated n-grams, scanning left to
    right and skipping past each repeat. ``dup_join="none"`` compares those
    n-grams as their words glued together, as datatrove does.

    No n-gram string is built: an n-gram's code comes from its (n-1)-gram's code
    and the next word's id, and only positions whose (n-1)-gram repeats can
    start a repeated n-gram, so each length looks at fewer positions than the one
    before; once none is left, no longer n-gram repeats. The documents of a
    batch are coded together (a document's id is part of its unigrams' codes),
    so each n costs one sort for the whole batch. Batches are cut at about
    :data:`NGRAM_BATCH_TOKENS` words: small arrays sort in cache and reuse the
    process's memory (one array per word of a whole shard costs more in fresh
    pages than in arithmetic).
    """
    out: list[dict[int, float]] = []
    group: list = []
    size = 0
    for words, text_len in docs:
        group.append((words, text_len))
        size += len(words) if isinstance(words, list) else len(words.ids)
        if size >= NGRAM_BATCH_TOKENS:
            out += _ngram_repetition_group(group, top_ns, dup_ns, dup_join)
            group, size = [], 0
    return out + _ngram_repetition_group(group, top_ns, dup_ns, dup_join) if group else out


#: Words per batch of :func:`ngram_repetition_batch` (measured: 60k-250k words all run at the same speed).
NGRAM_BATCH_TOKENS = 100_000


def _ngram_repetition_group(docs, top_ns, dup_ns, dup_join: str) -> list[dict[int, float]]:
    """:func:`ngram_repetition_batch` for one batch of documents."""
    ns = (*top_ns, *dup_ns)
    outs = [{n: 0.0 for n in ns} for _ in docs]
    items = []
    for k, (words, text_len) in enumerate(docs):
        if isinstance(words, list):
            index: dict[str, int] = {}
            ids = np.fromiter((index.setdefault(w, len(index)) for w in words), np.int64, len(words))
            lengths, strings = np.fromiter(map(len, words), np.int64, len(words)), words
        else:
            ids, lengths, strings = words.ids, words.lengths(), words
        if len(ids) and text_len > 0:
            items.append((k, ids, lengths, text_len, strings))
    if not items:
        return outs
    sizes = np.array([len(it[1]) for it in items])
    ends = np.cumsum(sizes)
    starts = ends - sizes
    ids = np.concatenate([it[1] for it in items])
    cum = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.concatenate([it[2] for it in items]), out=cum[1:])
    doc_of = np.repeat(np.arange(len(items)), sizes)
    text_len = np.array([it[3] for it in items], dtype=np.float64)
    width = int(ids.max()) + 1  # an n-gram's key: its (n-1)-gram's code * width + the next word's id
    pos, key = np.arange(len(ids)), doc_of * width + ids  # positions that may start a repeated n-gram
    min_n, max_top = min(ns), max(top_ns, default=0)
    room = ends[doc_of] - np.arange(len(ids))  # words from each position to the end of its document
    first_n = 1
    if min_n >= 2 and len(items) * width * width < 2 ** 62:  # start at bigrams: every unigram is a candidate
        first_n = 2
        pos = np.flatnonzero(room >= 2)
        key = key[pos] * width + ids[pos + 1]
    for n in range(first_n, max(ns) + 1):
        if n > first_n:
            keep = room[pos] >= n  # the n-gram lies inside its document
            pos = pos[keep]
            key = code[keep] * width + ids[pos + n - 1]
        if not pos.size:
            code = counts = np.zeros(0, np.int64)
        else:
            _, code, counts = np.unique(key, return_inverse=True, return_counts=True)
        code = code.reshape(-1)
        repeats = counts[code] > 1
        if n >= min_n:  # where each repeated n-gram first occurs (positions are ascending)
            first_pos = np.full(len(counts), len(ids), np.int64)
            np.minimum.at(first_pos, code[repeats], pos[repeats])
        if n in top_ns:
            fits = sizes >= n
            top = np.ones(len(items), np.int64)
            at = starts.copy()  # no repeat: the first n-gram, once
            if counts.size and counts.max() > 1:
                many = np.flatnonzero(counts > 1)
                c_first = first_pos[many]
                c_doc, c_count = doc_of[c_first], counts[many]
                order = np.lexsort((c_first, -c_count, c_doc))  # per document: most frequent, then first seen
                docs_in, head = np.unique(c_doc[order], return_index=True)
                top[docs_in], at[docs_in] = c_count[order][head], c_first[order][head]
            f = np.flatnonzero(fits)
            value = (cum[at[f] + n] - cum[at[f]] + n - 1) * top[f] / text_len[f]
            for j, v in zip(f.tolist(), value.tolist()):
                outs[items[j][0]][n] = v
        if n in dup_ns and dup_join == "none":
            for j, (k, _, _, tl, strings) in enumerate(items):
                if sizes[j] >= n:
                    words = strings if isinstance(strings, list) else strings.strings()
                    g_pos, g_code, g_first = _glued_codes(words, n)
                    local = cum[starts[j]:ends[j] + 1] - cum[starts[j]]
                    outs[k][n] = greedy_duplicate_chars(g_pos, g_code, g_first[g_code], local, n) / tl
        elif n in dup_ns and repeats.any():  # every document's scan at once (codes are per document)
            r_pos, r_code = pos[repeats], code[repeats]
            at = greedy_duplicate_positions(r_pos, r_code, first_pos[r_code], n)
            chars = np.zeros(len(items), np.int64)
            np.add.at(chars, doc_of[at], cum[at + n] - cum[at])
            for j in np.flatnonzero(chars).tolist():
                outs[items[j][0]][n] = int(chars[j]) / items[j][3]
        pos, code = pos[repeats], code[repeats]
        if not pos.size and n >= max_top and dup_join == "space":
            break
    return outs


def _glued_codes(words: list[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, codes, first position of each code) of the strings of n consecutive words glued together."""
    seen: dict[str, int] = {}
    first: list[int] = []
    codes = []
    for i in range(len(words) - n + 1):
        g = "".join(words[i:i + n])
        c = seen.get(g)
        if c is None:
            c = seen[g] = len(first)
            first.append(i)
        codes.append(c)
    return np.arange(len(codes)), np.array(codes, np.int64), np.array(first, np.int64)


def greedy_duplicate_chars(pos: np.ndarray, code: np.ndarray, first: np.ndarray, cum: np.ndarray, n: int) -> int:
    """Characters in repeated n-grams (see :func:`greedy_duplicate_positions`); ``cum``: cumulative word lengths."""
    at = greedy_duplicate_positions(pos, code, first, n)
    return int((cum[at + n] - cum[at]).sum())


def greedy_duplicate_positions(pos: np.ndarray, code: np.ndarray, first: np.ndarray, n: int) -> np.ndarray:
    """Where the repeats counted as duplicated n-grams start: scan left to right; a repeat of an n-gram seen so
    far counts and is skipped past (the next n - 1 positions are not looked at).

    ``pos`` (ascending) and ``code`` give the positions of n-grams that occur
    more than once and their codes (positions of other n-grams may be left
    out: they are never repeats), ``first`` where each of them first occurs.
    Only positions after a code's first occurrence are looked at; an n-gram
    counts as seen if an earlier occurrence was scanned, i.e. not inside a
    skipped window. The scan jumps from a counted repeat straight to the next
    candidate past its window, so skipped positions cost nothing; several
    documents can be scanned in one call (codes and windows never cross one).
    """
    later = first < pos
    cand = pos[later]
    if not cand.size:
        return cand
    after = np.searchsorted(cand, cand + n).tolist()  # the next candidate past a counted repeat's window
    js, gs, fs = cand.tolist(), code[later].tolist(), first[later].tolist()
    seen: set[int] = set()   # codes of repeat positions scanned so far
    skips: list[int] = []    # repeat positions counted; each skips the n - 1 positions after it
    i, m = 0, len(js)
    while i < m:
        g = gs[i]
        if g in seen:
            was_seen = True
        else:  # its first occurrence was scanned unless it lies in a skipped window (w, w + n)
            f = fs[i]
            k = bisect_right(skips, f - 1)
            was_seen = not (k and skips[k - 1] > f - n)
            seen.add(g)
        if was_seen:
            skips.append(js[i])
            i = after[i]
        else:
            i += 1
    return np.array(skips, dtype=np.int64)


class GopherQuality(Filter):
    """Gopher quality rules: length, word length, symbols, bullets, ellipses, alphabetic and stop words."""

    name = "gopher_quality"
    columns = {
        "gopher_word_count": "int",
        "gopher_mean_word_length": "float",
        "gopher_symbol_word_ratio": "float",
        "gopher_bullet_line_frac": "float",
        "gopher_ellipsis_line_frac": "float",
        "gopher_alpha_word_frac": "float",
        "gopher_stop_word_count": "int",
    }
    # All thresholds from Rae et al. 2021, Appendix A.1.1.
    defaults = {
        "tokenizer": "spacy_like",      # scoring: "spacy_like" (as datatrove) or "whitespace"
        "case_sensitive_stop_words": False,  # scoring: lower-case first; True as datatrove ("The" is not "the")
        "min_words": 50,
        "max_words": 100_000,
        "min_mean_word_length": 3.0,
        "max_mean_word_length": 10.0,
        "max_symbol_word_ratio": 0.1,   # '#' per word, and ellipses per word
        "max_bullet_line_frac": 0.9,    # lines starting with a bullet
        "max_ellipsis_line_frac": 0.3,  # lines ending with an ellipsis
        "min_alpha_word_frac": 0.8,     # words with at least one letter
        "min_stop_words": 2,            # distinct words from GOPHER_STOP_WORDS
    }
    decision_params = tuple(k for k in defaults if k not in ("tokenizer", "case_sensitive_stop_words"))

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["tokenizer"] not in TOKENIZERS:
            raise ValueError(f"gopher_quality: unknown tokenizer {self.params['tokenizer']!r}; "
                             f"choose one of {', '.join(TOKENIZERS)}")

    def score_batch(self, docs) -> list[dict]:
        doc_tokens_batch([d.text for d in docs], self.params["tokenizer"])  # tokenised together, then looked up
        return [self.score(d) for d in docs]

    def score(self, doc) -> dict:
        text = doc.text
        tokens = doc_tokens(text, self.params["tokenizer"])
        n_tokens, n_words, word_chars, alpha = len(tokens.ids), tokens.n_words, tokens.word_chars, tokens.n_alpha
        lines = text.splitlines()
        n_lines = max(len(lines), 1)
        hashes = text.count("#")
        ellipses = text.count("...") + text.count("…")
        return {
            "gopher_word_count": n_words,
            "gopher_mean_word_length": word_chars / n_words if n_words else 0.0,
            "gopher_symbol_word_ratio": max(hashes, ellipses) / n_tokens if n_tokens else 0.0,
            "gopher_bullet_line_frac": bullet_lines(text, lines) / n_lines,
            "gopher_ellipsis_line_frac": (len(_ELLIPSIS_LINE.findall(text)) / n_lines
                                          if "..." in text or "…" in text else 0.0),
            "gopher_alpha_word_frac": alpha / n_tokens if n_tokens else 0.0,
            "gopher_stop_word_count": tokens.stop_words(self.params["case_sensitive_stop_words"]),
        }

    def decide(self, s: dict):
        p = self.params
        n = s["gopher_word_count"]
        if not p["min_words"] <= n <= p["max_words"]:
            return False, "word_count", f"{n} words"
        mwl = s["gopher_mean_word_length"]
        if not p["min_mean_word_length"] <= mwl <= p["max_mean_word_length"]:
            return False, "mean_word_length", f"{mwl:.2f}"
        checks = (
            ("symbol_word_ratio", s["gopher_symbol_word_ratio"] > p["max_symbol_word_ratio"], s["gopher_symbol_word_ratio"]),
            ("bullet_lines", s["gopher_bullet_line_frac"] > p["max_bullet_line_frac"], s["gopher_bullet_line_frac"]),
            ("ellipsis_lines", s["gopher_ellipsis_line_frac"] > p["max_ellipsis_line_frac"], s["gopher_ellipsis_line_frac"]),
            ("alpha_words", s["gopher_alpha_word_frac"] < p["min_alpha_word_frac"], s["gopher_alpha_word_frac"]),
            ("stop_words", s["gopher_stop_word_count"] < p["min_stop_words"], s["gopher_stop_word_count"]),
        )
        for rule, failed, value in checks:
            if failed:
                return False, rule, f"{value:.3g}"
        return True


#: n -> maximum share of characters in the most frequent n-gram (Rae et al. 2021, Table A1).
TOP_NGRAM_MAX = {2: 0.20, 3: 0.18, 4: 0.16}
#: n -> maximum share of characters in repeated n-grams (Rae et al. 2021, Table A1).
DUP_NGRAM_MAX = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class GopherRepetition(Filter):
    """Gopher repetition rules: duplicate lines/paragraphs and repeated n-grams."""

    name = "gopher_repetition"
    columns = {
        "gopher_dup_line_frac": "float",
        "gopher_dup_para_frac": "float",
        "gopher_dup_line_char_frac": "float",
        "gopher_dup_para_char_frac": "float",
        **{f"gopher_top_{n}gram_frac": "float" for n in TOP_NGRAM_MAX},
        **{f"gopher_dup_{n}gram_frac": "float" for n in DUP_NGRAM_MAX},
    }
    # All thresholds from Rae et al. 2021, Table A1.
    defaults = {
        "tokenizer": "spacy_like",  # scoring: "spacy_like" (as datatrove) or "whitespace"
        "dup_ngram_join": "space",  # scoring: duplicated n-grams compared as word sequences; "none" as datatrove
        "max_dup_line_frac": 0.30,
        "max_dup_para_frac": 0.30,
        "max_dup_line_char_frac": 0.20,
        "max_dup_para_char_frac": 0.20,
        **{f"max_top_{n}gram_frac": v for n, v in TOP_NGRAM_MAX.items()},
        **{f"max_dup_{n}gram_frac": v for n, v in DUP_NGRAM_MAX.items()},
    }
    decision_params = tuple(k for k in defaults if k not in ("tokenizer", "dup_ngram_join"))
    checks = {"dup_ngram_join": one_of(*NGRAM_JOINS)}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["tokenizer"] not in TOKENIZERS:
            raise ValueError(f"gopher_repetition: unknown tokenizer {self.params['tokenizer']!r}; "
                             f"choose one of {', '.join(TOKENIZERS)}")

    def score(self, doc) -> dict:
        return self.score_batch([doc])[0]

    def score_batch(self, docs) -> list[dict]:
        """Line and paragraph repeats per document; n-grams of the whole batch at once."""
        outs = []
        for doc in docs:
            text = doc.text
            chars = max(len(text), 1)
            paras = split_paragraphs(text)
            lines = split_line_runs(text)
            dup_paras, dup_para_chars = duplicate_stats(paras)
            dup_lines, dup_line_chars = duplicate_stats(lines)
            outs.append({
                "gopher_dup_line_frac": dup_lines / len(lines),
                "gopher_dup_para_frac": dup_paras / len(paras),
                "gopher_dup_line_char_frac": dup_line_chars / chars,
                "gopher_dup_para_char_frac": dup_para_chars / chars,
            })
        texts = [d.text for d in docs]
        tokens = doc_tokens_batch(texts, self.params["tokenizer"])
        fracs = ngram_repetition_batch([(t, len(text)) for t, text in zip(tokens, texts)],
                                       tuple(TOP_NGRAM_MAX), tuple(DUP_NGRAM_MAX), self.params["dup_ngram_join"])
        for out, f in zip(outs, fracs):
            for n in TOP_NGRAM_MAX:
                out[f"gopher_top_{n}gram_frac"] = f[n]
            for n in DUP_NGRAM_MAX:
                out[f"gopher_dup_{n}gram_frac"] = f[n]
        return outs

    def decide(self, s: dict):
        p = self.params
        for what in ("para", "line"):
            for suffix in ("frac", "char_frac"):
                rule = f"dup_{what}_{suffix}"
                if s[f"gopher_{rule}"] > p[f"max_{rule}"]:
                    return False, rule, f"{s[f'gopher_{rule}']:.3f}"
        for n in TOP_NGRAM_MAX:
            if s[f"gopher_top_{n}gram_frac"] > p[f"max_top_{n}gram_frac"]:
                return False, f"top_{n}gram", f"{s[f'gopher_top_{n}gram_frac']:.3f}"
        for n in DUP_NGRAM_MAX:
            if s[f"gopher_dup_{n}gram_frac"] > p[f"max_dup_{n}gram_frac"]:
                return False, f"dup_{n}gram", f"{s[f'gopher_dup_{n}gram_frac']:.3f}"
        return True
