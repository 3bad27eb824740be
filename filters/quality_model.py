"""Model-based quality *scoring*: fastText classifier, reference-LM perplexity, and the combined score.

Three filters, all deciding from cached scores (so ``winnow select`` changes a
threshold or top fraction without running a model); their models are trained
by ``winnow train-quality CONFIG`` (:mod:`filters.quality_training`):

* ``quality_classifier`` -- DCLM's recipe (Li et al. 2024, arXiv:2406.11794):
  a fastText supervised classifier with word bigrams. Column ``quality_score``
  = P(high quality). Keep by absolute ``threshold`` or by ``top_fraction``
  (DCLM kept roughly the top 10%).
* ``ref_perplexity`` -- CCNet's idea (Wenzek et al. 2020, arXiv:1911.00359): a
  language model trained on the reference corpus scores each document; column
  ``ref_bpb`` (bits per byte, lower = more reference-like). Keep by
  ``max_bpb`` or by head/middle/tail buckets (terciles over the stage, as
  CCNet's 33%/66% perplexity percentiles).
* ``quality_combined`` -- the default of the real-data ablation: a logistic
  regression over the fastText logit, the share of the text that a line model
  learned from hand-cleaned web pages calls main content, and cheap document
  statistics (:mod:`filters.quality_features`). A classifier alone measured
  "is this like the reference?" (AUC 0.58 against people's main-text judgments
  on held-out pages); this score is fitted to those judgments
  (``winnow quality-eval`` measures every scorer against them).

Each model is saved beside ``MODEL.manifest.json`` and ``MODEL.ids.parquet``;
:func:`reference_ids` / :func:`training_ids` read the ids back so the ablation
harness keeps them out of every evaluation set.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from filters.base import Filter
from filters.quality_features import DOC_FEATURES, Logistic, batch_doc_features, batch_line_features
from pipeline.params import validate
from pipeline.shards import read_parquet, sha256_file

DEFAULT_REFERENCE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ref" / "wikipedia-en.jsonl.gz")


BUCKETS = ("head", "middle", "tail")


CLASSIFIER_TRAIN_DEFAULTS = {
    "reference_path": DEFAULT_REFERENCE,
    "text_field": "text",
    "id_field": "id",
    "min_chars": 500,            # WikiExtractor stubs (empty or one line) are not positives
    "negatives_from_stage": "langid",
    "negatives_exclude_sources": [],  # e.g. the raw corpus's own Wikipedia share
    # files whose ids are never negatives (labelled evaluation pages): [{path, id_field, require_field}]
    "negatives_exclude_ids_from": [],
    "max_per_class": 20000,
    "validation_fraction": 0.1,
    "epoch": 5,
    "lr": 0.1,
    "word_ngrams": 2,
    "dim": 64,
    "bucket": 200000,            # fastText's 2M default would make a 0.5 GB model at dim 64
    "min_count": 1,
    "seed": 0,
}


COMBINED_TRAIN_DEFAULTS = {
    "classifier": {},            # the fastText part: CLASSIFIER_TRAIN_DEFAULTS overrides (the DCLM recipe)
    # pages with hand-cleaned main text: [{path, gold_field, html_field, id_field}]; only their
    # train-split pages (pipeline.heldout) are fitted on, and none of them is ever a fastText negative
    "labelled": [],
    "good_content_fraction": 0.8,  # a page is good when at least this share of its text is gold content
    "l2": 1.0,                   # penalty of both logistic regressions (standardised features)
    "extractor": "resiliparse",  # as the ingest stage extracts the raw pages
}


LM_TRAIN_DEFAULTS = {
    "reference_path": DEFAULT_REFERENCE,
    "text_field": "text",
    "id_field": "id",
    "min_chars": 500,
    "max_docs": 20000,
    "order": 5,
    "log2_buckets": 22,
    "seed": 0,
}


def fasttext_text(text: str, max_chars: int | None = None) -> str:
    """One line, lowercased, single spaces: fastText reads one example per line, and case
    carries little quality signal at this training size."""
    if max_chars:
        text = text[:max_chars]
    return " ".join(text.lower().split())


def _file_sha256(path: str) -> str:
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


def _model_files(model_path_or_dir: str | Path) -> list[Path]:
    p = Path(model_path_or_dir)
    if p.is_dir():
        return sorted(Path(str(m)[: -len(".manifest.json")]) for m in p.glob("*.manifest.json"))
    return [p]


def training_ids(model_path_or_dir: str | Path) -> dict[str, set[str]]:
    """Ids each model was trained or validated on, by label (``hq``/``lq``/``ref``)."""
    out: dict[str, set[str]] = {}
    for m in _model_files(model_path_or_dir):
        t = read_parquet(ids_path(m), columns=["id", "label"])
        for doc_id, label in zip(t.column("id").to_pylist(), t.column("label").to_pylist()):
            out.setdefault(label, set()).add(doc_id)
    return out


def reference_ids(model_path_or_dir: str | Path) -> set[str]:
    """Reference documents used by the model(s) at this path: exclude them from evaluation sets."""
    ids = training_ids(model_path_or_dir)
    return ids.get("hq", set()) | ids.get("ref", set())


def check_train_settings(defaults: dict, given: dict | None, what: str) -> dict:
    """A filter's ``train:`` settings over its training defaults (the shared validator: typos name the nearest key)."""
    return validate(f"{what} train", given, defaults, noun="setting")


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


def top_fraction_plan(values: np.ndarray, fraction: float) -> dict:
    """Cut-off keeping the highest-scoring ``ceil(fraction * n)`` documents of the whole stage.

    Deterministic (a sort of the scores). Documents tied with the cut-off are all
    kept, so ``kept`` may exceed ``target`` by the size of that tie; both are
    recorded. Missing scores rank last.
    """
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isnan(v), -np.inf, v)
    n = int(v.shape[0])
    target = min(n, int(math.ceil(fraction * n - 1e-9)))
    cutoff = float(np.sort(v)[n - target]) if target else math.inf
    return {"fraction": fraction, "docs": n, "target": target, "cutoff": cutoff, "kept": int((v >= cutoff).sum())}


class QualityClassifier(Filter):
    """fastText quality classifier (DCLM): quality_score = P(hq); keep by threshold or top fraction."""

    name = "quality_classifier"
    columns = {"quality_score": "float"}
    defaults = {
        "model_path": None,
        "max_chars": 20000,     # scored prefix: bounds time on huge documents
        "threshold": None,      # keep quality_score >= threshold
        "top_fraction": None,   # or keep the top fraction of the stage by quality_score
        "train": None,          # settings for `winnow train-quality` (see CLASSIFIER_TRAIN_DEFAULTS)
    }
    decision_params = ("threshold", "top_fraction")

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"]:
            raise ValueError("quality_classifier needs `model_path` (trained by `winnow train-quality CONFIG`)")
        if self.params["threshold"] is not None and self.params["top_fraction"] is not None:
            raise ValueError("quality_classifier: set `threshold` or `top_fraction`, not both")
        frac = self.params["top_fraction"]
        if frac is not None and not 0 < frac <= 1:
            raise ValueError(f"quality_classifier: top_fraction must be in (0, 1], got {frac}")
        check_train_settings(CLASSIFIER_TRAIN_DEFAULTS, self.params["train"], self.name)

    def scoring_params(self) -> dict:
        """The model's checksum, not its training recipe, decides whether scores are current."""
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = _file_sha256(p["model_path"])
        return p

    def setup(self) -> None:
        self.scorer = ClassifierScorer(load_fasttext(str(self.params["model_path"])), self.params["max_chars"])

    def score_batch(self, docs):
        return [{"quality_score": float(s)} for s in self.scorer.scores([d.text for d in docs])]

    def score(self, doc):
        return self.score_batch([doc])[0]

    def needs_plan(self) -> bool:
        return self.params["top_fraction"] is not None

    def plan(self, columns):
        return top_fraction_plan(columns["quality_score"].astype(np.float64), self.params["top_fraction"])

    def decide(self, s):
        score = s["quality_score"]
        score = -math.inf if score is None or math.isnan(score) else score
        if self.params["top_fraction"] is not None:
            cutoff = self.plan_state["cutoff"]
            if score >= cutoff:
                return True
            return False, "below_top_fraction", f"quality_score {score:.4f} < cut-off {cutoff:.4f} (top {self.params['top_fraction']:g})"
        if self.params["threshold"] is not None and score < self.params["threshold"]:
            return False, "below_threshold", f"quality_score {score:.4f} < {self.params['threshold']:g}"
        return True


_LMS: dict[str, Any] = {}


def ppl_bucket(bpb: float | None, plan_state: dict) -> str | None:
    """head / middle / tail of the stage's bits-per-byte terciles (CCNet's buckets)."""
    if bpb is None or math.isnan(bpb):
        return None
    if bpb <= plan_state["head_max_bpb"]:
        return "head"
    return "middle" if bpb <= plan_state["middle_max_bpb"] else "tail"


class RefPerplexity(Filter):
    """Bits per byte under a byte n-gram LM of the reference corpus (CCNet); threshold or buckets."""

    name = "ref_perplexity"
    columns = {"ref_bpb": "float"}
    defaults = {
        "model_path": None,
        "max_bytes": 20000,     # scored prefix, as for the classifier
        "max_bpb": None,        # keep ref_bpb <= max_bpb
        "keep_buckets": None,   # or keep these of head / middle / tail (stage terciles)
        "train": None,          # settings for `winnow train-quality` (see LM_TRAIN_DEFAULTS)
    }
    decision_params = ("max_bpb", "keep_buckets")

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"]:
            raise ValueError("ref_perplexity needs `model_path` (trained by `winnow train-quality CONFIG`)")
        buckets = self.params["keep_buckets"]
        if buckets is not None and (not buckets or set(buckets) - set(BUCKETS)):
            raise ValueError(f"ref_perplexity: keep_buckets must be a non-empty subset of {list(BUCKETS)}")
        check_train_settings(LM_TRAIN_DEFAULTS, self.params["train"], self.name)

    def scoring_params(self) -> dict:
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = _file_sha256(p["model_path"])
        return p

    def setup(self) -> None:
        from filters.ngram_lm import ByteNgramLM

        path = str(self.params["model_path"])
        if path not in _LMS:
            _LMS[path] = ByteNgramLM.load(path)
        self.lm = _LMS[path]

    def score_batch(self, docs):
        bpb = self.lm.bits_per_byte([d.text for d in docs], self.params["max_bytes"])
        return [{"ref_bpb": None if np.isnan(b) else float(b)} for b in bpb]

    def score(self, doc):
        return self.score_batch([doc])[0]

    def needs_plan(self) -> bool:
        return True  # the tercile cut-offs are recorded on every run, for inspection and buckets

    def plan(self, columns):
        v = columns["ref_bpb"].astype(np.float64)
        v = v[~np.isnan(v)]
        head, middle = (np.quantile(v, [1 / 3, 2 / 3]) if v.size else (math.nan, math.nan))
        return {"docs": int(v.size), "head_max_bpb": float(head), "middle_max_bpb": float(middle)}

    def decide(self, s):
        bpb = s["ref_bpb"]
        if self.params["max_bpb"] is not None and (bpb is None or bpb > self.params["max_bpb"]):
            return False, "above_max_bpb", f"ref_bpb {bpb} > {self.params['max_bpb']:g}"
        if self.params["keep_buckets"] is not None:
            bucket = ppl_bucket(bpb, self.plan_state)
            if bucket not in self.params["keep_buckets"]:
                return False, f"bucket_{bucket or 'none'}", f"ref_bpb {bpb} in bucket {bucket}"
        return True


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


class QualityCombined(Filter):
    """A small learned model over quality signals; keep by threshold or top fraction.

    Columns: ``quality_combined`` (P(good page), the decision score),
    ``qc_fasttext`` (the DCLM-recipe classifier's P(hq)), ``qc_content_frac``
    (the share of the text a line model trained on hand-cleaned pages predicts
    to be main content). Trained by ``winnow train-quality``; see
    :func:`filters.quality_training.train_combined` for the data.
    """

    name = "quality_combined"
    columns = {"quality_combined": "float", "qc_fasttext": "float", "qc_content_frac": "float"}
    defaults = {
        "model_path": None,        # the JSON with both logistic regressions
        "classifier_path": None,   # the fastText model it reads the logit from
        "max_chars": 20000,
        "threshold": None,
        "top_fraction": None,
        "train": None,             # see COMBINED_TRAIN_DEFAULTS
    }
    decision_params = ("threshold", "top_fraction")

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"] or not self.params["classifier_path"]:
            raise ValueError("quality_combined needs `model_path` and `classifier_path` "
                             "(trained by `winnow train-quality CONFIG`)")
        if self.params["threshold"] is not None and self.params["top_fraction"] is not None:
            raise ValueError("quality_combined: set `threshold` or `top_fraction`, not both")
        frac = self.params["top_fraction"]
        if frac is not None and not 0 < frac <= 1:
            raise ValueError(f"quality_combined: top_fraction must be in (0, 1], got {frac}")
        check_train_settings(COMBINED_TRAIN_DEFAULTS, self.params["train"], self.name)

    def scoring_params(self) -> dict:
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = _file_sha256(p["model_path"])
        p["classifier_sha256"] = _file_sha256(p["classifier_path"])
        return p

    def setup(self) -> None:
        import json

        model = json.loads(Path(self.params["model_path"]).read_text(encoding="utf-8"))
        clf = ClassifierScorer(load_fasttext(str(self.params["classifier_path"])))
        self.scorer = CombinedScorer(model, clf, self.params["max_chars"])

    def score_batch(self, docs):
        if not docs:
            return []
        score, x = self.scorer.scores([d.text for d in docs])
        ft = 1.0 / (1.0 + np.exp(-x[:, 0]))
        return [{"quality_combined": float(s), "qc_fasttext": float(f), "qc_content_frac": float(c)}
                for s, f, c in zip(score, ft, x[:, 1])]

    def score(self, doc):
        return self.score_batch([doc])[0]

    def needs_plan(self) -> bool:
        return self.params["top_fraction"] is not None

    def plan(self, columns):
        return top_fraction_plan(columns["quality_combined"].astype(np.float64), self.params["top_fraction"])

    def decide(self, s):
        score = s["quality_combined"]
        score = -math.inf if score is None or math.isnan(score) else score
        if self.params["top_fraction"] is not None:
            cutoff = self.plan_state["cutoff"]
            if score >= cutoff:
                return True
            return False, "below_top_fraction", \
                f"quality_combined {score:.4f} < cut-off {cutoff:.4f} (top {self.params['top_fraction']:g})"
        if self.params["threshold"] is not None and score < self.params["threshold"]:
            return False, "below_threshold", f"quality_combined {score:.4f} < {self.params['threshold']:g}"
        return True


class LineCleaner(Filter):
    """Drop the lines the combined model's line model calls boilerplate; remove a page left empty.

    The line model (P(a person kept this line as main content), learned from
    hand-cleaned web pages) comes from a ``quality_combined`` model file. The
    cleaned text replaces the document's text for later filters and stages.
    Dropping lines edits text, so ``min_line_prob`` is a scoring parameter;
    only ``min_chars_left`` decides.
    """

    name = "line_cleaner"
    edits_text = True
    columns = {"lines_dropped": "int", "chars_dropped_frac": "float", "chars_left": "int"}
    defaults = {"model_path": None, "min_line_prob": 0.5, "min_chars_left": 1}
    decision_params = ("min_chars_left",)

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"]:
            raise ValueError("line_cleaner needs `model_path` (a quality_combined model, trained by `winnow train-quality`)")

    def scoring_params(self) -> dict:
        p = super().scoring_params()
        p["model_sha256"] = _file_sha256(p["model_path"])
        return p

    def setup(self) -> None:
        import json

        model = json.loads(Path(self.params["model_path"]).read_text(encoding="utf-8"))
        if model.get("format") != COMBINED_FORMAT:
            raise ValueError(f"line_cleaner: {self.params['model_path']} is not a {COMBINED_FORMAT} model")
        self.line_model = Logistic.from_json(model["line_model"])

    def score_batch(self, docs):
        if not docs:
            return []
        lines, doc, feats = batch_line_features([d.text for d in docs])
        keep = self.line_model.predict(feats) >= self.params["min_line_prob"] if len(feats) else np.zeros(0, bool)
        kept: list[list[str]] = [[] for _ in docs]
        dropped = np.bincount(doc[~keep], minlength=len(docs)) if len(doc) else np.zeros(len(docs), int)
        for line, i, k in zip(lines, doc, keep):
            if k:
                kept[i].append(line)
        out = []
        for d, k, n in zip(docs, kept, dropped):
            text = "\n".join(k)
            before = sum(len(x) for x in d.text.splitlines() if x.strip())
            out.append({"text": text, "lines_dropped": int(n), "chars_left": len(text),
                        "chars_dropped_frac": 1.0 - (sum(len(x) for x in k) / before) if before else 0.0})
        return out

    def score(self, doc):
        return self.score_batch([doc])[0]

    def decide(self, s):
        if s["chars_left"] < self.params["min_chars_left"]:
            return False, "too_little_left", f"{s['chars_left']} characters left after dropping boilerplate lines"
        return True
