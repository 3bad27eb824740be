"""The matched-model ablation, end to end and resumable: pipeline -> held-out
evaluation sets -> tokenizer -> token-budget subsets (with a contamination
check) -> one model per (arm, seed) -> evaluation curves -> report.

Every step writes its outputs atomically and is skipped when they exist, so
`make ablation CONFIG=...` picks up after an interruption (training resumes
from its last checkpoint).

The ``experiment:`` section of a pipeline config::

    experiment:
      seeds: [0, 1, 2]                       # seeds for arms without their own `seeds`; a seed draws the arm's
                                             # subset, initialises the model and orders the batches
      primary_metric: bpb/wikipedia          # declared before the run; the verdict leads with it
      tokenizer: {stage: ingest, vocab_size: 8192, sample_docs: 20000}
      eval_sets:                             # held-out text (decided by id hash before any subset is drawn)
        - {name: wikipedia, source: wikipedia, max_docs: 200}
        - {name: usenet, source: usenet, max_docs: 200}
      eval_max_chars: 2000                   # each evaluation document is cut to this many characters
      blimp: {path: ../shared/data/eval/blimp.jsonl.gz, pairs_per_paradigm: 20}   # all pairs at the end
                                             # unless final_pairs_per_paradigm says otherwise
      model: {arch: llama, d_model: 128, n_layers: 4, n_heads: 4, d_ff: 384, context: 256}
      train: {steps: 1000, batch_size: 16, lr: 0.003, warmup_steps: 50, eval_every: 200,
              schedule: wsd, decay_budgets: [0.125, 0.25, 0.5], bf16: auto, compile: auto}
      arms:
        - {name: raw-large, stage: ingest, tokens: 8000000}
        - {name: clean-small, stage: quality_model, tokens: 2000000}
        - {name: clean-small-fewer-steps, stage: quality_model, tokens: 2000000, steps: one_epoch}
        - {name: dedup, stage: minhash_dedup, tokens: 2000000, seeds: [0]}
        - {name: clean-small-fixed-data, stage: quality_model, tokens: 2000000, data: fixed}  # init-only variance
        - {kind: raw-small}                  # random raw documents at the candidate's budget
        - {kind: reference-only, source: wikipedia}   # the classifier's positive source alone, same budget
        - {kind: reference-only}             # reference outside the raw pool: the quality scorer's reference_path
                                             # (train split only); or give `path` (+ text_field/id_field/min_chars)
      compare: {baseline: raw-large, candidate: clean-small, paired: auto}
      aa: false                              # true: an A/A check -- the baseline against a copy of itself
                                             # (same recipe, other seeds); the report must find no difference
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.shards import atomic_write_bytes, atomic_write_json, read_json

EXPERIMENT_DEFAULTS = {
    "seeds": [0],
    "tokenizer": {"stage": "ingest", "vocab_size": 8192, "sample_docs": 20000},
    "eval_sets": [],
    "eval_max_chars": 2000,
    "blimp": None,
    "model": {},
    "train": {},
    "arms": [],
    "compare": {},
    "contamination_ngram": 13,
    "primary_metric": None,
    "aa": False,
}
AA_SEED_OFFSET = 1000


def experiment_settings(cfg: PipelineConfig) -> dict:
    e = cfg.raw.get("experiment")
    if not e:
        raise ValueError(f"{cfg.path}: no `experiment:` section; see experiments/ablation.py for its fields")
    unknown = set(e) - set(EXPERIMENT_DEFAULTS) - {"out_dir"}
    if unknown:
        raise ValueError(f"unknown experiment keys: {', '.join(sorted(unknown))}")
    s = {**EXPERIMENT_DEFAULTS, **e}
    base = Path(cfg.path).parent if cfg.path else Path(".")
    s["out_dir"] = str((base / e["out_dir"]).resolve()) if e.get("out_dir") else str(Path(cfg.run_dir) / "ablation")
    if s["blimp"] and s["blimp"].get("path") and not Path(s["blimp"]["path"]).is_absolute():
        s["blimp"] = {**s["blimp"], "path": str((base / s["blimp"]["path"]).resolve())}
    for es in s["eval_sets"]:
        if es.get("path") and not Path(es["path"]).is_absolute():
            es["path"] = str((base / es["path"]).resolve())
    s["arms"] = [_resolve_arm_kind(a, s, cfg) for a in s["arms"]]
    names = [a["name"] for a in s["arms"]]
    if len(set(names)) != len(names) or not names:
        raise ValueError("experiment.arms needs unique `name`s")
    for a in s["arms"]:
        if a["stage"] not in cfg.stage_names():
            raise ValueError(f"arm {a['name']}: no stage {a['stage']!r}")
        if a.get("data", "per_seed") not in ("per_seed", "fixed"):
            raise ValueError(f"arm {a['name']}: data must be per_seed or fixed, got {a['data']!r}")
    cmp_ = dict(s["compare"] or {})
    s["primary_metric"] = s["primary_metric"] or cmp_.get("metric")
    if s["aa"]:
        # A/A: the baseline recipe twice, the copy with its own seeds (its own subsets and initialisations)
        base = next((a for a in s["arms"] if a["name"] == cmp_.get("baseline")), s["arms"][0])
        copy = {**base, "name": f"{base['name']}-again",
                "seeds": [int(x) + AA_SEED_OFFSET for x in base.get("seeds", s["seeds"])]}
        s["arms"] = [base, copy]
        s["compare"] = {**cmp_, "baseline": base["name"], "candidate": copy["name"]}
    return s


ARM_KINDS = ("raw-small", "reference-only")


def _resolve_arm_kind(arm: dict, s: dict, cfg: PipelineConfig) -> dict:
    """Control arms by kind: ``raw-small`` = random raw (first-stage) documents at the candidate's token budget
    (quality at equal size); ``reference-only`` = only the quality reference's ``source`` documents, unfiltered,
    at that budget (how much of "clean" is "more like the reference")."""
    kind = arm.get("kind")
    if kind is None:
        return arm
    if kind not in ARM_KINDS:
        raise ValueError(f"arm {arm.get('name')}: kind must be one of {', '.join(ARM_KINDS)}, got {kind!r}")
    cand = next((a for a in s["arms"] if a["name"] == (s.get("compare") or {}).get("candidate")), None)
    if "tokens" not in arm and cand is None:
        raise ValueError(f"arm {arm.get('name')}: kind {kind} takes the candidate's budget; set compare.candidate "
                         "or give `tokens`")
    out = {"name": kind, "stage": cfg.stage_names()[0], "tokens": cand["tokens"] if cand else None, **arm}
    if kind == "reference-only":
        if arm.get("source"):  # the reference is a source of the raw pool
            out["sources"] = [arm["source"]] if isinstance(arm["source"], str) else list(arm["source"])
        else:  # the reference is outside the pool: an external JSONL, by default the quality scorer's own
            out["reference"] = _reference_spec(arm, cfg)
    return out


REFERENCE_FIELDS = {"text_field": "text", "id_field": "id", "min_chars": 0}


def _reference_spec(arm: dict, cfg: PipelineConfig) -> dict:
    """Where a ``reference-only`` arm reads its documents when the reference is not in the raw pool: the arm's
    ``path`` (+ ``text_field``/``id_field``/``min_chars``), else the first quality scorer's ``reference_path``
    with that scorer's fields (so the control draws exactly the population the classifier's positives came from)."""
    if arm.get("path"):
        base = Path(cfg.path).parent if cfg.path else Path(".")
        path = arm["path"] if Path(arm["path"]).is_absolute() else str((base / arm["path"]).resolve())
        return {"path": path, **{k: arm.get(k, v) for k, v in REFERENCE_FIELDS.items()}}
    from experiments.quality_models import trainable_filters

    for _, f in trainable_filters(cfg):
        ref = f.training_reference()
        if ref and ref.get("path"):
            return {"path": ref["path"], **{k: ref.get(k, v) for k, v in REFERENCE_FIELDS.items()}}
    raise ValueError(f"arm {arm.get('name', 'reference-only')}: kind reference-only needs `source` (a raw-pool "
                     "source) or `path` (an external JSONL), or a quality scorer with a reference_path in the config")


def _trained_filter_model_paths(cfg: PipelineConfig) -> list[str]:
    from experiments.quality_models import trainable_filters

    return [f.params["model_path"] for _, f in trainable_filters(cfg) if f.params.get("model_path")]


def run_pipeline(cfg: PipelineConfig, log) -> None:
    """Train the quality scorers if the config has any (and they are missing), then run every stage."""
    from pipeline.runner import Runner

    missing = [p for p in _trained_filter_model_paths(cfg) if not Path(p).exists()]
    if missing:
        from experiments.quality_models import train_quality

        log(f"training quality scorers: {', '.join(missing)}")
        train_quality(cfg, log=log)
    Runner(cfg, log=log).run()


def run_ablation(cfg: PipelineConfig, log=print, only_arms: list[str] | None = None) -> Path:

    from experiments.data import ContaminationIndex, build_eval_sets
    from experiments.evaluate import eval_blimp, eval_bpb, load_blimp, prepare_blimp, prepare_bpb_windows
    from experiments.subsets import build_subset, load_tokens
    from experiments.tokenizer import load_tokenizer, train_tokenizer
    from experiments.train import MODEL_DEFAULTS, TRAIN_DEFAULTS, choose_speed_settings, pick_device, train

    s = experiment_settings(cfg)
    out = Path(s["out_dir"])
    t_start = time.perf_counter()
    run_pipeline(cfg, log)  # first: the output folder (inside run_dir by default) must not precede the run record
    out.mkdir(parents=True, exist_ok=True)

    # 1. held-out evaluation sets, decided before anything is drawn for training
    exclude: set[str] = set()
    for p in _trained_filter_model_paths(cfg):
        from filters.quality_model import reference_ids

        if Path(p).exists():
            exclude |= reference_ids(p)
    sets_path = out / "eval_sets.json"
    if sets_path.exists():
        eval_sets = read_json(sets_path)
    else:
        eval_sets = build_eval_sets(cfg.run_dir, s["eval_sets"], cfg.seed, exclude)
        atomic_write_json(sets_path, eval_sets)
    log("evaluation sets: " + ", ".join(f"{k} {len(v)} docs" for k, v in eval_sets.items()))

    # 2. one tokenizer for every arm
    tok_path = out / "tokenizer.json"
    if not tok_path.exists():
        t = s["tokenizer"]
        info = train_tokenizer(cfg.run_dir, t.get("stage", "ingest"), tok_path, int(t.get("vocab_size", 8192)),
                               int(t.get("sample_docs", 20000)), cfg.seed)
        log(f"tokenizer: vocab {info['vocab_size']}, trained on {info['sample_docs']:,} documents")
    tok = load_tokenizer(tok_path)
    vocab = tok.get_vocab_size()

    # 3. token-budget subsets, each checked for 13-gram overlap with every evaluation set
    #    one per (arm, seed): a seed redraws the data unless the arm says `data: fixed` (then the config's seed)
    contamination = ContaminationIndex(eval_sets, n=int(s["contamination_ngram"]))
    subsets: dict[tuple[str, int], dict] = {}
    for arm in s["arms"]:
        for seed in arm.get("seeds", s["seeds"]):
            draw = cfg.seed if arm.get("data") == "fixed" else int(seed)
            m = subsets[arm["name"], seed] = build_subset(cfg.run_dir, arm["stage"], int(arm["tokens"]), tok, tok_path,
                                                          _subset_dir(out, arm, draw), draw, contamination,
                                                          sources=arm.get("sources"), reference=arm.get("reference"))
            worst = max((v["rate"] for v in m.get("contamination_13gram", {}).values()), default=0.0)
            log(f"subset {arm['name']} (draw {draw}): {m['tokens']:,} tokens from {m['documents']:,} docs of "
                f"{arm['stage']}" + (" (stage exhausted!)" if m["exhausted"] else "")
                + f"; max 13-gram contamination {worst:.1%}")

    # 4. evaluation inputs, prepared once and shared by every run
    model_cfg = {**MODEL_DEFAULTS, **s["model"]}
    train_cfg = {**TRAIN_DEFAULTS, **s["train"]}
    device = pick_device()
    speed = None
    if "auto" in (train_cfg["bf16"], train_cfg["compile"], train_cfg["threads"]):  # measured once, used by every run
        speed_path = out / "speed.json"
        speed = read_json(speed_path) if speed_path.exists() else choose_speed_settings(
            model_cfg, train_cfg, vocab, device, log=log)
        atomic_write_json(speed_path, speed)
        train_cfg = {**train_cfg, "bf16": speed["bf16"], "compile": speed["compile"], "threads": speed["threads"],
                     "speed": speed}
    prepared = {name: prepare_bpb_windows(docs, tok, model_cfg["context"], int(s["eval_max_chars"]))
                for name, docs in eval_sets.items()}
    blimp_small = blimp_final = None
    b = s.get("blimp") or {}
    if b.get("path") and Path(b["path"]).exists():
        pairs_small = load_blimp(Path(b["path"]), b.get("pairs_per_paradigm", 20), cfg.seed)
        pairs_final = load_blimp(Path(b["path"]), b.get("final_pairs_per_paradigm"), cfg.seed)
        blimp_small = (pairs_small, prepare_blimp(pairs_small, tok))
        blimp_final = (pairs_final, prepare_blimp(pairs_final, tok))
    elif b.get("path"):
        log(f"BLiMP not found at {b['path']}: skipping it")
    experiment = {"settings": s, "config": str(cfg.path), "run_dir": str(cfg.run_dir), "device": device.type,
                  "speed": speed}
    atomic_write_json(out / "experiment.json", experiment)  # a partial report works from here on

    # 5. one model per (arm, seed), same steps for every arm unless `steps: one_epoch`
    tokens_per_step = train_cfg["batch_size"] * model_cfg["context"]
    for arm in s["arms"]:
        if only_arms and arm["name"] not in only_arms:
            continue
        for seed in arm.get("seeds", s["seeds"]):
            tokens = load_tokens(_subset_dir(out, arm, cfg.seed if arm.get("data") == "fixed" else int(seed)))
            steps = train_cfg["steps"]
            if arm.get("steps") == "one_epoch":
                steps = max(1, (len(tokens) - 1) // model_cfg["context"] // train_cfg["batch_size"])
            elif arm.get("steps"):
                steps = int(arm["steps"])
            run_dir = out / "runs" / f"{_slug(arm['name'])}-seed{seed}"

            def evaluate(model, step, final, run_dir=run_dir):
                metrics, details = {}, {}
                for name, prep in prepared.items():
                    r = eval_bpb(model, prep, device)  # always fp32
                    metrics[f"bpb/{name}"] = round(r["bpb"], 5)
                    details[name] = r
                groups: dict[str, list[float]] = {}
                for name in prepared:
                    if "/" in name:  # NAME/DOMAIN sets: each domain weighs the same in the macro average
                        groups.setdefault(name.split("/")[0], []).append(details[name]["bpb"])
                for g, vals in groups.items():
                    metrics[f"bpb_macro/{g}"] = round(float(np.mean(vals)), 5)
                bl = blimp_final if final else blimp_small
                if bl:
                    r = eval_blimp(model, bl[0], bl[1], device)
                    metrics["blimp"] = round(r["accuracy"], 5)
                    details["blimp"] = r
                if final:
                    save_final_items(run_dir, details, bl[0] if bl else None)
                return metrics

            log(f"training {arm['name']} seed {seed}: {steps} steps x {tokens_per_step:,} tokens "
                f"= {steps * tokens_per_step:,} tokens ({steps * tokens_per_step / len(tokens):.2f} epochs)")
            train(tokens, vocab, run_dir, model_cfg, {**train_cfg, "steps": steps}, seed, evaluate, log)
            atomic_write_json(run_dir / "arm.json", {"arm": arm["name"], "stage": arm["stage"], "seed": seed,
                                                     "data": arm.get("data", "per_seed"),
                                                     "subset": subsets[arm["name"], seed]})
    experiment["seconds_this_invocation"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out / "experiment.json", experiment)
    return out


def _subset_dir(out: Path, arm: dict, draw: int) -> Path:
    return out / "subsets" / _slug(arm["name"]) / f"seed{draw}"


def save_final_items(run_dir: Path, details: dict, blimp_pairs: list[dict] | None) -> None:
    """Per-item results of the final evaluation, small enough to commit: per-document bits (float32) and bytes
    for every held-out set, per-pair BLiMP outcomes with paradigm and field; plus a JSON summary."""
    arrays: dict[str, np.ndarray] = {}
    summary: dict = {}
    for name, r in details.items():
        if name == "blimp":
            arrays["blimp/correct"] = np.asarray(r["correct"], dtype=np.uint8)
            arrays["blimp/paradigm"] = np.asarray([p["uid"] for p in blimp_pairs])
            arrays["blimp/field"] = np.asarray([p["field"] for p in blimp_pairs])
            summary["blimp"] = {"accuracy": r["accuracy"], "by_field": r["by_field"], "pairs": len(r["correct"])}
        else:
            arrays[f"bpb/{name}/bits"] = np.asarray(r["doc_bits"], dtype=np.float32)
            arrays[f"bpb/{name}/bytes"] = np.asarray(r["doc_bytes"], dtype=np.int32)
            summary[f"bpb/{name}"] = {"bpb": r["bpb"], "docs": len(r["doc_bits"])}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(run_dir) / "final_items.npz", buf.getvalue())
    atomic_write_json(Path(run_dir) / "final_eval.json", summary)


def load_final_items(run_dir: Path) -> dict:
    """``{"bpb/<set>": {"bits", "bytes"}, "blimp": {"correct", "paradigm", "field"}}`` from final_items.npz."""
    path = Path(run_dir) / "final_items.npz"
    if not path.exists():
        return {}
    items: dict = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            head, _, leaf = key.rpartition("/")
            items.setdefault(head, {})[leaf] = z[key]
    if "blimp" in items:
        items["blimp"]["correct"] = items["blimp"]["correct"].astype(bool)
    return items


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def load_results(out: Path) -> list[dict]:
    """Every finished (arm, seed) run: config, log, evaluation curve, final per-item results."""
    runs = []
    for d in sorted((Path(out) / "runs").glob("*")):
        if not (d / "done.json").exists():
            continue
        runs.append({
            "dir": d, **read_json(d / "arm.json"), "done": read_json(d / "done.json"),
            "config": read_json(d / "config.json"),
            "log": [json.loads(l) for l in (d / "train_log.jsonl").read_text().splitlines() if l.strip()],
            "evals": [json.loads(l) for l in (d / "evals.jsonl").read_text().splitlines() if l.strip()],
            "items": load_final_items(d),
        })
    return runs
