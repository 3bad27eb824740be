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
