"""FineWeb's custom heuristic filters (Penedo et al. 2024, "The FineWeb Datasets:
Decanting the Web for the Finest Text Data at Scale", Section 3.5).

The paper adds three rules on top of C4 and Gopher, chosen because each one
removed more low-quality than high-quality tokens in its ablations:

* ``line_punct``: remove if the fraction of lines ending in punctuation is <= 0.12;
* ``dup_line_chars``: remove if the fraction of characters in duplicated lines is >= 0.1;
* ``short_lines``: remove if the fraction of lines shorter than 30 characters is >= 0.67.

``list_like`` (newlines per word > 0.3) is from FineWeb's released filter in
datatrove (``FineWebQualityFilter(new_line_ratio=0.3)``), not from the paper.
datatrove's released default for duplicated-line characters is 0.01; we use the
paper's 0.1 and the user can set either.
"""
from __future__ import annotations

from filters.base import Filter, register_filter
from filters.gopher import duplicate_stats, split_lines

#: Line endings that count as punctuation (Latin, CJK, Arabic, Devanagari sentence ends and closing quotes).
LINE_END_PUNCTUATION = (".", "!", "?", "…", '"', "'", "”", "’", "»", "。", "！", "？", "؟", "।")


@register_filter
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
        "short_line_length": 30,          # scoring: a line is short below this many characters
        "min_line_punct_frac": 0.12,      # remove if <=, Penedo et al. 2024
        "max_dup_line_char_frac": 0.1,    # remove if >=, Penedo et al. 2024 (datatrove default 0.01)
        "max_short_line_frac": 0.67,      # remove if >=, Penedo et al. 2024
        "max_newline_word_ratio": 0.3,    # remove if >, datatrove FineWebQualityFilter
    }
    decision_params = ("min_line_punct_frac", "max_dup_line_char_frac", "max_short_line_frac",
                       "max_newline_word_ratio")

    def score(self, doc) -> dict:
        text = doc.text
        lines = split_lines(text)
        n_lines = max(len(lines), 1)
        _, dup_chars = duplicate_stats(lines)
        words = len(text.split())
        return {
            "fineweb_line_punct_frac": sum(ln.endswith(LINE_END_PUNCTUATION) for ln in lines) / n_lines,
            "fineweb_dup_line_char_frac": dup_chars / max(len(text), 1),
            "fineweb_short_line_frac": (sum(len(ln) < self.params["short_line_length"] for ln in lines)
                                        / n_lines),
            "fineweb_newline_word_ratio": text.count("\n") / max(words, 1),
        }

    def decide(self, s: dict):
        p = self.params
        if s["fineweb_line_punct_frac"] <= p["min_line_punct_frac"]:
            return False, "line_punct", f"{s['fineweb_line_punct_frac']:.3f}"
        if s["fineweb_dup_line_char_frac"] >= p["max_dup_line_char_frac"]:
            return False, "dup_line_chars", f"{s['fineweb_dup_line_char_frac']:.3f}"
        if s["fineweb_short_line_frac"] >= p["max_short_line_frac"]:
            return False, "short_lines", f"{s['fineweb_short_line_frac']:.3f}"
        if s["fineweb_newline_word_ratio"] > p["max_newline_word_ratio"]:
            return False, "list_like", f"{s['fineweb_newline_word_ratio']:.3f}"
        return True
