"""Run one part of `make demo` and record its wall time and CPU time (user + system, child processes included).

On a shared machine wall time grows with the load; CPU time barely does, and
on an idle machine wall time is at most about CPU time (less where a part uses
several cores). `make demo` prints both per part at the end:

    python -m experiments.benchmarks.timed_part --log runs/.demo-times "pipeline" -- winnow run CONFIG
    python -m experiments.benchmarks.timed_part --log runs/.demo-times --summary
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import time
from pathlib import Path


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def summary(log: Path) -> str:
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    width = max([len(r[0]) for r in rows] + [5])
    out = [f"  {'part':<{width}}  {'wall s':>8}  {'CPU s':>8}"]
    for label, wall, cpu, rc in rows:
        out.append(f"  {label:<{width}}  {float(wall):8.1f}  {float(cpu):8.1f}" + ("" if rc == "0" else f"  (exit {rc})"))
    if rows:
        out.append(f"  {'total':<{width}}  {sum(float(r[1]) for r in rows):8.1f}  {sum(float(r[2]) for r in rows):8.1f}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, help="file the part's line is appended to")
    ap.add_argument("--summary", action="store_true", help="print the table of the parts logged so far")
    ap.add_argument("label", nargs="?")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = ap.parse_args()
    log = Path(args.log)
    if args.summary:
        print(summary(log))
        return 0
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.label or not cmd:
        ap.error("give a LABEL and -- COMMAND")
    t0, c0 = time.perf_counter(), _children_cpu()
    rc = subprocess.call(cmd)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"{args.label}\t{wall:.2f}\t{cpu:.2f}\t{rc}\n")
    return rc


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="timed_part"))
