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

from filters.base import Filter, ThresholdOrTopFraction, TrainContext
from filters.quality_features import Logistic, batch_line_features
from filters.quality_scorers import (
    COMBINED_FORMAT,
    ClassifierScorer,
    CombinedScorer,
    load_fasttext,
    manifest_path,
    model_sha256,
    reference_ids,
    training_ids,
)
from pipeline.params import validate

__all__ = ["QualityClassifier", "RefPerplexity", "QualityCombined", "LineCleaner", "CLASSIFIER_TRAIN_DEFAULTS",
           "COMBINED_TRAIN_DEFAULTS", "LM_TRAIN_DEFAULTS", "manifest_path", "training_ids", "reference_ids"]

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


class QualityClassifier(ThresholdOrTopFraction, Filter):
    """fastText quality classifier (DCLM): quality_score = P(hq); keep by threshold or top fraction.

    Trained by ``winnow train-quality``: positives from the reference corpus's train split,
    negatives from the raw corpus after ``train.negatives_from_stage`` (see CLASSIFIER_TRAIN_DEFAULTS).
    """

    name = "quality_classifier"
    columns = {"quality_score": "float"}
    score_column = "quality_score"
    defaults = {
        "model_path": None,
        "max_chars": 20000,     # scored prefix: bounds time on huge documents
        "threshold": None,      # keep quality_score >= threshold
        "top_fraction": None,   # or keep the top fraction of the stage by quality_score
        "train": None,          # settings for `winnow train-quality` (see CLASSIFIER_TRAIN_DEFAULTS)
    }
    decision_params = ("threshold", "top_fraction")
    train_defaults = CLASSIFIER_TRAIN_DEFAULTS

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"]:
            raise ValueError("quality_classifier needs `model_path` (trained by `winnow train-quality CONFIG`)")
        self.check_cut()

    def scoring_params(self) -> dict:
        """The model's checksum, not its training recipe, decides whether scores are current."""
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = model_sha256(p["model_path"])
        return p

    def setup(self) -> None:
        self.scorer = ClassifierScorer(load_fasttext(str(self.params["model_path"])), self.params["max_chars"])

    def score_batch(self, docs):
        return [{"quality_score": float(s)} for s in self.scorer.scores([d.text for d in docs])]

    def score(self, doc):
        return self.score_batch([doc])[0]

    # -- training
    def training_stages(self) -> list[str]:
        return [self.train_settings()["negatives_from_stage"]]

    def training_reference(self) -> dict:
        return _reference_of(self.train_settings())

    def train(self, ctx: TrainContext) -> dict:
        from filters.quality_training import train_classifier

        return train_classifier(self.params["model_path"], self.train_settings(), ctx.run.root, ctx.raw_stage,
                                log=ctx.log)


def _reference_of(settings: dict) -> dict:
    return {"path": str(settings["reference_path"]), "text_field": settings["text_field"],
            "id_field": settings["id_field"], "min_chars": settings["min_chars"]}


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
    score_column = "ref_bpb"
    train_defaults = LM_TRAIN_DEFAULTS

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"]:
            raise ValueError("ref_perplexity needs `model_path` (trained by `winnow train-quality CONFIG`)")
        buckets = self.params["keep_buckets"]
        if buckets is not None and (not buckets or set(buckets) - set(BUCKETS)):
            raise ValueError(f"ref_perplexity: keep_buckets must be a non-empty subset of {list(BUCKETS)}")

    def training_reference(self) -> dict:
        return _reference_of(self.train_settings())

    def train(self, ctx: TrainContext) -> dict:
        from filters.quality_training import train_reference_lm

        return train_reference_lm(self.params["model_path"], self.train_settings(), ctx.run.root, ctx.raw_stage,
                                  log=ctx.log)

    def scoring_params(self) -> dict:
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = model_sha256(p["model_path"])
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


class QualityCombined(ThresholdOrTopFraction, Filter):
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
    score_column = "quality_combined"
    train_defaults = COMBINED_TRAIN_DEFAULTS

    def __init__(self, **params):
        super().__init__(**params)
        if not self.params["model_path"] or not self.params["classifier_path"]:
            raise ValueError("quality_combined needs `model_path` and `classifier_path` "
                             "(trained by `winnow train-quality CONFIG`)")
        self.check_cut()

    def scoring_params(self) -> dict:
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = model_sha256(p["model_path"])
        p["classifier_sha256"] = model_sha256(p["classifier_path"])
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

    # -- training: the fastText part (DCLM recipe), then the line and document models
    def train_settings(self) -> dict:
        s = super().train_settings()
        s["classifier"] = validate(f"{self.name} train classifier", s["classifier"], CLASSIFIER_TRAIN_DEFAULTS,
                                   noun="setting")
        return s

    def model_files(self) -> list[str]:
        return [self.params["model_path"], self.params["classifier_path"]]

    def training_stages(self) -> list[str]:
        return [self.train_settings()["classifier"]["negatives_from_stage"]]

    def training_reference(self) -> dict:
        return _reference_of(self.train_settings()["classifier"])

    def train(self, ctx: TrainContext) -> dict:
        from filters.quality_training import train_combined

        return train_combined(self.params["model_path"], self.train_settings(), ctx.run.root, ctx.raw_stage,
                              log=ctx.log, classifier_path=self.params["classifier_path"])


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
        p["model_sha256"] = model_sha256(p["model_path"])
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
