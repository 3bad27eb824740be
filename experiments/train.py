"""Matched small-model training: same architecture, optimiser, schedule, tokens
per optimiser step, context and number of optimiser steps for every arm, so
compute is matched; a smaller subset simply repeats epochs (recorded).

Resumable: a checkpoint (weights, optimiser, step) is written atomically every
``checkpoint_every`` steps and at each point; a killed run restarts from it and,
because the data order is a pure function of (seed, step), continues exactly
where it stopped. Checkpoints are loaded with ``torch.load(weights_only=True)``.

Training does not evaluate. At every evaluation point (each ``eval_every``
steps, the end of each warmup-stable-decay cool-down branch, the end) it hands
the model to ``on_point``, which the ablation uses to save the weights; the
evaluation tasks score the saved points afterwards, so a changed evaluation set
re-scores the points without retraining.

Speed: every run reports its model FLOPs per second and utilisation (MFU)
against the device's peak -- a matmul peak measured on this machine for a CPU,
the data-sheet figure for a known GPU. On CUDA it trains under bf16 autocast
(when supported) with TF32 matmuls, fused AdamW and PyTorch's scaled-dot-product
attention (flash / memory-efficient kernels), and ``torch.compile`` when timing
says it wins.
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

from experiments.settings import MODEL_DEFAULTS, TRAIN_DEFAULTS  # noqa: E402  (the schema lives there)


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
                          tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                          attn_implementation="sdpa")
        model = LlamaForCausalLM(cfg)
    elif c["arch"] == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=c["d_model"], n_layer=c["n_layers"], n_head=c["n_heads"],
                         n_inner=c["d_ff"], n_positions=c["context"] + 1, bos_token_id=0, eos_token_id=0,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(f"model.arch must be llama or gpt2, got {c['arch']!r}")
    return model


def count_params(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - emb}


def model_params(model_cfg: dict, vocab_size: int) -> dict:
    """Parameter counts of a config without allocating it (built on the meta device)."""
    with torch.device("meta"):
        return count_params(build_model(model_cfg, vocab_size, 0))


def flops_per_token(model_cfg: dict, vocab_size: int, params: dict) -> float:
    """Training FLOPs per token (forward + backward): 6 per weight of every matmul -- the non-embedding
    weights and the output head (vocab x d) -- plus 12 * layers * context * d for attention scores
    (PaLM, appendix B; no discount for causal masking)."""
    c = {**MODEL_DEFAULTS, **model_cfg}
    return 6.0 * (params["non_embedding"] + vocab_size * c["d_model"]) + 12.0 * c["n_layers"] * c["context"] * c["d_model"]


#: Dense peak FLOP/s from the data sheets: (bf16 tensor cores, fp32 via TF32). Matched by substring of the name.
GPU_PEAKS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "GH200": (989e12, 494e12),
             "A100": (312e12, 156e12), "L40S": (362e12, 183e12), "L40": (181e12, 90e12), "L4": (121e12, 60e12),
             "A10G": (70e12, 35e12), "A10": (125e12, 62e12), "4090": (165e12, 83e12), "3090": (71e12, 36e12),
             "A6000": (155e12, 77e12), "V100": (125e12, 15.7e12), "T4": (65e12, 8.1e12)}


def device_peak_flops(device, bf16: bool, threads: int | None = None, size: int = 1024, reps: int = 5,
                      clock: Callable[[], float] = time.perf_counter) -> dict:
    """The device's peak FLOP/s, the reference of MFU: the data sheet for a known GPU, else measured as the best
    of ``reps`` square matmuls in the training precision with the run's thread count (a CPU's peak on the
    machine as it is, load included: recorded with the time it was measured)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (p16, p32) in GPU_PEAKS.items():
            if key in name:
                return {"flops": p16 if bf16 else p32, "source": f"data sheet: {name}, dense {'bf16' if bf16 else 'TF32'}"}
    old = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    try:
        dtype = torch.bfloat16 if bf16 else torch.float32
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        best = float("inf")
        for _ in range(reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = clock()
            (a @ b).sum().item()
            best = min(best, clock() - t)
    finally:
        torch.set_num_threads(old)
    return {"flops": 2.0 * size ** 3 / best, "source": f"measured: best of {reps} {size}x{size} "
            f"{'bf16' if bf16 else 'fp32'} matmuls on {device.type}"
            + (f" with {threads} thread(s)" if device.type == "cpu" else "")}


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


def make_optimizer(model, c: dict):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=c["lr"], betas=(0.9, c["beta2"]), eps=1e-8, **({"fused": True} if on_cuda else {}))


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
    points: list[dict] = field(default_factory=list)


def pick_training_device(gpu: int | None = None) -> torch.device:
    """``cuda:gpu`` when a GPU index is given and CUDA is present, else the default device."""
    if gpu is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu}")
    return pick_device()


def train(tokens: np.ndarray, vocab_size: int, out_dir: Path, model_cfg: dict, train_cfg: dict, seed: int,
          on_point: Callable | None = None, log: Callable[[str], None] = print, device=None,
          peak: dict | None = None) -> TrainResult:
    """Train one arm and seed into ``out_dir`` (resuming if a checkpoint is there).

    ``on_point(model, point)`` gets the model at every evaluation point --
    each ``eval_every`` steps, the end of each WSD cool-down branch (a decayed
    model at that budget, ``point["decayed"]``) and the end (decayed) -- with
    ``point = {"step", "tokens_seen", "decayed", "branch_from"?}``; the points
    are listed in ``points.jsonl``. ``peak``: the device's peak FLOP/s
    (:func:`device_peak_flops`), for the run's MFU.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = {**TRAIN_DEFAULTS, **train_cfg}
    mc = {**MODEL_DEFAULTS, **model_cfg}
    done_path = out_dir / "done.json"
    if done_path.exists():
        d = read_json(done_path)
        return TrainResult(out_dir, d["steps"], d["tokens_seen"], d["epochs"], d["tokens_per_second"],
                           d["final_loss"], _read_jsonl(out_dir / "points.jsonl"))
    device = torch.device(device) if device is not None else pick_device()
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
    if c["threads"] and device.type == "cpu":
        torch.set_num_threads(int(c["threads"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (bf16 autocast covers the rest)
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(mc, vocab_size, seed).to(device)
    opt = make_optimizer(model, c)
    batches = Batches(tokens, mc["context"], c["batch_size"], seed)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log(f"  resuming {out_dir.name} at step {start}/{c['steps']}")
    _truncate_jsonl(out_dir / "train_log.jsonl", start)
    _truncate_jsonl(out_dir / "points.jsonl", start)
    params = count_params(model)
    fpt = flops_per_token(mc, vocab_size, params)
    from pipeline.provenance import stamped

    # what made this run: code, packages, CPU (provenance), and the precision / compile / threads actually used
    atomic_write_json(out_dir / "config.json", stamped({"model": mc, "train": c, "seed": seed, "vocab_size": vocab_size,
                                                "threads_used": torch.get_num_threads() if device.type == "cpu" else None,
                                                "params": params, "flops_per_token": fpt, "device": device.type,
                                                "device_name": _device_name(device), "peak": peak,
                                                "speed": speed, "subset_tokens": int(len(tokens)),
                                                "epochs": round(batches.epochs(c["steps"]), 3)}))
    step_fn = make_step(model, opt, c, device)
    tokens_per_step = c["batch_size"] * mc["context"]
    # WSD cool-down branches: budget B (steps) forks from the trunk at B - decay(B) and decays to B
    branches: dict[int, list[int]] = {}
    if c["schedule"] == "wsd" and on_point:
        for f in c["decay_budgets"]:
            b = max(1, round(float(f) * c["steps"]))
            if b < c["steps"]:
                branches.setdefault(b - max(1, round(c["decay_frac"] * b)), []).append(b)
    t0, t_last = time.perf_counter(), time.perf_counter()
    loss_acc, n_acc = None, 0
    t_side = 0.0  # seconds spent in points (saving weights) and cool-down branches: not training throughput
    trained_tokens_this_run = 0
    loss_val = float("nan")
    pin = device.type == "cuda"

    def point(step: int, decayed: bool, branch_from: int | None = None) -> None:
        p = {"step": step, "tokens_seen": step * tokens_per_step, "decayed": decayed,
             **({"branch_from": branch_from} if branch_from is not None else {})}
        if on_point:
            model.eval()
            on_point(model, p)
            model.train()
        with open(out_dir / "points.jsonl", "a") as fp:
            fp.write(json.dumps(p) + "\n")

    # a progress bar on a terminal; in logs (no terminal) a line every 30 s instead
    bar = tqdm(total=c["steps"], initial=start, desc=out_dir.name, unit="step", disable=None, leave=False,
               file=sys.stderr, dynamic_ncols=True)
    with open(out_dir / "train_log.jsonl", "a") as flog, bar:
        for step in range(start, c["steps"]):
            todo = [b for b in branches.get(step, []) if b not in _branches_done(out_dir / "points.jsonl")]
            if todo:
                ts = time.perf_counter()
                for b in todo:
                    _cooldown_branch(model, opt, step_fn, batches, c, step, b, device, point)
                _save_checkpoint(ckpt, model, opt, step)
                t_side += time.perf_counter() - ts
            for g in opt.param_groups:
                g["lr"] = lr_at(step, c)
            x = batches.get(step)
            x = (x.pin_memory() if pin else x).to(device, non_blocking=pin)
            loss_t = step_fn(x)
            trained_tokens_this_run += tokens_per_step
            loss_acc = loss_t if loss_acc is None else loss_acc + loss_t
            n_acc += 1
            done = step + 1
            if done % 10 == 0 or done == c["steps"]:
                loss_val = float(loss_t)  # one device sync per 10 steps, not per step
                now = time.perf_counter()
                tps = trained_tokens_this_run / max(now - t0 - t_side, 1e-9)
                flog.write(json.dumps({"step": done, "loss": round(float(loss_acc) / n_acc, 5), "lr": lr_at(step, c),
                                       "tokens_seen": done * tokens_per_step, "tokens_per_second": round(tps)}) + "\n")
                flog.flush()
                loss_acc, n_acc = None, 0
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                if bar.disable and now - t_last > 30:
                    log(f"  {out_dir.name}: step {done}/{c['steps']} loss {loss_val:.3f} {tps:,.0f} tok/s")
                    t_last = now
            if on_point and (done % c["eval_every"] == 0 or done == c["steps"]):
                ts = time.perf_counter()
                point(done, decayed=done == c["steps"])
                t_side += time.perf_counter() - ts
            if done % c["checkpoint_every"] == 0 or done % c["eval_every"] == 0 or done == c["steps"]:
                _save_checkpoint(ckpt, model, opt, done)
    elapsed = time.perf_counter() - t0
    train_s = max(elapsed - t_side, 1e-9)
    tps = trained_tokens_this_run / train_s
    achieved = tps * fpt
    result = {"steps": c["steps"], "tokens_seen": c["steps"] * tokens_per_step,
              "epochs": round(batches.epochs(c["steps"]), 3), "tokens_per_second": round(tps),
              "seconds_training": round(train_s, 2), "seconds_points_and_branches": round(t_side, 2),
              "final_loss": round(float(loss_val), 5), "device": device.type,
              "bf16": bool(c["bf16"]), "compile": bool(c["compile"]), "threads": c["threads"],
              "flops_per_token": fpt, "achieved_flops": round(achieved),
              "mfu": round(achieved / peak["flops"], 6) if peak else None,
              "resumed_at": start or None}
    atomic_write_json(done_path, result)
    log(f"  {out_dir.name}: done, {result['tokens_seen']:,} tokens ({result['epochs']} epochs) at {tps:,.0f} "
        f"training tok/s on {_device_name(device)} ({'bf16' if c['bf16'] else 'fp32'}"
        f"{', compiled' if c['compile'] else ''}): {achieved / 1e9:,.2f} GFLOP/s"
        + (f", MFU {100 * achieved / peak['flops']:.1f}% of {peak['flops'] / 1e9:,.0f} GFLOP/s" if peak else "")
        + f" ({t_side:.1f} s of points and cool-down branches not counted)")
    return TrainResult(out_dir, result["steps"], result["tokens_seen"], result["epochs"], tps, result["final_loss"],
                       _read_jsonl(out_dir / "points.jsonl"))


def _device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"


def _cooldown_branch(model, opt, step_fn, batches, c, start: int, end: int, device, point) -> None:
    """Train a copy of the trunk from ``start`` to ``end`` with the learning rate decaying to its floor, hand it
    over as a point (a decayed model at budget ``end``), then put the trunk back as it was."""
    trunk_model = copy.deepcopy(model.state_dict())
    trunk_opt = copy.deepcopy(opt.state_dict())
    for step in range(start, end):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c, end=end)
        step_fn(batches.get(step).to(device))
    point(end, decayed=True, branch_from=start)
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
    if device.type == "cuda":  # tensor cores: bf16 autocast where supported, never timed against fp32
        bf16_opts = [info["cuda_bf16"]] if c["bf16"] == "auto" else bf16_opts
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
            fns[key] = make_step(model, make_optimizer(model, c), {**c, "bf16": bf16, "compile": comp}, device)
            t = time.perf_counter()
            for _ in range(2):  # warm-up (and compilation)
                float(fns[key](x))
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
            float(fn(x))
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


def make_step(model, opt, c: dict, device):
    """One optimiser step on a batch of ``batch_size`` sequences, as ``micro_batch_size`` gradient-accumulation
    pieces when set (each piece's loss weighted by its share, so the step equals the whole batch's); returns the
    loss as a tensor (no device sync)."""
    autocast = bool(c["bf16"])
    micro = c.get("micro_batch_size") or None

    def step(x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        parts = [x] if not micro or micro >= n else list(torch.split(x, micro))
        total = None
        for xi in parts:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=xi[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), xi[:, 1:].reshape(-1))
            if len(parts) > 1:
                loss = loss * (xi.size(0) / n)
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if c["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

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
