"""Evaluation tasks: the contract, the registry and the built-ins.

A task is what the ablation asks every model (lm-evaluation-harness's split
of task from model, written for winnow): it

1. ``prepare(tok, context, final)``: turns its data into token sequences once,
   shared by every run (``final``: the final checkpoint may use more items than
   the curve points);
2. ``score(model, prepared, device)``: per-item arrays (bits and bytes per
   document, correct or not per pair, log-probability per answer), which the
   ablation keeps in ``final_items.npz`` under ``<task name>/<array>``;
3. ``aggregate(items)``: per-run metric values from those arrays -- the only
   way the report turns items into numbers, so a committed results folder
   rebuilds its report with the task code alone;
4. ``metrics()``: what it reports, each :class:`Metric` saying whether higher
   is better and what the resampling unit of its items is (document,
   paradigm, item), plus an optional cluster array (items of one cluster are
   not independent: BLiMP's paradigms) and a breakdown array (BLiMP's field).

The report loops over the tasks' metrics; nothing in it knows a task by name.

Tasks register like filters: entry points of the group ``winnow.eval_tasks``
(winnow's own three are declared so in ``pyproject.toml``), a
``package.module:Class`` reference in the config, or ``register_task`` in a
notebook. Built-ins:

- ``bpb``: bits per byte over the experiment's held-out evaluation sets
  (per set, and the unweighted mean over a ``kind: domains`` folder);
- ``minimal_pairs``: any JSONL of good/bad sentence pairs (BLiMP's file by
  default field names): accuracy = share of pairs where the good one gets the
  higher log-probability (a tie counts as wrong), clustered by paradigm;
- ``cloze``: multiple choice from a local JSONL (``context``, ``choices``,
  ``answer``): accuracy, and the continuous signals DataDecide found most
  predictive at small scale -- the probability of the correct answer
  (normalised over the choices) and the bits per byte of the correct
  continuation.
"""
from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from experiments.evaluate import LN2, continuation_logprobs
from pipeline.params import at_least, between, of_type, optional, validate
from pipeline.registry import Registry, subclass_of
from pipeline.shards import sha256_file


@dataclass(frozen=True)
class Metric:
    """One number per run that a task reports."""

    name: str
    task: str
    higher_is_better: bool
    #: what one item is, for intervals over items: "document", "paradigm", "item"
    unit: str = "item"
    #: per-item array naming each item's cluster (resample clusters, not items), e.g. "paradigm"
    cluster: str | None = None
    #: per-item array naming each item's category for a breakdown table, e.g. "field"
    breakdown: str | None = None
    #: a short phrase for the report ("bits per byte", "accuracy")
    label: str = ""
    #: the score of a model that knows nothing (accuracy 0.5 for pairs), if there is one
    chance: float | None = None
    #: a per-item array whose mean is the metric (e.g. "correct"), for item-level intervals and breakdowns
    item_array: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TaskContext:
    """What a task may use besides its own parameters."""

    #: held-out evaluation sets: {name: [{id, text, source}]} (decided before any subset is drawn)
    eval_sets: dict[str, list[dict]]
    #: the experiment's seed (samples of items are drawn with it, the same for every run)
    seed: int = 0
    #: each evaluation document is cut to this many characters
    eval_max_chars: int = 2000
    #: relative paths in task parameters are relative to this folder (the config's)
    base: Path = Path(".")


class EvalTask:
    """Base class for evaluation tasks; see the module docstring for the contract."""

    #: the registry name (``task:`` in the config)
    kind: ClassVar[str] = ""
    #: every parameter with its default (unknown keys are refused, naming the nearest one)
    defaults: ClassVar[dict[str, Any]] = {}
    checks: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, params: dict[str, Any], ctx: TaskContext):
        self.name = name
        self.params = validate(f"task {name}", params, self.defaults, self.checks)
        self.ctx = ctx

    def metrics(self) -> list[Metric]:
        raise NotImplementedError

    def data_fingerprint(self) -> Any:
        """What the task's items are made of (file checksums, sampled ids): part of every evaluation's fingerprint."""
        return None

    def prepare(self, tok, context: int, final: bool) -> Any:
        raise NotImplementedError

    def score(self, model, prepared: Any, device) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def aggregate(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def _path(self, key: str = "path") -> Path:
        p = Path(self.params[key])
        return p if p.is_absolute() else (self.ctx.base / p).resolve()


#: Evaluation tasks: built-ins and plug-ins alike come from the ``winnow.eval_tasks`` entry points.
TASKS = Registry("winnow.eval_tasks", "evaluation task", subclass_of(EvalTask))


def register_task(cls: type[EvalTask]) -> type[EvalTask]:
    """Class decorator for tasks defined outside an installed package (notebooks, tests)."""
    return TASKS.register_kind(cls)


def build_task(spec: dict, ctx: TaskContext) -> EvalTask:
    """``spec``: ``{name, task, ...params}`` (as validated by the experiment schema)."""
    params = {k: v for k, v in spec.items() if k not in ("name", "task")}
    return TASKS.get(spec["task"])(spec["name"], params, ctx)


def _eos(tok) -> int:
    from experiments.tokenizer import eos_id

    return eos_id(tok)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


# ---------------------------------------------------------------------------
# bits per byte over the held-out evaluation sets


class BitsPerByte(EvalTask):
    """Bits per byte of each held-out evaluation set (and the mean over a folder of domains)."""

    kind = "bpb"
    defaults = {"sets": None, "max_chars": None}
    checks = {"sets": optional(of_type(list, name="a list of evaluation set names")),
              "max_chars": optional(at_least(1, integer=True))}

    def _sets(self) -> list[str]:
        names = list(self.ctx.eval_sets)
        chosen = self.params["sets"]
        if chosen is None:
            return names
        missing = [n for n in chosen if n not in names and not any(m.startswith(f"{n}/") for m in names)]
        if missing:
            raise ValueError(f"task {self.name}: no evaluation set {', '.join(map(repr, missing))} "
                             f"(sets: {', '.join(names)})")
        return [n for n in names if n in chosen or n.split("/")[0] in chosen]

    def _groups(self) -> dict[str, list[str]]:
        """NAME/DOMAIN sets grouped by NAME: each domain weighs the same in the macro average (Paloma)."""
        groups: dict[str, list[str]] = {}
        for s in self._sets():
            if "/" in s:
                groups.setdefault(s.split("/")[0], []).append(s)
        return groups

    def metrics(self) -> list[Metric]:
        m = [Metric(f"{self.name}_macro/{g}", self.name, False, "document", label="bits per byte (mean over domains)")
             for g in self._groups()]
        return m + [Metric(f"{self.name}/{s}", self.name, False, "document", label="bits per byte")
                    for s in self._sets()]

    def data_fingerprint(self) -> Any:
        return {s: [d["id"] for d in self.ctx.eval_sets[s]] for s in self._sets()} | {
            "max_chars": self._max_chars()}

    def _max_chars(self) -> int:
        return int(self.params["max_chars"] or self.ctx.eval_max_chars)

    def prepare(self, tok, context: int, final: bool) -> dict:
        """Each document (cut to ``max_chars``) once, as windows of ``context + 1`` tokens: every token after
        the leading end-of-text is predicted exactly once; a window starts with the previous one's last token."""
        eos, cut = _eos(tok), self._max_chars()
        out = {}
        for s in self._sets():
            windows, owners, nbytes = [], [], []
            for i, d in enumerate(self.ctx.eval_sets[s]):
                text = d["text"][:cut]
                ids = [eos] + tok.encode(text).ids
                nbytes.append(len(text.encode("utf-8")))
                for st in range(0, len(ids) - 1, context):
                    windows.append(ids[st:st + context + 1])
                    owners.append(i)
            out[s] = {"windows": windows, "owners": np.asarray(owners, dtype=np.int64),
                      "bytes": np.asarray(nbytes, dtype=np.int64)}
        return out

    def score(self, model, prepared: dict, device) -> dict[str, np.ndarray]:
        # every set's windows in one call: one batching pass over everything this task scores
        allw = [w for p in prepared.values() for w in p["windows"]]
        lp = continuation_logprobs(model, allw, 1, device)
        items, at = {}, 0
        for s, p in prepared.items():
            part = lp[at:at + len(p["windows"])]
            at += len(p["windows"])
            bits = np.zeros(len(p["bytes"]))
            np.add.at(bits, p["owners"], -part / LN2)
            items[f"{s}/bits"] = bits.astype(np.float32)
            items[f"{s}/bytes"] = p["bytes"].astype(np.int32)
        return items

    def aggregate(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        out: dict[str, float] = {}
        per = {}
        for s in self._sets():
            if f"{s}/bits" not in items:
                continue
            per[s] = float(np.sum(items[f"{s}/bits"], dtype=np.float64) / np.sum(items[f"{s}/bytes"], dtype=np.float64))
            out[f"{self.name}/{s}"] = per[s]
        for g, sets in self._groups().items():
            if all(s in per for s in sets):
                out[f"{self.name}_macro/{g}"] = float(np.mean([per[s] for s in sets]))
        return out


# ---------------------------------------------------------------------------
# minimal pairs (BLiMP or any good/bad JSONL)


class MinimalPairs(EvalTask):
    """Share of minimal pairs where the good sentence gets the higher log-probability (a tie counts as wrong)."""

    kind = "minimal_pairs"
    defaults = {"path": None, "good_field": "sentence_good", "bad_field": "sentence_bad", "paradigm_field": "UID",
                "breakdown_field": "field", "id_field": "pairID", "per_paradigm": None, "final_per_paradigm": None}
    checks = {"path": of_type(str, name="a path to a JSONL(.gz) of pairs"),
              "per_paradigm": optional(at_least(1, integer=True)),
              "final_per_paradigm": optional(at_least(1, integer=True))}

    def __init__(self, name, params, ctx):
        super().__init__(name, params, ctx)
        if not self.params["path"]:
            raise ValueError(f"task {name}: `path` (a JSONL of good/bad sentence pairs) is required")

    def metrics(self) -> list[Metric]:
        return [Metric(self.name, self.name, True, "paradigm", cluster="paradigm", breakdown="field",
                       label="accuracy", chance=0.5, item_array="correct")]

    def data_fingerprint(self) -> Any:
        path = self._path()
        return {"sha256": sha256_file(path) if path.exists() else None,
                **{k: self.params[k] for k in self.defaults if k != "path"}}

    def pairs(self, final: bool) -> list[dict]:
        """A seeded sample of ``per_paradigm`` pairs per paradigm (the same for every run), all pairs when unset."""
        p = self.params
        per = p["final_per_paradigm"] if final else (p["per_paradigm"] or p["final_per_paradigm"])
        by: dict[str, list[dict]] = defaultdict(list)
        with _open_text(self._path()) as f:
            for n, line in enumerate(f):
                if line.strip():
                    d = json.loads(line)
                    by[str(d.get(p["paradigm_field"], ""))].append(
                        {"paradigm": str(d.get(p["paradigm_field"], "")), "pair": d.get(p["id_field"], n),
                         "good": d[p["good_field"]], "bad": d[p["bad_field"]],
                         "field": str(d.get(p["breakdown_field"], "") or "")})
        rng = np.random.default_rng(self.ctx.seed)
        out = []
        for uid in sorted(by):
            pairs = sorted(by[uid], key=lambda d: (int(d["pair"]) if str(d["pair"]).isdigit() else 0, str(d["pair"])))
            if per is not None and per < len(pairs):
                pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), per, replace=False))]
            out += pairs
        return out

    def prepare(self, tok, context: int, final: bool) -> dict:
        eos = _eos(tok)
        pairs = self.pairs(final)
        seqs = []
        for q in pairs:
            seqs.append(([eos] + tok.encode(q["good"]).ids)[: context + 1])
            seqs.append(([eos] + tok.encode(q["bad"]).ids)[: context + 1])
        return {"seqs": seqs, "paradigm": np.asarray([q["paradigm"] for q in pairs]),
                "field": np.asarray([q["field"] for q in pairs])}

    def score(self, model, prepared: dict, device) -> dict[str, np.ndarray]:
        lp = continuation_logprobs(model, prepared["seqs"], 1, device)
        good, bad = lp[0::2], lp[1::2]
        return {"correct": (good > bad).astype(np.uint8), "margin": (good - bad).astype(np.float32),
                "paradigm": prepared["paradigm"], "field": prepared["field"]}

    def aggregate(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        return {self.name: float(np.mean(np.asarray(items["correct"], dtype=np.float64)))}


# ---------------------------------------------------------------------------
# multiple-choice cloze with continuous metrics


class Cloze(EvalTask):
    """Multiple choice by log-likelihood of each answer after its context: accuracy, P(correct), bpb of the correct."""

    kind = "cloze"
    defaults = {"path": None, "context_field": "context", "choices_field": "choices", "answer_field": "answer",
                "id_field": "id", "delimiter": " ", "max_items": None, "bos": True}
    checks = {"path": of_type(str, name="a path to a JSONL(.gz) of items"), "delimiter": of_type(str),
              "max_items": optional(at_least(1, integer=True)), "bos": of_type(bool)}

    def __init__(self, name, params, ctx):
        super().__init__(name, params, ctx)
        if not self.params["path"]:
            raise ValueError(f"task {name}: `path` (a JSONL with context, choices, answer) is required")

    def metrics(self) -> list[Metric]:
        return [Metric(f"{self.name}/acc", self.name, True, "item", label="accuracy"),
                Metric(f"{self.name}/p_correct", self.name, True, "item",
                       label="probability of the correct answer (normalised over the choices)"),
                Metric(f"{self.name}/bpb_correct", self.name, False, "item",
                       label="bits per byte of the correct continuation")]

    def data_fingerprint(self) -> Any:
        path = self._path()
        return {"sha256": sha256_file(path) if path.exists() else None,
                **{k: self.params[k] for k in self.defaults if k != "path"}}

    def items(self) -> list[dict]:
        p = self.params
        out = []
        with _open_text(self._path()) as f:
            for n, line in enumerate(f):
                if not line.strip():
                    continue
                d = json.loads(line)
                choices = [str(c) for c in d[p["choices_field"]]]
                ans = int(d[p["answer_field"]])
                if not 0 <= ans < len(choices):
                    raise ValueError(f"task {self.name}: {self._path()} line {n + 1}: answer {ans} is not one of "
                                     f"{len(choices)} choices")
                out.append({"id": str(d.get(p["id_field"], n)), "context": str(d[p["context_field"]]),
                            "choices": choices, "answer": ans})
        if p["max_items"] is not None and p["max_items"] < len(out):
            rng = np.random.default_rng(self.ctx.seed)
            out = [out[i] for i in sorted(rng.choice(len(out), p["max_items"], replace=False))]
        return out

    def encode(self, tok, context: str, continuation: str) -> tuple[list[int], int]:
        """(tokens, index of the first continuation token), as lm-evaluation-harness splits a request: the whole
        string is encoded once and the continuation is what follows the context's own encoding; trailing white
        space of the context moves to the continuation. With ``bos`` (default) end-of-text comes first, as
        lm-evaluation-harness does with ``add_bos_token=True`` on an exported winnow tokenizer."""
        n_sp = len(context) - len(context.rstrip())
        if n_sp:
            context, continuation = context[:-n_sp], context[-n_sp:] + continuation
        whole = tok.encode(context + continuation).ids
        ctx = tok.encode(context).ids if context else []
        head = [_eos(tok)] if self.params["bos"] or not ctx else []
        return head + whole, len(head) + len(ctx)

    def prepare(self, tok, context: int, final: bool) -> dict:
        items = self.items()
        seqs, starts, owners, nbytes = [], [], [], []
        for i, it in enumerate(items):
            for c in it["choices"]:
                cont = self.params["delimiter"] + c
                ids, start = self.encode(tok, it["context"], cont)
                cut = max(0, len(ids) - (context + 1))  # keep the end (the continuation) within the context window
                seqs.append(ids[cut:])
                starts.append(max(1, start - cut))
                owners.append(i)
                nbytes.append(len(cont.encode("utf-8")))
        n_choices = max((len(it["choices"]) for it in items), default=0)
        return {"seqs": seqs, "starts": starts, "owners": np.asarray(owners), "bytes": np.asarray(nbytes),
                "answer": np.asarray([it["answer"] for it in items], dtype=np.int32),
                "ids": np.asarray([it["id"] for it in items]), "n_choices": n_choices}

    def score(self, model, prepared: dict, device) -> dict[str, np.ndarray]:
        lp = continuation_logprobs(model, prepared["seqs"], prepared["starts"], device)
        n, k = len(prepared["answer"]), prepared["n_choices"]
        logp = np.full((n, k), np.nan, dtype=np.float64)
        nbytes = np.zeros((n, k), dtype=np.int32)
        col = np.zeros(n, dtype=np.int64)
        for j, owner in enumerate(prepared["owners"]):
            logp[owner, col[owner]] = lp[j]
            nbytes[owner, col[owner]] = prepared["bytes"][j]
            col[owner] += 1
        return {"logp": logp, "bytes": nbytes, "answer": prepared["answer"], "id": prepared["ids"]}

    def aggregate(self, items: dict[str, np.ndarray]) -> dict[str, float]:
        logp, ans = np.asarray(items["logp"], dtype=np.float64), np.asarray(items["answer"], dtype=np.int64)
        rows = np.arange(len(ans))
        filled = np.where(np.isnan(logp), -np.inf, logp)
        correct_lp = filled[rows, ans]
        acc = np.mean(np.argmax(filled, axis=1) == ans)
        p = np.exp(correct_lp - np.logaddexp.reduce(filled, axis=1))
        bpb = -correct_lp.sum() / LN2 / np.asarray(items["bytes"], dtype=np.float64)[rows, ans].sum()
        return {f"{self.name}/acc": float(acc), f"{self.name}/p_correct": float(np.mean(p)),
                f"{self.name}/bpb_correct": float(bpb)}


# ---------------------------------------------------------------------------
# one evaluation pass over every task


def evaluate_model(tasks: list[EvalTask], prepared: dict[str, Any], model, device) -> tuple[dict, dict]:
    """(metrics {name: value}, items {"<task>/<array>": array}) for one model over every task."""
    metrics: dict[str, float] = {}
    items: dict[str, np.ndarray] = {}
    for t in tasks:
        it = t.score(model, prepared[t.name], device)
        metrics.update({k: round(v, 6) for k, v in t.aggregate(it).items()})
        items.update({f"{t.name}/{k}": v for k, v in it.items()})
    return metrics, items


def split_items(items: dict[str, np.ndarray], tasks: list[EvalTask]) -> dict[str, dict[str, np.ndarray]]:
    """``{"<task>/<array>": a}`` -> ``{task: {array: a}}`` (longest task name first, so ``bpb`` and ``bpb2`` differ)."""
    out: dict[str, dict[str, np.ndarray]] = {t.name: {} for t in tasks}
    names = sorted(out, key=len, reverse=True)
    for key, v in items.items():
        for n in names:
            if key.startswith(n + "/"):
                out[n][key[len(n) + 1:]] = v
                break
    return out


def task_values(tasks: list[EvalTask], items: dict[str, np.ndarray]) -> dict[str, float]:
    """Every metric of every task from one run's flat per-item arrays (tasks whose items are absent are skipped)."""
    out: dict[str, float] = {}
    for t, it in zip(tasks, split_items(items, tasks).values()):
        if it:
            out.update(t.aggregate(it))
    return out
