"""Training the model-based quality scorers: what each quality filter's ``train()`` calls.

Kept apart from :mod:`filters.quality_model`, which only loads and scores: a
worker scoring shards never imports the training code. The stages the training
data comes from are brought up to date by the caller (``winnow train-quality``,
:mod:`experiments.quality_models`), never from here.

Held-out rule: documents that :func:`pipeline.heldout.reference_split` marks
``eval`` are never trained on -- neither as reference positives nor as
raw-corpus negatives (the ablation harness holds out the same ids of every
source). No document of the raw corpus (the config's first stage) is ever a
positive, so its scores are out-of-sample.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from filters.metrics import roc_auc
from filters.quality_features import LINE_FEATURES, Logistic, gold_line_labels, gold_pages, line_features
from filters.quality_scorers import (
    COMBINED_FEATURES,
    COMBINED_FORMAT,
    ClassifierScorer,
    CombinedScorer,
    fasttext_text,
    ids_path,
    load_fasttext,
    manifest_path,
)
from pipeline.heldout import SPLIT_RULE, order_key, reference_split, sample_indices, unit_interval
from pipeline.provenance import stamped
from pipeline.rundir import RunFolder
from pipeline.shards import atomic_write_json, sha256_file, write_parquet

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


def _save_manifest(model_path: str | Path, manifest: dict) -> dict:
    """Write a trained model's manifest beside it, stamped with the code, packages and machine that
    trained it, and when; returns what was written."""
    manifest = stamped(manifest)
    atomic_write_json(manifest_path(model_path), manifest)
    return manifest


def train_classifier(model_path: str | Path, settings: dict, run_dir: Path, raw_stage: str,
                     log=print) -> dict:
    """Train and save the fastText classifier; return its training manifest."""
    import fasttext

    s = settings
    raw_ids = set(RunFolder(run_dir).table(raw_stage, ["id"]).column("id").to_pylist())
    pos_ids, pos_texts, ref_counts = _reference_train_docs(s, raw_ids)

    neg_table = RunFolder(run_dir).table(s["negatives_from_stage"], ["id", "text", "source"])
    excluded_sources = set(s["negatives_exclude_sources"])
    excluded_ids = ids_from_files(s["negatives_exclude_ids_from"])
    neg_ids, neg_texts, neg_sources = [], [], []
    eval_negatives_skipped = excluded_id_negatives = 0
    for doc_id, text, source in zip(*(neg_table.column(c).to_pylist() for c in ("id", "text", "source"))):
        if source in excluded_sources:
            continue
        if doc_id in excluded_ids:
            excluded_id_negatives += 1
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
    pos_pick = sample_indices(pos_ids, n, s["seed"], "pos")
    neg_pick = sample_indices(neg_ids, n, s["seed"], "neg")
    rows = [(pos_ids[i], pos_texts[i], "hq", "reference") for i in pos_pick]
    rows += [(neg_ids[i], neg_texts[i], "lq", neg_sources[i]) for i in neg_pick]
    rows.sort(key=lambda r: order_key(s["seed"], r[0], "shuffle"))  # fastText learns in file order
    splits = ["valid" if unit_interval(s["seed"], r[0], "valid") < s["validation_fraction"] else "train" for r in rows]

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
    scorer = ClassifierScorer(model)
    v_scores = scorer.scores([t for t, _ in valid])
    v_labels = np.array([y for _, y in valid], bool)
    accuracy = float(np.mean((v_scores >= 0.5) == v_labels)) if valid else float("nan")
    auc = roc_auc(v_labels, v_scores)

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
                          "split_rule": SPLIT_RULE,
                          **ref_counts},
            "negatives": {"run_dir": str(run_dir), "stage": s["negatives_from_stage"],
                          "excluded_sources": sorted(excluded_sources), "available": len(neg_ids),
                          "eval_split_skipped": eval_negatives_skipped,
                          "excluded_ids_from": [f["path"] for f in s["negatives_exclude_ids_from"]],
                          "excluded_ids_skipped": excluded_id_negatives,
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
    manifest = _save_manifest(model_path, manifest)
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


def ids_from_files(specs: list[dict]) -> set[str]:
    """Ids of the records in JSONL files ``[{path, id_field, require_field}]`` (only records whose
    ``require_field`` is not null, e.g. pages that have a gold main text)."""
    ids: set[str] = set()
    for spec in specs or []:
        id_field, need = spec.get("id_field", "id"), spec.get("require_field")
        opener = gzip.open if str(spec["path"]).endswith(".gz") else open
        with opener(spec["path"], "rt", encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                if need is None or obj.get(need) is not None:
                    ids.add(str(obj[id_field]))
    return ids


def labelled_pages(specs: list[dict], extractor: str) -> list[dict]:
    """Hand-cleaned pages of every labelled file, extracted as at ingest, with their held-out split."""
    pages = []
    for spec in specs:
        for page in gold_pages(spec["path"], spec["gold_field"], spec.get("html_field", "html"),
                               spec.get("id_field", "id"), extractor):
            page["split"] = reference_split(page["id"])
            pages.append(page)
    return pages


def train_combined(model_path: str | Path, settings: dict, run_dir: Path, raw_stage: str, log=print,
                   classifier_path: str | Path | None = None) -> dict:
    """Train the fastText part (DCLM recipe), the line model and the document model; save all three.

    The line model learns P(a person kept this line) from the labelled pages'
    train split; the document model learns P(content fraction >=
    ``good_content_fraction``) from the same pages' fastText logit, predicted
    content fraction and document statistics. The eval split of the labelled
    pages is scored, never fitted on: the manifest records each feature group's
    agreement there (what each direction bought).
    """
    s = settings
    if not s["labelled"]:
        raise ValueError("quality_combined train: `labelled` needs at least one file of hand-cleaned pages")
    clf_settings = dict(s["classifier"])  # complete: the filter filled in the classifier's defaults
    clf_settings["negatives_exclude_ids_from"] = list(clf_settings["negatives_exclude_ids_from"]) + [
        {"path": f["path"], "id_field": f.get("id_field", "id"), "require_field": f["gold_field"]}
        for f in s["labelled"]]
    clf_manifest = train_classifier(classifier_path, clf_settings, run_dir, raw_stage, log=log)

    t0 = time.perf_counter()
    pages = labelled_pages(s["labelled"], s["extractor"])
    train = [p for p in pages if p["split"] == "train"]
    held = [p for p in pages if p["split"] == "eval"]
    if len(train) < 10:
        raise ValueError(f"too few labelled training pages: {len(train)}")

    feats, labels = [], []
    for p in train:
        _, f = line_features(p["text"])
        feats.append(f)
        labels += gold_line_labels(p["text"], p["gold"])
    line_model = Logistic.fit(LINE_FEATURES, np.vstack(feats), np.array(labels, float), l2=s["l2"])

    clf = ClassifierScorer(load_fasttext(str(classifier_path)))
    draft = CombinedScorer({"format": COMBINED_FORMAT, "line_model": line_model.to_json(),
                            "doc_model": Logistic(["fasttext_logit"], [0.0], 0.0, [0.0], [1.0]).to_json()}, clf)
    x_train = draft.features([p["text"] for p in train])
    y_train = np.array([p["content_fraction"] >= s["good_content_fraction"] for p in train], float)
    doc_model = Logistic.fit(COMBINED_FEATURES, x_train, y_train, l2=s["l2"])

    # what each feature group buys, fitted on the train split and measured on the held-out split
    directions = {}
    if held:
        x_held = draft.features([p["text"] for p in held])
        y_held = np.array([p["content_fraction"] >= s["good_content_fraction"] for p in held], bool)
        groups = {"all": list(COMBINED_FEATURES), "fasttext only": ["fasttext_logit"],
                  "line model only": ["line_content_frac"], "document statistics only": list(COMBINED_FEATURES[2:]),
                  "without fasttext": list(COMBINED_FEATURES[1:]),
                  "without line model": [f for f in COMBINED_FEATURES if f != "line_content_frac"]}
        for name, cols in groups.items():
            idx = [COMBINED_FEATURES.index(c) for c in cols]
            m = doc_model if name == "all" else Logistic.fit(cols, x_train[:, idx], y_train, l2=s["l2"])
            directions[name] = round(roc_auc(y_held, m.predict(x_held[:, idx])), 4)
        line_feats, line_labels = [], []
        for p in held:
            _, f = line_features(p["text"])
            line_feats.append(f)
            line_labels += gold_line_labels(p["text"], p["gold"])
        line_auc = roc_auc(np.array(line_labels, bool), line_model.predict(np.vstack(line_feats)))
    else:
        line_auc = float("nan")
    fit_seconds = time.perf_counter() - t0

    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model = {"format": COMBINED_FORMAT, "line_model": line_model.to_json(), "doc_model": doc_model.to_json()}
    atomic_write_json(model_path, model)
    write_parquet(model_path.parent, ids_path(model_path).name, pa.table({
        "id": [p["id"] for p in pages], "label": ["labelled"] * len(pages),
        "split": [p["split"] for p in pages]}))
    manifest = {
        "kind": "quality_combined",
        "model": model_path.name,
        "model_sha256": sha256_file(model_path),
        "classifier": {"model": Path(classifier_path).name, "model_sha256": clf_manifest["model_sha256"],
                       "manifest": manifest_path(classifier_path).name},
        "ids_file": ids_path(model_path).name,
        "data": {"labelled": [{k: f[k] for k in f} for f in s["labelled"]], "split_rule": SPLIT_RULE,
                 "pages_train": len(train), "pages_held_out": len(held), "lines_train": len(labels),
                 "good_content_fraction": s["good_content_fraction"],
                 "good_share_train": round(float(y_train.mean()), 4), "extractor": s["extractor"]},
        "held_out_auc": {"document_model_by_features": directions, "line_model": round(line_auc, 4)},
        "weights": {"line_model": dict(zip(LINE_FEATURES, np.round(line_model.weights, 4).tolist())),
                    "doc_model": dict(zip(COMBINED_FEATURES, np.round(doc_model.weights, 4).tolist()))},
        "hyperparameters": {"l2": s["l2"], "model": "logistic regression (L-BFGS), standardised features"},
        "fit_seconds": round(fit_seconds, 2),
    }
    manifest = _save_manifest(model_path, manifest)
    log(f"combined: {len(train):,} labelled pages ({len(labels):,} lines); held-out AUC {directions} "
        f"line model {line_auc:.4f} -> {model_path}")
    return manifest


def train_reference_lm(model_path: str | Path, settings: dict, run_dir: Path, raw_stage: str, log=print) -> dict:
    """Train and save the byte n-gram model on reference train-split documents."""
    from filters.ngram_lm import ByteNgramLM

    s = settings
    raw_ids = set(RunFolder(run_dir).table(raw_stage, ["id"]).column("id").to_pylist())
    ids, texts, ref_counts = _reference_train_docs(s, raw_ids)
    pick = sample_indices(ids, min(s["max_docs"], len(ids)), s["seed"], "lm")
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
                               "split_rule": SPLIT_RULE,
                               **ref_counts},
                 "raw_corpus_stage_excluded": raw_stage},
        "counts": {"documents": len(pick), "bytes": lm.trained_bytes},
        "hyperparameters": {"model": "byte n-gram, interpolated Witten-Bell, hashed counts",
                            "order": s["order"], "log2_buckets": s["log2_buckets"]},
        "seed": s["seed"],
        "train_seconds": round(train_seconds, 2),
    }
    manifest = _save_manifest(model_path, manifest)
    log(f"reference LM: order {s['order']} on {len(pick):,} documents ({lm.trained_bytes / 1e6:.1f} MB) "
        f"in {train_seconds:.1f}s -> {model_path}")
    return manifest
