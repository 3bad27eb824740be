"""FineWeb's custom heuristic filters (Penedo et al. 2024, "The FineWeb Datasets:
Decanting the Web for the Finest Text Data at Scale", Section 3.5).

The paper adds three rules on top of C4 and Gopher, chosen because each one
removed more low-quality than high-quality tokens in its ablations:

* ``line_punct``: remove if the fraction of lines ending in punctuation is below 0.12;
* ``short_lines``: remove if the fraction of lines of at most 30 characters is above 0.67;
* ``dup_line_chars``: remove if the fraction of characters in duplicated lines is above 0.01.

``list_like`` (newlines per word > 0.3) is from FineWeb's released filter in
datatrove (``FineWebQualityFilter(new_line_ratio=0.3)``), not from the paper.

Measured, thresholded and ordered as that released filter (datatrove 0.10.1,
the code that made FineWeb) does, checked rule by rule by
``experiments/benchmarks/heuristics_conformance.py``: lines are the non-blank
lines, not stripped, so a line ending in "." followed by a space does not end
in punctuation; punctuation means datatrove's sentence-terminal marks (. ! ?
。 । and the like, not a quote or a bracket); duplicated-line characters are
over the text without its newlines; words for ``list_like`` are spaCy tokens
(``tokenizer``). The paper's text gives 0.1 for duplicated-line characters;
the released code, and so FineWeb itself, used 0.01, which is the default here
(``max_dup_line_char_frac: 0.1`` gives the paper's).
"""
from __future__ import annotations

from filters.base import Filter
from filters.gopher import duplicate_stats
from filters.words import TERMINAL_PUNCTUATION, TOKENIZERS, count_tokens


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
        "max_dup_line_char_frac": 0.01,   # remove if above, FineWeb's released code (the paper says 0.1)
        "max_short_line_frac": 0.67,      # remove if above, Penedo et al. 2024
        "max_newline_word_ratio": 0.3,    # remove if above, datatrove FineWebQualityFilter
    }
    decision_params = ("min_line_punct_frac", "max_short_line_frac", "max_dup_line_char_frac",
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
        words = count_tokens(text, self.params["tokenizer"]) if newlines else 0
        short = self.params["short_line_length"]
        ends = TERMINAL_PUNCTUATION
        return {
            "fineweb_line_punct_frac": sum(1 for ln in lines if ln[-1] in ends) / n_lines,
            "fineweb_dup_line_char_frac": dup_chars / max(len(text) - newlines, 1),
            "fineweb_short_line_frac": sum(len(ln) <= short for ln in lines) / n_lines,
            "fineweb_newline_word_ratio": newlines / max(words, 1),
        }

    def decide(self, s: dict):
        """In datatrove's order: line punctuation, short lines, duplicated lines, list-like."""
        p = self.params
        if s["fineweb_line_punct_frac"] < p["min_line_punct_frac"]:
            return False, "line_punct", f"{s['fineweb_line_punct_frac']:.3f}"
        if s["fineweb_short_line_frac"] > p["max_short_line_frac"]:
            return False, "short_lines", f"{s['fineweb_short_line_frac']:.3f}"
        if s["fineweb_dup_line_char_frac"] > p["max_dup_line_char_frac"]:
            return False, "dup_line_chars", f"{s['fineweb_dup_line_char_frac']:.3f}"
        if s["fineweb_newline_word_ratio"] > p["max_newline_word_ratio"]:
            return False, "list_like", f"{s['fineweb_newline_word_ratio']:.3f}"
        return True
