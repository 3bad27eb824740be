"""Word tokenisation for the heuristic filters: a fast regex imitation of spaCy's English tokenizer.

Gopher's and FineWeb's rules count words, and the reference implementation the
field runs (datatrove) counts spaCy tokens: punctuation is split off words
("end." -> "end", "."), so a comma is a "word" without a letter, and "don't" is
two words ("do", "n't"). ``tokenizer: spacy_like`` (the default) reproduces
that with regular expressions applied to each whitespace-separated chunk, in
spaCy's documented order: special cases, then prefixes, suffixes and infixes
(https://spacy.io/usage/linguistic-features#how-tokenizer-works); chunks are
memoised, so common words cost one dictionary look-up. The rules here were
written from that description and checked against spaCy 3.8 on the shared
documents: ``experiments/benchmarks/heuristics_conformance.py`` reports the
token-level agreement. ``tokenizer: whitespace`` is ``str.split``, the literal
reading of "words" in Rae et al. (2021).

:func:`count_sentences` imitates spaCy's rule-based sentencizer on those
tokens: a sentence starts at the first non-punctuation token after a
sentence-final mark.
"""
from __future__ import annotations

import string
import unicodedata
from itertools import chain

import regex

TOKENIZERS = ("spacy_like", "whitespace")

_PUNCT_CHARS = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_UNITS = ("km²|km³|km|m²|m³|m|dm²|dm³|dm|cm²|cm³|cm|mm²|mm³|mm|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|"
          "kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%")
_P = regex.escape(_PUNCT_CHARS + _QUOTES)
_LOWER = r"\p{Ll}\p{Lo}"
_UPPER = r"\p{Lu}\p{Lo}"
_HYPHEN_ALPHA = r"\p{Latin}\p{Greek}А-яЁё"
_PREFIX = regex.compile(r"(?:§|%|=|—|–|\+(?![0-9])|\.\.+|…|[" + _P + regex.escape(_CURRENCY) + r"]|\p{So})")
_SUFFIX = regex.compile(r"(?:\.\.+|…|[" + _P + r"]|['’][sS]|—|–|\p{So}"
                        r"|(?<=[0-9])\+|(?<=°[FfCcKk])\.|(?<=[0-9])[" + regex.escape(_CURRENCY) + r"]"
                        r"|(?<=[0-9])(?:" + _UNITS + r")"
                        r"|(?<=[0-9" + _LOWER + r"%²\-+…" + _P + r"])\."
                        r"|(?<=[" + _UPPER + "][" + _UPPER + r"])\.)$")
_INFIX = regex.compile(r"\.\.+|…|\p{So}|(?<=[0-9])[+\-*^](?=[0-9-])"
                       r"|(?<=[" + _LOWER + r"'\"”“`‘´’])\.(?=[" + _UPPER + r"'\"”“`‘´’])"
                       r"|(?<=\p{L}),(?=\p{L})|(?<=[" + _HYPHEN_ALPHA + r"0-9])(?:---|--|——|-|–|—|~)(?=[" + _HYPHEN_ALPHA + r"])"
                       r"|(?<=[\p{L}0-9])[:<>=/](?=\p{L})")
#: URL-like: optional scheme, optional user@, host labels, a lower-case top-level domain, optional port and path.
_URL = regex.compile(r"(?:(?:[\w\-]+:)?//)?(?:\S+(?::\S*)?@)?(?:[\w\-]+\.)+[a-z\u00a1-\uffff]{2,63}(?::\d+)?(?:[/?#]\S*)?")
_ABBREV = regex.compile(r"(?:\p{Lu}\.){2,}")
_CONTRACTION = regex.compile(r"(?<=\p{L})(?:n['’]t|['’](?:re|ve|ll|d|m))$", regex.IGNORECASE)
#: Whole chunks split in a fixed way: informal spellings and contractions written without an apostrophe.
_FIXED = {}
for _w, _cut in (("cannot", 3), ("gonna", 3), ("gotta", 3), ("wanna", 3), ("im", 1), ("ive", 1), ("youre", 3),
                 ("youve", 3), ("youll", 3), ("youd", 3), ("theyre", 4), ("theyve", 4), ("theyll", 4), ("theyd", 4),
                 ("weve", 2), ("dont", 2), ("doesnt", 4), ("didnt", 3), ("isnt", 2), ("arent", 3), ("wasnt", 3),
                 ("werent", 4), ("havent", 4), ("hasnt", 3), ("hadnt", 3), ("couldnt", 5), ("wouldnt", 5),
                 ("shouldnt", 6), ("mustnt", 4), ("neednt", 4), ("aint", 2)):
    for _v in (_w, _w.capitalize(), _w.upper()):
        _FIXED[_v] = [_v[:_cut], _v[_cut:]]
_EXCEPTIONS = frozenset("""Mr. Mrs. Ms. Dr. St. Mt. Jr. Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec.
Inc. Ltd. Co. Corp. vs. Ph.D. e.g. i.e. a.m. p.m. Bros. Prof. Rep. Gov. Sen. Gen. Col. Lt. Capt. Sgt. Rev. Ala. Ariz.
Ark. Calif. Colo. Conn. Del. Fla. Ga. Ill. Ind. Kan. Ky. La. Md. Mass. Mich. Minn. Miss. Mo. Mont. Neb. Nev. Okla.
Ore. Pa. Tenn. Va. Vt. Wash. Wis. Wyo. and/or 'em ’em ol' '' :) :( :-) :-( ;) ;-) :P :-P :D :-D <3 =) (: ): (; :/ :'(
^_^ -_- o.O O.o""".split())
_APOSTROPHE_WORD = regex.compile(r"\p{L}+in['’]")
_PLAIN = regex.compile(r"\p{L}+|\p{N}+")



#: A word followed by one punctuation mark, the commonest chunk after a bare word ("end," "end." "it)").
_WORD_THEN_MARK = regex.compile(r"(\p{L}+)([,;:!?)\]\".])")


def split_chunk(chunk: str) -> list[str]:
    """spaCy-like tokens of one whitespace-free chunk (uncached; use :func:`spacy_like_words`)."""
    if _PLAIN.fullmatch(chunk) and chunk not in _FIXED or chunk in _EXCEPTIONS:
        return [chunk]
    m = _WORD_THEN_MARK.fullmatch(chunk)
    if m and m.group(1) not in _FIXED and m.group(1) not in _EXCEPTIONS:
        word, mark = m.groups()
        if mark != ".":
            return [word, mark]
        last = word[-1]
        # a period after a lower-case (or caseless) letter, or after two capitals, is split off; "J." stays
        if not last.isupper() or (len(word) > 1 and word[-2].isupper()):
            return [word, mark]
        return [chunk]
    prefixes, suffixes = [], []
    while chunk:
        if chunk in _EXCEPTIONS or _ABBREV.fullmatch(chunk) or _APOSTROPHE_WORD.fullmatch(chunk):
            break
        m = _PREFIX.match(chunk)
        if m and m.end() < len(chunk) or (m and not suffixes and len(chunk) == m.end()):
            prefixes.append(m.group())
            chunk = chunk[m.end():]
            continue
        m = _SUFFIX.search(chunk) or _CONTRACTION.search(chunk)
        if m and m.start() > 0:
            suffixes.append(m.group())
            chunk = chunk[:m.start()]
            continue
        break
    core = []
    if chunk:
        if (chunk in _EXCEPTIONS or _URL.fullmatch(chunk) or _ABBREV.fullmatch(chunk)
                or _APOSTROPHE_WORD.fullmatch(chunk)):
            core = [chunk]
        elif chunk in _FIXED:
            core = _FIXED[chunk]
        else:
            start = 0
            for m in _INFIX.finditer(chunk):
                if m.start() > start:
                    core.append(chunk[start:m.start()])
                if m.end() > m.start():
                    core.append(m.group())
                start = m.end()
            if start < len(chunk):
                core.append(chunk[start:])
    tokens = prefixes + core + suffixes[::-1]
    i = 0
    while i < len(tokens) - 1:  # special cases made of two affixes, e.g. "''" and "):"
        if tokens[i] + tokens[i + 1] in _EXCEPTIONS:
            tokens[i:i + 2] = [tokens[i] + tokens[i + 1]]
        else:
            i += 1
    return tokens


_CACHE_MAX = 500_000


def spacy_like_words(text: str) -> list[str]:
    """Tokens as spaCy's blank English pipeline makes them, whitespace tokens dropped."""
    cache = _CHUNKS["spacy_like"]
    if len(cache) > _CACHE_MAX:
        cache.clear()
    out: list[str] = []
    extend = out.extend
    for chunk in text.split():
        entry = cache.get(chunk)
        if entry is None:
            entry = cache[chunk] = _chunk_entry(split_chunk(chunk))
        extend(entry[0])
    return out


_SYMBOLS = frozenset(string.punctuation + "“”‘’«»„…–—·、。，．！？：；（）【】《》〈〉「」『』～％＃＆＊＠｀")


def is_symbol_word(word: str) -> bool:
    """A token made only of punctuation marks (Unicode P*, ASCII punctuation and common marks)."""
    return all(c in _SYMBOLS or unicodedata.category(c)[0] == "P" for c in word)


def _chunk_entry(tokens: list[str]) -> tuple:
    """(tokens, words that are not punctuation only, their characters, tokens with a letter) of one chunk."""
    n_words = word_chars = n_alpha = 0
    for t in tokens:
        if not is_symbol_word(t):
            n_words += 1
            word_chars += len(t)
        if t.isalpha() or any(c.isalpha() for c in t):
            n_alpha += 1
    return tokens, n_words, word_chars, n_alpha


#: tokenizer -> chunk -> (tokens, words, word characters, tokens with a letter); and the last documents' stats.
_CHUNKS: dict[str, dict[str, tuple]] = {name: {} for name in TOKENIZERS}
_DOCS: dict[tuple[str, str], tuple] = {}
_DOCS_MAX = 2048


def clear_caches() -> None:
    """Forget memoised chunks and documents (benchmarks time cold caches)."""
    for cache in _CHUNKS.values():
        cache.clear()
    _DOCS.clear()


def word_stats(text: str, tokenizer: str = "spacy_like") -> tuple[list[str], int, int, int]:
    """(tokens, words, word characters, tokens with a letter) of ``text``; a word is a token not made of
    punctuation only. Chunks and the last documents are memoised, so the Gopher, FineWeb and repetition
    filters of one stage tokenise each document once; treat the token list as read-only."""
    key = (tokenizer, text)
    hit = _DOCS.get(key)
    if hit is not None:
        return hit
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    spacy = tokenizer == "spacy_like"
    chunks = _CHUNKS[tokenizer]
    if len(chunks) > _CACHE_MAX:
        chunks.clear()
    parts = text.split()
    get = chunks.get
    entries = [get(c) for c in parts]
    if None in entries:  # new chunks: tokenise and remember them
        for i, e in enumerate(entries):
            if e is None:
                c = parts[i]
                e = chunks.get(c)  # the same new chunk may occur twice in one document
                if e is None:
                    e = chunks[c] = _chunk_entry(split_chunk(c) if spacy else [c])
                entries[i] = e
    if entries:
        toks, nw, wc, na = zip(*entries)
        tokens, n_words, word_chars, n_alpha = list(chain.from_iterable(toks)), sum(nw), sum(wc), sum(na)
    else:
        tokens, n_words, word_chars, n_alpha = [], 0, 0, 0
    if len(_DOCS) >= _DOCS_MAX:
        _DOCS.pop(next(iter(_DOCS)))
    out = _DOCS[key] = (tokens, n_words, word_chars, n_alpha)
    return out


def words(text: str, tokenizer: str = "spacy_like") -> list[str]:
    """Word tokens of ``text`` with the named tokenizer (read-only: shared between filters)."""
    return word_stats(text, tokenizer)[0]


#: Sentence-final marks of the sentencizer: Unicode's Sentence_Terminal characters.
_SENT_END = regex.compile(r"\p{Sentence_Terminal}")


def is_punct(token: str) -> bool:
    """Every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


#: The last character of a line that is neither punctuation nor a space (searched from the end).
_LAST_NON_PUNCT = regex.compile(r"(?r)[^\p{P}\s]")


def line_sentences(line: str) -> int:
    """Sentences in one line, as :func:`count_sentences` counts them; a line with no sentence-final
    mark before its trailing punctuation is one sentence without being tokenised."""
    if not line.strip():
        return 0
    last = _LAST_NON_PUNCT.search(line)
    if last is None or not _SENT_END.search(line, 0, last.start()):
        return 1
    return count_sentences(spacy_like_words(line))


#: Every Sentence_Terminal character of the Basic and Supplementary Multilingual Planes (where all of them are).
_SENT_END_CHARS = frozenset(c for c in map(chr, range(0x20000)) if _SENT_END.match(c))


def count_sentences(tokens: list[str]) -> int:
    """Sentences in a token list: one, plus one per non-punctuation token that follows a sentence-final mark."""
    if not tokens:
        return 0
    ends = [i for i, tok in enumerate(tokens) if tok in _SENT_END_CHARS]
    n, last = 1, len(tokens)
    resume = 0
    for i in ends:  # the first token starts a sentence whatever it is
        if i < resume:
            continue
        j = i + 1
        while j < last and (tokens[j] in _SENT_END_CHARS or is_punct(tokens[j])):
            j += 1
        if j < last:
            n += 1
        resume = j
    return n
