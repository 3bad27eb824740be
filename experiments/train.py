"""Matched small-model training: same architecture, optimiser, schedule, batch,
context and number of optimiser steps for every arm, so compute is matched; a
smaller subset simply repeats epochs (recorded).

Resumable: a checkpoint (weights, optimiser, scheduler, step) is written
atomically every ``checkpoint_every`` steps and at each evaluation; a killed run
restarts from it and, because the data order is a pure function of (seed,
step), continues exactly where it stopped. Checkpoints are loaded with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from pipeline.shards import atomic_write_bytes, atomic_write_json, read_json

MODEL_DEFAULTS = {"arch": "llama", "d_model": 128, "n_layers": 4, "n_heads": 4, "d_ff": 384, "context": 256}
# bf16 / compile: "auto" = measured on this machine before training (see choose_speed_settings), never a fixed
# default; schedule "wsd" (warmup-stable-decay) with a cool-down branch at each of ``decay_budgets`` (fractions of
# ``steps``), so every point of the data-efficiency curve is a decayed model.
TRAIN_DEFAULTS = {"steps": 1000, "batch_size": 16, "lr": 3e-3, "min_lr_ratio": 0.1, "warmup_steps": 50,
                  "weight_decay": 0.1, "beta2": 0.95, "grad_clip": 1.0, "eval_every": 200,
                  "checkpoint_every": 200, "bf16": "auto", "compile": "auto", "threads": "auto",
                  "schedule": "wsd", "decay_frac": 0.2, "decay_budgets": [0.125, 0.25, 0.5]}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(model_cfg: dict, vocab_size: int, seed: int):
    """A Llama-style (RoPE, SwiGLU, RMSNorm) or GPT-2-style causal LM from transformers."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    c = {**MODEL_DEFAULTS, **model_cfg}
    torch.manual_seed(seed)
    if c["arch"] == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=c["d_model"], intermediate_size=c["d_ff"],
                          num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
                          num_key_value_heads=c["n_heads"], max_position_embeddings=c["context"] + 1,
                          tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = LlamaForCausalLM(cfg)
    elif c["arch"] == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=c["d_model"], n_layer=c["n_layers"], n_head=c["n_heads"],
                         n_inner=c["d_ff"], n_positions=c["context"] + 1, bos_token_id=0, eos_token_id=0,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(f"model.arch must be llama or gpt2, got {c['arch']!r}")
    return model


def count_params(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - emb}


class Batches:
    """Batch ``step`` of an epoch-wise shuffled split of a token array into ``context + 1`` windows.

    A pure function of (seed, step): resuming at step k yields what an
    uninterrupted run would have seen.
    """

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int):
        self.tokens, self.T, self.B, self.seed = tokens, context, batch_size, seed
        self.n_seq = (len(tokens) - 1) // context
        if self.n_seq < 1:
            raise ValueError(f"subset of {len(tokens)} tokens is shorter than one context window ({context + 1})")
        self._perm_epoch, self._perm = -1, None

    def _perm_for(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_seq)
            self._perm_epoch = epoch
        return self._perm

    def get(self, step: int) -> torch.Tensor:
        rows = []
        for k in range(step * self.B, (step + 1) * self.B):
            epoch, pos = divmod(k, self.n_seq)
            s = int(self._perm_for(epoch)[pos]) * self.T
            rows.append(self.tokens[s:s + self.T + 1].astype(np.int64))
        return torch.from_numpy(np.stack(rows))

    def epochs(self, steps: int) -> float:
        return steps * self.B / self.n_seq


def lr_at(step: int, c: dict, end: int | None = None) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine decay to ``min_lr_ratio * lr``, or (``schedule:
    wsd``) constant until the last ``decay_frac`` of the steps and a linear decay to ``min_lr_ratio * lr``.

    ``end``: the step a WSD cool-down branch ends at (default: ``steps``), so a branch decays over the last
    ``decay_frac`` of its own budget.
    """
    if step < c["warmup_steps"]:
        return c["lr"] * (step + 1) / c["warmup_steps"]
    if c.get("schedule", "cosine") == "wsd":
        end = c["steps"] if end is None else end
        decay = max(1, round(c["decay_frac"] * end))
        start = end - decay
        if step < start:
            return c["lr"]
        frac = min(1.0, (step - start + 1) / decay)
        return c["lr"] * (1 - (1 - c["min_lr_ratio"]) * frac)
    progress = (step - c["warmup_steps"]) / max(1, c["steps"] - c["warmup_steps"])
    return c["lr"] * (c["min_lr_ratio"] + (1 - c["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _optimizer(model, c: dict):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=c["lr"], betas=(0.9, c["beta2"]), eps=1e-8)


def _save_checkpoint(path: Path, model, opt, step: int) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": torch.tensor(step)}, buf)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    tokens_seen: int
    epochs: float
    tokens_per_second: float
    final_loss: float
    evals: list[dict] = field(default_factory=list)


def train(tokens: np.ndarray, vocab_size: int, out_dir: Path, model_cfg: dict, train_cfg: dict, seed: int,
          evaluate: Callable | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train one arm and seed into ``out_dir`` (resuming if a checkpoint is there).

    ``evaluate(model, step, final)`` returns a dict of metrics; it runs every
    ``eval_every`` steps, at the end of each WSD cool-down branch (marked
    ``decayed``) and at the end, and its results are appended to ``evals.jsonl``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = {**TRAIN_DEFAULTS, **train_cfg}
    mc = {**MODEL_DEFAULTS, **model_cfg}
    done_path = out_dir / "done.json"
    if done_path.exists():
        d = read_json(done_path)
        return TrainResult(out_dir, d["steps"], d["tokens_seen"], d["epochs"], d["tokens_per_second"],
                           d["final_loss"], _read_jsonl(out_dir / "evals.jsonl"))
    device = pick_device()
    speed = c.pop("speed", None)
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists() and (out_dir / "config.json").exists():  # a resumed run keeps the settings it started with
        old_cfg = read_json(out_dir / "config.json")
        old = old_cfg["train"]
        c["bf16"], c["compile"], c["threads"] = old["bf16"], old["compile"], old.get("threads")
        speed = old_cfg.get("speed") or speed
    if "auto" in (c["bf16"], c["compile"], c["threads"]):
        speed = choose_speed_settings(mc, c, vocab_size, device, log=log)
        c["bf16"], c["compile"], c["threads"] = speed["bf16"], speed["compile"], speed["threads"]
    if c["threads"]:
        torch.set_num_threads(int(c["threads"]))
    model = build_model(mc, vocab_size, seed).to(device)
    opt = _optimizer(model, c)
    batches = Batches(tokens, mc["context"], c["batch_size"], seed)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log(f"  resuming {out_dir.name} at step {start}/{c['steps']}")
    _truncate_jsonl(out_dir / "train_log.jsonl", start)
    _truncate_jsonl(out_dir / "evals.jsonl", start)
    atomic_write_json(out_dir / "config.json", {"model": mc, "train": c, "seed": seed, "vocab_size": vocab_size,
                                                "params": count_params(model), "device": device.type,
                                                "speed": speed, "subset_tokens": int(len(tokens)),
                                                "epochs": round(batches.epochs(c["steps"]), 3)})
    step_fn = _make_step(model, opt, c, device)
    tokens_per_step = c["batch_size"] * mc["context"]
    # WSD cool-down branches: budget B (steps) forks from the trunk at B - decay(B) and decays to B
    branches: dict[int, list[int]] = {}
    if c["schedule"] == "wsd" and evaluate:
        for f in c["decay_budgets"]:
            b = max(1, round(float(f) * c["steps"]))
            if b < c["steps"]:
                branches.setdefault(b - max(1, round(c["decay_frac"] * b)), []).append(b)
    t0, t_last, loss_acc, n_acc = time.perf_counter(), time.perf_counter(), 0.0, 0
    t_side = 0.0  # seconds spent evaluating and in cool-down branches: not training throughput
    trained_tokens_this_run = 0
    loss_val = float("nan")
    # a progress bar on a terminal; in logs (no terminal) a line every 30 s instead
    bar = tqdm(total=c["steps"], initial=start, desc=out_dir.name, unit="step", disable=None, leave=False,
               file=sys.stderr, dynamic_ncols=True)
    with open(out_dir / "train_log.jsonl", "a") as flog, bar:
        for step in range(start, c["steps"]):
            todo = [b for b in branches.get(step, []) if b not in _branches_done(out_dir / "evals.jsonl")]
            if todo:
                ts = time.perf_counter()
                for b in todo:
                    _cooldown_branch(model, opt, step_fn, batches, c, step, b, device, evaluate, out_dir,
                                     tokens_per_step)
                _save_checkpoint(ckpt, model, opt, step)
                t_side += time.perf_counter() - ts
            for g in opt.param_groups:
                g["lr"] = lr_at(step, c)
            x = batches.get(step).to(device)
            loss_val = step_fn(x)
            trained_tokens_this_run += tokens_per_step
            loss_acc += loss_val
            n_acc += 1
            done = step + 1
            if done % 10 == 0 or done == c["steps"]:
                now = time.perf_counter()
                tps = trained_tokens_this_run / max(now - t0 - t_side, 1e-9)
                flog.write(json.dumps({"step": done, "loss": round(loss_acc / n_acc, 5), "lr": lr_at(step, c),
                                       "tokens_seen": done * tokens_per_step, "tokens_per_second": round(tps)}) + "\n")
                flog.flush()
                loss_acc, n_acc = 0.0, 0
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                if bar.disable and now - t_last > 30:
                    log(f"  {out_dir.name}: step {done}/{c['steps']} loss {loss_val:.3f} {tps:,.0f} tok/s")
                    t_last = now
            if evaluate and (done % c["eval_every"] == 0 or done == c["steps"]):
                ts = time.perf_counter()
                model.eval()
                final = done == c["steps"]
                metrics = evaluate(model, done, final)
                model.train()
                with open(out_dir / "evals.jsonl", "a") as fe:
                    fe.write(json.dumps({"step": done, "tokens_seen": done * tokens_per_step, **metrics,
                                         **({"decayed": True} if final else {})}) + "\n")
                t_side += time.perf_counter() - ts
            if done % c["checkpoint_every"] == 0 or done % c["eval_every"] == 0 or done == c["steps"]:
                _save_checkpoint(ckpt, model, opt, done)
    elapsed = time.perf_counter() - t0
    tps = trained_tokens_this_run / max(elapsed - t_side, 1e-9)
    result = {"steps": c["steps"], "tokens_seen": c["steps"] * tokens_per_step,
              "epochs": round(batches.epochs(c["steps"]), 3), "tokens_per_second": round(tps),
              "seconds_training": round(elapsed - t_side, 2), "seconds_eval_and_branches": round(t_side, 2),
              "final_loss": round(float(loss_val), 5), "device": device.type,
              "bf16": bool(c["bf16"]), "compile": bool(c["compile"])}
    atomic_write_json(done_path, result)
    log(f"  {out_dir.name}: done, {result['tokens_seen']:,} tokens ({result['epochs']} epochs) at {tps:,.0f} "
        f"training tok/s on {device.type} ({'bf16' if c['bf16'] else 'fp32'}; {t_side:.1f} s evaluation and "
        f"cool-down branches not counted)")
    return TrainResult(out_dir, result["steps"], result["tokens_seen"], result["epochs"], tps, result["final_loss"],
                       _read_jsonl(out_dir / "evals.jsonl"))


def _cooldown_branch(model, opt, step_fn, batches, c, start: int, end: int, device, evaluate, out_dir: Path,
                     tokens_per_step: int) -> None:
    """Train a copy of the trunk from ``start`` to ``end`` with the learning rate decaying to its floor, evaluate
    it (a decayed model at budget ``end``), then put the trunk back as it was."""
    trunk_model = copy.deepcopy(model.state_dict())
    trunk_opt = copy.deepcopy(opt.state_dict())
    for step in range(start, end):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c, end=end)
        step_fn(batches.get(step).to(device))
    model.eval()
    metrics = evaluate(model, end, False)
    model.train()
    with open(out_dir / "evals.jsonl", "a") as fe:
        fe.write(json.dumps({"step": end, "tokens_seen": end * tokens_per_step, **metrics, "decayed": True,
                             "branch_from": start}) + "\n")
    model.load_state_dict(trunk_model)
    opt.load_state_dict(trunk_opt)


def _branches_done(path: Path) -> set[int]:
    return {e["step"] for e in _read_jsonl(path) if "branch_from" in e}


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux), empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_speed_settings(model_cfg: dict, train_cfg: dict, vocab_size: int, device=None, steps: int = 5,
                          log: Callable[[str], None] = print) -> dict:
    """Pick bf16 autocast, torch.compile and the thread count by timing a few training steps of each on a
    throwaway model.

    Without native bf16 (AVX512-BF16/AMX on CPU) autocast can be 10x slower
    than fp32, with it faster; a fixed default is wrong somewhere. Settings
    given as true/false are kept; "auto" ones are measured and the fastest
    wins (fp32 and no compile unless the other is at least 5% faster over
    a run of ``steps`` optimiser steps, compilation time included).
    Returns the choice with the timings (ms/step) and the reason.
    """
    device = device or pick_device()
    mc = {**MODEL_DEFAULTS, **model_cfg}
    c = {**TRAIN_DEFAULTS, **train_cfg}
    info: dict = {"device": device.type}
    if device.type == "cpu":
        flags = cpu_flags()
        info["cpu_native_bf16"] = sorted(flags & {"avx512_bf16", "amx_bf16"})
    else:
        info["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    bf16_opts = [False, True] if c["bf16"] == "auto" else [bool(c["bf16"])]
    if device.type == "cuda" and not info["cuda_bf16"]:
        bf16_opts = [False]
    compile_opts = [False, True] if c["compile"] == "auto" else [bool(c["compile"])]
    n_threads = torch.get_num_threads()
    # on a shared machine one thread can beat two by 10x (threads spin waiting for each other)
    thread_opts = sorted({1, n_threads}) if c["threads"] == "auto" and device.type == "cpu" else [
        int(c["threads"]) if c["threads"] not in (None, "auto") else n_threads]
    x = torch.randint(0, vocab_size, (c["batch_size"], mc["context"] + 1), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    fns: dict[str, Callable] = {}
    warm: dict[str, float] = {}
    threads_of: dict[str, int] = {}
    for bf16, comp, th in [(b, cp, t) for b in bf16_opts for cp in compile_opts for t in thread_opts]:
        key = f"{'bf16' if bf16 else 'fp32'}{'+compile' if comp else ''}" + (
            f"@{th}t" if len(thread_opts) > 1 else "")
        threads_of[key] = th
        torch.set_num_threads(th)
        try:
            model = build_model(mc, vocab_size, 0).to(device)
            fns[key] = _make_step(model, _optimizer(model, c), {**c, "bf16": bf16, "compile": comp}, device)
            t = time.perf_counter()
            for _ in range(2):  # warm-up (and compilation)
                fns[key](x)
            warm[key] = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 -- e.g. no C++ compiler for torch.compile: not a candidate
            fns.pop(key, None)
            info.setdefault("failed", {})[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if not fns:
        raise RuntimeError(f"no training precision works on this machine: {info.get('failed')}")
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):  # interleaved, so a change in machine load hits every candidate alike
        for key, fn in fns.items():
            torch.set_num_threads(threads_of[key])
            t = time.perf_counter()
            fn(x)
            samples[key].append(time.perf_counter() - t)
    timings = {k: round(1000 * float(np.median(v)), 2) for k, v in samples.items()}
    # what one run of `steps` optimiser steps would cost, compilation included (every run compiles anew)
    run_steps = int(c["steps"])
    cost = {k: timings[k] / 1000 * run_steps + (max(0.0, warm[k] - 2 * timings[k] / 1000) if "compile" in k else 0)
            for k in timings}
    torch.set_num_threads(n_threads)
    base_key = min(timings, key=lambda k: (("bf16" in k) + ("compile" in k), -threads_of[k]))
    fastest = min(cost, key=cost.get)
    choice = fastest if cost[fastest] < 0.95 * cost[base_key] else base_key
    info.update(bf16="bf16" in choice, compile="compile" in choice, threads=threads_of[choice], ms_per_step=timings,
                compile_seconds={k: round(warm[k], 1) for k in warm if "compile" in k},
                reason=f"{choice} chosen by timing {steps} interleaved steps: "
                       + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items())
                       + "".join(f"; compiling {k} took {warm[k]:.0f} s" for k in warm if "compile" in k)
                       + f" (costed over a {run_steps}-step run)")
    if device.type == "cpu":
        info["reason"] += f"; native bf16 flags: {', '.join(info['cpu_native_bf16']) or 'none'}"
    log(f"training speed: {info['reason']}")
    return info


def _make_step(model, opt, c: dict, device):
    autocast = bool(c["bf16"])

    def step(x: torch.Tensor) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=x[:, :-1], labels=None)
            logits = out.logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        loss.backward()
        if c["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    if c["compile"]:
        model.forward = torch.compile(model.forward)
    return step


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _truncate_jsonl(path: Path, step: int) -> None:
    """Drop log lines from beyond the checkpoint we resume from (they will be written again)."""
    if path.exists():
        keep = [l for l in path.read_text().splitlines()
                if l.strip() and json.loads(l).get("branch_from", json.loads(l)["step"]) <= step]
        atomic_write_bytes(path, ("".join(l + "\n" for l in keep)).encode())
