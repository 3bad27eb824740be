"""Recipes: the heuristic filter chains of published datasets, with their exact parameters and order.

A filter stage may say ``recipe: fineweb`` instead of listing ``filters:``;
the recipe expands to the chain below (any ``filters:`` given too run after it).
Every parameter is written out, so a later change of a filter's default never
changes what a recipe does, and the expanded chain is what the run records.

* ``fineweb``: the heuristic filters of FineWeb (Penedo et al. 2024) as
  datatrove 0.10.1's ``examples/fineweb.py`` runs them after language ID:
  ``GopherRepetitionFilter()``, ``GopherQualityFilter()``,
  ``C4QualityFilter(filter_no_terminal_punct=False)``,
  ``FineWebQualityFilter()``, each with datatrove 0.10.1's defaults.
* ``gopher``: Gopher's quality filter then its repetition removal (Rae et al.
  2021, Appendix A.1.1 and Table A1), measured as datatrove measures them.
* ``c4``: C4's cleaning (Raffel et al. 2020, Section 2.2) with the parameters
  of C4's released code (TensorFlow Datasets ``c4_utils``: lines need 5 words
  and terminal punctuation, pages 3 sentences). C4's bad-word list is not
  shipped; add ``badwords_path`` by writing the chain out.

The rest of each dataset's pipeline are other stages: FineWeb's URL filter,
trafilatura extraction, fastText language ID (``langid: {backend: fasttext,
languages: [en], threshold: 0.65}``) and MinHash dedup; C4's langdetect English
filter and three-sentence-span dedup. One measured difference from datatrove
remains in ``fineweb``: duplicated n-grams are compared as word sequences
(``dup_ngram_join: space``), not glued together (see filters/gopher.py);
``experiments/results/heuristics_conformance.md`` shows its effect.
"""
from __future__ import annotations

from typing import Any

_GOPHER_QUALITY = {
    "tokenizer": "spacy_like", "case_sensitive_stop_words": True, "min_words": 50, "max_words": 100_000,
    "min_mean_word_length": 3.0, "max_mean_word_length": 10.0, "max_symbol_word_ratio": 0.1,
    "max_bullet_line_frac": 0.9, "max_ellipsis_line_frac": 0.3, "min_alpha_word_frac": 0.8, "min_stop_words": 2,
}
_GOPHER_REPETITION = {
    "tokenizer": "spacy_like", "dup_ngram_join": "space",
    "max_dup_line_frac": 0.3, "max_dup_para_frac": 0.3, "max_dup_line_char_frac": 0.2, "max_dup_para_char_frac": 0.2,
    "max_top_2gram_frac": 0.2, "max_top_3gram_frac": 0.18, "max_top_4gram_frac": 0.16,
    "max_dup_5gram_frac": 0.15, "max_dup_6gram_frac": 0.14, "max_dup_7gram_frac": 0.13,
    "max_dup_8gram_frac": 0.12, "max_dup_9gram_frac": 0.11, "max_dup_10gram_frac": 0.1,
}
_C4_LINES = {"max_word_length": 1000, "drop_javascript_lines": True, "drop_policy_lines": True,
             "remove_citations": True, "remove_lorem_ipsum": True, "remove_curly_bracket": True, "max_badwords": 0}

#: recipe name -> (what it reproduces, the filter chain as config entries)
RECIPES: dict[str, tuple[str, list[dict[str, dict[str, Any]]]]] = {
    "fineweb": (
        "FineWeb's heuristic filters: datatrove 0.10.1 examples/fineweb.py, its order and parameters",
        [{"gopher_repetition": dict(_GOPHER_REPETITION)},
         {"gopher_quality": dict(_GOPHER_QUALITY)},
         {"c4": {**_C4_LINES, "drop_no_terminal_punct_lines": False, "min_words_per_line": 3, "min_sentences": 5}},
         {"fineweb": {"tokenizer": "spacy_like", "short_line_length": 30, "min_line_punct_frac": 0.12,
                      "max_short_line_frac": 0.67, "max_dup_line_char_frac": 0.01, "max_newline_word_ratio": 0.3}}],
    ),
    "gopher": (
        "Gopher's quality filter then repetition removal: Rae et al. 2021, App. A.1.1 and Table A1",
        [{"gopher_quality": dict(_GOPHER_QUALITY)}, {"gopher_repetition": dict(_GOPHER_REPETITION)}],
    ),
    "c4": (
        "C4's cleaning rules: Raffel et al. 2020 Sec. 2.2, TensorFlow Datasets c4_utils parameters",
        [{"c4": {**_C4_LINES, "drop_no_terminal_punct_lines": True, "min_words_per_line": 5, "min_sentences": 3}}],
    ),
}


def expand(stage: dict) -> list:
    """A filter stage's filter entries: its ``recipe``'s chain (if any), then its own ``filters``."""
    name = stage.get("recipe")
    own = stage.get("filters") or []
    if not isinstance(own, list):  # `filters: c4` would be read letter by letter
        raise ValueError(f"`filters` must be a list (e.g. [c4, gopher_quality]), got {type(own).__name__} {own!r}")
    own = list(own)
    if name is None:
        return own
    if name not in RECIPES:
        raise ValueError(f"stage {stage.get('name', '?')}: unknown recipe {name!r}; "
                         f"choose one of {', '.join(sorted(RECIPES))}")
    return [{ref: dict(params)} for entry in RECIPES[name][1] for ref, params in entry.items()] + own
