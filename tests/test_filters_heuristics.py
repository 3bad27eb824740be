"""Each heuristic rule on hand-made documents just inside and just outside its threshold."""
from __future__ import annotations

import sys

import pyarrow as pa
import pytest

from filters.base import normalise_decision
from filters.stage import FilterStage
from filters.c4 import C4
from filters.fineweb import FineWeb
from filters.gopher import GopherQuality, GopherRepetition
from filters.ratios import Ratios
from pipeline.document import Document, documents_table


def unique_words(n: int, start: int = 0) -> list[str]:
    """n distinct four-letter words (no stop words, no repeats)."""
    letters = "bcdfghjklmnpqrstvwxz"
    out = []
    for i in range(start, start + n):
        a, b, c = i // 400 % 20, i // 20 % 20, i % 20
        out.append("q" + letters[a] + letters[b] + letters[c])
    return out


def prose(n: int) -> str:
    """n words of plain text that passes every Gopher quality rule when n >= 50."""
    return " ".join(["the", "of"] + unique_words(n - 2)) + "."


def run(filter_obj, text: str) -> tuple[dict, str | None]:
    """Score then decide one document; return (scores, reason or None)."""
    filter_obj.ensure_setup()
    scores = filter_obj.score(Document("d", text))
    keep, reason, _ = normalise_decision(filter_obj, filter_obj.decide(scores))
    return scores, reason


# ---------------------------------------------------------------------------
# Gopher quality


def test_gopher_word_count_bounds():
    assert run(GopherQuality(), prose(50))[1] is None
    assert run(GopherQuality(), prose(49))[1] == "gopher_quality:word_count"
    assert run(GopherQuality(), prose(100_000))[1] is None
    assert run(GopherQuality(), prose(100_001))[1] == "gopher_quality:word_count"


def test_gopher_mean_word_length_bounds():
    short = " ".join(["the", "of"] + ["ab"] * 60)
    s, reason = run(GopherQuality(), short)
    assert s["gopher_mean_word_length"] < 3 and reason == "gopher_quality:mean_word_length"
    s, reason = run(GopherQuality(), " ".join(["the", "and"] + ["abc"] * 60))
    assert s["gopher_mean_word_length"] == 3.0 and reason is None
    s, reason = run(GopherQuality(), " ".join(["the", "of"] + ["abcdefghijkl"] * 60))
    assert reason == "gopher_quality:mean_word_length"


@pytest.mark.parametrize("hashes,expected", [(11, None), (12, "gopher_quality:symbol_word_ratio")])
def test_gopher_symbol_word_ratio(hashes, expected):
    text = prose(100) + " " + " ".join(["#"] * hashes)  # 100 words, "." and each "#" are tokens
    s, reason = run(GopherQuality(), text)
    assert s["gopher_word_count"] == 100  # a token of punctuation only is not counted as a word
    assert s["gopher_symbol_word_ratio"] == pytest.approx(hashes / (101 + hashes))  # 11/112 <= 0.1 < 12/113
    assert reason == expected


def test_gopher_hashes_and_ellipses_are_separate_ratios():
    text = prose(100) + " # ..." * 8 + " fin."  # 119 tokens: "#" 8/119 and "..." 8/119, together 16/119
    s, reason = run(GopherQuality(), text)
    assert s["gopher_symbol_word_ratio"] == pytest.approx(8 / 119) and reason is None


@pytest.mark.parametrize("bulleted,expected", [(9, None), (10, "gopher_quality:bullet_lines")])
def test_gopher_bullet_lines(bulleted, expected):
    words = unique_words(100)
    lines = [("• " if i < bulleted else "") + "the of " + " ".join(words[i * 10:(i + 1) * 10]) for i in range(10)]
    s, reason = run(GopherQuality(), "\n".join(lines))
    assert s["gopher_bullet_line_frac"] == pytest.approx(bulleted / 10)
    assert reason == expected


@pytest.mark.parametrize("trailing,expected", [(3, None), (4, "gopher_quality:ellipsis_lines")])
def test_gopher_ellipsis_lines(trailing, expected):
    words = unique_words(100)
    lines = ["the of " + " ".join(words[i * 10:(i + 1) * 10]) + ("..." if i < trailing else ".") for i in range(10)]
    s, reason = run(GopherQuality(), "\n".join(lines))
    assert s["gopher_ellipsis_line_frac"] == pytest.approx(trailing / 10)
    assert reason == expected


@pytest.mark.parametrize("numbers,expected", [(20, None), (21, "gopher_quality:alpha_words")])
def test_gopher_alpha_words(numbers, expected):
    tokens = ["the", "of"] + unique_words(98 - numbers) + [str(1000 + i) for i in range(numbers)]
    s, reason = run(GopherQuality(), " ".join(tokens))
    assert s["gopher_alpha_word_frac"] == pytest.approx((100 - numbers) / 100)
    assert reason == expected


def test_gopher_stop_words_need_two_distinct():
    body = unique_words(60)
    assert run(GopherQuality(), " ".join(["the"] * 5 + body))[1] == "gopher_quality:stop_words"
    s, reason = run(GopherQuality(), " ".join(["the", "with"] + body))
    assert s["gopher_stop_word_count"] == 2 and reason is None
    s, reason = run(GopherQuality(), " ".join(["The", "with"] + body))  # "The" is the word "the"
    assert s["gopher_stop_word_count"] == 2 and reason is None
    s, reason = run(GopherQuality(case_sensitive_stop_words=True), " ".join(["The", "with"] + body))  # datatrove's
    assert s["gopher_stop_word_count"] == 1 and reason == "gopher_quality:stop_words"


def test_gopher_tokenizer_option():
    text = "Well, the cat sat on the mat, and then it left."
    assert run(GopherQuality(), text)[0]["gopher_alpha_word_frac"] == pytest.approx(11 / 14)
    assert run(GopherQuality(tokenizer="whitespace"), text)[0]["gopher_alpha_word_frac"] == 1.0
    with pytest.raises(ValueError, match="unknown tokenizer"):
        GopherQuality(tokenizer="nltk")


# ---------------------------------------------------------------------------
# Gopher repetition


def without_ngram_rules() -> GopherRepetition:
    """Line and paragraph rules only: a repeated line is also a run of repeated n-grams."""
    return GopherRepetition(**{f"max_dup_{n}gram_frac": 1.0 for n in range(5, 11)},
                            **{f"max_top_{n}gram_frac": 1.0 for n in range(2, 5)})


def test_line_and_paragraph_splits_equal_the_regular_expressions():
    """Gopher's duplicate lines are split at runs of newlines and its paragraphs at two or more, and its bullet
    lines are counted per line; the string operations that replace the regular expressions give the same
    items (empty ends included) and counts."""
    import random
    import re

    from filters.gopher import _BULLET_LINE, bullet_lines, split_line_runs, split_paragraphs

    rng = random.Random(7)
    for _ in range(20000):
        text = "".join(rng.choice(["a", "b", " ", "\n", "\n", "\r", "\t"]) for _ in range(rng.randint(0, 12)))
        assert split_line_runs(text) == re.split(r"\n+", text), repr(text)
        bulleted = "".join(rng.choice(["-", "•", " ", "\u3000", "\n", "\r", "\x1c", "\u2028", "a"]) for _ in range(8))
        assert bullet_lines(bulleted) == len(_BULLET_LINE.findall(bulleted)), repr(bulleted)
        stripped = text.strip()
        assert split_paragraphs(text) == (re.split(r"\n{2,}", stripped) if "\n\n" in stripped else [stripped]), repr(text)


def test_dup_line_frac_threshold():
    unique = [" ".join(unique_words(8, start=10 * i)) for i in range(6)]
    ok = "\n".join(unique + ["same"] * 4)      # 3 repeats of 10 lines = 0.3
    bad = "\n".join(unique[:5] + ["same"] * 5)  # 4 of 10 = 0.4
    s, reason = run(GopherRepetition(), ok)
    assert s["gopher_dup_line_frac"] == pytest.approx(0.3) and reason is None
    s, reason = run(GopherRepetition(), bad)
    assert s["gopher_dup_line_frac"] == pytest.approx(0.4) and reason == "gopher_repetition:dup_line_frac"


@pytest.mark.parametrize("filler_lines,expected", [(6, None), (5, "gopher_repetition:dup_line_char_frac")])
def test_dup_line_char_frac_threshold(filler_lines, expected):
    """One repeat of a 99-character line: 99/499 = 0.198 passes, 99/449 = 0.220 fails (max 0.20)."""
    long_line = " ".join(unique_words(20, start=5000))  # 99 characters
    filler = [" ".join(unique_words(10, start=20 * i)) for i in range(filler_lines)]  # 49 characters each
    text = "\n".join([long_line] + filler + [long_line])
    s, reason = run(without_ngram_rules(), text)  # a repeated line is also a repeated n-gram
    assert s["gopher_dup_line_char_frac"] == pytest.approx(len(long_line) / len(text))
    assert reason == expected


def test_dup_paragraph_rules():
    paras = [" ".join(unique_words(12, start=20 * i)) for i in range(7)] + ["Share this."] * 3
    s, reason = run(GopherRepetition(), "\n\n".join(paras))
    assert s["gopher_dup_para_frac"] == pytest.approx(0.2) and reason is None
    paras = [" ".join(unique_words(12, start=20 * i)) for i in range(3)] + ["Share this."] * 3
    s, reason = run(GopherRepetition(), "\n\n".join(paras))
    # the same two repeats are 2 of 6 paragraphs, over 0.3; the line rule (checked after) sees them too
    assert s["gopher_dup_para_frac"] == pytest.approx(2 / 6)
    assert reason == "gopher_repetition:dup_para_frac"
    assert GopherRepetition(max_dup_para_frac=1).decide(s)[1] == "dup_line_frac"


def spaced_ngram_text(k: int, fillers: int, repeats: int = 10) -> str:
    """A k-gram of two-letter words repeated, each copy followed by distinct four-letter words."""
    gram = ["aa", "bb", "cc", "dd", "ee"][:k]
    words: list[str] = []
    for r in range(repeats):
        words += gram + unique_words(fillers, start=r * fillers)
    return " ".join(words)


@pytest.mark.parametrize("k,fillers,expected", [
    (2, 4, None), (2, 3, "gopher_repetition:top_2gram"),     # 0.193 vs 0.239 (max 0.20)
    (3, 8, None), (3, 7, "gopher_repetition:top_3gram"),     # 0.164 vs 0.182 (max 0.18)
    (4, 12, None), (4, 11, "gopher_repetition:top_4gram"),   # 0.153 vs 0.164 (max 0.16)
])
def test_top_ngram_thresholds(k, fillers, expected):
    text = spaced_ngram_text(k, fillers)
    s, reason = run(GopherRepetition(), text)
    # characters of the n-gram with its inner spaces, times its count, over all characters of the text
    assert s[f"gopher_top_{k}gram_frac"] == pytest.approx((3 * k - 1) * 10 / len(text))
    assert reason == expected


@pytest.mark.parametrize("total,expected", [(27, None), (26, "gopher_repetition:dup_5gram")])
def test_dup_5gram_threshold(total, expected):
    phrase = unique_words(5, start=9000)
    rest = unique_words(total - 10)
    words = phrase + rest[: len(rest) // 2] + phrase + rest[len(rest) // 2:]
    text = " ".join(words)
    s, reason = run(GopherRepetition(**{f"max_top_{n}gram_frac": 1.0 for n in (2, 3, 4)}), text)
    # the repeat's 20 word characters over all characters: 20/134 = 0.149 passes, 20/129 = 0.155 fails
    assert s["gopher_dup_5gram_frac"] == pytest.approx(20 / len(text))
    assert reason == expected


def test_long_repeated_span_hits_longer_ngram_rules():
    phrase = unique_words(30, start=9000)
    text = " ".join(phrase + unique_words(30) + phrase + unique_words(30, start=100))
    s, reason = run(GopherRepetition(), text)
    # scanning the second copy: three repeated 10-grams, each skipped past, 40 characters each
    assert s["gopher_dup_10gram_frac"] == pytest.approx(120 / len(text))
    assert reason == "gopher_repetition:dup_5gram"  # 0.2 is over every n-gram limit
    relaxed = {f"max_dup_{n}gram_frac": 1.0 for n in range(5, 10)}
    assert GopherRepetition(**relaxed).decide(s)[1] == "dup_10gram"


def test_empty_document_has_no_repetition():
    s, reason = run(GopherRepetition(), "")
    assert reason is None and s["gopher_dup_5gram_frac"] == 0.0


# ---------------------------------------------------------------------------
# C4


SENTENCE = "This line has more than five words in it."


def test_c4_line_rules_edit_and_record():
    text = "\n".join([
        SENTENCE,
        "Menu Home About Contact",                                  # no terminal punctuation
        "Too short here.",                                          # 3 words
        "Please enable JavaScript to view the comments.",           # javascript
        "By using this site you agree to our Privacy Policy.",      # policy
        'He said it was "the best day of his life."',               # end quotation mark: kept
        "Paris is the capital city of France.[1][citation needed]",  # citations cut out
    ])
    s, reason = run(C4(), text)
    assert s["text"].split("\n") == [SENTENCE, 'He said it was "the best day of his life."',
                                     "Paris is the capital city of France."]
    assert (s["c4_lines_no_terminal_punct"], s["c4_lines_too_few_words"], s["c4_lines_javascript"],
            s["c4_lines_policy"], s["c4_citations_removed"]) == (1, 1, 1, 1, 2)
    assert s["c4_chars_removed"] == len(text) - len(s["text"])
    assert reason is None


def test_c4_five_word_line_boundary():
    s, _ = run(C4(), "One two three four five.\nOne two three four.")
    assert s["text"] == "One two three four five." and s["c4_lines_too_few_words"] == 1


@pytest.mark.parametrize("sentences,expected", [(3, None), (2, "c4:too_few_sentences")])
def test_c4_min_sentences(sentences, expected):
    s, reason = run(C4(), " ".join([SENTENCE] * sentences))
    assert s["c4_sentence_count"] == sentences and reason == expected


def test_c4_document_rules():
    body = "\n".join([SENTENCE] * 3)
    assert run(C4(), body + "\nLorem ipsum dolor sit amet, consectetur.")[1] == "c4:lorem_ipsum"
    code = "\nThe code is int main() { return 0; }."
    assert run(C4(), body + code)[1] == "c4:curly_bracket"
    assert run(C4(remove_curly_bracket=False), body + code)[1] is None
    # as in C4's code: only a line the earlier line rules keep can remove the page
    assert run(C4(), body + "\nint main() { return 0; }")[1] is None


def test_c4_keeps_unpunctuated_lines_with_fineweb_setting():
    """FineWeb runs C4 with unpunctuated lines kept: they stay in the text, count their sentences, and a curly
    bracket in one of them (a signature line) removes the page."""
    body = "\n".join([SENTENCE] * 2)
    text = body + "\nSent from my new phone\nMy homepage is {link} here"
    s, reason = run(C4(), text)
    assert s["c4_lines_no_terminal_punct"] == 2 and s["c4_sentence_count"] == 2 and reason == "c4:too_few_sentences"
    fineweb = C4(drop_no_terminal_punct_lines=False, min_words_per_line=3, min_sentences=5)
    s, reason = run(fineweb, text)
    assert s["c4_lines_no_terminal_punct"] == 0 and s["c4_lines_kept"] == 4 and s["c4_sentence_count"] == 4
    assert s["text"] == text and reason == "c4:curly_bracket"
    s, reason = run(fineweb, body + "\nSent from my phone\nok")  # too few words is still a line rule
    assert s["c4_lines_too_few_words"] == 1 and s["c4_lines_kept"] == 3


def test_c4_badwords_only_with_a_user_list(tmp_path):
    text = "\n".join([SENTENCE] * 3 + ["The forbidden phrase appears in this line."])
    s, reason = run(C4(), text)
    assert s["c4_badword_count"] is None and reason is None
    words = tmp_path / "badwords.txt"
    words.write_text("forbidden phrase\nzzz\n")
    s, reason = run(C4(badwords_path=str(words)), text)
    assert s["c4_badword_count"] == 1 and reason == "c4:badwords"


def test_c4_edits_reach_later_filters_in_the_stage():
    text = "\n".join([SENTENCE] * 3 + ["nav menu footer links login register"] * 5)
    stage = FilterStage("quality", {"filters": ["c4", "gopher_quality"]})
    table = documents_table([{"id": "a", "text": text, "source": "t", "metadata": "{}"}])
    scores = stage.score(table, ctx=None)
    assert "text" not in scores.column_names  # the cache holds spans of the input, not a copy of the text
    assert stage.edited_texts(table, scores)[0] == "\n".join([SENTENCE] * 3)
    assert scores.column("gopher_word_count")[0].as_py() == 27
    assert isinstance(scores, pa.Table)


# ---------------------------------------------------------------------------
# FineWeb


def lines_text(n_lines: int, punctuated: int) -> str:
    return "\n".join(" ".join(unique_words(8, start=10 * i)) + ("." if i < punctuated else "")
                     for i in range(n_lines))


@pytest.mark.parametrize("punctuated,expected", [(3, None), (2, "fineweb:line_punct")])
def test_fineweb_line_punct(punctuated, expected):
    s, reason = run(FineWeb(), lines_text(25, punctuated))  # 3/25 = 0.12 passes (< fails), 2/25 fails
    assert s["fineweb_line_punct_frac"] == pytest.approx(punctuated / 25)
    assert reason == expected


@pytest.mark.parametrize("short,expected", [(6, None), (7, "fineweb:short_lines")])
def test_fineweb_short_lines(short, expected):
    lines = ["Short line." if i < short else " ".join(unique_words(8, start=10 * i)) + "." for i in range(9)]
    s, reason = run(FineWeb(max_dup_line_char_frac=1), "\n".join(lines))  # 6/9 = 0.667 < 0.67 <= 7/9
    assert s["fineweb_short_line_frac"] == pytest.approx(short / 9)
    assert reason == expected


def test_fineweb_dup_line_chars():
    """Default 0.01 (FineWeb's released code): one repeated line among 22 is 4.5% of the characters."""
    line = " ".join(unique_words(8, start=900)) + "."
    unique = [" ".join(unique_words(8, start=10 * i)) + "." for i in range(20)]
    text = "\n".join(unique + [line, line])
    s, reason = run(FineWeb(), text)
    assert s["fineweb_dup_line_char_frac"] == pytest.approx(len(line) / (len(text) - text.count("\n")))
    assert 0.01 < s["fineweb_dup_line_char_frac"] < 0.1 and reason == "fineweb:dup_line_chars"
    assert run(FineWeb(max_dup_line_char_frac=0.1), text)[1] is None  # the paper's threshold keeps it
    assert run(FineWeb(), "\n".join(unique + [line]))[1] is None  # no repeat
    s, reason = run(FineWeb(max_dup_line_char_frac=0.1), "\n".join(unique[:7] + [line, line]))
    assert s["fineweb_dup_line_char_frac"] >= 0.1 and reason == "fineweb:dup_line_chars"


def test_fineweb_list_like():
    words = unique_words(40)
    as_list = "\n".join(" ".join(words[i:i + 2]) + "." for i in range(0, 40, 2))  # 19 newlines / 60 tokens
    no_short_rule = FineWeb(max_short_line_frac=1.1)  # every line here is short
    s, reason = run(no_short_rule, as_list)
    assert s["fineweb_newline_word_ratio"] == pytest.approx(19 / 60) and reason == "fineweb:list_like"
    assert run(FineWeb(max_short_line_frac=1.1, tokenizer="whitespace"), as_list)[1] == "fineweb:list_like"
    as_prose = "\n".join(" ".join(words[i:i + 4]) + "." for i in range(0, 40, 4))  # 9 / 50
    assert run(no_short_rule, as_prose)[1] is None


# ---------------------------------------------------------------------------
# ratios


def test_ratio_non_alnum():
    assert run(Ratios(), "abc " * 25)[0]["ratio_non_alnum"] == pytest.approx(0.25)
    assert run(Ratios(), "abc " * 25)[1] is None
    assert run(Ratios(), "ab! " * 25)[1] == "ratios:non_alnum"
    assert run(Ratios(), "Größe über Straße " * 10)[1] is None  # letters in any script are alphanumeric


def test_ratio_digits():
    ok = "abcdefghijklmnopq" + "123"  # 3/20 = 0.15
    assert run(Ratios(max_non_alnum=1), ok)[1] is None
    assert run(Ratios(max_non_alnum=1), ok[1:] + "4")[1] == "ratios:digits"


def test_ratio_urls():
    url = "https://ex.com/a"  # 16 characters
    s, reason = run(Ratios(max_non_alnum=1), url + " " + "x" * 63)
    assert s["ratio_url_chars"] == pytest.approx(0.2) and reason is None
    assert run(Ratios(max_non_alnum=1), url + " " + "x" * 60)[1] == "ratios:urls"


def test_ratio_long_word():
    assert run(Ratios(max_non_alnum=1), "a" * 1000)[1] is None
    assert run(Ratios(max_non_alnum=1), "a" * 1001)[1] == "ratios:long_word"


def test_empty_text_fails_ratios():
    assert run(Ratios(), "")[1] == "ratios:non_alnum"


def test_fast_ngram_repetition_matches_the_rule_written_plainly():
    """The numpy/hash implementation against a direct reading of the rules, on random repetitive texts."""
    import random
    from collections import Counter

    from filters.gopher import ngram_repetition

    def plain(words, text_len, n_top, n_dup):
        grams = [tuple(words[i:i + n_top]) for i in range(len(words) - n_top + 1)]
        top = 0.0
        if grams:
            gram, count = Counter(grams).most_common(1)[0]
            top = (sum(map(len, gram)) + n_top - 1) * count / text_len
        seen, idx, chars = set(), 0, 0
        while idx < len(words) - n_dup + 1:
            g = tuple(words[idx:idx + n_dup])
            if g in seen:
                chars += sum(map(len, g))
                idx += n_dup
            else:
                seen.add(g)
                idx += 1
        return top, chars / text_len

    rng = random.Random(0)
    for trial in range(300):
        vocab = ["a", "bb", "ccc", "dd", "e", "fff"][: rng.randint(1, 6)]
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 120))]
        text = " ".join(words)
        got = ngram_repetition(words, max(len(text), 1), (2, 3, 4), (5, 6, 7, 8, 9, 10))
        for n_top, n_dup in ((2, 5), (3, 7), (4, 10)):
            want_top, want_dup = plain(words, max(len(text), 1), n_top, n_dup)
            assert got[n_top] == pytest.approx(want_top), (trial, n_top)
            assert got[n_dup] == pytest.approx(want_dup), (trial, n_dup)


def test_ngram_batch_equals_one_document_at_a_time():
    """Documents coded together give each document the fractions it gets alone."""
    import random

    from filters.gopher import ngram_repetition, ngram_repetition_batch

    rng = random.Random(1)
    docs = []
    for _ in range(60):
        vocab = ["a", "bb", "ccc", "dd", "e"][: rng.randint(1, 5)]
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        docs.append((words, max(len(" ".join(words)), 1)))
    together = ngram_repetition_batch(docs, (2, 3, 4), (5, 6, 7, 8, 9, 10))
    for (words, n_chars), got in zip(docs, together):
        assert got == pytest.approx(ngram_repetition(words, n_chars, (2, 3, 4), (5, 6, 7, 8, 9, 10)))


def test_bullet_and_ellipsis_lines_counted_as_datatrove_counts_them():
    """The whole-text patterns count the lines datatrove's per-line test counts, with every line boundary
    str.splitlines knows and every kind of blank inside a line."""
    import random

    rng = random.Random(2)
    pool = ["a", "b", " ", "\t", "\x1f", "\xa0", "•", "-", ".", "...", "…", "\n", "\r", "\r\n", "\x0b", "\x0c",
            "\x1c", "\x85", "\u2028", "\u2029"]
    for _ in range(2000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        lines = text.splitlines() or [""]
        s = GopherQuality().score(Document("d", text))
        assert s["gopher_bullet_line_frac"] == sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / len(lines)
        assert s["gopher_ellipsis_line_frac"] == sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)


# ---------------------------------------------------------------------------
# recipes


def test_recipe_fineweb_is_datatroves_chain_in_fineweb_order():
    stage = FilterStage("heuristics", {"recipe": "fineweb"})
    assert [f.ref for f in stage.filters] == ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    gr, gq, c4, fw = stage.filters
    assert gq.params["case_sensitive_stop_words"] is True and gq.params["min_stop_words"] == 2
    assert (c4.params["drop_no_terminal_punct_lines"], c4.params["min_sentences"], c4.params["min_words_per_line"]) \
        == (False, 5, 3)
    assert fw.params["max_dup_line_char_frac"] == 0.01 and gr.params["max_dup_10gram_frac"] == 0.1
    # every parameter is written out, so a later change of a default cannot change the recipe
    from filters.recipes import RECIPES

    for _, chain in RECIPES.values():
        for entry in chain:
            (ref, params), = entry.items()
            assert set(params) == set(FilterStage("s", {"filters": [ref]}).filters[0].params) - {"badwords_path"}


def test_recipe_with_more_filters_and_errors():
    stage = FilterStage("h", {"recipe": "gopher", "filters": ["ratios"]})
    assert [f.ref for f in stage.filters] == ["gopher_quality", "gopher_repetition", "ratios"]
    with pytest.raises(ValueError, match="unknown recipe 'finweb'; choose one of c4, fineweb, gopher"):
        FilterStage("h", {"recipe": "finweb"})
    with pytest.raises(ValueError, match="needs `filters:` or `recipe:`"):
        FilterStage("h", {})


def test_recipe_in_a_config_runs_the_chain_in_its_order(tmp_path):
    """A short page of repeated lines: FineWeb's chain checks repetition first, Gopher's checks quality first."""
    import json

    from pipeline.rundir import RunFolder
    from tests.conftest import run_pipeline

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"Buy {w} now.\nBuy {w} now.\nBuy {w} now."})
                                              + "\n" for w in unique_words(4)))
    for recipe, reason in (("fineweb", "gopher_repetition:dup_line_frac"), ("gopher", "gopher_quality:word_count")):
        cfg = {"run_dir": str(tmp_path / recipe),
               "stages": [{"name": "ingest", "inputs": [{"path": str(tmp_path / "in.jsonl")}]},
                          {"name": "heuristics", "kind": "filter", "recipe": recipe}]}
        run = RunFolder(run_pipeline(cfg, tmp_path, name=f"{recipe}.yaml"))
        assert [r["reason"] for r in run.rows("heuristics", part="removed")] == [reason] * 4


def test_speed_benchmark_times_the_chain_cold_with_set_up_apart(tmp_path):
    """The conformance benchmark's winnow side: set-up (lazy imports) outside the clock and reported apart,
    the timed run starting with no chunk memoised, and MB counted in UTF-8 bytes."""
    import json

    import filters.words as words
    from experiments.benchmarks.heuristics_conformance import time_side

    texts = ["Café prices rose. The market was busy, and the stalls sold out!\nMore text here.", "Short."]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    seen = []
    real = words.clear_caches
    words.clear_caches = lambda: (real(), seen.append(len(words._vocab)))
    try:
        out = time_side("winnow", path, False)
    finally:
        words.clear_caches = real
    assert seen == [0]  # the set-up's chunks were forgotten before the clock started
    assert out["docs"] == 2 and out["mb"] == sum(len(t.encode()) for t in texts) / 1e6
    assert out["cpu_s"] > 0 and out["setup_cpu_s"] > 0 and out["machine_check_s"] > 0 and out["side"] == "winnow"
    assert len(words._vocab) > 0  # the timed run tokenised the documents afresh


def test_speed_reports_name_the_interpreter_build(tmp_path):
    """CPU figures depend on how CPython was built (libpython shared or static), so the benchmark reports probe
    each side's interpreter in a subprocess; one that cannot run says so instead of failing the report."""
    import os
    import platform

    from experiments.benchmarks.heuristics_conformance import interpreter

    here = interpreter(sys.executable)
    assert here.startswith(f"CPython {platform.python_version()} (")
    if os.path.exists("/proc/self/maps"):  # Linux: the probe reads the same thing in its own process
        maps = open("/proc/self/maps").read()
        assert here.endswith("libpython shared)" if "libpython" in maps else "libpython static)")
    assert interpreter(str(tmp_path / "no-python")).endswith("(not probed: No such file or directory)")


def test_interpreter_benchmark_names_an_interpreter_it_cannot_use(tmp_path):
    """A wrong interpreter path is one usage error naming it, before any document is read or timed."""
    from experiments.benchmarks import interpreter_build
    from pipeline.errors import UsageError

    missing = str(tmp_path / "no-python")
    with pytest.raises(UsageError, match=f"interpreter {missing}: No such file"):
        interpreter_build.main([sys.executable, missing, "--rounds", "1"])


def test_conformance_benchmark_names_a_missing_datatrove_or_missing_data(tmp_path, monkeypatch):
    """No datatrove venv, or no real data, is one usage error naming the path, before any document is read."""
    from experiments.benchmarks import heuristics_conformance
    from pipeline.errors import UsageError

    monkeypatch.setattr(heuristics_conformance, "SHARED", tmp_path / "data")
    with pytest.raises(UsageError, match=f"the real data is not here: {tmp_path}/data/raw/usenet"):
        heuristics_conformance.main(["--datatrove-python", sys.executable, "--no-timing"])
    for _, rel, _ in heuristics_conformance.SOURCES:  # data present: the interpreter is checked next
        (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / rel).write_bytes(b"")
    missing = str(tmp_path / "no-python")
    with pytest.raises(UsageError, match=f"--datatrove-python {missing}: no such interpreter"):
        heuristics_conformance.main(["--datatrove-python", missing, "--no-timing"])


def test_ab_benchmark_refuses_two_identical_sides_and_malformed_variables():
    """One interpreter twice is only a comparison when the environments differ (``--env-b WINNOW_COMPILED=0``);
    the same side twice, or a variable without a value, is one usage error before anything is timed."""
    from experiments.benchmarks import interpreter_build
    from pipeline.errors import UsageError

    with pytest.raises(UsageError, match="same interpreter with the same environment"):
        interpreter_build.main([sys.executable, sys.executable, "--rounds", "1"])
    with pytest.raises(UsageError, match="--env-b 'WINNOW_COMPILED': expected NAME=VALUE"):
        interpreter_build.main([sys.executable, sys.executable, "--env-b", "WINNOW_COMPILED"])


def test_ab_benchmark_sets_a_variable_for_one_side_only(monkeypatch):
    """The variable reaches the timed process of its side and is gone afterwards (the other side never sees it)."""
    import os
    import subprocess

    from experiments.benchmarks.interpreter_build import _environment

    monkeypatch.delenv("WINNOW_COMPILED", raising=False)
    with _environment({"WINNOW_COMPILED": "0"}):
        seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ['WINNOW_COMPILED'])"],
                              capture_output=True, text=True).stdout.strip()
    assert seen == "0" and "WINNOW_COMPILED" not in os.environ


@pytest.mark.shared_data
def test_ab_benchmark_times_the_compiled_and_the_python_chunk_table(tmp_path):
    """One round on five real web pages: both sides are timed, B's process ran without the compiled chunk table
    (the variable reached it), and the report gives each side's CPU seconds and their ratio."""
    import json

    from experiments.benchmarks import interpreter_build

    out = tmp_path / "ab.md"
    interpreter_build.main([sys.executable, sys.executable, "--env-b", "WINNOW_COMPILED=0", "--rounds", "1",
                            "--per-source", "5", "--out", str(out)])
    text = out.read_text()
    runs = [json.loads(line) for line in text.split("```")[1].strip().splitlines()]
    assert sorted(r["ab"] for r in runs) == ["A", "B"] and all(r["cpu_s"] > 0 and r["docs"] == 5 for r in runs)
    assert {r["ab"]: r["compiled"] for r in runs}["B"] is False
    assert "with WINNOW_COMPILED=0" in text and "Median of the per-round ratios B / A" in text
