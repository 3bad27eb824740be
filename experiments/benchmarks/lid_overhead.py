"""What winnow's language-ID wrapper costs over calling heliport directly, in CPU seconds.

    PYTHONPATH=. .venv/bin/python -m experiments.benchmarks.lid_overhead --out experiments/results/lid_overhead.md

Two sides, each in a fresh single-threaded process, over ``--rounds`` rounds
that alternate which goes first: ``heliport`` calls
``Identifier.identify_with_score`` on each text, as a user of the package
would, on the first 2,000 characters (the part winnow classifies, cut before the clock starts);
``winnow`` calls ``LanguageID.score_batch`` (the filter's scoring: the
first 2,000 characters on one line, heliport's label mapped to an ISO code, its
margin to a calibrated score) on the same texts, already wrapped as documents
the way a filter stage hands them over. The figure is CPU seconds of that loop
(``time.process_time``); wall time and the load average are recorded beside it.
Texts: the Leipzig sentences of ``../shared/data/lid`` (short sentences, where
per-text overhead shows most) and real web pages.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ROOT = Path(__file__).resolve().parents[2]


def write_sets(tmp: Path, sentences: int, pages: int) -> dict[str, Path]:
    from pipeline.ingest.html import extract_text

    out = {}
    rows = []
    with gzip.open(SHARED / "lid" / "lingua-leipzig.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["tier"] == "sentences":
                rows.append(r["text"])
                if len(rows) >= sentences:
                    break
    out["Leipzig sentences"] = rows
    rows = []
    with gzip.open(SHARED / "raw" / "webpages-html.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            text = extract_text(json.loads(line)["html"], "resiliparse")
            if text.strip():
                rows.append(text)
            if len(rows) >= pages:
                break
    out["web pages (resiliparse text)"] = rows
    paths = {}
    for i, (name, texts) in enumerate(out.items()):
        paths[name] = tmp / f"set{i}.jsonl"
        paths[name].write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                               encoding="utf-8")
    return paths


def time_side(side: str, path: Path) -> dict:
    texts = [json.loads(line)["text"] for line in path.open(encoding="utf-8")]
    if side == "heliport":
        import heliport

        identify = heliport.Identifier().identify_with_score
        texts = [t[:2000] for t in texts]  # the same characters winnow classifies (its default max_chars)

        def run():
            for t in texts:
                identify(t)
    else:
        from filters.langid import LanguageID
        from pipeline.document import Document

        f = LanguageID(languages=["en"])
        f.ensure_setup()
        docs = [Document(str(i), t) for i, t in enumerate(texts)]

        def run():
            f.score_batch(docs)
    load = os.getloadavg()[0]
    c0, w0 = time.process_time(), time.perf_counter()
    run()
    return {"side": side, "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0, "load": load,
            "texts": len(texts)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=75_000, help="Leipzig sentences (default: all 75,000)")
    p.add_argument("--pages", type=int, default=1000, help="web pages (default 1,000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    p.add_argument("--time-side", nargs=2, metavar=("SIDE", "TEXTS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time_side:
        print(json.dumps(time_side(args.time_side[0], Path(args.time_side[1]))))
        return 0

    from experiments.benchmarks import emit

    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = write_sets(Path(tmp), args.sentences, args.pages)
        for name, path in sets.items():
            for r in range(args.rounds):
                for side in (("heliport", "winnow") if r % 2 == 0 else ("winnow", "heliport")):
                    print(f"{name}, round {r + 1}, {side} ...", file=sys.stderr)
                    out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.lid_overhead", "--time-side",
                                          side, str(path)], env=env, cwd=ROOT, check=True, capture_output=True,
                                         text=True)
                    results.append({"set": name, "round": r + 1, **json.loads(out.stdout.strip().splitlines()[-1])})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    from importlib.metadata import version

    cmd = "PYTHONPATH=. .venv/bin/python -m experiments.benchmarks.lid_overhead" + (
        f" --rounds {args.rounds}" if args.rounds != 3 else "") + (f" --out {args.out}" if args.out else "")
    lines = ["# Language ID: the wrapper's cost over heliport's own call", "", f"Command: `{cmd}`", "",
             f"Code: winnow {commit.stdout.strip()}{' (uncommitted changes)' if dirty else ''}, heliport "
             f"{version('heliport')}; {os.cpu_count()} cores shared with other jobs (CPU seconds barely feel them; "
             "wall time and load are beside).", "",
             "| texts | round | side | CPU s | texts per CPU second | wall s | load |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['set']} ({r['texts']:,}) | {r['round']} | {r['side']} | {r['cpu_s']:.2f} | "
                     f"{r['texts'] / r['cpu_s']:,.0f} | {r['wall_s']:.2f} | {r['load']:.1f} |")
    lines += ["", "| texts | heliport texts/CPU s (median) | winnow texts/CPU s (median) | winnow / heliport CPU "
              "seconds (median of rounds; target <= 1.20) |", "|---|---:|---:|---:|"]
    for name in dict.fromkeys(r["set"] for r in results):
        h = {r["round"]: r for r in results if r["set"] == name and r["side"] == "heliport"}
        w = {r["round"]: r for r in results if r["set"] == name and r["side"] == "winnow"}
        n = next(iter(h.values()))["texts"]
        lines.append(f"| {name} | {median(n / x['cpu_s'] for x in h.values()):,.0f} | "
                     f"{median(n / x['cpu_s'] for x in w.values()):,.0f} | "
                     f"{median(w[k]['cpu_s'] / h[k]['cpu_s'] for k in h):.2f}x |")
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="lid_overhead"))
