"""The experiment config: its schema, validated by the pipeline's one validator, and its resolution.

Every key of the ``experiment:`` section and of each nested block (``tokenizer``,
``eval_sets[*]``, ``tasks[*]``, ``model``, ``train``, ``arms[*]``, ``scales[*]``,
``compare``, ``execution``) is declared here with its default; a typo is a
one-line error naming the nearest valid key, and numbers are range-checked
(:mod:`pipeline.params`). The README's "Experiment config reference" documents
the same schema.

Resolution turns the validated config into what the ablation runs: paths made
absolute (relative to the config file), control arms by kind resolved into a
stage and a budget (:data:`ARM_KINDS`, one entry per kind, so a new kind is one
function), ``blimp:`` shorthand turned into a ``minimal_pairs`` task, the
built-in ``bpb`` task added over the evaluation sets, and the A/A copy arm.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.config import PipelineConfig
from pipeline.params import (ParamError, at_least, between, nearest, of_type, one_of, optional, validate)

AA_SEED_OFFSET = 1000

MODEL_DEFAULTS = {"arch": "llama", "d_model": 128, "n_layers": 4, "n_heads": 4, "d_ff": 384, "context": 256}
MODEL_CHECKS = {"arch": one_of("llama", "gpt2"), "d_model": at_least(1, integer=True),
                "n_layers": at_least(1, integer=True), "n_heads": at_least(1, integer=True),
                "d_ff": at_least(1, integer=True), "context": at_least(2, integer=True)}

# bf16 / compile: "auto" = measured on this machine before training (experiments.train.choose_speed_settings);
# threads: per run on CPU (1 by default, so N runs share N cores without oversubscription, and a run's
# numbers do not depend on how many run beside it); schedule "wsd" (warmup-stable-decay) with a cool-down
# branch at each of ``decay_budgets`` (fractions of ``steps``), so every point of the data-efficiency curve is a
# decayed model. ``micro_batch_size`` splits each optimiser step's ``batch_size`` sequences into gradient
# accumulation micro-batches (same tokens per step, less memory).
TRAIN_DEFAULTS = {"steps": 1000, "batch_size": 16, "micro_batch_size": None, "lr": 3e-3, "min_lr_ratio": 0.1,
                  "warmup_steps": 50, "weight_decay": 0.1, "beta2": 0.95, "grad_clip": 1.0, "eval_every": 200,
                  "checkpoint_every": 200, "bf16": "auto", "compile": "auto", "threads": 1,
                  "schedule": "wsd", "decay_frac": 0.2, "decay_budgets": [0.125, 0.25, 0.5]}
_auto_or_bool = lambda v: None if v == "auto" or isinstance(v, bool) else "true, false or auto"  # noqa: E731
TRAIN_CHECKS = {"steps": at_least(1, integer=True), "batch_size": at_least(1, integer=True),
                "micro_batch_size": optional(at_least(1, integer=True)), "lr": between(0, 10, lo_open=True),
                "min_lr_ratio": between(0, 1), "warmup_steps": at_least(0, integer=True),
                "weight_decay": at_least(0), "beta2": between(0, 1, hi_open=True), "grad_clip": at_least(0),
                "eval_every": at_least(1, integer=True), "checkpoint_every": at_least(1, integer=True),
                "bf16": _auto_or_bool, "compile": _auto_or_bool,
                "threads": lambda v: None if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
                else "a whole number >= 1 or auto",
                "schedule": one_of("wsd", "cosine"), "decay_frac": between(0, 1, lo_open=True),
                "decay_budgets": of_type(list, name="a list of fractions of the steps")}

TOKENIZER_DEFAULTS = {"stage": None, "vocab_size": 8192, "sample_docs": 20000}
TOKENIZER_CHECKS = {"stage": optional(of_type(str)), "vocab_size": at_least(257, integer=True),
                    "sample_docs": at_least(1, integer=True)}

EVAL_SET_DEFAULTS = {"name": None, "kind": None, "source": None, "truth_kind": None, "stage": None, "path": None,
                     "text_field": "text", "id_field": "id", "min_chars": None, "max_docs": 200}
EVAL_SET_CHECKS = {"name": of_type(str), "kind": optional(one_of("raw", "file", "domains")),
                   "max_docs": at_least(1, integer=True), "min_chars": optional(at_least(0, integer=True)),
                   "path": optional(of_type(str))}

ARM_DEFAULTS = {"name": None, "kind": None, "stage": None, "tokens": None, "tokens_fraction": None, "seeds": None,
                "data": "per_seed", "steps": None, "source": None, "path": None, "text_field": "text",
                "id_field": "id", "min_chars": 0, "doc_cap": None}
ARM_CHECKS = {"tokens": optional(at_least(1, integer=True)), "doc_cap": optional(between(0, 1, lo_open=True)),
              "tokens_fraction": optional(between(0, 1000, lo_open=True)),
              "seeds": optional(of_type(list, name="a list of whole numbers")),
              "data": one_of("per_seed", "fixed"),
              "steps": lambda v: None if v is None or v == "one_epoch" or (isinstance(v, int) and v >= 1) else
              "a whole number >= 1 or one_epoch"}

SCALE_DEFAULTS = {"name": None, "model": {}, "tokens_per_param": None, "steps": None, "train": {}}
SCALE_CHECKS = {"name": of_type(str), "model": of_type(dict), "train": of_type(dict),
                "tokens_per_param": optional(between(0, 1e6, lo_open=True)),
                "steps": optional(at_least(1, integer=True))}

COMPARE_DEFAULTS = {"baseline": None, "candidate": None, "paired": "auto", "metric": None}
COMPARE_CHECKS = {"paired": one_of("auto", True, False)}

EXECUTION_DEFAULTS = {"workers": None, "executor": None, "gpus_per_run": 1, "address": None}
EXECUTION_CHECKS = {"workers": optional(at_least(1, integer=True)), "executor": optional(one_of("local", "ray")),
                    "gpus_per_run": between(0, 64), "address": optional(of_type(str))}

BLIMP_DEFAULTS = {"path": None, "pairs_per_paradigm": 20, "final_pairs_per_paradigm": None}

EXPERIMENT_DEFAULTS: dict[str, Any] = {
    "out_dir": None, "seeds": [0], "primary_metric": None, "tokenizer": {}, "eval_sets": [], "eval_max_chars": 2000,
    "tasks": [], "blimp": None, "model": {}, "train": {}, "arms": [], "compare": {}, "contamination_ngram": 13,
    "aa": False, "scales": None, "execution": {}, "keep_points": True,
    # issue 20 (equiv): the equivalence verdict, the plan, the sanity gate, subset guards
    "equivalence_margin": None, "prior_spread": None, "contamination_gap": None, "min_docs": None, "doc_cap": None,
    "settings_from": None,
}
EXPERIMENT_CHECKS = {"seeds": of_type(list, name="a list of whole numbers"), "primary_metric": optional(of_type(str)),
                     "eval_max_chars": at_least(1, integer=True), "contamination_ngram": at_least(1, integer=True),
                     "aa": of_type(bool), "keep_points": of_type(bool), "out_dir": optional(of_type(str)),
                     "eval_sets": of_type(list), "tasks": of_type(list), "arms": of_type(list),
                     "scales": optional(of_type(list, name="a list of rungs")),
                     "doc_cap": optional(between(0, 1, lo_open=True)), "min_docs": optional(at_least(1, integer=True)),
                     "contamination_gap": optional(between(0, 1)),
                     "prior_spread": optional(of_type(dict, name="{sd: X} or {pilot: RESULTS_DIR}")),
                     "equivalence_margin": lambda v: None if v is None or _margin_ok(v) else
                     "a positive number (absolute), 'N%' (of the baseline's mean), {absolute: X} or {relative: X}"}


def _margin_ok(v) -> bool:
    from experiments.stats import resolve_margin

    try:
        resolve_margin(v, 1.0)
    except (ValueError, TypeError):
        return False
    return True


def _section(owner: str, given: Any, defaults: dict, checks: dict | None = None) -> dict:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ParamError(f"{owner}: expected a mapping, got {type(given).__name__}")
    return validate(owner, given, defaults, checks, noun="key")


def validate_model(model: dict, owner: str = "experiment.model") -> dict:
    m = _section(owner, model, MODEL_DEFAULTS, MODEL_CHECKS)
    if m["d_model"] % m["n_heads"]:
        raise ParamError(f"{owner}: `d_model` ({m['d_model']}) must be a multiple of `n_heads` ({m['n_heads']})")
    return m


def validate_train(train: dict, owner: str = "experiment.train") -> dict:
    t = _section(owner, train, TRAIN_DEFAULTS, TRAIN_CHECKS)
    for f in t["decay_budgets"]:
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f <= 1:
            raise ParamError(f"{owner}: `decay_budgets` must hold fractions in (0, 1], got {f!r}")
    if t["micro_batch_size"] is not None and t["batch_size"] % t["micro_batch_size"]:
        raise ParamError(f"{owner}: `batch_size` ({t['batch_size']}) must be a multiple of `micro_batch_size` "
                         f"({t['micro_batch_size']}) so every arm sees the same tokens per optimiser step")
    return t


# ---------------------------------------------------------------------------
# control arms by kind


@dataclass(frozen=True)
class ArmKind:
    """How a ``kind:`` arm becomes a plain arm (stage, budget, and what it draws from).

    ``resolve(arm, settings, cfg)`` returns the arm with ``name``, ``stage`` and a
    budget filled in; ``keys`` are extra config keys the kind accepts."""

    resolve: Callable[[dict, dict, PipelineConfig], dict]
    keys: dict = field(default_factory=dict)


def _candidate(arm: dict, s: dict) -> dict | None:
    cand = next((a for a in s["arms"] if a.get("name") == s["compare"].get("candidate")), None)
    if arm.get("tokens") is None and arm.get("tokens_fraction") is None and cand is None:
        raise ParamError(f"arm {arm.get('name') or arm['kind']}: kind {arm['kind']} takes the candidate's budget; "
                         "set compare.candidate or give `tokens`")
    return cand


def _budget_of(arm: dict, cand: dict | None) -> dict:
    """The candidate's budget, and ``budget_of``: the ablation then draws no more than the candidate's subset of the
    same rung and seed actually holds (a candidate stage with fewer tokens than asked is exhausted; the control
    must match what it got, not what it asked for)."""
    if arm.get("tokens") is not None or arm.get("tokens_fraction") is not None or cand is None:
        return {}
    return {"tokens": cand.get("tokens"), "tokens_fraction": cand.get("tokens_fraction"), "budget_of": cand["name"]}


def _raw_small(arm: dict, s: dict, cfg: PipelineConfig) -> dict:
    """Random raw (first-stage) documents at the candidate's token budget: quality at equal size."""
    cand = _candidate(arm, s)
    return {**arm, "name": arm.get("name") or "raw-small", "stage": arm.get("stage") or cfg.stage_names()[0],
            **_budget_of(arm, cand)}


def _reference_only(arm: dict, s: dict, cfg: PipelineConfig) -> dict:
    """Only the quality reference, unfiltered, at the candidate's budget: how much of "clean" is "more like the
    reference". ``source``: the reference is a source of the raw pool; else an external JSONL (``path``, or the
    first quality scorer's ``reference_path``), its train split only."""
    cand = _candidate(arm, s)
    out = {**arm, "name": arm.get("name") or "reference-only", "stage": arm.get("stage") or cfg.stage_names()[0],
           **_budget_of(arm, cand)}
    if arm.get("source"):
        out["sources"] = [arm["source"]] if isinstance(arm["source"], str) else list(arm["source"])
    else:
        out["reference"] = _reference_spec(arm, cfg)
    return out


def _source_matched(arm: dict, s: dict, cfg: PipelineConfig) -> dict:
    """Raw (first-stage) documents at the candidate's budget *and* its mix over a metadata key (``key``: ``source``
    by default; ``language``, ``truth`` or a field of the documents' metadata), drawn per seed to match that seed's
    candidate subset: "better documents within the same sources" against "a different source mix"."""
    cand = _candidate(arm, s)
    if cand is None:
        raise ParamError(f"arm {arm.get('name') or 'source-matched'}: kind source-matched copies the candidate's mix; "
                         "set compare.candidate")
    return {**arm, "name": arm.get("name") or "source-matched", "stage": arm.get("stage") or cfg.stage_names()[0],
            **_budget_of(arm, cand), "mix_of": cand["name"], "key": arm.get("key") or "source"}


#: Control arms by ``kind``. Add a kind by adding an entry.
ARM_KINDS: dict[str, ArmKind] = {"raw-small": ArmKind(_raw_small), "reference-only": ArmKind(_reference_only),
                                 "source-matched": ArmKind(_source_matched, {"key": "source"})}

REFERENCE_FIELDS = {"text_field": "text", "id_field": "id", "min_chars": 0}


def _reference_spec(arm: dict, cfg: PipelineConfig) -> dict:
    """Where a ``reference-only`` arm reads its documents when the reference is not in the raw pool."""
    if arm.get("path"):
        base = Path(cfg.path).parent if cfg.path else Path(".")
        path = _abs(arm["path"], base)
        return {"path": path, **{k: arm.get(k, v) for k, v in REFERENCE_FIELDS.items()}}
    from experiments.quality_models import trainable_filters

    for _, f in trainable_filters(cfg):
        ref = f.training_reference()
        if ref and ref.get("path"):
            return {"path": ref["path"], **{k: ref.get(k, v) for k, v in REFERENCE_FIELDS.items()}}
    raise ParamError(f"arm {arm.get('name', 'reference-only')}: kind reference-only needs `source` (a raw-pool "
                     "source) or `path` (an external JSONL), or a quality scorer with a reference_path in the config")


# ---------------------------------------------------------------------------
# the whole section


def experiment_settings(cfg: PipelineConfig) -> dict:
    """The validated, resolved ``experiment:`` section (see the module docstring)."""
    e = cfg.raw.get("experiment")
    if not e:
        raise ParamError(f"{cfg.path}: no `experiment:` section; see the README's experiment config reference")
    s = copy.deepcopy(_section("experiment", e, EXPERIMENT_DEFAULTS, EXPERIMENT_CHECKS))
    base = Path(cfg.path).parent if cfg.path else Path(".")
    stages = cfg.stage_names()
    s["base_dir"] = str(base.resolve())
    s["out_dir"] = str((base / Path(s["out_dir"]).expanduser()).resolve()) if s["out_dir"] \
        else str(Path(cfg.run_dir) / "ablation")
    for x in s["seeds"]:
        if not isinstance(x, int) or isinstance(x, bool):
            raise ParamError(f"experiment.seeds: whole numbers only, got {x!r}")
    s["tokenizer"] = _section("experiment.tokenizer", s["tokenizer"], TOKENIZER_DEFAULTS, TOKENIZER_CHECKS)
    s["tokenizer"]["stage"] = s["tokenizer"]["stage"] or stages[0]
    _stage_exists(s["tokenizer"]["stage"], stages, "experiment.tokenizer.stage")
    s["model"] = validate_model(s["model"])
    s["train"] = validate_train(s["train"])
    s["compare"] = _section("experiment.compare", s["compare"], COMPARE_DEFAULTS, COMPARE_CHECKS)
    s["execution"] = _section("experiment.execution", s["execution"], EXECUTION_DEFAULTS, EXECUTION_CHECKS)
    s["eval_sets"] = [_eval_set(i, es, base, stages) for i, es in enumerate(s["eval_sets"])]
    names = [es["name"] for es in s["eval_sets"]]
    if len(set(names)) != len(names):
        raise ParamError("experiment.eval_sets: names must be unique")
    s["tasks"], metrics = _tasks(s, base)
    s["scales"] = _scales(s)
    s["arms"] = _arms(s, cfg)
    s["primary_metric"] = s["primary_metric"] or s["compare"].get("metric")
    _metric_exists(s["primary_metric"], metrics)
    if s["aa"]:  # A/A: the baseline recipe twice, the copy with its own seeds (its own subsets and initialisations)
        b = next((a for a in s["arms"] if a["name"] == s["compare"].get("baseline")), s["arms"][0])
        copy_arm = {**b, "name": f"{b['name']}-again",
                    "seeds": [int(x) + AA_SEED_OFFSET for x in (b.get("seeds") or s["seeds"])]}
        s["arms"] = [b, copy_arm]
        s["compare"] = {**s["compare"], "baseline": b["name"], "candidate": copy_arm["name"]}
    return s


def _metric_exists(metric: str | None, metrics: list[str]) -> None:
    """A primary metric one of the tasks reports: a typo is one line now, not after every run has trained.
    A set of domains is named before its data is read (``bpb/NAME``); its metrics are ``bpb/NAME/DOMAIN`` and
    ``bpb_macro/NAME``, so names under a known metric, and the ``_macro`` of one, pass too."""
    def known(m: str) -> bool:
        return m in metrics or any(m.startswith(f"{k}/") for k in metrics)

    first, _, rest = (metric or "").partition("/")
    if metric is None or not metrics or known(metric) or (
            first.endswith("_macro") and known(f"{first[:-len('_macro')]}/{rest}")):
        return  # (no task known before the data is read: nothing to check against)
    raise ParamError(f"experiment.primary_metric: no task reports {metric!r}{nearest(metric, metrics)}; "
                     f"the tasks' metrics: {', '.join(metrics) or 'none'}")


def _stage_exists(stage: str, stages: list[str], owner: str) -> None:
    if stage not in stages:
        raise ParamError(f"{owner}: no stage {stage!r}{nearest(stage, stages)}; stages: {', '.join(stages)}")


def _eval_set(i: int, es: Any, base: Path, stages: list[str]) -> dict:
    owner = f"experiment.eval_sets[{i}]"
    es = _section(owner, es, EVAL_SET_DEFAULTS, EVAL_SET_CHECKS)
    if not es["name"]:
        raise ParamError(f"{owner}: `name` is required")
    if "/" in es["name"]:
        raise ParamError(f"{owner}: `name` may not contain `/` (it names NAME/DOMAIN sets)")
    es["kind"] = es["kind"] or ("file" if es["path"] else "raw")
    if es["kind"] in ("file", "domains"):
        if not es["path"]:
            raise ParamError(f"{owner}: kind {es['kind']} needs `path`")
        es["path"] = _abs(es["path"], base)
    elif es["stage"]:
        _stage_exists(es["stage"], stages, f"{owner}.stage")
    if es["min_chars"] is None:
        es["min_chars"] = 1 if es["kind"] == "raw" else 200
    return es


def _tasks(s: dict, base: Path) -> tuple[list[dict], list[str]]:
    """The evaluation tasks: ``bpb`` over the evaluation sets first (unless listed), then ``tasks:``, with ``blimp:``
    as shorthand for a ``minimal_pairs`` task named blimp. Each task's parameters are checked by its class.
    Also returns the names of the metrics the tasks report (those known before any data is read)."""
    from experiments.tasks import TASKS, TaskContext

    tasks: list[dict] = []
    given = s["tasks"]
    if s["eval_sets"] and not any(isinstance(t, dict) and t.get("task") == "bpb" for t in given):
        tasks.append({"name": "bpb", "task": "bpb"})
    if s["blimp"]:
        b = _section("experiment.blimp", s["blimp"], BLIMP_DEFAULTS)
        if b["path"]:
            tasks.append({"name": "blimp", "task": "minimal_pairs", "path": _abs(b["path"], base),
                          "per_paradigm": b["pairs_per_paradigm"], "final_per_paradigm": b["final_pairs_per_paradigm"]})
    for i, t in enumerate(given):
        owner = f"experiment.tasks[{i}]"
        if not isinstance(t, dict) or not t.get("task"):
            raise ParamError(f"{owner}: expected a mapping with `task:` (a registered task, e.g. bpb, minimal_pairs, "
                             "cloze, or `package.module:Class`)")
        t = dict(t)
        t.setdefault("name", t["task"].split(":")[-1])
        if "path" in t and isinstance(t["path"], str):
            t["path"] = _abs(t["path"], base)
        tasks.append(t)
    names = [t["name"] for t in tasks]
    if len(set(names)) != len(names):
        raise ParamError(f"experiment.tasks: task names must be unique, got {', '.join(names)}")
    ctx = TaskContext(eval_sets={es["name"]: [] for es in s["eval_sets"]}, base=base)
    metrics: list[str] = []
    for t in tasks:  # unknown task, unknown or bad parameter: one line now, not after the pipeline ran
        try:
            cls = TASKS.get(t["task"])
        except KeyError as e:
            raise ParamError(f"experiment.tasks ({t['name']}): {e}") from None
        task = cls(t["name"], {k: v for k, v in t.items() if k not in ("name", "task")}, ctx)
        metrics += [m.name for m in task.metrics()]
    return tasks, metrics


def _abs(p: str, base: Path) -> str:
    """A path of the config, relative to the config file's folder (``~`` is the home folder)."""
    p = str(Path(p).expanduser())
    return p if Path(p).is_absolute() else str((base / p).resolve())


def _scales(s: dict) -> list[dict] | None:
    """The ladder: each rung's model (over ``model``), train overrides and steps (given, or from tokens per
    parameter). Without ``scales`` the experiment is one rung with the section's own model."""
    if not s["scales"]:
        return None
    out = []
    for i, r in enumerate(s["scales"]):
        owner = f"experiment.scales[{i}]"
        r = _section(owner, r, SCALE_DEFAULTS, SCALE_CHECKS)
        if not r["name"]:
            raise ParamError(f"{owner}: `name` is required (it names the rung's runs)")
        r["model"] = validate_model({**s["model"], **r["model"]}, f"{owner}.model")
        r["train"] = validate_train({**s["train"], **r["train"]}, f"{owner}.train")
        if (r["tokens_per_param"] is None) == (r["steps"] is None):
            raise ParamError(f"{owner}: give exactly one of `tokens_per_param` and `steps`")
        out.append(r)
    names = [r["name"] for r in out]
    if len(set(names)) != len(names):
        raise ParamError("experiment.scales: rung names must be unique")
    return out


def _arms(s: dict, cfg: PipelineConfig) -> list[dict]:
    stages = cfg.stage_names()
    raw = []
    for i, a in enumerate(s["arms"]):
        owner = f"experiment.arms[{i}]"
        if not isinstance(a, dict):
            raise ParamError(f"{owner}: expected a mapping, got {type(a).__name__}")
        kind, given = a.get("kind"), set(a)
        extra = ARM_KINDS[kind].keys if kind in ARM_KINDS else {}
        a = _section(f"{owner} ({a.get('name') or kind or '?'})", a, {**ARM_DEFAULTS, **extra}, ARM_CHECKS)
        if kind is not None and kind not in ARM_KINDS:
            raise ParamError(f"{owner}: kind must be one of {', '.join(ARM_KINDS)}, got {kind!r}"
                             f"{nearest(str(kind), list(ARM_KINDS))}")
        raw.append({k: v for k, v in a.items() if k in given})
    s["arms"] = raw
    arms = [ARM_KINDS[a["kind"]].resolve(a, s, cfg) if a.get("kind") else a for a in raw]
    names = [a.get("name") for a in arms]
    if not names or None in names or len(set(names)) != len(names):
        raise ParamError("experiment.arms needs at least one arm, each with a unique `name`")
    for a in arms:
        _stage_exists(a.get("stage") or "", stages, f"arm {a['name']}: stage")
        if (a.get("tokens") is None) == (a.get("tokens_fraction") is None):
            raise ParamError(f"arm {a['name']}: give exactly one of `tokens` (unique tokens) and `tokens_fraction` "
                             "(unique tokens as a fraction of the tokens a run trains on)")
        if a.get("tokens") is None:
            a.pop("tokens", None)
        if a.get("tokens_fraction") is None:
            a.pop("tokens_fraction", None)
        for x in a.get("seeds") or []:
            if not isinstance(x, int) or isinstance(x, bool):
                raise ParamError(f"arm {a['name']}: seeds must be whole numbers, got {x!r}")
    for key in ("baseline", "candidate"):
        v = s["compare"].get(key)
        if v is not None and v not in names:
            raise ParamError(f"experiment.compare.{key}: no arm {v!r}{nearest(str(v), names)}")
    return arms
