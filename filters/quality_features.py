"""Cheap text features, labels from hand-cleaned pages, and a small logistic regression.

Three pieces the combined quality scorer (``quality_combined`` in
:mod:`filters.quality_model`) is made of, kept here so scoring, training and
the evaluation harness share one definition:

* :func:`gold_line_labels` -- which lines of an extracted page a person kept as
  main content, read off a hand-cleaned gold text (CleanEval / Dragnet / L3S
  style). A page's *content fraction* (characters on kept lines / all
  characters) is the document-level label.
* :func:`line_features` / :func:`doc_features` -- numbers computed from the text
  alone in one pass over its lines (no model, no tokenizer), so they add little
  to the fastText classifier's time per document.
* :class:`Logistic` -- L2-regularised logistic regression fitted with scipy's
  L-BFGS, stored as plain JSON (weights, feature names, standardisation), so a
  model file is data, never code.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

import numpy as np

_NON_WORD = re.compile(r"[^\w]+")


def normalise_line(s: str) -> str:
    """Lowercase words joined by single spaces: extractors and gold files differ in punctuation/spacing."""
    return " ".join(_NON_WORD.sub(" ", s.lower()).split())


#: A line at least this long (normalised) counts as content when found inside the gold text;
#: shorter lines ("Home", "Share") must equal a whole gold line, or any page mentioning "home" would match.
MIN_SUBSTRING_CHARS = 15


def text_lines(text: str) -> list[str]:
    """The non-blank lines of a text, stripped: the units that line labels and line features describe."""
    return [ln for ln in (raw.strip() for raw in text.splitlines()) if ln]


def gold_line_labels(text: str, gold: str) -> list[bool]:
    """Per line of :func:`text_lines`: True if a person kept it as main content.

    A line is content if its normalised form equals a normalised gold line, or is
    at least :data:`MIN_SUBSTRING_CHARS` long and occurs inside the normalised
    gold text (the extractor may split one gold paragraph into several lines).
    A line with no word character ("|", "***") is never content.
    """
    lines = {normalise_line(g) for g in (gold or "").splitlines()}
    lines.discard("")
    whole = " " + " ".join(normalise_line(g) for g in (gold or "").splitlines()) + " "
    out: list[bool] = []
    for line in text_lines(text):
        n = normalise_line(line)
        out.append(bool(n) and (n in lines or (len(n) >= MIN_SUBSTRING_CHARS and f" {n} " in whole)))
    return out


def content_fraction(text: str, gold: str) -> float:
    """Characters on gold-kept lines / characters on non-blank lines (NaN for a blank text)."""
    total = kept = 0
    for line, lab in zip(text_lines(text), gold_line_labels(text, gold)):
        total += len(line)
        kept += len(line) if lab else 0
    return kept / total if total else math.nan


# ---------------------------------------------------------------------------
# line features

#: Words and symbols typical of navigation, sharing, legal and shop boilerplate (English and the
#: commonest German/Spanish/French equivalents, since the raw web pages are multilingual). Matched as
#: whole lower-cased tokens: a set lookup per line, because a regex alternation scanned every
#: character at ~1 us each, ten times the fastText classifier's whole cost.
BOILERPLATE_WORDS = frozenset("""
copyright reserved privacy cookie cookies terms login logout signin signup register subscribe newsletter
share tweet facebook twitter instagram linkedin pinterest whatsapp email e-mail print comment comments reply
posted more click menu home contact search advertisement advertising sponsored next previous prev skip top
related tag tags category categories archive archives rss sitemap imprint impressum datenschutz anmelden
kontakt startseite weiterlesen cart checkout shipping password forum powered javascript inicio contacto
accueil connexion
""".split())
#: Navigation separators and legal marks, counted per line beside the words above.
BOILERPLATE_SYMBOLS = np.array([ord(c) for c in "©®|»«›·•"], dtype=np.uint32)
_TERMINAL = tuple('.!?"\'”’»)…:;')

LINE_FEATURES = ("log_chars", "log_words", "ends_terminal", "ends_colon", "alpha_frac", "digit_frac",
                 "upper_frac", "space_frac", "punct_frac", "boilerplate_hits", "boilerplate_share",
                 "starts_bullet", "title_case", "position", "log_prev_chars", "log_next_chars",
                 "doc_log_lines")


def _char_classes() -> np.ndarray:
    """Bit flags per code point below 0x10000: 1 letter, 2 digit, 4 upper case, 8 space."""
    table = np.zeros(0x10000, dtype=np.uint8)
    for cp in range(0x10000):
        ch = chr(cp)
        table[cp] = (ch.isalpha()) | (ch.isdigit() << 1) | (ch.isupper() << 2) | ((ch == " ") << 3)
    return table


_CLASSES: np.ndarray | None = None


def line_features(text: str) -> tuple[list[str], np.ndarray]:
    """The non-blank lines of ``text`` and a (lines x LINE_FEATURES) float matrix."""
    lines, _, feats = batch_line_features([text])
    return lines, feats


def batch_line_features(texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Line features of a whole batch at once: (lines, document index of each line, features).

    Vectorised over all lines of all documents (character classes by table
    lookup, word starts from the class array, a set lookup for boilerplate
    words): per-document numpy calls cost more than the arithmetic on a short
    page, so a shard's documents go through together.
    """
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _char_classes()
    lines: list[str] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        doc_lines = text_lines(t)
        counts[i] = len(doc_lines)
        lines += doc_lines
    n = len(lines)
    doc = np.repeat(np.arange(len(texts)), counts)
    if not n:
        return [], doc, np.zeros((0, len(LINE_FEATURES)))
    joined = "\n".join(lines)
    lens = np.fromiter((len(ln) for ln in lines), dtype=np.int64, count=n)
    starts = np.concatenate([[0], np.cumsum(lens[:-1] + 1)])
    codes = np.frombuffer(joined.encode("utf-32-le", "replace"), dtype=np.uint32)
    cls = _CLASSES[np.minimum(codes, 0xFFFF)]
    cls[codes > 0xFFFF] = 1  # supplementary planes: count as letters (CJK extensions, scripts)
    alpha = np.add.reduceat((cls & 1).astype(np.int64), starts)
    digit = np.add.reduceat(((cls >> 1) & 1).astype(np.int64), starts)
    upper = np.add.reduceat(((cls >> 2) & 1).astype(np.int64), starts)
    space = np.add.reduceat(((cls >> 3) & 1).astype(np.int64), starts)
    # words = runs of non-space: a word starts where a non-space follows a space or a line start
    nonspace = (cls & 8) == 0
    nl = codes == 10
    word_start = nonspace & ~nl & np.concatenate([[True], ~nonspace[:-1] | nl[:-1]])
    words = np.add.reduceat(word_start.astype(np.int64), starts)
    caps = np.add.reduceat((word_start & ((cls & 4) > 0)).astype(np.int64), starts)
    # distinct boilerplate words per line (punctuation blanked in the code-point array: a regex
    # substitution cost more than all the rest) plus separator symbols
    words_only = np.where(((cls & 3) > 0) | nl, codes, 32).astype(np.uint32).tobytes().decode("utf-32-le").lower()
    hits = np.fromiter((len(BOILERPLATE_WORDS.intersection(ln.split())) for ln in words_only.split("\n")),
                       dtype=np.int64, count=n)
    hits += np.add.reduceat(np.isin(codes, BOILERPLATE_SYMBOLS).astype(np.int64), starts)
    hits[lens >= 400] = 0  # long prose lines rarely are navigation
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index_in_doc = np.arange(n) - first[doc]
    lines_in_doc = counts[doc]
    c = lens.astype(np.float64)
    log_c = np.log1p(c)
    f = np.empty((n, len(LINE_FEATURES)))
    f[:, 0] = log_c
    f[:, 1] = np.log1p(words)
    f[:, 2] = np.fromiter((ln.endswith(_TERMINAL) for ln in lines), dtype=bool, count=n)
    f[:, 3] = np.fromiter((ln.endswith(":") for ln in lines), dtype=bool, count=n)
    f[:, 4] = alpha / c
    f[:, 5] = digit / c
    f[:, 6] = upper / np.maximum(alpha, 1)
    f[:, 7] = space / c
    f[:, 8] = (c - alpha - digit - space) / c
    f[:, 9] = np.log1p(hits)
    f[:, 10] = hits / np.maximum(words, 1)
    f[:, 11] = np.fromiter((ln[:1] in "-*•·>#" or ln[:2].rstrip(".)").isdigit() for ln in lines), dtype=bool, count=n)
    f[:, 12] = np.minimum(caps / np.maximum(words, 1), 1.0)
    f[:, 13] = index_in_doc / np.maximum(lines_in_doc - 1, 1)
    f[:, 14] = np.where(index_in_doc > 0, np.concatenate([[0.0], log_c[:-1]]), 0.0)
    f[:, 15] = np.where(index_in_doc < lines_in_doc - 1, np.concatenate([log_c[1:], [0.0]]), 0.0)
    f[:, 16] = np.log1p(lines_in_doc)
    return lines, doc, f


DOC_FEATURES = ("log_chars", "log_lines", "mean_log_line_chars", "terminal_line_frac", "short_line_char_frac",
                "boilerplate_line_frac", "alpha_frac", "digit_frac", "upper_frac")


def batch_doc_features(doc: np.ndarray, feats: np.ndarray, n_docs: int) -> np.ndarray:
    """Per-document summaries (n_docs x DOC_FEATURES) of :func:`batch_line_features`; zeros for a blank document."""
    col = {name: feats[:, i] for i, name in enumerate(LINE_FEATURES)}
    chars = np.exp(col["log_chars"]) - 1

    def total(weights):
        return np.bincount(doc, weights=weights, minlength=n_docs)

    n = total(np.ones(len(doc)))
    c = total(chars)
    nz, cz = np.maximum(n, 1), np.maximum(c, 1)
    out = np.column_stack([
        np.log1p(c), np.log1p(n), total(col["log_chars"]) / nz, total(col["ends_terminal"]) / nz,
        total(chars * (chars < 30)) / cz, total(col["boilerplate_hits"] > 0) / nz,
        total(col["alpha_frac"] * chars) / cz, total(col["digit_frac"] * chars) / cz, total(col["upper_frac"]) / nz,
    ])
    out[n == 0] = 0.0
    return out


# ---------------------------------------------------------------------------
# logistic regression


class Logistic:
    """Standardised inputs, L2-penalised logistic regression; ``to_json``/``from_json`` round-trip."""

    def __init__(self, names: Iterable[str], weights: np.ndarray, bias: float, mean: np.ndarray, scale: np.ndarray):
        self.names = list(names)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, names: Iterable[str], x: np.ndarray, y: np.ndarray, l2: float = 1.0,
            sample_weight: np.ndarray | None = None) -> "Logistic":
        """Deterministic fit (L-BFGS from zeros); ``l2`` is the penalty on standardised weights."""
        from scipy.optimize import minimize

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        w = w / w.sum()
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = (x - mean) / scale

        def loss(theta):
            b, beta = theta[0], theta[1:]
            logit = z @ beta + b
            # log(1 + e^t) - y t, computed stably
            nll = np.logaddexp(0.0, logit) - y * logit
            p = 1.0 / (1.0 + np.exp(-logit))
            g = w * (p - y)
            value = float((w * nll).sum() + 0.5 * l2 * beta @ beta / len(y))
            grad = np.concatenate([[g.sum()], z.T @ g + l2 * beta / len(y)])
            return value, grad

        res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
        return cls(names, res.x[1:], res.x[0], mean, scale)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(x)))

    def to_json(self) -> dict:
        return {"features": self.names, "weights": self.weights.tolist(), "bias": self.bias,
                "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Logistic":
        return cls(d["features"], d["weights"], d["bias"], d["mean"], d["scale"])


# ---------------------------------------------------------------------------
# labelled pages


def gold_pages(path: str, gold_field: str, html_field: str = "html", id_field: str = "id",
               extractor: str = "resiliparse", max_html_chars: int = 4 << 20) -> list[dict]:
    """Pages of a JSONL(.gz) file that have a gold main text, extracted as the ingest stage does.

    Each: ``{"id", "text", "gold", "content_fraction", "dataset"}``. Pages whose
    gold is null (no labelling) are skipped; an empty gold means all boilerplate.
    """
    import gzip
    import json

    from pipeline.ingest.html import extract_text

    out = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            gold = obj.get(gold_field)
            html = obj.get(html_field)
            if gold is None or not isinstance(html, str):
                continue
            text = extract_text(html[:max_html_chars], extractor)
            frac = content_fraction(text, gold)
            if math.isnan(frac):
                continue  # nothing extracted: the pipeline drops such a page at ingest
            out.append({"id": str(obj[id_field]), "text": text, "gold": gold, "content_fraction": frac,
                        "dataset": obj.get("dataset") or obj.get("source") or ""})
    return out
