"""Loading and scoring with the quality models: the pieces both the quality filters
(:mod:`filters.quality_model`, which score) and their training (:mod:`filters.quality_training`)
use, so neither imports the other and a worker that scores never imports training code.

A model file ``MODEL`` is saved beside ``MODEL.manifest.json`` (how it was trained) and
``MODEL.ids.parquet`` (every document id it saw, by label): :func:`training_ids` and
:func:`reference_ids` read them back so evaluation sets can leave them out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from filters.quality_features import DOC_FEATURES, Logistic, batch_doc_features, batch_line_features
from pipeline.shards import read_parquet, sha256_file


def fasttext_text(text: str, max_chars: int | None = None) -> str:
    """One line, lowercased, single spaces: fastText reads one example per line, and case
    carries little quality signal at this training size."""
    if max_chars:
        text = text[:max_chars]
    return " ".join(text.lower().split())


def model_sha256(path: str) -> str:
    """SHA-256 of a model file, cached by (path, size, mtime): the scoring fingerprint needs it
    on every run and select, and hashing is all it costs -- the model is not loaded."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"quality model not found: {p}; train it with `winnow train-quality CONFIG`")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(p)
    return _SHA_CACHE[key]


_SHA_CACHE: dict[tuple, str] = {}


def manifest_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + ".manifest.json")


def ids_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + ".ids.parquet")


def model_files_at(model_path_or_dir: str | Path) -> list[Path]:
    p = Path(model_path_or_dir)
    if p.is_dir():
        return sorted(Path(str(m)[: -len(".manifest.json")]) for m in p.glob("*.manifest.json"))
    return [p]


def training_ids(model_path_or_dir: str | Path) -> dict[str, set[str]]:
    """Ids each model was trained or validated on, by label (``hq``/``lq``/``ref``)."""
    out: dict[str, set[str]] = {}
    for m in model_files_at(model_path_or_dir):
        t = read_parquet(ids_path(m), columns=["id", "label"])
        for doc_id, label in zip(t.column("id").to_pylist(), t.column("label").to_pylist()):
            out.setdefault(label, set()).add(doc_id)
    return out


def reference_ids(model_path_or_dir: str | Path) -> set[str]:
    """Reference documents used by the model(s) at this path: exclude them from evaluation sets."""
    ids = training_ids(model_path_or_dir)
    return ids.get("hq", set()) | ids.get("ref", set())


class ClassifierScorer:
    """P(hq) from a fastText softmax model, computed in float64 from the logit.

    fastText's own ``predict`` adds 1e-5 to float32 probabilities, so every
    confident document reads 1.00001 and a top-fraction cut would be one big tie.
    With two labels the softmax is a sigmoid of ``(w_hq - w_lq) . h``, where ``h``
    is the averaged input vector (words and bigrams) that ``get_sentence_vector``
    returns for supervised models.
    """

    def __init__(self, model, max_chars: int | None = None):
        labels = [lab.replace("__label__", "") for lab in model.get_labels()]
        if sorted(labels) != ["hq", "lq"]:
            raise ValueError(f"quality classifier needs labels hq and lq, has {labels}")
        out = model.get_output_matrix().astype(np.float64)
        self.direction = out[labels.index("hq")] - out[labels.index("lq")]
        self.model = model
        self.max_chars = max_chars

    def logits(self, texts: list[str]) -> np.ndarray:
        vecs = np.stack([self.model.get_sentence_vector(fasttext_text(t, self.max_chars)) for t in texts]) \
            if texts else np.zeros((0, self.direction.shape[0]))
        return vecs.astype(np.float64) @ self.direction

    def scores(self, texts: list[str]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(texts)))


_FASTTEXT_MODELS: dict[str, Any] = {}


def load_fasttext(path: str):
    """One fastText model per process; workers reuse it across shards."""
    if path not in _FASTTEXT_MODELS:
        import fasttext

        _FASTTEXT_MODELS[path] = fasttext.load_model(path)
    return _FASTTEXT_MODELS[path]


COMBINED_FEATURES = ("fasttext_logit", "line_content_frac") + DOC_FEATURES


class CombinedScorer:
    """fastText logit + learned line-level content fraction + cheap document statistics -> P(good).

    Both logistic regressions live in one JSON file (see :mod:`filters.quality_features`).
    """

    def __init__(self, model: dict, classifier: ClassifierScorer | None, max_chars: int | None = None):
        if model.get("format") != COMBINED_FORMAT:
            raise ValueError(f"not a {COMBINED_FORMAT} model (format {model.get('format')!r})")
        self.line_model = Logistic.from_json(model["line_model"])
        self.doc_model = Logistic.from_json(model["doc_model"])
        self.classifier = classifier
        self.max_chars = max_chars

    def features(self, texts: list[str]) -> np.ndarray:
        """(docs x COMBINED_FEATURES): the whole batch in one vectorised pass."""
        texts = [t[: self.max_chars] if self.max_chars else t for t in texts]
        logits = self.classifier.logits(texts) if self.classifier is not None else np.zeros(len(texts))
        _, doc, feats = batch_line_features(texts)
        chars = np.exp(feats[:, 0]) - 1
        p_content = self.line_model.predict(feats) if len(feats) else np.zeros(0)
        total = np.bincount(doc, weights=chars, minlength=len(texts))
        frac = np.bincount(doc, weights=p_content * chars, minlength=len(texts)) / np.maximum(total, 1)
        return np.column_stack([np.clip(logits, -20.0, 20.0), frac, batch_doc_features(doc, feats, len(texts))])

    def scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(combined P(good), feature matrix) for ``texts``."""
        x = self.features(texts)
        return self.doc_model.predict(x[:, [COMBINED_FEATURES.index(n) for n in self.doc_model.names]]), x


COMBINED_FORMAT = "winnow-quality-combined-v1"
