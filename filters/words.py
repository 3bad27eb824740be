"""Word tokens for the heuristic filters: spaCy's English tokenizer, re-implemented without spaCy.

Gopher's and FineWeb's rules count words, and the implementation the field
runs (datatrove, which made FineWeb) counts the tokens of spaCy's blank English
pipeline: punctuation is split off words ("end." -> "end", "."), so a comma is
a "word" without a letter, and "don't" is two words ("do", "n't").
``tokenizer: spacy_like`` (the default) reproduces that tokenizer's algorithm
(https://spacy.io/usage/linguistic-features#how-tokenizer-works) on every
whitespace-separated chunk: exact special cases first, then prefixes, suffixes
and infixes with spaCy 3.8's character classes, URLs kept whole, and special
cases that contain punctuation restored afterwards. The character classes,
special cases, sentence-final marks and punctuation sets below are the ones
spaCy 3.8 and datatrove 0.10.1 use; ``experiments/benchmarks/
heuristics_conformance.py`` checks them against the installed packages and
the tokens against spaCy's on thousands of real documents, and
``tests/data/spacy_tokens.jsonl`` keeps real sentences where the two once
disagreed. ``tokenizer: whitespace`` is ``str.split``, the literal reading of
"words" in Rae et al. (2021).

Speed: chunks are memoised (a chunk is tokenised once per process, then looked
up), and tokens are integer ids into a per-process vocabulary that knows each
token's length and kind, so a document's statistics are a few NumPy
operations over its id array, and :func:`doc_tokens` keeps the last
documents' results so the Gopher, C4 and FineWeb filters of one stage
tokenise a text once. Where the install could build ``filters/chunk_kernel.c``,
the per-chunk work is compiled: looking every chunk up, turning each new one
into token ids, and the affix loop and infixes below (with this module's
character classes, special cases and URL pattern, and back to
:func:`split_chunk` wherever spaCy's second pass could join tokens). Python's
overhead on about a million chunks per 7 MB of web text was most of the
tokenizer's time. Both ways give the same ids in the same order
(tests/test_words.py); ``WINNOW_COMPILED=0`` runs the Python code.

:func:`lines_sentences` counts sentences as spaCy's rule-based sentencizer does:
a sentence starts at the first token that is not punctuation after a
sentence-final mark.
"""
from __future__ import annotations

import os
import re
import string as _string
import unicodedata
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np
import regex

#: The chunk table's per-chunk loops, compiled (filters/chunk_kernel.c, built by the install where a C compiler
#: is); the same steps run in Python without it, or with WINNOW_COMPILED=0 in the environment (for A/B timing).
_kernel = None
if os.environ.get("WINNOW_COMPILED", "1") != "0":
    try:
        from filters import chunk_kernel as _kernel
    except ImportError:  # pragma: no cover - a build without a C compiler
        _kernel = None


def compiled() -> bool:
    """Whether the compiled chunk table is in use (benchmarks name it next to their figures)."""
    return _kernel is not None


TOKENIZERS = ("spacy_like", "whitespace")


def _chars(ranges: str) -> str:
    """Characters of space-separated hexadecimal code points and ranges ("21 2E 700-702")."""
    out = []
    for part in ranges.split():
        lo, _, hi = part.partition("-")
        out.extend(map(chr, range(int(lo, 16), int(hi or lo, 16) + 1)))
    return "".join(out)


# ---------------------------------------------------------------------------
# spaCy 3.8's character classes (spacy/lang/char_classes.py), as Unicode ranges

#: Scripts spaCy treats as letters without case: Ethiopic, Bengali, Hebrew, Arabic and Persian, Sinhala,
#: Devanagari, Kannada, Tamil, Telugu, Hangul, kana and CJK. Whole blocks, so vowel signs count as letters;
#: Arabic letters (without the Arabic digits and marks), Gujarati, Thai or Armenian are not there.
_UNCASED = (r"\u1200-\u137F\u0980-\u09FF\u0591-\u05F4\uFB1D-\uFB4F\u0620-\u064A\u066E-\u06D5\u06E5-\u06FF"
            r"\u0750-\u077F\u08A0-\u08BD\uFB50-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7"
            r"\uFDF0-\uFDFB\uFE70-\uFEFC\U0001EE00-\U0001EEBB\u0D80-\u0DFF\u0900-\u097F\u0C80-\u0CFF\u0B80-\u0BFF"
            r"\u0C00-\u0C7F\uAC00-\uD7AF\u1100-\u11FF\u3040-\u309F\u30A0-\u30FFー\u4E00-\u9FFF\u3400-\u4DBF"
            r"\U00020000-\U0002A6DF\U0002A700-\U0002EBEF\u2E80-\u2EFF\u2F00-\u2FDF\u2FF0-\u2FFF\u3000-\u303F"
            r"\u31C0-\u31EF\u3200-\u32FF\u3300-\u33FF\uF900-\uFAFF\uFE30-\uFE4F\U0001F200-\U0001F2FF"
            r"\U0002F800-\U0002FA1F")
#: Latin letters spaCy knows (basic, full-width, Latin-1, Extended A-E, IPA and phonetic, Vietnamese).
_LATIN = (r"A-Za-z\uFF21-\uFF3A\uFF41-\uFF5A\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u00FF\u0100-\u017F\u0180-\u01BF"
          r"\u01C4-\u024F\u2C60-\u2C7B\u2C7E\u2C7F\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uA790-\uA7B9\uA7FA"
          r"\uAB30-\uAB5A\uAB60-\uAB64\u0250-\u02AF\u1D00-\u1D25\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1EFF")
#: Cyrillic (Russian, Tatar, Ukrainian, Macedonian letters only) and Greek (no dialytika) as spaCy lists them.
_OTHER_LOWER = "ёа-яәөүҗңһα-ωάέίόώήύа-щюяіїєґѓѕјљњќѐѝ"
_OTHER_UPPER = "ЁА-ЯӘӨҮҖҢҺΑ-ΩΆΈΊΌΏΉΎА-ЩЮЯІЇЄҐЃЅЈЉЊЌЀЍ"
ALPHA_LOWER = rf"[[{_LATIN}]&&\p{{Ll}}]\u0250-\u02AF{_OTHER_LOWER}{_UNCASED}"  # IPA letters count as lower case
ALPHA_UPPER = rf"[[{_LATIN}]&&\p{{Lu}}]{_OTHER_UPPER}{_UNCASED}"
ALPHA = rf"{_LATIN}{_OTHER_LOWER}{_OTHER_UPPER}{_UNCASED}"

_PUNCT = ("…", "……", ",", ":", ";", "!", "?", "¿", "؟", "¡", "(", ")", "[", "]", "{", "}", "<", ">", "_", "#", "*",
          "&", "。", "？", "！", "，", "、", "；", "：", "～", "·", "।", "،", "۔", "؛", "٪")
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = ("$", "£", "€", "¥", "฿", "US$", "C$", "A$", "₽", "﷼", "₴", "₠", "₡", "₢", "₣", "₤", "₥", "₦", "₧", "₨",
             "₩", "₪", "₫", "₭", "₮", "₯", "₰", "₱", "₲", "₳", "₵", "₶", "₷", "₸", "₹", "₺", "₻", "₼", "₾", "₿")
# spaCy's unit list; "тбكم" is one entry there (two words run together in its source), so it is one here.
_UNITS = ("km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh "
          "mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм "
          "кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тбكم كم² كم³ م م² م³ سم سم² سم³ مم مم² "
          "مم³ كم غرام جرام جم كغ ملغ كوب اكواب").split()
_HYPHENS = ("-", "–", "—", "--", "---", "——", "~")
#: spaCy's "icons": Unicode's other-symbol category as of Unicode 11, i.e. So without the symbols added since.
_ICONS_MISSING = _chars(
    "166D 2427-2429 2B96-2B97 2BC9 2BFF 2E50-2E51 2FFC-2FFF 31E4-31E5 31EF 32FF FBC3-FBD2 FD40-FD4F FD90-FD91 "
    "FDC8-FDCF FDFE-FDFF 1019C 10ED1-10ED8 11FD5-11FDC 11FE1-11FF1 1CC00-1CCEF 1CCFA-1CCFC 1CD00-1CEB3 1CEBA-1CED0 "
    "1CED2-1CED4 1CEE0-1CEEF 1CF50-1CFC3 1D1E9-1D1FF 1D253-1D25A 1D25D-1D25E 1D260-1D27F 1E14F 1ED2E 1F10D-1F10F "
    "1F16C-1F16F 1F1AD-1F1AE 1F6D5-1F6D9 1F6DC-1F6DF 1F6FA-1F6FC 1F774-1F77F 1F7D9-1F7DB 1F7E0-1F7EB 1F7F0-1F7FF "
    "1F8B0-1F8BB 1F8C0-1F8C1 1F90C-1F90F 1F93F 1F971-1F972 1F977-1F979 1F97B 1F9A3-1F9AF 1F9BA-1F9BF 1F9C3-1F9CF "
    "1FA00-1FA57 1FA70-1FA7C 1FA80-1FAC6 1FAC8 1FACC-1FADD 1FADF-1FAEB 1FAEF-1FAFA 1FB00-1FB92 1FB94-1FBEF 1FBFA")
_ICON = rf"[\p{{So}}--[{regex.escape(_ICONS_MISSING)}]]"


def _alt(items) -> str:
    return "|".join(map(regex.escape, items))


_E = regex.escape
_PUNCT_CHARS = "".join(p for p in _PUNCT if len(p) == 1)
#: The characters before a final "." that make it a suffix. spaCy writes this class with its punctuation list
#: joined by "|" and its quote list inside "(?:...)", so "|", "(", "?", ":" and ")" are members too.
_BEFORE_FINAL_DOT = rf"0-9{ALPHA_LOWER}%²\-+{_E(_PUNCT_CHARS + _QUOTES + '|(?:)')}"
_PREFIX = regex.compile(
    rf"§|%|=|—|–|\+(?![0-9])|…|[{_E(_PUNCT_CHARS + _QUOTES)}]|\.\.+|{_alt(_CURRENCY)}|{_ICON}", regex.V1)
#: spaCy searches for the leftmost position from which one of its suffixes reaches the end of the chunk.
_SUFFIX = regex.compile(
    rf"(?:……|[{_E(_PUNCT_CHARS + _QUOTES)}]|\.\.+|…|{_ICON}|['’][sS]|—|–|(?<=[0-9])\+|(?<=°[FfCcKk])\."
    rf"|(?<=[0-9])(?:{_alt(_CURRENCY)})|(?<=[0-9])(?:{_alt(_UNITS)})|(?<=[{_BEFORE_FINAL_DOT}])\."
    rf"|(?<=[{ALPHA_UPPER}][{ALPHA_UPPER}])\.)$", regex.V1)
_INFIX = regex.compile(
    rf"\.\.+|…|{_ICON}|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[{ALPHA_LOWER}{_E(_QUOTES)}])\.(?=[{ALPHA_UPPER}{_E(_QUOTES)}])"
    rf"|(?<=[{ALPHA}]),(?=[{ALPHA}])|(?<=[{ALPHA}0-9])(?:{_alt(_HYPHENS)})(?=[{ALPHA}])"
    rf"|(?<=[{ALPHA}0-9])[:<>=/](?=[{ALPHA}])", regex.V1)
#: spaCy's URL pattern (after Diego Perini's): optional scheme and user, a public IPv4 address or host names
#: ending in a lower-case top-level domain, optional port and path. A chunk that matches is one token.
_URL = regex.compile(
    r"(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?"
    r"(?:(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])"
    r"(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    r"|(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"
    rf"(?:[{ALPHA_LOWER}]{{2,63}}))(?::\d{{2,5}})?(?:[/?#]\S*)?", regex.V1)


# ---------------------------------------------------------------------------
# special cases: strings spaCy's English tokenizer splits in a fixed way (or keeps whole)


def _special_cases() -> dict[str, tuple[str, ...]]:
    """spaCy 3.8's English tokenizer exceptions, generated family by family as spaCy builds them."""
    exc: dict[str, tuple[str, ...]] = {}

    def forms(word):  # spaCy writes most families in lower case and title case
        return (word, word.title())

    for w in forms("i"):
        exc.update({w + "'m": (w, "'m"), w + "m": (w, "m"), w + "'ma": (w, "'m", "a"), w + "ma": (w, "m", "a")})
    clitics = {"'ll": ("'ll",), "ll": ("ll",), "'ll've": ("'ll", "'ve"), "llve": ("ll", "ve"), "'d": ("'d",),
               "d": ("d",), "'d've": ("'d", "'ve"), "dve": ("d", "ve")}
    for pron in ("i", "you", "he", "she", "it", "we", "they"):
        for w in forms(pron):
            exc.update({w + c: (w, *parts) for c, parts in clitics.items()})
            if pron in ("i", "you", "we", "they"):
                exc.update({w + "'ve": (w, "'ve"), w + "ve": (w, "ve")})
            if pron in ("you", "we", "they"):
                exc.update({w + "'re": (w, "'re"), w + "re": (w, "re")})
            if pron in ("he", "she", "it"):
                exc.update({w + "'s": (w, "'s"), w + "s": (w, "s")})
    for word in ("who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"):
        for w in forms(word):
            if word not in ("these", "those"):
                exc.update({w + "'s": (w, "'s"), w + "s": (w, "s")})
            exc.update({w + c: (w, *parts) for c, parts in clitics.items()})
            if word not in ("that", "this"):
                exc.update({w + "'re": (w, "'re"), w + "re": (w, "re"), w + "'ve": (w, "'ve"), w + "ve": (w, "ve")})
    for verb in ("ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha", "should",
                 "wo", "would"):
        for w in forms(verb):
            exc.update({w + "n't": (w, "n't"), w + "nt": (w, "nt"), w + "n't've": (w, "n't", "'ve"),
                        w + "ntve": (w, "nt", "ve")})
    for verb in ("could", "might", "must", "should", "would"):
        for w in forms(verb):
            exc.update({w + "'ve": (w, "'ve"), w + "ve": (w, "ve")})
    for verb in ("ai", "are", "is", "was", "were", "have", "has", "dare"):
        for w in forms(verb):
            exc.update({w + "n't": (w, "n't"), w + "nt": (w, "nt")})
    for word in ("doin", "goin", "nothin", "nuthin", "ol", "somethin"):  # trailing apostrophe optional
        for w in forms(word):
            exc.update({w: (w,), w + "'": (w + "'",)})
    for word in ("em", "ll", "nuff"):  # leading apostrophe optional
        exc.update({word: (word,), "'" + word: ("'" + word,)})
    for h in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            exc[f"{h}{period}"] = (str(h), period)
    for w in forms("not"):
        exc.update({w + "'ve": (w, "'ve"), w + "ve": (w, "ve")})
    for w, a, b in (("cannot", "can", "not"), ("gonna", "gon", "na"), ("gotta", "got", "ta"), ("let's", "let", "'s"),
                    ("c'mon", "c'm", "on")):
        exc[w] = (a, b)
        exc[w[0].upper() + w[1:]] = (a[0].upper() + a[1:], b)
    exc.update({"y'all": ("y'", "all"), "yall": ("y", "all"), "how'd'y": ("how", "'d", "'y"),
                "How'd'y": ("How", "'d", "'y")})
    for unit in "CFKcfk":
        exc[f"°{unit}."] = ("°", unit, ".")
    single = (
        # apostrophes, contractions and spellings kept whole
        "'S 's ‘S ‘s 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock O'clock lovin' Lovin' "
        "lovin Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin' Goin' goin Goin and/or w/o 'd ' '' C++ — "
        # abbreviations
        "a.m. p.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd. Md. Messrs. "
        "Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. Mt. Ak. Ala. Apr. Ariz. Ark. Aug. Calif. "
        "Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. "
        "Minn. Miss. S.C. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. Sep. Sept. Tenn. Va. "
        "Wash. Wis. ä. ö. ü. " + " ".join(c + "." for c in _string.ascii_lowercase) + " "
        # emoticons
        r"""\") <space> \n \t (*_*) (-8 (-: (-; (-_-) (._.) (: (; (= (>_<) (^_^) (o: (¬_¬) (ಠ_ಠ) (╯°□°）╯︵┻━┻ )-: ): -_-
        -__- ._. 0.0 0.o 0_0 0_o 8) 8-) 8-D 8D :'( :') :'-( :'-) :( :(( :((( :() :) :)) :))) :* :-( :-(( :-((( :-)
        :-)) :-))) :-* :-/ :-0 :-3 :-> :-D :-O :-P :-X :-] :-o :-p :-x :-| :-} :/ :0 :1 :3 :> :D :O :P :X :] :o :o)
        :p :x :| :} ;) ;-) ;-D ;D ;_; <.< </3 <3 <33 <333 =( =) =/ =3 =D =[ =] =| >.< >.> >:( >:o ><(((*> @_@ O.O
        O.o O_O O_o V.V V_V XD XDD [-: [: [= ]= ^_^ ^__^ ^___^ o.0 o.O o.o o_0 o_O o_o v.v v_v xD xDD ¯\(ツ)/¯ ಠ_ಠ
        ಠ︵ಠ""").split()
    exc.update({w: (w,) for w in single})
    for w in ("Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were", "Were", "Well",
              "well", "Whore", "whore"):
        exc.pop(w, None)
    # every special case with "'" also exists with "’"
    exc.update({k.replace("'", "’"): tuple(t.replace("'", "’") for t in v) for k, v in list(exc.items()) if "'" in k})
    return exc


SPECIAL_CASES = _special_cases()


# ---------------------------------------------------------------------------
# the same affix rules without the regular expressions (the hot path; tests/test_words.py checks that they
# agree with the patterns above on every chunk of real documents and on random strings)

_DIGITS = frozenset("0123456789")
#: What a character can be to the affix and infix rules (bits of ``_FLAGS[c]``): a one-character prefix or
#: suffix, a character that makes a following final "." a suffix, an upper-case letter; and for the infixes
#: (the compiled tokenizer reads these): an icon, a letter of spaCy's ALPHA, a lower-case letter or quote before
#: an infix ".", an upper-case letter or quote after it.
_P1, _S1, _DOT_OK, _UP, _ICON_F, _ALPHA_F, _LOWER_Q, _UPPER_Q = 1, 2, 4, 8, 16, 32, 64, 128
_ONE_CHAR_PREFIX = regex.compile(rf"[§%=—–…{_E(_PUNCT_CHARS + _QUOTES)}{_E(''.join(c for c in _CURRENCY if len(c) == 1))}]"
                                 rf"|{_ICON}", regex.V1)
_ONE_CHAR_SUFFIX = regex.compile(rf"[…—–{_E(_PUNCT_CHARS + _QUOTES)}]|{_ICON}", regex.V1)
_DOT_OK_CHAR = regex.compile(rf"[{_BEFORE_FINAL_DOT}]", regex.V1)
_UPPER_CHAR = regex.compile(rf"[{ALPHA_UPPER}]", regex.V1)
_ICON_CHAR = regex.compile(_ICON, regex.V1)
_ALPHA_CHAR = regex.compile(rf"[{ALPHA}]", regex.V1)
_LOWER_OR_QUOTE = regex.compile(rf"[{ALPHA_LOWER}{_E(_QUOTES)}]", regex.V1)
_UPPER_OR_QUOTE = regex.compile(rf"[{ALPHA_UPPER}{_E(_QUOTES)}]", regex.V1)


class _FlagTable(dict):
    """Character -> which affix roles it can play, computed on first lookup (``_FLAGS[c]``: no call on a hit)."""

    def __missing__(self, c: str) -> int:
        f = self[c] = ((_P1 if _ONE_CHAR_PREFIX.match(c) else 0) | (_S1 if _ONE_CHAR_SUFFIX.match(c) else 0)
                       | (_DOT_OK if _DOT_OK_CHAR.match(c) else 0) | (_UP if _UPPER_CHAR.match(c) else 0)
                       | (_ICON_F if _ICON_CHAR.match(c) else 0) | (_ALPHA_F if _ALPHA_CHAR.match(c) else 0)
                       | (_LOWER_Q if _LOWER_OR_QUOTE.match(c) else 0) | (_UPPER_Q if _UPPER_OR_QUOTE.match(c) else 0))
        return f


_FLAGS = _FlagTable()


#: Suffixes after an ASCII digit (currencies and units), by length; and the two-character suffixes.
_AFTER_DIGIT = {n: frozenset(x for x in (*_CURRENCY, *_UNITS) if len(x) == n) for n in range(1, 6)}
_SUFFIX_MAX = max(_AFTER_DIGIT)
_TWO_CHAR_SUFFIX = frozenset(("……", "'s", "'S", "’s", "’S"))


def _prefix_len(s: str) -> int:
    """Length of the prefix spaCy splits off ``s``, 0 if none (as ``_PREFIX.match``)."""
    c = s[0]
    if c == ".":
        n = len(s) - len(s.lstrip("."))
        return n if n > 1 else 0
    if c == "+":
        return 1 if len(s) == 1 or s[1] not in _DIGITS else 0
    if _FLAGS[c] & _P1:
        return 1
    if s.startswith("US$"):
        return 3
    if s.startswith(("C$", "A$")):
        return 2
    return 0


def _suffix_len(s: str) -> int:
    """Length of the suffix spaCy splits off ``s``, 0 if none: the leftmost suffix that reaches the end (as
    ``_SUFFIX.search``), so a run of dots first, then the longest unit or currency after a digit."""
    n = len(s)
    if not n:
        return 0
    if n > 1 and s[-1] == "." and s[-2] == ".":
        return n - len(s.rstrip("."))
    if not _DIGITS.isdisjoint(s[-_SUFFIX_MAX - 1:-2]):  # a unit or currency of 2 or more characters may follow
        for k in range(min(_SUFFIX_MAX, n - 1), 1, -1):
            tail = s[-k:]
            if s[-k - 1] in _DIGITS and tail in _AFTER_DIGIT[k]:
                return k
    if n > 1 and s[-2:] in _TWO_CHAR_SUFFIX:
        return 2
    c = s[-1]
    if _FLAGS[c] & _S1:
        return 1
    if n > 1:
        b = s[-2]
        if b in _DIGITS and (c == "+" or c in _AFTER_DIGIT[1]):
            return 1
        if c == ".":
            if _FLAGS[b] & _DOT_OK or n > 2 and (_FLAGS[b] & _UP and _FLAGS[s[-3]] & _UP
                                                  or s[-3] == "°" and b in "FfCcKk"):
                return 1
    return 0


#: Characters some infix rule starts with; a string without any has no infix.
_INFIX_TRIGGER = regex.compile(rf"[.…+\-*^,–—~:<>=/]|{_ICON}", regex.V1)


def _split(chunk: str, specials: bool = True) -> list[str]:
    """spaCy's tokenisation of one whitespace-free chunk: affixes, special cases, URLs, infixes."""
    if specials and chunk in SPECIAL_CASES:
        return list(SPECIAL_CASES[chunk])
    prefixes: list[str] = []
    suffixes: list[str] = []
    s, last = chunk, -1
    while s and len(s) != last:
        if specials and s in SPECIAL_CASES:
            break
        last = len(s)
        pre = _prefix_len(s)
        if pre and specials and s[pre:] in SPECIAL_CASES:
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        suf = _suffix_len(s[pre:])
        if suf and specials and s[:-suf] in SPECIAL_CASES:
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
        if s and specials and s in SPECIAL_CASES:
            break
    core: list[str] = []
    if s:
        if specials and s in SPECIAL_CASES:
            core = list(SPECIAL_CASES[s])
        elif "." in s and _URL.fullmatch(s):
            core = [s]
        elif _INFIX_TRIGGER.search(s) is None:
            core = [s]
        else:
            start = 0
            for m in _INFIX.finditer(s):
                if m.start() == 0:  # spaCy ignores an infix at the very start
                    continue
                if m.start() != start:
                    core.append(s[start:m.start()])
                if m.end() != m.start():
                    core.append(m.group())
                start = m.end()
            if start < len(s):
                core.append(s[start:])
    return prefixes + core + suffixes[::-1]


def _affix_patterns() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Special cases whose own text splits at affixes, keyed by how affixes alone split them."""
    out = {}
    for orth, tokens in SPECIAL_CASES.items():
        if _PREFIX.match(orth) or _SUFFIX.search(orth) or _INFIX.search(orth):
            pattern = tuple(_split(orth, specials=False))
            if len(pattern) > 1:
                out[pattern] = tokens
    return out


_AFFIX_SPECIALS = _affix_patterns()
_AFFIX_PAIRS = frozenset(p[:2] for p in _AFFIX_SPECIALS)
_AFFIX_MAX = max(map(len, _AFFIX_SPECIALS), default=0)


#: A closing mark that is a one-character suffix after any word.
_CLOSING = frozenset(",;:!?)]\"'.")


def _split_fast(chunk: str) -> list[str] | None:
    """Tokens of the commonest chunk shapes by the same rules, without the general loop; None otherwise.

    A chunk of letters only (or digits only) is one token: no affix or infix rule involves a letter alone.
    A word with one-character punctuation around it ("(word", "word).", "“word,”") goes through spaCy's
    affix loop with the affixes known in advance.
    """
    special = SPECIAL_CASES.get(chunk)
    if special is not None:
        return list(special)
    if chunk.isalpha() or chunk.isdigit():
        return [chunk]
    word, mark = chunk[:-1], chunk[-1]
    if mark in _CLOSING and (word.isalpha() or word.isdigit()):  # the commonest: "word," "word." "it)"
        if mark != "." or (word[-1] in _DIGITS or _FLAGS[word[-1]] & _DOT_OK
                           or len(word) > 1 and _FLAGS[word[-2]] & _UP and _FLAGS[word[-1]] & _UP):
            return [*SPECIAL_CASES.get(word, (word,)), mark]
        return [chunk]  # "J." stays one token
    n = len(chunk)
    i = 0
    while i < n and _FLAGS[chunk[i]] & _P1 and chunk[i] != "…":
        i += 1
    j = n
    while j > i and (chunk[j - 1] == "." or _FLAGS[chunk[j - 1]] & _S1 and chunk[j - 1] != "…"):
        j -= 1
    core = chunk[i:j]
    if not core or not (core.isalpha() or core.isdigit()) or ".." in chunk or core in "sS" and i and chunk[i - 1] in "'’":
        return None  # "..." and "'s" are suffixes of more than one character
    a, b = 0, n
    prefixes: list[str] = []
    suffixes: list[str] = []
    while a < b:  # spaCy's affix loop (see _split), each affix one character
        if chunk[a:b] in SPECIAL_CASES:
            break
        pre = 1 if a < i else 0
        if pre and chunk[a + 1:b] in SPECIAL_CASES:
            prefixes.append(chunk[a])
            a += 1
            break
        suf = 0
        if b > j:
            if chunk[b - 1] != ".":
                suf = 1
            else:  # the suffix rules for "." look at what precedes it in the string without the prefix
                t = chunk[a + pre:b]
                if len(t) > 1 and (_FLAGS[t[-2]] & _DOT_OK or len(t) > 2 and (
                        _FLAGS[t[-3]] & _UP and _FLAGS[t[-2]] & _UP or t[-3] == "°" and t[-2] in "FfCcKk")):
                    suf = 1
                else:
                    return None  # a "." that stays attached: the general rules decide the rest
        if suf and chunk[a:b - 1] in SPECIAL_CASES:
            suffixes.append(chunk[b - 1])
            b -= 1
            break
        if not (pre or suf):
            break
        if pre:
            prefixes.append(chunk[a])
            a += 1
        if suf:
            suffixes.append(chunk[b - 1])
            b -= 1
        if chunk[a:b] in SPECIAL_CASES:
            break
    rest = chunk[a:b]
    core_tokens = SPECIAL_CASES.get(rest, (rest,) if rest else ())
    return prefixes + list(core_tokens) + suffixes[::-1]


#: Chunks the compiled fast path leaves to :func:`split_chunk`: a word and a closing mark that together spell
#: a special case with punctuation (spaCy's second pass would join them).
_KERNEL_EXCLUDE = frozenset(a + b for a, b in _AFFIX_PAIRS)
if _kernel is not None:  # the tables the compiled affix loop and infixes read (the same objects as here)
    _kernel.configure(_FLAGS, tuple(_AFTER_DIGIT.get(k, frozenset()) for k in range(_SUFFIX_MAX + 1)),
                      _TWO_CHAR_SUFFIX, _URL.fullmatch, _AFFIX_PAIRS, max(map(len, SPECIAL_CASES)))


def split_chunk(chunk: str) -> list[str]:
    """spaCy-like tokens of one whitespace-free chunk (uncached; :func:`doc_tokens` memoises chunks)."""
    tokens = _split_fast(chunk)
    if tokens is None:
        tokens = _split(chunk)
    if len(tokens) > 1 and not _AFFIX_PAIRS.isdisjoint(zip(tokens, tokens[1:])):
        # spaCy's second pass: token runs that spell a special case containing punctuation become that case
        i, out = 0, []
        while i < len(tokens):
            for n in range(min(_AFFIX_MAX, len(tokens) - i), 1, -1):
                hit = _AFFIX_SPECIALS.get(tuple(tokens[i:i + n]))
                if hit is not None:
                    out.extend(hit)
                    i += n
                    break
            else:
                out.append(tokens[i])
                i += 1
        tokens = out
    return tokens


# ---------------------------------------------------------------------------
# what the rules need to know about a token

#: datatrove's punctuation set (datatrove.utils.text.PUNCTUATION_SET): a token made only of these is not a
#: word for Gopher's word count and mean word length. ASCII punctuation, C0/C1 control characters, common
#: typographic marks, the full-width forms and its sentence-terminal marks (below).
_DATATROVE_PUNCTUATION = frozenset(
    _chars("0-8 B-1F 21-2F 3A-40 5B-60 7B-9F AB B4 BB 2013-2014 2019 201C-201E 2026 2236 2501 25BA 3001-3002 "
           "3008-300D 3010-3011 FF01 FF05 FF08-FF09 FF0C FF0E FF11 FF1A-FF1B FF1F FF5E"))
#: datatrove's TERMINAL_PUNCTUATION: what FineWeb's ``line_punct`` rule accepts as the end of a line.
TERMINAL_PUNCTUATION = frozenset(_chars(
    "21 2E 3F 589 61D-61F 6D4 700-702 7F9 837 839 83D-83E 964-965 104A-104B 1362 1367-1368 166E 1735-1736 17D4-17D6 "
    "17D9-17DA 1803 1809 1944-1945 1AA8-1AAB 1B5A-1B5B 1B5E-1B5F 1B7D-1B7E 1C3B-1C3C 1C7E-1C7F 203C-203D 2047-2049 "
    "2E2E 2E3C 2E53-2E54 3002 A4FF A60E-A60F A6F3 A6F7 A876-A877 A8CE-A8CF A92F A9C8-A9C9 AA5D-AA5F AAF0-AAF1 ABEB "
    "FE52 FE56-FE57 FF01 FF0E FF1F FF61 10A56-10A57 10F55-10F59 10F86-10F89 11047-11048 110BE-110C1 11141-11143 "
    "111C5-111C6 111CD 111DE-111DF 11238-11239 1123B-1123C 112A9 1144B-1144C 115C2-115C3 115C9-115D7 11641-11642 "
    "1173C-1173E 11944 11946 11A42-11A43 11A9B-11A9C 11C41-11C42 11EF7-11EF8 11F43-11F44 16A6E-16A6F 16AF5 "
    "16B37-16B38 16B44 16E98 1BC9F 1DA88"))
PUNCTUATION_SET = _DATATROVE_PUNCTUATION | TERMINAL_PUNCTUATION
#: spaCy's sentencizer's sentence-final marks (``Sentencizer.default_punct_chars``).
SENTENCE_FINAL = frozenset(_chars(
    "21 2E 3F 589 61F 6D4 700-702 7F9 964-965 104A-104B 1362 1367-1368 166E 1735-1736 1803 1809 1944-1945 1AA8-1AAB "
    "1B5A-1B5B 1B5E-1B5F 1C3B-1C3C 1C7E-1C7F 203C-203D 2047-2049 2E2E 2E3C 3002 A4FF A60E-A60F A6F3 A6F7 A876-A877 "
    "A8CE-A8CF A92F A9C8-A9C9 AA5D-AA5F AAF0-AAF1 ABEB FE52 FE56-FE57 FF01 FF0E FF1F FF61 10A56-10A57 11047-11048 "
    "110BE-110C1 11141-11143 111C5-111C6 111CD 111DE-111DF 11238-11239 1123B-1123C 112A9 1144B-1144C 115C2-115C3 "
    "115C9-115D7 11641-11642 1173C-1173E 11A42-11A43 11A9B-11A9C 11C41-11C42 16A6E-16A6F 16AF5 16B37-16B38 16B44 "
    "1BC9F 1DA88"))

#: Token kinds for the sentencizer: a word, punctuation (every character Unicode P*), a sentence-final mark.
WORD, PUNCT, FINAL = 0, 1, 2


def is_symbol_word(token: str) -> bool:
    """A token made only of datatrove's punctuation characters (not a word for Gopher's counts)."""
    return all(c in PUNCTUATION_SET for c in token)


def is_punct(token: str) -> bool:
    """Every character is Unicode punctuation (category P*), as spaCy's ``is_punct``."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


class _Vocab:
    """Token strings <-> integer ids, with per-token attributes in NumPy arrays (one per process), and the
    chunk table: each distinct whitespace-separated chunk gets an index, and its tokens' ids are stored once,
    so a document's ids are a few array operations over its chunks' indices.

    Ids are given in order of first appearance; a token's attributes are computed in bulk by :meth:`sync`.
    """

    STOP_INDEX = {w: i for i, w in enumerate(("the", "be", "to", "of", "and", "that", "have", "with"))}
    STOP_MAX_LEN = max(map(len, STOP_INDEX))
    _ARRAYS = (("length", np.int64, 0), ("symbol", bool, False), ("alpha", bool, False), ("kind", np.uint8, 0),
               ("stop", np.int8, -1), ("stop_lower", np.int8, -1))

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.strings: list[str] = []
        #: per tokenizer: chunk -> its index in the chunk table
        self.chunks: dict[str, dict[str, int]] = {name: {} for name in TOKENIZERS}
        self.synced = 0
        for name, dtype, fill in self._ARRAYS:
            setattr(self, name, np.full(1 << 14, fill, dtype))
        # the chunk table: chunk i's tokens are chunk_tokens[chunk_start[i]:chunk_start[i] + chunk_len[i]]
        self.n_chunks = 0
        self.n_chunk_tokens = 0
        self.chunk_len = np.zeros(1 << 14, np.int64)
        self.chunk_start = np.zeros(1 << 14, np.int64)
        self.chunk_first = np.zeros(1 << 14, np.int64)  # the first token's id (the only one, for most chunks)
        self.chunk_tokens = np.zeros(1 << 15, np.int64)

    def __len__(self) -> int:
        return len(self.strings)

    def add(self, tokens) -> list[int]:
        ids, strings, out = self.ids, self.strings, []
        for t in tokens:
            i = ids.get(t)
            if i is None:
                i = ids[t] = len(strings)
                strings.append(t)
            out.append(i)
        return out

    def sync(self) -> "_Vocab":
        """Fill in the attributes of the tokens added since the last call."""
        lo, hi = self.synced, len(self.strings)
        if lo == hi:
            return self
        if hi > len(self.length):
            size = max(hi, 2 * len(self.length))
            for name, dtype, fill in self._ARRAYS:
                setattr(self, name, _grown(getattr(self, name), size, lo, fill))
        new_tokens = self.strings[lo:hi]
        punct, final, stop = PUNCTUATION_SET, SENTENCE_FINAL, self.STOP_INDEX
        self.length[lo:hi] = np.fromiter(map(len, new_tokens), np.int64, hi - lo)
        letters = np.fromiter(map(str.isalpha, new_tokens), bool, hi - lo)  # most: a word, no symbol, no mark
        other = np.flatnonzero(~letters)
        rest = [new_tokens[i] for i in other.tolist()]
        alpha = letters.copy()
        alpha[other] = [any(c.isalpha() for c in t) for t in rest]
        self.alpha[lo:hi] = alpha
        symbol = np.zeros(hi - lo, bool)
        symbol[other] = [t[0] in punct and is_symbol_word(t) for t in rest]
        self.symbol[lo:hi] = symbol
        kind = np.full(hi - lo, WORD, np.uint8)
        kind[other] = [FINAL if t in final else PUNCT if _P_START[t[0]] and is_punct(t) else WORD for t in rest]
        self.kind[lo:hi] = kind
        short = np.flatnonzero(self.length[lo:hi] <= self.STOP_MAX_LEN)  # only short tokens can be stop words
        words = [new_tokens[i] for i in short.tolist()]
        self.stop[lo + short] = [stop.get(t, -1) for t in words]
        self.stop_lower[lo + short] = [stop.get(t.lower(), -1) for t in words]
        self.synced = hi
        return self

    def chunk_indices(self, parts: list[str], tokenizer: str) -> np.ndarray:
        """Chunk-table indices of ``parts``; chunks not seen before are tokenised, in order of appearance."""
        cache = self.chunks[tokenizer]
        if _kernel is not None:  # the same steps, compiled: new chunks enter the cache with their future index
            raw, new = _kernel.chunk_indices(cache, parts, self.n_chunks)
            if new:
                try:
                    self._add_chunks(new, tokenizer)
                except BaseException:
                    for c in new:
                        cache.pop(c, None)
                    raise
            return np.frombuffer(raw, np.int64)
        n = len(parts)
        idx = np.fromiter(map(cache.get, parts, repeat(-1)), np.int64, n)
        if n and idx.min() < 0:
            missing = np.flatnonzero(idx < 0).tolist()
            new = list(dict.fromkeys(map(parts.__getitem__, missing)))
            lo = self.n_chunks
            self._add_chunks(new, tokenizer)
            cache.update(zip(new, range(lo, self.n_chunks)))
            idx[missing] = list(map(cache.__getitem__, map(parts.__getitem__, missing)))
        return idx

    def _add_chunks(self, new: list[str], tokenizer: str) -> None:
        """Tokenise chunks not in the table yet and append them to it (the caller enters them in the cache)."""
        if _kernel is not None:
            raw_flat, raw_lens = _kernel.tokenize_chunks(new, tokenizer == "spacy_like", SPECIAL_CASES,
                                                         _KERNEL_EXCLUDE, self.ids, self.strings, split_chunk)
            self._append_chunks(np.frombuffer(raw_flat, np.int64), np.frombuffer(raw_lens, np.int64))
            return
        ids, strings, specials = self.ids, self.strings, SPECIAL_CASES
        spacy = tokenizer == "spacy_like"
        flat: list[int] = []
        lens: list[int] = []
        for c in new:
            if not spacy or c.isalpha() and c not in specials:  # the chunk is its one token
                i = ids.get(c)
                if i is None:
                    i = ids[c] = len(strings)
                    strings.append(c)
                flat.append(i)
                lens.append(1)
            else:
                toks = split_chunk(c)
                for t in toks:
                    i = ids.get(t)
                    if i is None:
                        i = ids[t] = len(strings)
                        strings.append(t)
                    flat.append(i)
                lens.append(len(toks))
        self._append_chunks(np.array(flat, np.int64), np.array(lens, np.int64))

    def _append_chunks(self, flat: np.ndarray, length: np.ndarray) -> None:
        """Append chunks to the table: their tokens' ids, in order, and how many each has."""
        lo, hi = self.n_chunks, self.n_chunks + len(length)
        t_lo, t_hi = self.n_chunk_tokens, self.n_chunk_tokens + len(flat)
        if hi > len(self.chunk_len):
            size = max(hi, 2 * len(self.chunk_len))
            self.chunk_len = _grown(self.chunk_len, size, lo, 0)
            self.chunk_start = _grown(self.chunk_start, size, lo, 0)
            self.chunk_first = _grown(self.chunk_first, size, lo, 0)
        if t_hi > len(self.chunk_tokens):
            self.chunk_tokens = _grown(self.chunk_tokens, max(t_hi, 2 * len(self.chunk_tokens)), t_lo, 0)
        self.chunk_tokens[t_lo:t_hi] = flat
        self.chunk_len[lo:hi] = length
        starts = np.cumsum(length) - length + t_lo
        self.chunk_start[lo:hi] = starts
        self.chunk_first[lo:hi] = self.chunk_tokens[starts]
        self.n_chunks, self.n_chunk_tokens = hi, t_hi

    def token_ids(self, parts: list[str], tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, for each chunk the index of the token after its last) of the chunks ``parts``."""
        idx = self.chunk_indices(parts, tokenizer)
        lens = self.chunk_len[idx]
        ends = np.cumsum(lens)
        total = int(ends[-1]) if len(ends) else 0
        if total == len(idx):  # every chunk is one token (every chunk has at least one)
            return self.chunk_first[idx], ends
        offsets = np.repeat(self.chunk_start[idx] - ends + lens, lens) + np.arange(total)
        return self.chunk_tokens[offsets], ends

    def chunk_count(self, chunk: str, tokenizer: str = "spacy_like") -> int:
        """Number of tokens of a chunk the table holds."""
        return int(self.chunk_len[self.chunks[tokenizer][chunk]])


def _grown(a: np.ndarray, size: int, keep: int, fill) -> np.ndarray:
    """``a`` enlarged to ``size`` elements, its first ``keep`` kept, the rest ``fill``."""
    out = np.full(size, fill, a.dtype)
    out[:keep] = a[:keep]
    return out


class _PunctTable(dict):
    """Character -> whether it is Unicode punctuation (category P*), computed on first lookup."""

    def __missing__(self, c: str) -> bool:
        p = self[c] = unicodedata.category(c)[0] == "P"
        return p


_P_START = _PunctTable()


_VOCAB_MAX = 1_000_000
_CHUNKS_MAX = 500_000
_vocab = _Vocab()


def _fresh_vocab() -> _Vocab:
    """The process vocabulary, replaced by an empty one when it has grown past its bound (between documents)."""
    global _vocab
    if len(_vocab) > _VOCAB_MAX or sum(map(len, _vocab.chunks.values())) > _CHUNKS_MAX:
        _vocab = _Vocab()
        _forget_docs()
    return _vocab


class DocTokens(NamedTuple):
    """A document's tokens as vocabulary ids, and the counts Gopher's quality rules need."""

    ids: np.ndarray    # token ids (int64), in order
    n_words: int       # tokens with a character outside datatrove's punctuation set
    word_chars: int    # characters of those tokens
    n_alpha: int       # tokens with a letter
    vocab: _Vocab      # the vocabulary the ids refer to
    chunk_ends: np.ndarray  # for each whitespace-separated chunk, the index of the token after its last

    def strings(self) -> list[str]:
        strings = self.vocab.strings
        return [strings[i] for i in self.ids.tolist()]

    def lengths(self) -> np.ndarray:
        return self.vocab.length[self.ids]

    def stop_words(self, case_sensitive: bool = True) -> int:
        """Distinct Gopher stop words among the tokens."""
        stop = (self.vocab.stop if case_sensitive else self.vocab.stop_lower)[self.ids]
        return int(np.count_nonzero(np.bincount(stop[stop >= 0], minlength=1)))


#: The last documents' tokens, so the filters of a stage, each scoring a whole shard in turn, tokenise a
#: text once; bounded by their total number of tokens (16 bytes each with their chunk ends).
_DOCS: dict[tuple[str, str], DocTokens] = {}
_DOCS_TOKENS_MAX = 8_000_000
_docs_tokens = 0


def clear_caches() -> None:
    """Forget every memoised chunk, token and document (benchmarks time cold caches)."""
    global _vocab
    _vocab = _Vocab()
    _forget_docs()


def _forget_docs() -> None:
    global _docs_tokens
    _DOCS.clear()
    _COUNTS.clear()
    _docs_tokens = 0


def _check(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")


def doc_tokens(text: str, tokenizer: str = "spacy_like") -> DocTokens:
    """Tokens of ``text`` (memoised for the last documents, so filters of one stage share them)."""
    hit = _DOCS.get((tokenizer, text))
    return hit if hit is not None else doc_tokens_batch([text], tokenizer)[0]


#: Characters of text tokenised together by :func:`doc_tokens_batch` (bounds the arrays of one pass).
BATCH_CHARS = 1_000_000


def doc_tokens_batch(texts: list[str], tokenizer: str = "spacy_like") -> list[DocTokens]:
    """:func:`doc_tokens` of each text, tokenised together: one chunk lookup and one vocabulary update per
    ~:data:`BATCH_CHARS` characters of text, and every document's counts from the same few array
    operations, instead of a dozen small ones per document."""
    _check(tokenizer)
    out: list = [_DOCS.get((tokenizer, t)) for t in texts]
    todo = [k for k, hit in enumerate(out) if hit is None]
    group: list[int] = []
    size = 0
    for k in todo:
        group.append(k)
        size += len(texts[k])
        if size >= BATCH_CHARS:
            _tokenise_group(texts, group, tokenizer, out)
            group, size = [], 0
    if group:
        _tokenise_group(texts, group, tokenizer, out)
    return out


def _tokenise_group(texts: list[str], group: list[int], tokenizer: str, out: list) -> None:
    global _docs_tokens
    vocab = _fresh_vocab()
    parts = [texts[k].split() for k in group]
    n_chunks = np.fromiter(map(len, parts), np.int64, len(parts))
    ids, chunk_ends = vocab.token_ids(list(chain.from_iterable(parts)), tokenizer)
    vocab.sync()
    chunk_bounds = np.zeros(len(group) + 1, np.int64)
    np.cumsum(n_chunks, out=chunk_bounds[1:])
    token_bounds = np.zeros(len(group) + 1, np.int64)
    token_bounds[1:] = np.concatenate(([0], chunk_ends))[chunk_bounds[1:]]
    words = ~vocab.symbol[ids]

    def per_doc(values) -> list[int]:  # each document's sum of ``values``
        cum = np.zeros(len(values) + 1, np.int64)
        np.cumsum(values, out=cum[1:])
        return np.diff(cum[token_bounds]).tolist()

    n_words, word_chars = per_doc(words), per_doc(np.where(words, vocab.length[ids], 0))
    n_alpha = per_doc(vocab.alpha[ids])
    tb, cb = token_bounds.tolist(), chunk_bounds.tolist()
    for j, k in enumerate(group):
        t0, t1 = tb[j], tb[j + 1]
        doc = DocTokens(ids[t0:t1], n_words[j], word_chars[j], n_alpha[j], vocab, chunk_ends[cb[j]:cb[j + 1]] - t0)
        out[k] = doc
        while _DOCS and _docs_tokens + t1 - t0 > _DOCS_TOKENS_MAX:
            _docs_tokens -= len(_DOCS.pop(next(iter(_DOCS))).ids)
        _DOCS[(tokenizer, texts[k])] = doc
        _docs_tokens += t1 - t0


_COUNTS: dict[tuple[str, str], int] = {}
_COUNTS_MAX = 100_000


def note_token_count(text: str, n: int, tokenizer: str = "spacy_like") -> None:
    """Remember how many tokens ``text`` has, for a later :func:`count_tokens` (a filter that derived the
    text from tokens it had, as C4 does, saves the next filter a pass)."""
    if len(_COUNTS) >= _COUNTS_MAX:
        _COUNTS.pop(next(iter(_COUNTS)))
    _COUNTS[(tokenizer, text)] = n


def count_tokens(text: str, tokenizer: str = "spacy_like") -> int:
    """Number of tokens of ``text``, without building its id array."""
    hit = _DOCS.get((tokenizer, text))
    if hit is not None:
        return len(hit.ids)
    n = _COUNTS.get((tokenizer, text))
    if n is not None:
        return n
    _check(tokenizer)
    vocab = _fresh_vocab()
    idx = vocab.chunk_indices(text.split(), tokenizer)
    return int(vocab.chunk_len[idx].sum())


def words(text: str, tokenizer: str = "spacy_like") -> list[str]:
    """Token strings of ``text`` with the named tokenizer."""
    return doc_tokens(text, tokenizer).strings()


def spacy_like_words(text: str) -> list[str]:
    """Tokens as spaCy's blank English pipeline makes them, whitespace tokens dropped."""
    return words(text, "spacy_like")


# ---------------------------------------------------------------------------
# sentences

_NEW_SENTENCE = regex.compile(rb"\x02[\x01\x02]*\x00")
#: A line separator in a kinds string: neither a word nor a mark.
_SEP = b"\x03"


_RUNS = regex.compile(r"\S+|\s+")


def _whitespace_kinds(line: str, kinds: bytes, vocab: _Vocab) -> bytes:
    """A line's kinds with spaCy's whitespace tokens put in: spaCy makes a token of whitespace, except of the
    one space that follows a chunk, and such a token is neither punctuation nor a mark (so a word here)."""
    out, k, after_chunk = [], 0, False
    for run in _RUNS.findall(line):
        if run[0].isspace():
            if (run[1:] if after_chunk and run[0] == " " else run):
                out.append(b"\x00")
            after_chunk = False
        else:
            n = vocab.chunk_count(run)
            out.append(kinds[k:k + n])
            k += n
            after_chunk = True
    return b"".join(out)


_SEPARATORS = regex.compile(r"\s+")


def _between_chunks(line: str, kinds: bytes, chunk_ends: np.ndarray, span: tuple[int, int]) -> bytes:
    """:func:`_whitespace_kinds` for a line without blanks at its ends whose chunks' tokens are known."""
    odd = [i for i, sep in enumerate(_SEPARATORS.findall(line)) if sep != " "]  # after the i-th chunk
    if not odd:
        return kinds
    a = span[0]
    cuts = (chunk_ends[a:span[1]][odd] - (chunk_ends[a - 1] if a else 0)).tolist()
    out, start = [], 0
    for end in cuts:
        out.append(kinds[start:end])
        out.append(b"\x00")
        start = end
    out.append(kinds[start:])
    return b"".join(out)


def span_tokens(doc: DocTokens, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """For chunk ranges of ``doc`` (``(first, after last)``), where their tokens start and end."""
    if not spans:
        return [], []
    bounds = np.zeros(len(doc.chunk_ends) + 1, np.int64)
    bounds[1:] = doc.chunk_ends
    at = bounds[np.array(spans, np.int64)]
    return at[:, 0].tolist(), at[:, 1].tolist()


def lines_sentences(lines: list[str], doc: DocTokens | None = None, spans: list | None = None) -> int:
    """Sentences in each stripped, non-blank line, summed, as spaCy's sentencizer counts them line by line.

    A line is one sentence, plus one for each word (a token that is not punctuation) that follows a
    sentence-final mark with only punctuation between them. ``doc`` and ``spans`` (per line, the range of
    ``doc``'s chunks it consists of, or None) let a caller that has the text's tokens skip tokenising again.
    """
    total = len(lines)
    if doc is None:  # only lines with a mark before their last word can hold two sentences: tokenise those
        lines, spans = [ln for ln in lines if _may_break(ln)], None
    if not lines:
        return total
    spans = spans or [None] * len(lines)
    vocab = _fresh_vocab() if doc is None else doc.vocab
    doc_kinds = b"" if doc is None else vocab.kind[doc.ids].tobytes()
    known = [sp for sp in spans if sp is not None]
    starts, ends = span_tokens(doc, known) if doc is not None else ([], [])
    if doc is not None and len(known) == len(spans) and _single_spaced(" ".join(lines)):
        # the common case: every line is a run of the page's chunks, separated by single spaces
        return total + len(_NEW_SENTENCE.findall(_SEP.join([doc_kinds[a:b] for a, b in zip(starts, ends)])))
    pieces = []
    k = 0
    for ln, sp in zip(lines, spans):
        if sp is not None:
            piece = doc_kinds[starts[k]:ends[k]]
            k += 1
        else:
            ids = vocab.token_ids(ln.split(), "spacy_like")[0]
            vocab.sync()
            piece = vocab.kind[ids].tobytes()
        if b"\x02" in piece and not _single_spaced(ln):  # tabs, runs of spaces: whitespace tokens
            if sp is not None and not ln[0].isspace() and not ln[-1].isspace():
                piece = _between_chunks(ln, piece, doc.chunk_ends, sp)
            else:
                piece = _whitespace_kinds(ln, piece, vocab)
        pieces.append(piece)
    return total + len(_NEW_SENTENCE.findall(_SEP.join(pieces)))


#: The last character of a line that is neither punctuation nor a space (searched from the end).
_LAST_NON_PUNCT = regex.compile(r"(?r)[^\p{P}\s]")
_ODD_SPACE = re.compile(r"[^\S ]|  ")  # str.isspace's whitespace other than a space, or two spaces


def _single_spaced(line: str) -> bool:
    """No whitespace in ``line`` but single spaces (False also for other unprintable characters, which only
    sends a line the slower, exact way): every other whitespace character is unprintable to Python."""
    return "  " not in line and line.isprintable()
_FINAL_CLASS = regex.compile("[" + regex.escape("".join(sorted(SENTENCE_FINAL))) + "]")


def _may_break(line: str) -> bool:
    """Whether a line can hold more than one sentence: a sentence-final mark before its last word character."""
    m = _FINAL_CLASS.search(line)
    if m is None:
        return False
    if _ODD_SPACE.search(line, m.end()):  # a whitespace token after the mark is a word to the sentencizer
        return True
    last = _LAST_NON_PUNCT.search(line)
    return last is not None and m.start() < last.start()


def count_sentences(tokens: list[str]) -> int:
    """Sentences in a token list (no whitespace tokens), as the sentencizer counts them."""
    if not tokens:
        return 0
    kinds = bytes(FINAL if t in SENTENCE_FINAL else PUNCT if is_punct(t) else WORD for t in tokens)
    return 1 + len(_NEW_SENTENCE.findall(kinds))
