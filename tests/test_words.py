"""The spaCy-like tokenizer and sentencizer behind the Gopher, C4 and FineWeb rules.

Expected tokens are those of spaCy 3.8's blank English pipeline (what datatrove
uses), checked by hand on these sentences; the conformance benchmark measures
agreement on thousands of real documents.
"""
from __future__ import annotations

import pytest

from filters.words import count_sentences, spacy_like_words, words


@pytest.mark.parametrize("text,tokens", [
    ("Hello, world! It's a well-known fact (really).",
     ["Hello", ",", "world", "!", "It", "'s", "a", "well", "-", "known", "fact", "(", "really", ")", "."]),
    ("I don't think we're done", ["I", "do", "n't", "think", "we", "'re", "done"]),
    ("Mr. Smith J. went to the U.S. on Jan. 5th, e.g. at 10:30 a.m. etc.",
     ["Mr.", "Smith", "J.", "went", "to", "the", "U.S.", "on", "Jan.", "5th", ",", "e.g.", "at", "10:30", "a.m.",
      "etc", "."]),
    ("Visit https://example.com/a?b=1. Or www.foo.org, or mail me@x.org!",
     ["Visit", "https://example.com/a?b=1", ".", "Or", "www.foo.org", ",", "or", "mail", "me@x.org", "!"]),
    ("$5.00 5% 3-4 -5 a/b 1,000 end.The ...dots word... ##tag 10km",
     ["$", "5.00", "5", "%", "3", "-", "4", "-5", "a", "/", "b", "1,000", "end", ".", "The", "...", "dots", "word",
      "...", "#", "#", "tag", "10", "km"]),
    ("This is GREAT. OK. THE END.", ["This", "is", "GREAT", ".", "OK", ".", "THE", "END", "."]),
])
def test_tokens_match_spacy(text, tokens):
    assert spacy_like_words(text) == tokens


def test_whitespace_option_and_unknown_name():
    assert words("end. The", "whitespace") == ["end.", "The"]
    assert words("end. The") == ["end", ".", "The"]
    with pytest.raises(ValueError, match="unknown tokenizer"):
        words("x", "nltk")


def test_sentences_follow_the_sentencizer():
    count = lambda t: count_sentences(spacy_like_words(t))  # noqa: E731
    assert count('He said: "No." Then he left.') == 2      # a closing quote does not start a sentence
    assert count("Mr. Smith went to the U.S. on Monday.") == 1  # abbreviations are single tokens
    assert count("Wait... what?! Yes.") == 2                # "..." is not a sentence end
    assert count("") == 0


@pytest.mark.parametrize("text,tokens", [
    # Indic vowel signs are letters to spaCy (whole Unicode blocks), so the final "." is split off
    ("அவன் வீட்டுக்குப் போனான். நேரமாகிவிட்டது.",
     ["அவன்", "வீட்டுக்குப்", "போனான்", ".", "நேரமாகிவிட்டது", "."]),
    ("मैं घर जा रहा हूँ. वह आया है.", ["मैं", "घर", "जा", "रहा", "हूँ", ".", "वह", "आया", "है", "."]),
    # only spaCy's listed "-in'" words keep their apostrophe
    ("We went fishin' and huntin' all day, doin' nothing.",
     ["We", "went", "fishin", "'", "and", "huntin", "'", "all", "day", ",", "doin'", "nothing", "."]),
    # one lower-case letter and a period is a special case ("z.", "v."), an upper-case letter and a period one token
    ("Das gilt z.B. für Vereine (e.V.) und v. a. für Schulen, vgl. S. 4.",
     ["Das", "gilt", "z.", "B.", "für", "Vereine", "(", "e.", "V.", ")", "und", "v.", "a.", "für", "Schulen", ",",
      "vgl", ".", "S.", "4", "."]),
    ("Er wartete…… dann ging er…", ["Er", "wartete", "……", "dann", "ging", "er", "…"]),
    # contractions written without the apostrophe
    ("id say its fine, wed go, cant stop, wont stop, thats it.",
     ["i", "d", "say", "its", "fine", ",", "we", "d", "go", ",", "ca", "nt", "stop", ",", "wo", "nt", "stop", ",",
      "that", "s", "it", "."]),
    ("I'll be there at 5pm, y'all, ma'am.", ["I", "'ll", "be", "there", "at", "5", "pm", ",", "y'", "all", ",", "ma'am", "."]),
    # emoticons that contain punctuation survive the affix rules
    ("Nice :-). See (8) and (x) and item 8) here.",
     ["Nice", ":-)", ".", "See", "(", "8)", "and", "(", "x", ")", "and", "item", "8)", "here", "."]),
    ("The price rose 5% to $3.50 (US$4) in 2019; 25°C. is warm.",
     ["The", "price", "rose", "5", "%", "to", "$", "3.50", "(", "US$", "4", ")", "in", "2019", ";", "25", "°", "C",
      ".", "is", "warm", "."]),
    ("هذا كتاب. الجملة-الثانية هنا.", ["هذا", "كتاب", ".", "الجملة", "-", "الثانية", "هنا", "."]),
    ("Ünïcödé ß-Straße, naïve café's menu.",
     ["Ünïcödé", "ß", "-", "Straße", ",", "naïve", "café", "'s", "menu", "."]),
    # spaCy's symbols are Unicode 11's: an emoji added later does not split off a period
    ("©2020 All rights reserved™. 😀smile 🥲.", ["©", "2020", "All", "rights", "reserved", "™", ".", "😀", "smile", "🥲."]),
])
def test_once_different_from_spacy(text, tokens):
    """Cases where winnow's tokenizer used to differ from spaCy 3.8 (tokens checked with spaCy itself)."""
    assert spacy_like_words(text) == tokens


def test_fast_affix_rules_agree_with_spacys_patterns():
    """The hot-path prefix and suffix functions give what the transcribed spaCy patterns give, on random
    strings built from the characters those rules care about."""
    import random

    from filters.words import _PREFIX, _SUFFIX, _prefix_len, _suffix_len

    rng = random.Random(3)
    pool = list("aZ9.,;:!?()[]\"'’“”…—–-+%$€°CFk²§=#*&|_~/<>") + ["US$", "C$", "km", "mbar", "'s", "’S", "……",
                                                                    "😀", "🥲", "™", "©", "ß", "ж", "Ж", "த", "ி", "ا"]
    for _ in range(20000):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
        m = _PREFIX.match(s)
        assert _prefix_len(s) == (m.end() if m else 0), s
        m = _SUFFIX.search(s)
        assert _suffix_len(s) == (len(s) - m.start() if m else 0), s


@pytest.mark.shared_data
def test_real_sentences_where_winnow_and_spacy_once_disagreed(shared):
    """Real lines (Usenet, Wikipedia, OSCAR in ../shared/data) holding a chunk that winnow's earlier tokenizer
    split differently from spaCy 3.8.18; the file keeps where each line is and spaCy's token offsets in it,
    not the text. Made by tokenising every chunk of the conformance benchmark's documents with both."""
    import gzip
    import json
    from pathlib import Path

    cases = [json.loads(line) for line in (Path(__file__).parent / "data" / "spacy_token_regression.jsonl").open()]
    rows: dict = {}
    for c in cases:
        rows.setdefault(c["file"], set()).add(c["row"])
    texts = {}
    for name, wanted in rows.items():
        with gzip.open(shared / name, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i in wanted:
                    texts[(name, i)] = json.loads(line)["text"]
                if i >= max(wanted):
                    break
    assert len(cases) > 200
    wrong = []
    for c in cases:
        line = texts[(c["file"], c["row"])][c["start"]:c["end"]]
        want = [line[a:b] for a, b in c["spacy"]]
        if spacy_like_words(line) != want:
            wrong.append((c["file"], c["row"], line[c["chunk_at"]:c["chunk_at"] + 30]))
    assert not wrong, wrong[:5]


def test_fast_paths_agree_with_the_general_affix_loop():
    """The shortcuts (a chunk's commonest shapes, and the second pass only where a token pair could start a
    special case) give what spaCy's general loop gives, on random chunks built from the characters that matter."""
    import random

    from filters.words import _AFFIX_SPECIALS, _split, _split_fast, split_chunk

    rng = random.Random(5)
    pool = list("aZe9.,;:!?()[]\"'’“”…—–-+%$°C²/") + ["US$", "km", "'s", "’S", "Mr", "vs", "e.g", "g", "i", "😀", "த", "ி"]
    for _ in range(30000):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(1, 7)))
        fast = _split_fast(s)
        assert fast is None or fast == _split(s), s
        tokens, i, want = _split(s) if fast is None else fast, 0, []
        while i < len(tokens):  # the second pass, trying every run of tokens
            for n in range(len(tokens) - i, 1, -1):
                hit = _AFFIX_SPECIALS.get(tuple(tokens[i:i + n]))
                if hit is not None:
                    want.extend(hit)
                    i += n
                    break
            else:
                want.append(tokens[i])
                i += 1
        assert split_chunk(s) == want, s


def _table_with(kernel, texts: list[str], tokenizer: str, monkeypatch) -> tuple:
    """Every document's token strings and the vocabulary's and chunk table's contents, tokenised cold with the
    compiled chunk table (``kernel``) or with the Python loops (None)."""
    from filters import words as w

    monkeypatch.setattr(w, "_kernel", kernel)
    w.clear_caches()
    docs = w.doc_tokens_batch(texts, tokenizer)
    v = w._vocab
    state = ([d.strings() for d in docs], list(v.strings), v.chunk_tokens[:v.n_chunk_tokens].tolist(),
             v.chunk_len[:v.n_chunks].tolist(), dict(v.chunks[tokenizer]), [d.n_words for d in docs])
    w.clear_caches()
    return state


def _compiled_or_skip():
    import os
    import shutil

    from filters import words as w

    if w._kernel is None:
        if os.environ.get("WINNOW_COMPILED") == "0":
            pytest.skip("WINNOW_COMPILED=0: the chunk table runs in Python")
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail("filters/chunk_kernel.c was not built although a C compiler is here: reinstall (make install)")
        pytest.skip("no C compiler here: the chunk table runs in Python")
    return w._kernel


@pytest.mark.parametrize("tokenizer", ["spacy_like", "whitespace"])
def test_compiled_chunk_table_is_the_python_one(tokenizer, monkeypatch):
    """filters/chunk_kernel.c gives the same tokens, the same vocabulary ids in the same order and the same chunk
    table as the Python loops, on random chunks built from what its fast path looks at (letters of several
    scripts, digits, closing marks, the dot rules' capitals, words that are special cases alone or with a mark)."""
    import random

    kernel = _compiled_or_skip()
    rng = random.Random(11)
    pool = (list("aZe9.,;:!?)](\"'’“…-–/²ßÉжЖ日த ") + ["J", "US", "Mr", "cannot", "8", "o", "'s", "\t", "\n"])
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 400))) for _ in range(600)]
    texts += ["J. R. R. Tolkien, Ph.D. cannot; 8) o) US. aB. ÉA. 1². zz: x'", ""]
    assert _table_with(kernel, texts, tokenizer, monkeypatch) == _table_with(None, texts, tokenizer, monkeypatch)


def test_compiled_affix_loop_and_infixes_are_split_chunks():
    """The compiled general tokenizer (spaCy's affix loop, URL check and infixes) gives split_chunk's tokens on
    random chunks built from every character an affix, infix or special-case rule looks at; where spaCy's second
    pass could join tokens it answers None and Python decides."""
    import random

    from filters.words import SPECIAL_CASES, split_chunk

    kernel = _compiled_or_skip()
    rng = random.Random(7)
    pool = list("aZe9.,;:!?()[]\"'’“”…—–-+%$°C²/~<>=*^&#@") + [
        "US$", "km", "'s", "’S", "Mr", "vs", "e.g", "g", "i", "😀", "த", "ி", "ж", "Ж", "日", "http://", "www.", ".com",
        "ß", "É", "°F", "..", "——", "--", "ca", "n't", "a.m", "8"]
    edges = ["5°F.", "5°c.", "°K.", "AB.", "aB.", "ÉA.", "US$5", "C$5", "A$", "+5", "+a", "5+", "5km", "5km.", "10mph",
             "5MB)", "..a", "a..", "a...", "e.g.,", "http://x.com/a.", "www.x.org).", "a.B", "a.“B", "a,b", "a-b", "a–b",
             "a——b", "a---b", "a~b", "a:b", "a/b", "a<b", "5-5", "5--5", "5^2", "5*-2", "a’s", "’S", "(a)", "“a,”", "😀a😀",
             "a…b", "……a", "a……", "¿a?", "5%.", "².", "(“" * 1500 + "a" + ")" * 3000]  # a long run: no copy per step
    answered = [s for s in edges if kernel.split_general(s, SPECIAL_CASES) is not None]
    assert len(answered) > 40
    for s in answered:
        assert kernel.split_general(s, SPECIAL_CASES) == split_chunk(s), s
    decided = 0
    for _ in range(40000):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(1, 9)))
        if s in SPECIAL_CASES:
            continue
        got = kernel.split_general(s, SPECIAL_CASES)
        if got is not None:
            decided += 1
            assert got == split_chunk(s), s
    assert decided > 30000


@pytest.mark.shared_data
def test_compiled_chunk_table_on_real_documents(shared, monkeypatch):
    """The same equality on real text: web pages, Usenet posts and OSCAR in several languages."""
    import gzip
    import json

    kernel = _compiled_or_skip()
    texts = []
    for name, field in (("webpages-extracted.jsonl.gz", "text"), ("usenet-20news.jsonl.gz", "text"),
                        ("oscar-sample.jsonl.gz", "text")):
        with gzip.open(shared / "raw" / name, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i == 300:
                    break
                texts.append(json.loads(line).get(field) or "")
    assert sum(map(len, texts)) > 1_000_000
    assert _table_with(kernel, texts, "spacy_like", monkeypatch) == _table_with(None, texts, "spacy_like", monkeypatch)


def test_compiled_chunk_table_leaves_the_cache_unchanged_on_error(monkeypatch):
    """A chunk the tokenizer cannot take (here: a failure injected into split_chunk, which the compiled loop asks
    about "(Ph.", whose tokens could start the special case "Ph.D.") leaves no half-entered chunk behind: the
    next call tokenises it again instead of reading a table row that was never written."""
    from filters import words as w

    _compiled_or_skip()
    w.clear_caches()
    real = w.split_chunk
    monkeypatch.setattr(w, "split_chunk", lambda c: (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError, match="injected"):
        w.doc_tokens_batch(["plain words (Ph. and a bracket"])
    assert not w._vocab.chunks["spacy_like"]
    monkeypatch.setattr(w, "split_chunk", real)
    assert w.spacy_like_words("plain words (Ph. and a bracket") == ["plain", "words", "(", "Ph", ".", "and", "a",
                                                                     "bracket"]
