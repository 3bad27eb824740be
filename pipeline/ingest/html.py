"""HTML to text, with the per-document work bounded before the parser sees the page.

Extraction (resiliparse or trafilatura) is the one step whose cost is not linear in the page's size
for some pages, so three shapes are refused before parsing, each measured (resiliparse 2.0.1, one core):

* **nesting**: main-content extraction grows with the sum of element depths (``'<div>' * 30000``
  took 38 s): ``max_html_depth`` (1,000) and ``max_html_depth_sum`` (10M) -> ``html_too_deep``;
* **attributes of one element**: the parser's time grows with their square (20,000 took 1.2 s,
  50,000 took 16 s): ``max_html_attributes`` (2,000 per element) -> ``html_too_complex``;
* **option elements**: the parser's time grows with their square (10,000 took 0.7 s, 20,000 took 3.3 s):
  ``max_html_options`` (5,000 per page) -> ``html_too_complex``;
* **size**: pages are cut to ``max_html_chars`` (4M characters; a 4M-character table took 0.9-1.8 s) before
  extraction, and to 1M for trafilatura, which took 10-13 s on that table and 1.9 s on 1M of it
  (``html_truncated`` in metadata).

All three are found by one regular-expression scan of the tags (script and style bodies skipped),
which reads attributes as the HTML tokenizer does (quoted values may hold ``>``); the nesting estimate
is checked on the parsed tree only when the scan's over-estimate passes a limit.
"""
from __future__ import annotations

import re

from pipeline.ingest.records import InputError

EXTRACTORS = ("resiliparse", "trafilatura")


class TooDeep(ValueError):
    """HTML nested beyond the extraction limits (extraction time grows with depth squared)."""

    reason = "html_too_deep"


class TooComplex(ValueError):
    """HTML with more attributes on one element, or more option elements, than the parser handles in bounded time."""

    reason = "html_too_complex"


def extractor_info(name: str) -> dict:
    """What extracted a page, recorded in its metadata: the extractor, its version and settings."""
    from importlib.metadata import version

    settings = {
        "resiliparse": {"main_content": True, "alt_texts": False, "links": False, "list_bullets": True},
        "trafilatura": {"include_comments": False, "include_tables": True, "deduplicate": False},
    }[name]
    return {"extractor": name, "extractor_version": version(name), "extractor_settings": settings}


def decode_html(raw: bytes) -> str:
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return bytes_to_str(raw, detect_encoding(raw))


def extract_text(html: str, extractor: str) -> str:
    """Main-content text of a page (no limits checked: :func:`html_to_text` checks them first)."""
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True, alt_texts=False, links=False, list_bullets=True)
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html, include_comments=False, include_tables=True, deduplicate=False) or ""
    # not a ValueError: a configuration problem must stop the run, not quarantine every record
    raise InputError(f"unknown extractor {extractor!r} (resiliparse or trafilatura)")


# A start or end tag as the HTML tokenizer reads it: the name, then attributes (a name, optionally `=`
# and a value, quoted values running to their closing quote) up to `>`. Possessive quantifiers: no
# backtracking, so the scan is linear on any input.
_ATTR_SRC = r"""(?:=|[^\s/>=])[^\s/>=]*+(?:\s*+=\s*+(?:"[^"]*+"?|'[^']*+'?|[^\s>]*+))?"""
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*+)((?:[\s/]++|" + _ATTR_SRC + r")*+)")
_ATTR = re.compile(_ATTR_SRC)
_RAW_TEXT = re.compile(r"<(script|style)(?=[\s/>])", re.IGNORECASE)
_RAW_TEXT_END = {"script": re.compile(r"</script", re.IGNORECASE), "style": re.compile(r"</style", re.IGNORECASE)}
_VOID_TAGS = frozenset("area base br col embed hr img input keygen link meta param source track wbr".split())
#: Elements an HTML parser closes when another of the same kind opens directly inside them.
_SIBLING_CLOSES = frozenset("p li dt dd option optgroup tr td th rb rt rp".split())


def _markup(html: str):
    """``(start, end)`` spans of the page outside the bodies of script and style elements (no tags there)."""
    pos = 0
    while True:
        m = _RAW_TEXT.search(html, pos)
        if m is None:
            yield pos, len(html)
            return
        open_end = html.find(">", m.end())
        if open_end < 0:
            yield pos, len(html)
            return
        yield pos, open_end + 1
        close = _RAW_TEXT_END[m.group(1).lower()].search(html, open_end + 1)
        if close is None:
            return
        pos = close.start()


def html_scan(html: str, max_attributes: int | None = None, max_options: int | None = None) -> tuple[int, int]:
    """One pass over the tags: an estimate of ``(deepest element, sum of element depths)``.

    Opening tags nest until a closing tag that matches the innermost open one;
    a ``<p>``, ``<li>``, ``<td>``... directly inside one of its kind closes it,
    as an HTML parser does. Other elements a parser closes implicitly are kept
    open, so this overestimates rather than underestimates; :func:`html_nesting`
    measures exactly when the estimate is over a limit. With limits, raises
    :class:`TooComplex` for an element with more than ``max_attributes``
    attributes or a page with more than ``max_options`` ``<option>`` elements.
    """
    stack: list[str] = []
    deepest = total = options = 0
    # an attribute takes at least two characters (name and separator): shorter attribute text cannot be over
    attr_chars = 2 * max_attributes if max_attributes is not None else None
    for start, end in _markup(html):
        for closing, name, attrs in _TAG.findall(html, start, end):
            name = name.lower()
            if closing:
                if stack and stack[-1] == name:
                    stack.pop()
                continue
            if attr_chars is not None and len(attrs) > attr_chars:
                n = len(_ATTR.findall(attrs))
                if n > max_attributes:
                    raise TooComplex(f"a <{name[:40]}> element has {n:,} attributes "
                                     f"(max_html_attributes={max_attributes:,})")
            if name == "option":
                options += 1
                if max_options is not None and options > max_options:
                    raise TooComplex(f"more than {max_options:,} <option> elements "
                                     f"(max_html_options={max_options:,})")
            if name in _VOID_TAGS:
                continue
            if stack and name in _SIBLING_CLOSES and stack[-1] == name:
                total += len(stack)
            else:
                stack.append(name)
                depth = len(stack)
                total += depth
                if depth > deepest:
                    deepest = depth
    return deepest, total


def html_nesting(html: str, max_depth: int | None = None, max_depth_sum: int | None = None) -> tuple[int, int]:
    """``(deepest element, sum of element depths)`` of the parsed document tree (``<html>`` is depth 1).

    With limits, raises :class:`TooDeep` as soon as one is passed, so the walk
    costs at most one step per element up to that point.
    """
    from resiliparse.parse.html import DOMContext, HTMLTree, traverse_dom

    tree = HTMLTree.parse(html)
    acc = [0, 0]

    def enter(ctx) -> None:
        depth = ctx.depth + 1
        acc[1] += depth
        if depth > acc[0]:
            acc[0] = depth
            if max_depth is not None and depth > max_depth:
                raise TooDeep(f"HTML nests more than {max_depth:,} elements deep (max_html_depth={max_depth:,})")
        if max_depth_sum is not None and acc[1] > max_depth_sum:
            raise TooDeep(f"HTML element depths sum to more than {max_depth_sum:,} "
                          f"(max_html_depth_sum={max_depth_sum:,})")

    root = tree.document.first_element_child
    if root is not None:
        traverse_dom(root, enter, context=DOMContext(), elements_only=True)
    return acc[0], acc[1]


#: trafilatura (lxml) is the slower extractor: a 4M-character table took 10-13 s, 1M of it 1.9 s; pages it
#: extracts are cut to this many characters (resiliparse takes up to ``max_html_chars``: 4M in under 2 s).
TRAFILATURA_MAX_HTML_CHARS = 1 << 20


def html_char_cap(limits: dict, extractor: str) -> int:
    """How many characters of a page are extracted: ``max_html_chars``, less for the slower extractor."""
    cap = int(limits["max_html_chars"])
    return min(cap, TRAFILATURA_MAX_HTML_CHARS) if extractor == "trafilatura" else cap


def check_html(html: str, limits: dict) -> None:
    """Raise :class:`TooComplex` or :class:`TooDeep` when extracting ``html`` could take unbounded time."""
    max_depth, max_sum = int(limits["max_html_depth"]), int(limits["max_html_depth_sum"])
    deepest, total = html_scan(html, int(limits["max_html_attributes"]), int(limits["max_html_options"]))
    if deepest <= max_depth and total <= max_sum:
        return
    html_nesting(html, max_depth, max_sum)  # exact, for pages the tag scan overestimates


def html_to_text(html: str, extractor: str, limits: dict) -> str:
    """Extract text from HTML after checking it is within the limits (raises :class:`TooDeep`/:class:`TooComplex`)."""
    check_html(html, limits)
    return extract_text(html, extractor)
