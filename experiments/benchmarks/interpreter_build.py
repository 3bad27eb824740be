"""Which build of winnow's FineWeb chain runs faster: the same web pages under two interpreters, or under one
interpreter with two environments.

    PYTHONPATH=. .venv/bin/python -m experiments.benchmarks.interpreter_build \\
        .venv/bin/python /tmp/debvenv/bin/python --out experiments/results/interpreter_build.md
    PYTHONPATH=. .venv/bin/python -m experiments.benchmarks.interpreter_build \\
        .venv/bin/python .venv/bin/python --env-b WINNOW_COMPILED=0 --out experiments/results/compiled_kernel.md

winnow is Python on top of NumPy and C extensions, so the interpreter's own build moves every CPU figure:
a CPython whose executable runs libpython from a shared library without profile-guided optimisation (pyenv's
default build) against a static, optimised one (Debian's ``/usr/bin/python3``). Each interpreter needs an
environment with winnow installed (``python -m venv ENV && ENV/bin/pip install -e .``; the chain itself needs
only NumPy, regex, pyarrow, PyYAML and the ingest packages). ``--env-a``/``--env-b`` set variables for one side
only: ``WINNOW_COMPILED=0`` times the chunk table's Python loops against the compiled ones
(``filters/chunk_kernel.c``). Each round times the chain in a fresh single-threaded process per side, in CPU
seconds, alternating which goes first (the measurement of ``heuristics_conformance --time-side``); the figure
is the median of the per-round ratios, because this VM's speed drifts by a third over tens of minutes and a
ratio within a round cancels most of that.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from experiments.benchmarks import emit
from experiments.benchmarks.heuristics_conformance import interpreter, load_documents, timed_side
from pipeline.errors import UsageError
from pipeline.provenance import git_state

ROOT = Path(__file__).resolve().parents[2]


def _check_can_run_the_chain(python: str) -> None:
    """Fail before any timing, in one line, when ``python`` cannot run or has no winnow with its filters."""
    probe = "from experiments.benchmarks.heuristics_conformance import winnow_recipe; winnow_recipe()"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    except OSError as e:
        raise UsageError(f"interpreter {python}: {e.strerror}") from None
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"interpreter {python} cannot run winnow's FineWeb chain ({last}); install winnow in its "
                         f"environment: {python} -m pip install -e .")


def _variables(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


@contextmanager
def _environment(variables: dict[str, str]):
    """``variables`` set in this process's environment (which the timed child process inherits), then restored."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pythons", nargs=2, metavar="PYTHON", help="the two interpreters (each with winnow installed)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--per-source", type=int, default=1000, help="web pages to time (default 1000)")
    p.add_argument("--env-a", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for side A only (repeatable)")
    p.add_argument("--env-b", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for side B only (repeatable), e.g. WINNOW_COMPILED=0")
    p.add_argument("--out", type=Path, help="write the Markdown report here")
    args = p.parse_args(argv)
    a, b = args.pythons
    env = {"A": _variables(args.env_a, "--env-a"), "B": _variables(args.env_b, "--env-b")}
    if a == b and env["A"] == env["B"]:
        raise UsageError("sides A and B are the same interpreter with the same environment: nothing to compare")
    for python in (a, b):
        _check_can_run_the_chain(python)
    texts = [t for source, t in load_documents(args.per_source) if source == "web pages"]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    runs = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "web.jsonl"
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        for r in range(args.rounds):
            for side, python in ((("A", a), ("B", b)) if r % 2 == 0 else (("B", b), ("A", a))):
                print(f"round {r + 1}, {side}: {python} ...", file=sys.stderr)
                with _environment(env[side]):
                    res = timed_side(python, "winnow", path, False)
                runs.append({"round": r + 1, **res, "ab": side, "python": python})
    cpu = {side: {run["round"]: run["cpu_s"] for run in runs if run["ab"] == side} for side in ("A", "B")}
    ratios = [cpu["B"][k] / cpu["A"][k] for k in sorted(cpu["A"])]
    git = git_state()
    commit = f"{(git['commit'] or 'unknown')[:7]}{' (uncommitted changes)' if git['dirty'] else ''}"
    def described(side: str, python: str) -> str:
        variables = " ".join(f"{k}={v}" for k, v in env[side].items())
        return f"{interpreter(python)}" + (f", with {variables}" if variables else "")

    out = ["# Two builds of winnow's FineWeb chain, A against B", "",
           f"Command: `PYTHONPATH=. {sys.executable} -m experiments.benchmarks.interpreter_build {a} {b}"
           + "".join(f" --env-a {k}={v}" for k, v in env["A"].items())
           + "".join(f" --env-b {k}={v}" for k, v in env["B"].items())
           + (f" --rounds {args.rounds}" if args.rounds != 10 else "")
           + (f" --per-source {args.per_source}" if args.per_source != 1000 else "")
           + (f" --out {args.out}" if args.out else "") + "`", "",
           f"Code: winnow {commit}; {len(texts):,} web pages (resiliparse's text), {mb:.1f} MB; run took "
           f"{(time.time() - t0) / 60:.0f} min.", "",
           f"- A: {described('A', a)}", f"- B: {described('B', b)}", "",
           "| round | A CPU s | B CPU s | B / A | A MB/s per core | B MB/s per core |",
           "|---:|---:|---:|---:|---:|---:|"]
    for k, ratio in zip(sorted(cpu["A"]), ratios):
        out.append(f"| {k} | {cpu['A'][k]:.2f} | {cpu['B'][k]:.2f} | {ratio:.3f} | {mb / cpu['A'][k]:.2f} | "
                   f"{mb / cpu['B'][k]:.2f} |")
    med_a, med_b = statistics.median(cpu["A"].values()), statistics.median(cpu["B"].values())
    out += ["", f"Median of the per-round ratios B / A: {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-"
                f"{max(ratios):.3f}); median MB/s per core: A {mb / med_a:.2f}, B {mb / med_b:.2f}.", "",
            "## Runs", "", "```"] + [json.dumps(run) for run in runs] + ["```", ""]
    emit("\n".join(out), args.out)
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="interpreter_build"))
