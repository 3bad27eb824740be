"""The C4 cleaning rules (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", Section 2.2).

Line-level rules *edit* the text: a line is dropped if it has a word longer
than 1,000 characters, does not end in terminal punctuation (or ends in an
ellipsis), has fewer than 5 words, mentions Javascript, or contains a
policy-notice phrase; Wikipedia-style citation markers are cut out of lines.
The number of lines dropped by each rule and the characters removed are
recorded as score columns, so ``winnow inspect`` shows what each page lost.
Line rules change the text, so their parameters are scoring parameters.

Document-level rules *remove*: fewer than 3 sentences left after cleaning,
"lorem ipsum" or a curly bracket (C4's proxy for code) in a line that the
line rules before them kept, and,
only when the user supplies a word list, a bad word. C4's "List of Dirty,
Naughty, Obscene or Otherwise Bad Words" is not bundled (it cannot be fetched
offline and is not ours to ship): point ``badwords_path`` at a file with one
word or phrase per line to enable that rule.

Rules run in the order of C4's released cleaning code (TensorFlow Datasets'
``c4_utils``), as datatrove's ``C4QualityFilter`` also does (checked by
``experiments/benchmarks/heuristics_conformance.py``): per line, long word,
citations, terminal punctuation, word count, lorem ipsum, Javascript, curly
bracket, policy; sentences are counted per kept line as spaCy's sentencizer
counts them (filters/words.py). The defaults are C4's (3 sentences, 5 words per
line, unpunctuated lines dropped). FineWeb ran datatrove's filter with
unpunctuated lines kept and datatrove's defaults of 5 sentences and 3 words
per line: ``drop_no_terminal_punct_lines: false, min_sentences: 5,
min_words_per_line: 3``, which ``recipe: fineweb`` sets (filters/recipes.py).
``'`` counts as an end quotation mark, as in datatrove.
"""
from __future__ import annotations

import re
from itertools import accumulate
from pathlib import Path

from filters.base import Filter
from filters.words import count_tokens, doc_tokens, doc_tokens_batch, lines_sentences, note_token_count, span_tokens

#: Phrases that mark a policy-notice line (Raffel et al. 2020, Section 2.2).
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                  "use cookies")
#: A line must end in one of these: period, exclamation mark, question mark, end quotation mark
#: (straight double or single quote), and not in an ellipsis.
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'")

#: Wikipedia citation markers: "[12]", "[]", "[edit]", "[citation needed]".
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")

LINE_RULES = ("long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")





def _line_rules(lines: list[str], min_words: int, max_word: int, check_punct: bool, check_cite: bool,
                check_lower: bool, check_js: bool, check_policy: bool, check_curly: bool):
    """C4's line rules in C4's order, each rule a pass over the lines still kept (only lines that can trip a
    rule are looked at closely). Returns the kept lines (stripped, citations cut), per kept line the range of
    the page's chunks it is (None where citations changed it), the dropped-line counts, the citations cut, and
    whether a kept line has "lorem ipsum" or a curly bracket (as the per-line loop of C4's code finds them)."""
    counts = list(map(len, map(str.split, lines)))
    starts = list(accumulate(counts, initial=0))
    dropped = dict.fromkeys(LINE_RULES, 0)
    idx = [i for i, n in enumerate(counts) if n]
    if max(map(len, lines), default=0) > max_word:
        short = [i for i in idx if len(lines[i]) <= max_word or max(map(len, lines[i].split())) <= max_word]
        dropped["long_word"] = len(idx) - len(short)
        idx = short
    text = [lines[i].strip() for i in idx]
    citations = 0
    cited: set[int] = set()
    if check_cite:
        for k, ln in enumerate(text):
            if "[" in ln:
                ln, n = _CITATION.subn("", ln)
                if n:
                    citations += n
                    text[k] = ln
                    cited.add(idx[k])
    if check_punct:
        ends_ok = [k for k, ln in enumerate(text) if ln.endswith(TERMINAL_PUNCTUATION) and not ln.endswith("...")]
        dropped["no_terminal_punct"] = len(idx) - len(ends_ok)
        idx, text = [idx[k] for k in ends_ok], [text[k] for k in ends_ok]
    enough = [k for k, i in enumerate(idx) if counts[i] >= min_words]
    dropped["too_few_words"] = len(idx) - len(enough)
    idx, text = [idx[k] for k in enough], [text[k] for k in enough]
    lorem = curly = False
    if check_lower:
        keep = []
        for k, ln in enumerate(text):
            lower = ln.lower()
            lorem = lorem or "lorem ipsum" in lower
            if check_js and "javascript" in lower:
                dropped["javascript"] += 1
                continue
            curly = curly or check_curly and "{" in ln
            if check_policy and any(ph in lower for ph in POLICY_PHRASES):
                dropped["policy"] += 1
                continue
            keep.append(k)
        idx, text = [idx[k] for k in keep], [text[k] for k in keep]
    else:
        curly = check_curly and any("{" in ln for ln in text)
    spans = [None if i in cited else (starts[i], starts[i + 1]) for i in idx]
    return text, spans, dropped, citations, lorem, curly


def load_badwords(path: str | Path) -> re.Pattern:
    """A case-insensitive whole-word pattern for the words and phrases in ``path`` (one per line)."""
    words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines() if w.strip()]
    if not words:
        raise ValueError(f"{path}: empty bad-word list")
    words.sort(key=len, reverse=True)  # longest first, so a phrase wins over its first word
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)


class C4(Filter):
    """C4 rules: drop lines (no terminal punctuation, < 5 words, Javascript, policy), then whole pages."""

    name = "c4"
    edits_text = True
    columns = {
        "c4_lines_kept": "int",
        **{f"c4_lines_{rule}": "int" for rule in LINE_RULES},
        "c4_citations_removed": "int",
        "c4_chars_removed": "int",
        "c4_sentence_count": "int",
        "c4_lorem_ipsum": "bool",
        "c4_curly_bracket": "bool",
        "c4_badword_count": "int",
    }
    defaults = {
        # scoring (line edits), Raffel et al. 2020 Section 2.2
        "drop_no_terminal_punct_lines": True,  # False keeps them (FineWeb's setting)
        "min_words_per_line": 5,
        "max_word_length": 1000,      # a line with a longer word is dropped (C4's released code)
        "drop_javascript_lines": True,
        "drop_policy_lines": True,
        "remove_citations": True,
        "badwords_path": None,        # no list shipped: the bad-word rule is off unless a file is given
        # decision (document rules)
        "min_sentences": 3,
        "remove_lorem_ipsum": True,
        "remove_curly_bracket": True,
        "max_badwords": 0,
    }
    decision_params = ("min_sentences", "remove_lorem_ipsum", "remove_curly_bracket", "max_badwords")

    def setup(self) -> None:
        path = self.params["badwords_path"]
        self.badwords = load_badwords(path) if path else None

    def score_batch(self, docs) -> list[dict]:
        doc_tokens_batch([d.text for d in docs])  # tokenised together, then looked up
        return [self.score(d) for d in docs]

    def score(self, doc) -> dict:
        self.ensure_setup()
        p = self.params
        original = doc.text
        # what the page contains decides which per-line checks can fire at all
        lower_page = original.lower()
        check_lorem = "lorem ipsum" in lower_page
        check_js = p["drop_javascript_lines"] and "javascript" in lower_page
        check_policy = p["drop_policy_lines"] and any(ph in lower_page for ph in POLICY_PHRASES)
        check_curly = "{" in original
        check_lower = check_lorem or check_js or check_policy
        max_word = p["max_word_length"]
        check_cite = p["remove_citations"] and "[" in original
        check_punct = p["drop_no_terminal_punct_lines"]
        min_words = p["min_words_per_line"]
        tokens = doc_tokens(original)  # shared with the other filters of the stage; sentences come from it
        lines = original.splitlines()
        kept, spans, dropped, citations, lorem, curly = _line_rules(
            lines, min_words, max_word, check_punct, check_cite, check_lower, check_js, check_policy, check_curly)
        text = "\n".join(kept).strip()
        starts, ends = span_tokens(tokens, [sp for sp in spans if sp is not None])
        # the next filter (FineWeb) counts this text's tokens: say it
        note_token_count(text, sum(ends) - sum(starts) + sum(count_tokens(ln) for ln, sp in zip(kept, spans) if sp is None))
        return {
            "text": text,
            "c4_lines_kept": len(kept),
            **{f"c4_lines_{rule}": n for rule, n in dropped.items()},
            "c4_citations_removed": citations,
            "c4_chars_removed": len(original) - len(text),
            "c4_sentence_count": lines_sentences(kept, tokens, spans),
            "c4_lorem_ipsum": lorem,
            "c4_curly_bracket": curly,
            "c4_badword_count": len(self.badwords.findall(text)) if self.badwords else None,
        }

    def decide(self, s: dict):
        p = self.params
        if p["remove_lorem_ipsum"] and s["c4_lorem_ipsum"]:
            return False, "lorem_ipsum"
        if p["remove_curly_bracket"] and s["c4_curly_bracket"]:
            return False, "curly_bracket"
        if s["c4_badword_count"] is not None and s["c4_badword_count"] > p["max_badwords"]:
            return False, "badwords", f"{s['c4_badword_count']} bad words"
        if s["c4_sentence_count"] < p["min_sentences"]:
            return False, "too_few_sentences", f"{s['c4_sentence_count']} sentences after line rules"
        return True
