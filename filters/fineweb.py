"""FineWeb's custom heuristic filters (Penedo et al. 2024, "The FineWeb Datasets:
Decanting the Web for the Finest Text Data at Scale", Section 3.5).

The paper adds three rules on top of C4 and Gopher, chosen because each one
removed more low-quality than high-quality tokens in its ablations:

* ``line_punct``: remove if the fraction of lines ending in punctuation is below 0.12;
* ``dup_line_chars``: remove if the fraction of characters in duplicated lines is above 0.1;
* ``short_lines``: remove if the fraction of lines of at most 30 characters is above 0.67.

``list_like`` (newlines per word > 0.3) is from FineWeb's released filter in
datatrove (``FineWebQualityFilter(new_line_ratio=0.3)``), not from the paper.

Measured as that released filter measures (checked rule by rule by
``experiments/benchmarks/heuristics_conformance.py``): lines are the non-blank
lines, not stripped, so a line ending in "." followed by a space does not end in
punctuation; punctuation means a sentence-terminal character (Unicode
Sentence_Terminal: . ! ? 。 ।  ...), not a quote or a bracket; duplicated-line
characters are over the text without its newlines; words for ``list_like`` are
spaCy-style tokens (``tokenizer``). One deliberate difference: datatrove's
default for duplicated-line characters is 0.01; we keep the paper's 0.1, and
``max_dup_line_char_frac: 0.01`` gives datatrove's.
"""

from __future__ import annotations

import regex

from filters.base import Filter
from filters.gopher import duplicate_stats
from filters.words import TOKENIZERS, words as tokenize

#: A line "ends in punctuation" when its last character is sentence-terminal (Unicode Sentence_Terminal).
_ENDS_IN_PUNCTUATION = regex.compile(r"\p{Sentence_Terminal}$")


class FineWeb(Filter):
    """FineWeb custom rules: line punctuation, duplicated-line characters, short lines, list-like pages."""

    name = "fineweb"
    columns = {
        "fineweb_line_punct_frac": "float",
        "fineweb_dup_line_char_frac": "float",
        "fineweb_short_line_frac": "float",
        "fineweb_newline_word_ratio": "float",
    }
    defaults = {
        "short_line_length": 30,          # scoring: a line is short at this many characters or fewer
        "tokenizer": "spacy_like",        # scoring: words for list_like, "spacy_like" (as datatrove) or "whitespace"
        "min_line_punct_frac": 0.12,      # remove if below, Penedo et al. 2024
        "max_dup_line_char_frac": 0.1,    # remove if above, Penedo et al. 2024 (datatrove default 0.01)
        "max_short_line_frac": 0.67,      # remove if above, Penedo et al. 2024
        "max_newline_word_ratio": 0.3,    # remove if above, datatrove FineWebQualityFilter
    }
    decision_params = ("min_line_punct_frac", "max_dup_line_char_frac", "max_short_line_frac",
                       "max_newline_word_ratio")

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["tokenizer"] not in TOKENIZERS:
            raise ValueError(f"fineweb: unknown tokenizer {self.params['tokenizer']!r}; "
                             f"choose one of {', '.join(TOKENIZERS)}")

    def score(self, doc) -> dict:
        text = doc.text
        lines = [ln for ln in text.split("\n") if ln.strip()]
        n_lines = max(len(lines), 1)
        _, dup_chars = duplicate_stats(lines)
        newlines = text.count("\n")
        # list_like needs the word count only when there are newlines; skip tokenising otherwise
        words = len(tokenize(text, self.params["tokenizer"])) if newlines else 0
        short = self.params["short_line_length"]
        return {
            "fineweb_line_punct_frac": sum(1 for ln in lines if _ENDS_IN_PUNCTUATION.search(ln)) / n_lines,
            "fineweb_dup_line_char_frac": dup_chars / max(len(text) - newlines, 1),
            "fineweb_short_line_frac": sum(len(ln) <= short for ln in lines) / n_lines,
            "fineweb_newline_word_ratio": newlines / max(words, 1),
        }

    def decide(self, s: dict):
        p = self.params
        if s["fineweb_line_punct_frac"] < p["min_line_punct_frac"]:
            return False, "line_punct", f"{s['fineweb_line_punct_frac']:.3f}"
        if s["fineweb_dup_line_char_frac"] > p["max_dup_line_char_frac"]:
            return False, "dup_line_chars", f"{s['fineweb_dup_line_char_frac']:.3f}"
        if s["fineweb_short_line_frac"] > p["max_short_line_frac"]:
            return False, "short_lines", f"{s['fineweb_short_line_frac']:.3f}"
        if s["fineweb_newline_word_ratio"] > p["max_newline_word_ratio"]:
            return False, "list_like", f"{s['fineweb_newline_word_ratio']:.3f}"
        return True
