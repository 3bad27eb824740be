"""Gopher's quality and repetition rules (Rae et al. 2021, "Scaling Language
Models: Methods, Analysis & Insights from Training Gopher", Appendix A.1.1 and
Table A1). Every default below is the paper's number.

Each rule writes its own score column and removes with its own reason
(``gopher_quality:word_count``, ``gopher_repetition:dup_line_frac``, ...), so
removal rates per rule can be read off a run and any threshold changed with
``winnow select``.

Words are whitespace-separated tokens, as in the paper; the quality rules strip
punctuation from the ends of each token first, so that "end." and "end" are
the same word and a lone "-" is not a word.
"""
from __future__ import annotations

import re
import string
from collections import Counter

from filters.base import Filter, register_filter

#: Gopher's stop-word rule: a document must contain at least two of these (Rae et al. 2021, A.1.1).
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})

#: Characters that start a bulleted line.
BULLETS = ("•", "‣", "◦", "●", "○", "▪", "▫", "■", "□", "–", "—", "-", "*", "·", "►", "➢", "✓", "✔")

_PUNCT = string.punctuation + "“”‘’«»„…–—·•"
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def split_lines(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


def split_paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, stripped."""
    return [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


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


def top_ngram_char_frac(words: list[str], n: int) -> float:
    """Share of word characters taken by all occurrences of the most frequent word n-gram.

    Zero when no n-gram occurs twice: a unique n-gram is not repetition.
    """
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, sum(len(w) for w in gram) * count / total)


def dup_ngram_char_frac(words: list[str], n: int) -> float:
    """Share of word characters inside word n-grams that occur more than once.

    A word covered by several repeated n-grams counts once, so the share never
    exceeds 1 however long the repetition.
    """
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    grams = list(zip(*(words[i:] for i in range(n))))
    counts = Counter(grams)
    covered = bytearray(len(words))
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = b"\x01" * n
    return sum(len(w) for w, c in zip(words, covered) if c) / total


def quality_words(text: str) -> list[str]:
    """Whitespace tokens with surrounding punctuation stripped; pure punctuation dropped."""
    return [w for w in (t.strip(_PUNCT) for t in text.split()) if w]


@register_filter
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
        "min_words": 50,
        "max_words": 100_000,
        "min_mean_word_length": 3.0,
        "max_mean_word_length": 10.0,
        "max_symbol_word_ratio": 0.1,   # '#' and ellipses per word
        "max_bullet_line_frac": 0.9,    # lines starting with a bullet
        "max_ellipsis_line_frac": 0.3,  # lines ending with an ellipsis
        "min_alpha_word_frac": 0.8,     # words with at least one letter
        "min_stop_words": 2,            # distinct words from GOPHER_STOP_WORDS
    }
    decision_params = tuple(defaults)

    def score(self, doc) -> dict:
        text = doc.text
        tokens = text.split()
        words = quality_words(text)
        lines = split_lines(text)
        n_lines = max(len(lines), 1)
        symbols = text.count("#") + text.count("...") + text.count("…")
        return {
            "gopher_word_count": len(words),
            "gopher_mean_word_length": sum(map(len, words)) / len(words) if words else 0.0,
            "gopher_symbol_word_ratio": symbols / len(words) if words else 0.0,
            "gopher_bullet_line_frac": sum(ln.startswith(BULLETS) for ln in lines) / n_lines,
            "gopher_ellipsis_line_frac": sum(ln.endswith(("...", "…")) for ln in lines) / n_lines,
            "gopher_alpha_word_frac": (sum(any(c.isalpha() for c in t) for t in tokens) / len(tokens)
                                       if tokens else 0.0),
            "gopher_stop_word_count": len(GOPHER_STOP_WORDS.intersection(w.lower() for w in words)),
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


@register_filter
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
        "max_dup_line_frac": 0.30,
        "max_dup_para_frac": 0.30,
        "max_dup_line_char_frac": 0.20,
        "max_dup_para_char_frac": 0.20,
        **{f"max_top_{n}gram_frac": v for n, v in TOP_NGRAM_MAX.items()},
        **{f"max_dup_{n}gram_frac": v for n, v in DUP_NGRAM_MAX.items()},
    }
    decision_params = tuple(defaults)

    def score(self, doc) -> dict:
        text = doc.text
        chars = max(len(text), 1)
        lines, paras = split_lines(text), split_paragraphs(text)
        dup_lines, dup_line_chars = duplicate_stats(lines)
        dup_paras, dup_para_chars = duplicate_stats(paras)
        words = text.split()
        out = {
            "gopher_dup_line_frac": dup_lines / len(lines) if lines else 0.0,
            "gopher_dup_para_frac": dup_paras / len(paras) if paras else 0.0,
            "gopher_dup_line_char_frac": dup_line_chars / chars,
            "gopher_dup_para_char_frac": dup_para_chars / chars,
        }
        for n in TOP_NGRAM_MAX:
            out[f"gopher_top_{n}gram_frac"] = top_ngram_char_frac(words, n)
        frac = 1.0
        for n in DUP_NGRAM_MAX:  # a repeated (n+1)-gram contains a repeated n-gram: stop at the first zero
            frac = dup_ngram_char_frac(words, n) if frac > 0 else 0.0
            out[f"gopher_dup_{n}gram_frac"] = frac
        return out

    def decide(self, s: dict):
        p = self.params
        for what in ("line", "para"):
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
