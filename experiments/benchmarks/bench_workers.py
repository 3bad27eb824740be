"""Wall time and CPU time of an ablation grid with 1 and N local workers, and whether every run's values are
identical across them.

    python -m experiments.benchmarks.bench_workers experiments/configs/ablation_real.yaml --workers 1 2 \\
        --out experiments/results/workers_real.md

Each worker count runs the whole experiment (tokenizer, subsets, runs, evaluations; the pipeline must already be
up to date: `winnow run CONFIG` first) into its own fresh folder under ``--scratch``, in a fresh `winnow ablation`
process; the counts are interleaved over ``--rounds`` rounds. Reported: wall seconds, CPU seconds of the process
and its children (user + system), the load average before and after, the speed-up of each count over the first,
and whether every run's final per-item results and evaluation curve are byte-identical to the first count's.
A wall-time speed-up needs an idle machine (on a shared one the CPU seconds are the figure to trust).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_once(config: str, workers: int, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "experiments.cli", "ablation", config, "--workers", str(workers),
                        "--out-dir", str(out), "--no-report"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"workers {workers}: exit {p.returncode}\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"workers": workers, "wall_s": wall, "cpu_s": cpu, "load_before": load0, "load_after": os.getloadavg()[0]}


def run_values(out: Path) -> dict[str, bytes]:
    return {d.name: (d / "final_items.npz").read_bytes() + (d / "evals.jsonl").read_bytes()
            for d in sorted((out / "runs").iterdir())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--scratch", default=str(ROOT / "runs" / "bench_workers"))
    p.add_argument("--out", help="write the table here too")
    a = p.parse_args(argv)
    rows, same = [], {}
    for r in range(a.rounds):
        ref = None
        for w in a.workers:
            out = Path(a.scratch) / f"w{w}"
            row = run_once(a.config, w, out)
            vals = run_values(out)
            ref = ref or vals
            same[w] = same.get(w, True) and vals == ref
            rows.append({**row, "round": r + 1, "runs": len(vals)})
            print(f"round {r + 1}, {w} worker(s): {row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} CPU s "
                  f"(load {row['load_before']:.1f} -> {row['load_after']:.1f})", file=sys.stderr)
    base = min(x["wall_s"] for x in rows if x["workers"] == a.workers[0])
    L = [f"# `winnow ablation {a.config}` with {', '.join(map(str, a.workers))} local workers", "",
         f"`python -m experiments.benchmarks.bench_workers {a.config} --workers {' '.join(map(str, a.workers))} "
         f"--rounds {a.rounds}` ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs)", "",
         "| round | workers | runs | wall s | CPU s | load before -> after | wall speed-up over the first | per-run values identical |",
         "|---:|---:|---:|---:|---:|---|---:|---|"]
    for x in rows:
        L.append(f"| {x['round']} | {x['workers']} | {x['runs']} | {x['wall_s']:.0f} | {x['cpu_s']:.0f} | "
                 f"{x['load_before']:.1f} -> {x['load_after']:.1f} | {base / x['wall_s']:.2f}x | "
                 f"{'yes' if same[x['workers']] else 'NO'} |")
    text = "\n".join(L) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="bench_workers"))
