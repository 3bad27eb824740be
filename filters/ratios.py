"""Character-ratio filters: non-alphanumeric, digit and URL shares, and overlong words.

Defaults are NeMo Curator's published English heuristic settings
(``NonAlphaNumericFilter(0.25)``, ``NumbersFilter(0.15)``, ``UrlsFilter(0.2)``,
``LongWordFilter(1000)``), which adapt rules from Gopher (Rae et al. 2021) and
the BigScience ROOTS pipeline (Laurençon et al. 2022). Ratios are over all
characters of the text, whitespace included, as in NeMo Curator; letters in any
script count as alphanumeric, so the filter does not punish non-Latin text.
The non-alphanumeric rule is still tuned on English prose (about 20% spaces and
punctuation): code, tables and link lists fail it, which is the intent.
"""
from __future__ import annotations

import re

from filters.base import Filter

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)


class Ratios(Filter):
    """Character ratios: non-alphanumeric, digits, URL characters; longest word."""

    name = "ratios"
    columns = {
        "ratio_non_alnum": "float",
        "ratio_digits": "float",
        "ratio_url_chars": "float",
        "longest_word": "int",
    }
    defaults = {
        "max_non_alnum": 0.25,   # NeMo Curator NonAlphaNumericFilter
        "max_digits": 0.15,      # NeMo Curator NumbersFilter
        "max_url_chars": 0.2,    # NeMo Curator UrlsFilter
        "max_word_length": 1000,  # NeMo Curator LongWordFilter
    }
    decision_params = tuple(defaults)

    def score(self, doc) -> dict:
        text = doc.text
        n = len(text)
        if n == 0:
            return {"ratio_non_alnum": 1.0, "ratio_digits": 0.0, "ratio_url_chars": 0.0, "longest_word": 0}
        return {
            "ratio_non_alnum": sum(not c.isalnum() for c in text) / n,
            "ratio_digits": sum(c.isdigit() for c in text) / n,
            "ratio_url_chars": sum(len(m) for m in _URL.findall(text)) / n,
            "longest_word": max(map(len, text.split()), default=0),
        }

    def decide(self, s: dict):
        p = self.params
        checks = (
            ("non_alnum", s["ratio_non_alnum"] > p["max_non_alnum"], s["ratio_non_alnum"]),
            ("digits", s["ratio_digits"] > p["max_digits"], s["ratio_digits"]),
            ("urls", s["ratio_url_chars"] > p["max_url_chars"], s["ratio_url_chars"]),
            ("long_word", s["longest_word"] > p["max_word_length"], s["longest_word"]),
        )
        for rule, failed, value in checks:
            if failed:
                return False, rule, f"{value:.3g}"
        return True
