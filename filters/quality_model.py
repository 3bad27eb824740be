"""Model-based quality: a fastText classifier and a reference-LM perplexity signal.

Two filters, both trained by ``winnow train-quality CONFIG`` and both deciding
from cached scores (so ``winnow select`` changes a threshold or top fraction
without running a model):

* ``quality_classifier`` -- DCLM's recipe (Li et al. 2024, arXiv:2406.11794):
  a fastText supervised classifier with word bigrams, positives from a
  reference corpus (default: non-stub English Wikipedia articles), negatives
  sampled from the raw corpus after dedup and language ID. Column
  ``quality_score`` = P(high quality). Keep by absolute ``threshold`` or by
  ``top_fraction`` (DCLM kept roughly the top 10%).
* ``ref_perplexity`` -- CCNet's idea (Wenzek et al. 2020, arXiv:1911.00359): a
  language model trained on the reference corpus scores each document; column
  ``ref_bpb`` (bits per byte, lower = more reference-like). Keep by
  ``max_bpb`` or by head/middle/tail buckets (terciles over the stage, as
  CCNet's 33%/66% perplexity percentiles).

Reference/evaluation split: a document whose id hashes into ``EVAL_PERCENT``
of 100 buckets (:func:`reference_split`) is evaluation text and is never used
to train either scorer -- neither as a reference positive nor as a raw-corpus
negative (the ablation harness holds out the same ids of every source). The
ids that *were* used are written
beside each model, and :func:`reference_ids` / :func:`training_ids` read them
back so the ablation harness can keep them out of every evaluation set. No
document of the raw corpus (the config's first stage) is ever a positive, so
its scores are out-of-sample.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from filters.base import Filter, parse_filter_specs, register_filter
from pipeline.shards import atomic_write_json, read_json, read_parquet, sha256_file, write_parquet

#: Percent of reference documents (by id hash) reserved for evaluation.
EVAL_PERCENT = 10
DEFAULT_REFERENCE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ref" / "wikipedia-en.jsonl.gz")
BUCKETS = ("head", "middle", "tail")

CLASSIFIER_TRAIN_DEFAULTS = {
    "reference_path": DEFAULT_REFERENCE,
    "text_field": "text",
    "id_field": "id",
    "min_chars": 500,            # WikiExtractor stubs (empty or one line) are not positives
    "negatives_from_stage": "langid",
    "negatives_exclude_sources": [],  # e.g. the raw corpus's own Wikipedia share
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


# ---------------------------------------------------------------------------
# shared helpers


def reference_split(doc_id: str) -> str:
    """``"eval"`` or ``"train"``: a fixed hash of the id, independent of any seed or config."""
    h = int.from_bytes(hashlib.sha256(f"winnow-ref:{doc_id}".encode()).digest()[:8], "big")
    return "eval" if h % 100 < EVAL_PERCENT else "train"


def _order_key(seed: int, doc_id: str, purpose: str) -> bytes:
    """Deterministic pseudo-random order for sampling, stable across runs and machines."""
    return hashlib.sha256(f"{purpose}:{seed}:{doc_id}".encode()).digest()


def _unit(seed: int, doc_id: str, purpose: str) -> float:
    return int.from_bytes(_order_key(seed, doc_id, purpose)[:8], "big") / 2.0**64


def fasttext_text(text: str, max_chars: int | None = None) -> str:
    """One line, lowercased, single spaces: fastText reads one example per line, and case
    carries little quality signal at this training size."""
    if max_chars:
        text = text[:max_chars]
    return " ".join(text.lower().split())


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic, ties counted half (average ranks)."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def iter_reference(path: str, text_field: str = "text", id_field: str = "id",
                   min_chars: int = 0) -> Iterator[tuple[str, str, str]]:
    """Yield ``(id, text, split)`` of reference documents with at least ``min_chars`` characters."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            text = obj.get(text_field) or ""
            if len(text.strip()) < min_chars:
                continue
            doc_id = str(obj.get(id_field, f"{Path(path).name}:{n}"))
            yield doc_id, text, reference_split(doc_id)


def stage_documents(run_dir: Path, stage: str, columns: list[str]) -> pa.Table:
    """All kept rows of a finished stage, read through its manifest."""
    manifest_path = Path(run_dir) / stage / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"stage {stage!r} has not been run in {run_dir}")
    manifest = read_json(manifest_path)
    parts = [read_parquet(Path(run_dir) / stage / s["kept"]["path"], columns=columns) for s in manifest["shards"]]
    return pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.string()) for c in columns})


def _sample(ids: list[str], n: int, seed: int, purpose: str) -> list[int]:
    """Indices of ``n`` of ``ids`` chosen by hash order (same ids + seed -> same sample)."""
    ranked = sorted(range(len(ids)), key=lambda i: _order_key(seed, ids[i], purpose))
    return sorted(ranked[:n])


def _reference_train_docs(settings: dict, exclude_ids: set[str]) -> tuple[list[str], list[str], dict]:
    """Reference documents allowed for training: train split, long enough, not in the raw corpus."""
    ids, texts = [], []
    counts = {"eval_split_skipped": 0, "in_raw_corpus_skipped": 0}
    for doc_id, text, split in iter_reference(settings["reference_path"], settings["text_field"],
                                              settings["id_field"], settings["min_chars"]):
        if split == "eval":
            counts["eval_split_skipped"] += 1
        elif doc_id in exclude_ids:
            counts["in_raw_corpus_skipped"] += 1
        else:
            ids.append(doc_id)
            texts.append(text)
    counts["available"] = len(ids)
    return ids, texts, counts


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


def _check_train_settings(defaults: dict, given: dict | None, what: str) -> dict:
    unknown = set(given or {}) - set(defaults)
    if unknown:
        raise ValueError(f"{what} train: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(defaults))}")
    return {**defaults, **(given or {})}


# ---------------------------------------------------------------------------
# fastText classifier


def train_classifier(model_path: str | Path, settings: dict, run_dir: Path, raw_stage: str,
                     log=print) -> dict:
    """Train and save the fastText classifier; return its training manifest."""
    import fasttext

    s = settings
    raw_ids = set(stage_documents(run_dir, raw_stage, ["id"]).column("id").to_pylist())
    pos_ids, pos_texts, ref_counts = _reference_train_docs(s, raw_ids)

    neg_table = stage_documents(run_dir, s["negatives_from_stage"], ["id", "text", "source"])
    excluded_sources = set(s["negatives_exclude_sources"])
    neg_ids, neg_texts, neg_sources = [], [], []
    eval_negatives_skipped = 0
    for doc_id, text, source in zip(*(neg_table.column(c).to_pylist() for c in ("id", "text", "source"))):
        if source in excluded_sources:
            continue
        if reference_split(doc_id) == "eval":  # the split holds for every source, not only the reference
            eval_negatives_skipped += 1
            continue
        neg_ids.append(doc_id)
        neg_texts.append(text)
        neg_sources.append(source)

    n = min(s["max_per_class"], len(pos_ids), len(neg_ids))
    if n < 2:
        raise ValueError(f"too few training documents: {len(pos_ids)} positives, {len(neg_ids)} negatives")
    pos_pick = _sample(pos_ids, n, s["seed"], "pos")
    neg_pick = _sample(neg_ids, n, s["seed"], "neg")
    rows = [(pos_ids[i], pos_texts[i], "hq", "reference") for i in pos_pick]
    rows += [(neg_ids[i], neg_texts[i], "lq", neg_sources[i]) for i in neg_pick]
    rows.sort(key=lambda r: _order_key(s["seed"], r[0], "shuffle"))  # fastText learns in file order
    splits = ["valid" if _unit(s["seed"], r[0], "valid") < s["validation_fraction"] else "train" for r in rows]

    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp, _zero_filled_allocations() as zeroed:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as f:
            for (_, text, label, _), split in zip(rows, splits):
                if split == "train":
                    f.write(f"__label__{label} {fasttext_text(text)}\n")
        model = fasttext.train_supervised(
            input=str(train_file), wordNgrams=s["word_ngrams"], epoch=s["epoch"], lr=s["lr"], dim=s["dim"],
            bucket=s["bucket"], minCount=s["min_count"], loss="softmax", thread=1, seed=s["seed"], verbose=0)
        if not np.isfinite(model.get_input_matrix()).all():
            raise ValueError("fastText training diverged (NaN in the model); lower `lr`")
        tmp_model = Path(tmp) / "model.bin"
        model.save_model(str(tmp_model))
        os.replace(tmp_model, model_path)
    train_seconds = time.perf_counter() - t0

    valid = [(r[1], r[2] == "hq") for r, sp in zip(rows, splits) if sp == "valid"]
    scorer = _ClassifierScorer(model)
    v_scores = scorer.scores([t for t, _ in valid])
    v_labels = np.array([y for _, y in valid], bool)
    accuracy = float(np.mean((v_scores >= 0.5) == v_labels)) if valid else float("nan")
    auc = auc_score(v_labels, v_scores)

    write_parquet(model_path.parent, ids_path(model_path).name, pa.table({
        "id": [r[0] for r in rows], "label": [r[2] for r in rows],
        "split": splits, "source": [r[3] for r in rows]}))
    manifest = {
        "kind": "quality_classifier",
        "model": model_path.name,
        "model_sha256": sha256_file(model_path),
        "ids_file": ids_path(model_path).name,
        "data": {
            "positives": {"path": s["reference_path"], "min_chars": s["min_chars"],
                          "split_rule": f"sha256('winnow-ref:'+id) % 100 < {EVAL_PERCENT} is eval, never trained on",
                          **ref_counts},
            "negatives": {"run_dir": str(run_dir), "stage": s["negatives_from_stage"],
                          "excluded_sources": sorted(excluded_sources), "available": len(neg_ids),
                          "eval_split_skipped": eval_negatives_skipped,
                          "by_source": _count([r[3] for r in rows if r[2] == "lq"])},
            "raw_corpus_stage_excluded_from_positives": raw_stage,
        },
        "counts": {"per_class": n, "train": splits.count("train"), "valid": splits.count("valid"),
                   "valid_hq": int(v_labels.sum()), "valid_lq": int((~v_labels).sum())},
        "hyperparameters": {k: s[k] for k in ("epoch", "lr", "word_ngrams", "dim", "bucket", "min_count")}
                           | {"loss": "softmax", "thread": 1, "preprocess": "lowercase, whitespace collapsed",
                              "zeroed_matrix_memory": zeroed},
        "seed": s["seed"],
        "validation": {"accuracy": round(accuracy, 4), "auc": round(auc, 4)},
        "train_seconds": round(train_seconds, 2),
    }
    atomic_write_json(manifest_path(model_path), manifest)
    log(f"classifier: {n:,} per class ({manifest['counts']['valid']:,} held out): "
        f"validation accuracy {accuracy:.4f}, AUC {auc:.4f} -> {model_path}")
    return manifest


_M_PERTURB = -6  # glibc mallopt parameter


@contextlib.contextmanager
def _zero_filled_allocations():
    """While training, make glibc's malloc return zero-filled memory.

    With ``thread=1`` fastText (the fasttext-numpy2 build) randomly initialises
    only the first tenth of the input matrix and leaves the rest as allocated:
    zero when the memory is fresh, leftover heap bytes otherwise. That made
    training non-deterministic and sometimes fail with "Encountered NaN".
    glibc's perturb byte 0xff fills every allocation with 0x00 (and freed
    memory with 0xff), so the untouched rows are zero, as in upstream
    fastText, and training is reproducible. Yields whether it is in effect.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        active = bool(libc.mallopt(_M_PERTURB, 0xFF))
    except (OSError, AttributeError):
        libc, active = None, False
    try:
        yield active
    finally:
        if active:
            libc.mallopt(_M_PERTURB, 0)


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


class _ClassifierScorer:
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


@register_filter
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
        _check_train_settings(CLASSIFIER_TRAIN_DEFAULTS, self.params["train"], self.name)

    def scoring_params(self) -> dict:
        """The model's checksum, not its training recipe, decides whether scores are current."""
        p = {k: v for k, v in super().scoring_params().items() if k != "train"}
        p["model_sha256"] = _file_sha256(p["model_path"])
        return p

    def setup(self) -> None:
        self.scorer = _ClassifierScorer(load_fasttext(str(self.params["model_path"])), self.params["max_chars"])

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


# ---------------------------------------------------------------------------
# reference-LM perplexity


def train_reference_lm(model_path: str | Path, settings: dict, run_dir: Path, raw_stage: str, log=print) -> dict:
    """Train and save the byte n-gram model on reference train-split documents."""
    from filters.ngram_lm import ByteNgramLM

    s = settings
    raw_ids = set(stage_documents(run_dir, raw_stage, ["id"]).column("id").to_pylist())
    ids, texts, ref_counts = _reference_train_docs(s, raw_ids)
    pick = _sample(ids, min(s["max_docs"], len(ids)), s["seed"], "lm")
    if not pick:
        raise ValueError("no reference documents to train the language model on")
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lm = ByteNgramLM.train((texts[i] for i in pick), order=s["order"], log2_buckets=s["log2_buckets"])
    train_seconds = time.perf_counter() - t0
    tmp = model_path.with_name(model_path.name + ".tmp.npz")
    lm.save(tmp)
    os.replace(tmp, model_path)
    write_parquet(model_path.parent, ids_path(model_path).name,
                  pa.table({"id": [ids[i] for i in pick], "label": ["ref"] * len(pick)}))
    manifest = {
        "kind": "ref_perplexity",
        "model": model_path.name,
        "model_sha256": sha256_file(model_path),
        "ids_file": ids_path(model_path).name,
        "data": {"reference": {"path": s["reference_path"], "min_chars": s["min_chars"],
                               "split_rule": f"sha256('winnow-ref:'+id) % 100 < {EVAL_PERCENT} is eval, never trained on",
                               **ref_counts},
                 "raw_corpus_stage_excluded": raw_stage},
        "counts": {"documents": len(pick), "bytes": lm.trained_bytes},
        "hyperparameters": {"model": "byte n-gram, interpolated Witten-Bell, hashed counts",
                            "order": s["order"], "log2_buckets": s["log2_buckets"]},
        "seed": s["seed"],
        "train_seconds": round(train_seconds, 2),
    }
    atomic_write_json(manifest_path(model_path), manifest)
    log(f"reference LM: order {s['order']} on {len(pick):,} documents ({lm.trained_bytes / 1e6:.1f} MB) "
        f"in {train_seconds:.1f}s -> {model_path}")
    return manifest


_LMS: dict[str, Any] = {}


def ppl_bucket(bpb: float | None, plan_state: dict) -> str | None:
    """head / middle / tail of the stage's bits-per-byte terciles (CCNet's buckets)."""
    if bpb is None or math.isnan(bpb):
        return None
    if bpb <= plan_state["head_max_bpb"]:
        return "head"
    return "middle" if bpb <= plan_state["middle_max_bpb"] else "tail"


@register_filter
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
        _check_train_settings(LM_TRAIN_DEFAULTS, self.params["train"], self.name)

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


# ---------------------------------------------------------------------------
# `winnow train-quality`

TRAINERS = {"quality_classifier": (CLASSIFIER_TRAIN_DEFAULTS, train_classifier),
            "ref_perplexity": (LM_TRAIN_DEFAULTS, train_reference_lm)}


def quality_models_in_config(cfg) -> list[tuple[str, str, dict, dict]]:
    """``(stage, filter, filter params, train settings)`` for every trainable filter in a config."""
    found = []
    for stage in cfg.stages:
        for ref, params in parse_filter_specs(stage.get("filters") or []):
            if ref in TRAINERS:
                defaults = TRAINERS[ref][0]
                found.append((stage["name"], ref, params, _check_train_settings(defaults, params.get("train"), ref)))
    return found


def train_quality(cfg, only: str | None = None, log=print) -> list[dict]:
    """Bring the stages the training data comes from up to date, then train every model."""
    from pipeline.runner import Runner

    models = [m for m in quality_models_in_config(cfg) if only in (None, m[1])]
    if not models:
        raise ValueError("no quality_classifier or ref_perplexity filter in this config")
    names = cfg.stage_names()
    needed = [names[0]] + [m[3].get("negatives_from_stage") for m in models if m[3].get("negatives_from_stage")]
    for stage in needed:
        if stage not in names:
            raise ValueError(f"negatives_from_stage {stage!r} is not a stage of this config ({', '.join(names)})")
    Runner(cfg, progress=False).run(upto=max(needed, key=names.index))
    out = []
    for stage, ref, params, settings in models:
        if names.index(stage) <= names.index(settings.get("negatives_from_stage", names[0])):
            raise ValueError(f"{ref} in stage {stage}: negatives must come from an earlier stage")
        out.append(TRAINERS[ref][1](params["model_path"], settings, cfg.run_dir, names[0], log=log))
    return out


def cmd_train_quality(args) -> int:
    from pipeline.cli import _load

    train_quality(_load(args), only=args.only)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-quality", help="train the quality classifier and reference LM named in CONFIG",
        description="Train every `quality_classifier` (fastText, word bigrams; positives: reference corpus "
                    "train split, negatives: the raw corpus after `negatives_from_stage`) and `ref_perplexity` "
                    "(byte n-gram LM on the reference train split) filter of CONFIG, running the stages the "
                    "training data comes from first. Each model is saved beside MODEL.manifest.json and "
                    "MODEL.ids.parquet (every document id used).")
    p.add_argument("config")
    p.add_argument("--only", choices=sorted(TRAINERS), help="train only this kind of model")
    p.add_argument("--run-dir", help="override the config's run_dir")
    p.set_defaults(fn=cmd_train_quality)
