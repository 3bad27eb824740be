"""Training and evaluation speed of the demo and real-data models on this CPU: tokens/s, model FLOP/s, MFU, where a
training step's time goes, the evaluation's share of a run, and two candidate speed-ups measured before keeping.

    python -m experiments.benchmarks.bench_train            # -> experiments/results/train_speed.md (+ .json)

Every figure is CPU seconds of a fresh single-threaded process (one per model and round, rounds interleaved,
median of 3), so the machine's load barely moves it; the load average is recorded beside it. MFU is model FLOPs
(experiments.train.flops_per_token) per CPU second over the best 1-thread fp32 matmul rate measured in the same
process. Evaluation is timed on the configs' real evaluation volumes (the neutral domains and BLiMP from
../shared/data, cut as the configs cut them), and the share of a run is evaluation over (training steps + cool-down
branch steps + evaluation) for the config's schedule and evaluation points.

Compared in the same processes:
- evaluation: winnow's scorer (length-sorted, token-budget batches, no attention mask on right padding, fused
  cross-entropy) against the previous one (32 sequences a batch with an attention mask, full log-softmax);
- several seeds of one arm as one batched model (torch.func.vmap over stacked parameters) against the same
  seeds one after another: a speed-up for small models is kept only if measured.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WINNOW_SHARED_DATA", ROOT.parent / "shared" / "data"))

CONFIGS = {"demo": "experiments/configs/demo.yaml", "real": "experiments/configs/ablation_real.yaml"}


def model_spec(name: str) -> dict:
    """What the benchmark needs from a config: its model, batch, schedule, evaluation points and volumes."""
    from experiments.settings import experiment_settings
    from pipeline.config import load_config

    s = experiment_settings(load_config(ROOT / CONFIGS[name]))
    t = s["train"]
    docs = sum(es["max_docs"] * (9 if es["kind"] == "domains" else 1) for es in s["eval_sets"])
    blimp = next(((x.get("per_paradigm"), x.get("final_per_paradigm")) for x in s["tasks"]
                  if x["task"] == "minimal_pairs"), None)
    return {"model": s["model"], "vocab": s["tokenizer"]["vocab_size"], "batch": t["batch_size"], "steps": t["steps"],
            "decay_budgets": t["decay_budgets"], "decay_frac": t["decay_frac"], "eval_every": t["eval_every"],
            "eval": {"docs": docs, "max_chars": s["eval_max_chars"]}, "blimp": blimp}


def _texts(n: int, max_chars: int) -> list[str]:
    out = []
    files = sorted((SHARED / "eval" / "domains").glob("*.jsonl.gz"))
    per = max(1, -(-n // max(len(files), 1)))
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per:
                    break
                out.append(json.loads(line)["text"][:max_chars])
    return out[:n]


def _old_sequence_logprobs(model, seqs, device, batch_size=32):
    """The scorer before this change (kept here as the reference the new one is measured against)."""
    import numpy as np
    import torch

    out = np.zeros(len(seqs))
    order = np.argsort([len(s) for s in seqs])
    with torch.no_grad():
        for b in range(0, len(seqs), batch_size):
            idx = order[b:b + batch_size]
            n = max(len(seqs[i]) for i in idx)
            x = torch.zeros((len(idx), n), dtype=torch.long)
            mask = torch.zeros((len(idx), n), dtype=torch.bool)
            for r, i in enumerate(idx):
                x[r, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[r, : len(seqs[i])] = True
            logits = model(input_ids=x, attention_mask=mask.long()).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            lp = logp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
            out[idx] = lp.sum(dim=1).double().numpy()
    return out


def one_process(name: str, steps: int) -> dict:
    """Everything measured for one model, in this (fresh, single-threaded) process."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from experiments.evaluate import continuation_logprobs
    from experiments.tasks import MinimalPairs, TaskContext
    from experiments.train import (Batches, make_optimizer, build_model, count_params, device_peak_flops,
                                   flops_per_token)

    torch.set_num_threads(1)
    spec = model_spec(name)
    mc, V, B = spec["model"], spec["vocab"], spec["batch"]
    cpu = time.process_time
    peak = device_peak_flops("cpu", False, 1, clock=time.process_time)  # CPU seconds, as everything here
    res: dict = {"model": name, "peak_gflops": peak["flops"] / 1e9}
    # --- a training step, by part
    model = build_model(mc, V, 0)
    params = count_params(model)
    fpt = flops_per_token(mc, V, params)
    c = {"weight_decay": 0.1, "lr": 3e-3, "beta2": 0.95}
    opt = make_optimizer(model, c)
    tokens = np.random.default_rng(0).integers(0, V, 200_000).astype(np.uint16)
    batches = Batches(tokens, mc["context"], B, 0)
    parts = {"data": 0.0, "forward+loss": 0.0, "backward": 0.0, "clip+optimizer": 0.0}
    for step in range(steps + 3):
        t0 = cpu()
        x = batches.get(step)
        t1 = cpu()
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), x[:, 1:].reshape(-1))
        t2 = cpu()
        loss.backward()
        t3 = cpu()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = cpu()
        if step >= 3:  # warm-up steps excluded
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[k] += dt
    step_s = sum(parts.values()) / steps
    tps = B * mc["context"] / step_s
    res.update(params=params, flops_per_token=fpt, step_cpu_s=step_s, tokens_per_cpu_s=tps,
               gflops=tps * fpt / 1e9, mfu=tps * fpt / peak["flops"],
               parts={k: v / steps / step_s for k, v in parts.items()})
    # --- evaluation at the config's volume, new scorer and old
    texts = _texts(spec["eval"]["docs"], spec["eval"]["max_chars"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=V, special_tokens=["<|endoftext|>"],
                                                       show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    T = mc["context"]
    windows = []
    for t in texts:
        ids = [0] + tok.encode(t).ids
        windows += [ids[s:s + T + 1] for s in range(0, len(ids) - 1, T)]
    seqs_curve, seqs_final = list(windows), list(windows)
    if spec["blimp"] and (SHARED / "eval" / "blimp.jsonl.gz").exists():
        for per, target in zip(spec["blimp"], ("curve", "final")):
            task = MinimalPairs("blimp", {"path": str(SHARED / "eval" / "blimp.jsonl.gz"), "per_paradigm": per,
                                          "final_per_paradigm": per}, TaskContext(eval_sets={}))
            (seqs_curve if target == "curve" else seqs_final).extend(task.prepare(tok, T, final=True)["seqs"])
    model.eval()
    dev = torch.device("cpu")
    timings = {}
    for label, fn in (("new", lambda s: continuation_logprobs(model, s, 1, dev)),
                      ("old", lambda s: _old_sequence_logprobs(model, s, dev))):
        t = cpu()
        a = fn(seqs_curve)
        mid = cpu()
        fn(seqs_final)
        timings[label] = {"curve_point_s": mid - t, "final_point_s": cpu() - mid, "checksum": float(np.sum(a))}
    res["eval"] = {"windows": len(windows), "sequences_curve": len(seqs_curve), "sequences_final": len(seqs_final),
                   **timings, "max_abs_diff_nats": float(np.max(np.abs(
                       continuation_logprobs(model, seqs_curve, 1, dev) - _old_sequence_logprobs(model, seqs_curve, dev))))}
    # --- the run's composition under the config's schedule
    n_steps = spec["steps"]
    branch_steps = sum(max(1, round(spec["decay_frac"] * round(f * n_steps))) for f in spec["decay_budgets"])
    trunk_points = len([s for s in range(spec["eval_every"], n_steps + 1, spec["eval_every"])])
    curve_points = len(spec["decay_budgets"]) + trunk_points - 1
    for label in ("new", "old"):
        ev = curve_points * timings[label]["curve_point_s"] + timings[label]["final_point_s"]
        train_s = (n_steps + branch_steps) * step_s
        res["eval"][label]["run_eval_s"] = ev
        res["eval"][label]["share_of_run"] = ev / (ev + train_s)
    res["run"] = {"steps": n_steps, "branch_steps": branch_steps, "points": curve_points + 1}
    # --- several seeds as one batched model (vmap over stacked parameters) vs one after another
    res["batched_seeds"] = _batched_seeds(mc, V, B, steps=max(5, steps // 4))
    return res


def _batched_seeds(mc: dict, V: int, B: int, k: int = 3, steps: int = 5) -> dict:
    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    from experiments.train import build_model

    cpu = time.process_time
    ms = [build_model(mc, V, s) for s in range(k)]
    x = torch.randint(0, V, (k, B, mc["context"] + 1), generator=torch.Generator().manual_seed(0))

    def loss_of(m, xb):
        logits = m(input_ids=xb[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), xb[:, 1:].reshape(-1))

    t = cpu()
    for _ in range(steps):
        for i, m in enumerate(ms):
            loss_of(m, x[i]).backward()
            m.zero_grad(set_to_none=True)
    seq = (cpu() - t) / steps
    try:
        params, buffers = stack_module_state(ms)
        base = build_model(mc, V, 0).to("meta")

        def f(p, b, xb):
            logits = functional_call(base, (p, b), (xb[:, :-1],)).logits
            return torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), xb[:, 1:].reshape(-1))

        g = vmap(grad(f), in_dims=(0, 0, 0))
        g(params, buffers, x)  # warm-up
        t = cpu()
        for _ in range(steps):
            g(params, buffers, x)
        bat = (cpu() - t) / steps
        return {"seeds": k, "sequential_fwd_bwd_s": seq, "batched_fwd_bwd_s": bat, "speedup": seq / bat}
    except Exception as e:  # noqa: BLE001 -- recorded: the batched model does not run under this stack
        return {"seeds": k, "sequential_fwd_bwd_s": seq, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="training steps timed per process")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "train_speed.md"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--rewrite", action="store_true", help="rewrite the table from the .json beside --out (no measuring)")
    a = p.parse_args(argv)
    if a.rewrite:
        data = json.loads(Path(a.out).with_suffix(".json").read_text())
        write(data["results"], data["load"], Path(a.out), data.get("date"))
        return 0
    if a.one:
        print(json.dumps(one_process(a.one, a.steps)))
        return 0
    results: dict[str, list[dict]] = {m: [] for m in CONFIGS}
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for m in CONFIGS:  # interleaved: a change in load hits both alike
            out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.bench_train", "--one", m,
                                  "--steps", str(a.steps)], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode:
                raise SystemExit(out.stderr[-2000:])
            results[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {m}: {results[m][-1]['tokens_per_cpu_s']:,.0f} tokens per CPU second", file=sys.stderr)
        load.append(os.getloadavg()[0])
    write(results, load, Path(a.out))
    return 0


def _med(rs: list[dict], *path) -> float:
    vals = []
    for r in rs:
        v = r
        for k in path:
            v = v[k]
        vals.append(v)
    return statistics.median(vals)


def write(results: dict[str, list[dict]], load: list[float], out: Path, date: str | None = None) -> None:
    date = date or time.strftime("%Y-%m-%d")
    L = ["# Training and evaluation speed on CPU (demo and real-data models)", "",
         f"`python -m experiments.benchmarks.bench_train` ({date}; {len(next(iter(results.values())))} "
         f"rounds, fresh single-threaded processes, rounds interleaved, medians; CPU seconds; load average "
         f"{min(load):.1f}-{max(load):.1f} during the measurement).", "",
         "| model | non-embedding params | tokens / CPU s | model GFLOP / CPU s | 1-thread fp32 matmul peak (GFLOP/s) | MFU |",
         "|---|---:|---:|---:|---:|---:|"]
    for m, rs in results.items():
        spec = model_spec(m)
        L.append(f"| {m} ({spec['model']['d_model']}d x {spec['model']['n_layers']}, vocab {spec['vocab']}) | "
                 f"{rs[0]['params']['non_embedding']:,} | {_med(rs, 'tokens_per_cpu_s'):,.0f} | {_med(rs, 'gflops'):.2f} | "
                 f"{_med(rs, 'peak_gflops'):.1f} | {100 * _med(rs, 'mfu'):.1f}% |")
    L += ["", "Where a training step's CPU time goes:", "", "| model | " + " | ".join(next(iter(results.values()))[0]["parts"]) + " |",
          "|---|" + "---:|" * 4]
    for m, rs in results.items():
        L.append(f"| {m} | " + " | ".join(f"{100 * _med(rs, 'parts', k):.0f}%" for k in rs[0]["parts"]) + " |")
    L += ["", "Evaluation at the configs' volumes (per point; the final point scores more BLiMP pairs in the real "
          "config) and its share of a run (the config's training steps, cool-down branch steps and evaluation "
          "points), winnow's scorer against the previous one:", "",
          "| model | sequences per point (curve / final) | eval CPU s per point, new (old) | eval share of a run, new (old) | speed-up | max difference (nats) |",
          "|---|---:|---:|---:|---:|---:|"]
    for m, rs in results.items():
        e = rs[0]["eval"]
        new_s, old_s = _med(rs, "eval", "new", "run_eval_s"), _med(rs, "eval", "old", "run_eval_s")
        L.append(f"| {m} | {e['sequences_curve']:,} / {e['sequences_final']:,} | "
                 f"{_med(rs, 'eval', 'new', 'curve_point_s'):.2f} / {_med(rs, 'eval', 'new', 'final_point_s'):.2f} "
                 f"({_med(rs, 'eval', 'old', 'curve_point_s'):.2f} / {_med(rs, 'eval', 'old', 'final_point_s'):.2f}) | "
                 f"{100 * _med(rs, 'eval', 'new', 'share_of_run'):.0f}% ({100 * _med(rs, 'eval', 'old', 'share_of_run'):.0f}%) | "
                 f"{old_s / new_s:.2f}x | {max(r['eval']['max_abs_diff_nats'] for r in rs):.1e} |")
    L += ["", "Several seeds of one arm as one batched model (torch.func.vmap over stacked parameters), forward and "
          "backward of one step, against the same seeds one after another:", "",
          "| model | seeds | sequential CPU s | batched CPU s | speed-up |", "|---|---:|---:|---:|---|"]
    for m, rs in results.items():
        b = rs[0]["batched_seeds"]
        if "error" in b:
            L.append(f"| {m} | {b['seeds']} | {_med(rs, 'batched_seeds', 'sequential_fwd_bwd_s'):.3f} | – | "
                     f"does not run: {b['error']} |")
        else:
            L.append(f"| {m} | {b['seeds']} | {_med(rs, 'batched_seeds', 'sequential_fwd_bwd_s'):.3f} | "
                     f"{_med(rs, 'batched_seeds', 'batched_fwd_bwd_s'):.3f} | {_med(rs, 'batched_seeds', 'speedup'):.2f}x |")
    sp = [r["batched_seeds"].get("speedup") for rs in results.values() for r in rs if "speedup" in r["batched_seeds"]]
    L += ["", f"Not kept: {min(sp):.2f}-{max(sp):.2f}x per round on the forward and backward pass alone (the optimiser "
          "step and everything else excluded; an earlier single measurement under heavier load gave 0.8x), PyTorch has no batching rule for the CPU flash-attention backward (it falls back to a "
          "per-sample loop), and a batched model would need per-seed data order, gradient clipping, optimiser "
          "state and checkpoints: one run per seed stays one process. On a CPU the gain that counts is running "
          "several single-threaded runs side by side (`--workers`); a GPU keeps small models busy with a larger "
          "batch per step instead.", ""]
    out.write_text("\n".join(L))
    out.with_suffix(".json").write_text(json.dumps({"date": date, "load": load, "results": results}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="bench_train"))
