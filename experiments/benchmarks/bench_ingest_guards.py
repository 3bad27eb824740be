"""What ingest's hostile-input guards cost on real pages, and how long each hostile reproducer takes.

1. The HTML guard (``check_html``: one tag scan for nesting, attributes per element and option
   elements) against resiliparse main-content extraction on the same real pages
   (``webpages-html.jsonl.gz``): CPU seconds, each side in a fresh single-threaded process, interleaved
   over ``--rounds`` rounds; and how many pages took the exact tree walk.
2. Every hostile reproducer of issues 15 and 25 through ``html_to_text`` (what ingest does per page):
   CPU seconds and the outcome (refused with its reason, or extracted). Also, for the sizes where it
   finishes in seconds, the unguarded parse, to show the growth the guard stops.
3. Extraction time of 4M- and 1M-character plain pages with each extractor (the size caps), and a WARC
   header line of many megabytes with no newline (issue 25, item 13): seconds to refuse it.
4. ``bounded_lines`` on a small gzip of many newlines (blank lines skipped in bulk) vs a plain
   ``readline`` loop over the same stream.

    .venv/bin/python -m experiments.benchmarks.bench_ingest_guards [--pages 400] [--rounds 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.benchmarks import emit
from pipeline.ingest.html import TooComplex, TooDeep, html_scan, html_to_text
from pipeline.ingest.stage import DEFAULT_LIMITS
from pipeline.ingest.streams import bounded_lines

SHARED = Path(os.environ.get("WINNOW_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
LIMITS = {**DEFAULT_LIMITS, "extractor_meta": {}}


def _pages(n: int) -> list[str]:
    with gzip.open(SHARED / "raw" / "webpages-html.jsonl.gz", "rt") as f:
        return [json.loads(line)["html"] for _, line in zip(range(n), f)]


def _side(which: str, n: int) -> float:
    """CPU seconds of one side over the first ``n`` pages, in this (fresh) process."""
    from pipeline.ingest.html import check_html, extract_text

    pages = _pages(n)
    fn = (lambda h: check_html(h, LIMITS)) if which == "guard" else (lambda h: extract_text(h, "resiliparse"))
    t0 = time.process_time()
    for h in pages:
        try:
            fn(h)
        except (TooDeep, TooComplex):
            pass
    return time.process_time() - t0


def real_pages(n: int, rounds: int) -> str:
    times: dict[str, list[float]] = {"guard": [], "extraction": []}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(rounds):
        for side in times:  # interleaved: guard, extraction, guard, extraction, ...
            out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.bench_ingest_guards", "--side", side,
                                  "--pages", str(n)], capture_output=True, text=True, check=True, env=env)
            times[side].append(float(out.stdout.strip().splitlines()[-1]))
    pages = _pages(n)
    exact = sum(1 for h in pages if (lambda d, s: d > LIMITS["max_html_depth"] or s > LIMITS["max_html_depth_sum"])(
        *html_scan(h)))
    mb = sum(map(len, pages)) / 1e6
    g, e = min(times["guard"]), min(times["extraction"])
    rows = " | ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(times["guard"], times["extraction"]))
    return (f"real pages: {len(pages)} pages, {mb:.1f}M chars; CPU s per round (guard / extraction): {rows}; "
            f"best guard {g:.2f} s, extraction {e:.2f} s, guard/extraction {g / e:.2f}; "
            f"{exact} pages took the exact tree walk\n")


def _attrs(n: int) -> str:
    return "<html><body><div " + " ".join(f"a{i}=x" for i in range(n)) + ">hi</div></body></html>"


#: (name, page builder, sizes guarded, sizes also parsed unguarded)
CASES = [
    ("one element with N attributes", _attrs, [25_000, 50_000, 250_000], [5_000, 10_000, 20_000]),
    ("'<select>' + '<optgroup><option>' * N", lambda n: "<select>" + "<optgroup><option>" * n,
     [50_000, 200_000], [5_000, 10_000, 20_000]),
    ("'<div>' * N", lambda n: "<div>" * n + "text", [30_000, 200_000], [1_000, 4_000, 8_000]),
]


def hostile_pages() -> str:
    from resiliparse.parse.html import HTMLTree

    lines = ["| page | size | guarded: CPU s | outcome | unguarded parse: CPU s |", "|---|---|---|---|---|"]
    for name, build, guarded, unguarded in CASES:
        for n in unguarded:
            html = build(n)
            t0 = time.process_time()
            HTMLTree.parse(html)
            lines.append(f"| {name.replace('N', f'{n:,}')} | {len(html) / 1e6:.2f} MB | | | {time.process_time() - t0:.2f} |")
        for n in guarded:
            html = build(n)
            t0 = time.process_time()
            try:
                html_to_text(html, "resiliparse", LIMITS)
                outcome = "extracted"
            except (TooDeep, TooComplex) as e:
                outcome = f"{e.reason}: {e}"
            lines.append(f"| {name.replace('N', f'{n:,}')} | {len(html) / 1e6:.2f} MB | "
                         f"{time.process_time() - t0:.2f} | {outcome} | |")
    return "\n".join(lines) + "\n"


def page_sizes() -> str:
    """Extraction time of large plain pages by extractor, at 4M and 1M characters (why trafilatura gets 1M)."""
    from pipeline.ingest.html import extract_text

    table = "<table>" + "<tr><td>cell</td><td>another cell</td></tr>" * 100_000
    flat = "<html><body>" + "<p>A paragraph of plain words in a long page. </p>\n" * 90_000
    lines = ["| page | characters | resiliparse: CPU s | trafilatura: CPU s |", "|---|---|---|---|"]
    for name, page in (("table", table), ("flat paragraphs", flat)):
        for size in (4 << 20, 1 << 20):
            cells = []
            for extractor in ("resiliparse", "trafilatura"):
                t0 = time.process_time()
                extract_text(page[:size], extractor)
                cells.append(f"{time.process_time() - t0:.2f}")
            lines.append(f"| {name} | {size:,} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def warc_header_line(megabytes: list[int]) -> str:
    import tempfile

    from pipeline.ingest.readers.warc import WarcReader
    from pipeline.ingest.records import InputError

    out = []
    with tempfile.TemporaryDirectory() as d:
        for mb in megabytes:
            p = Path(d) / "long.warc"
            p.write_bytes(b"WARC/1.0\r\nWARC-Type: response\r\nX: " + b"a" * (mb << 20))
            t0 = time.process_time()
            try:
                list(WarcReader(str(p), {}, LIMITS).records())
                outcome = "read"
            except InputError as e:
                outcome = str(e).split(": ", 1)[1][:80]
            out.append(f"WARC header line of {mb} MB without a newline: {time.process_time() - t0:.2f} CPU s ({outcome})")
    return "\n".join(out) + "\n"


def blank_lines(n: int) -> str:
    blob = gzip.compress(b"\n" * n, 9)
    t0 = time.process_time()
    counts: dict = {}
    for _ in bounded_lines(gzip.GzipFile(fileobj=io.BytesIO(blob)), 1 << 20, counts):
        pass
    t_new = time.process_time() - t0
    t0 = time.process_time()
    f = gzip.GzipFile(fileobj=io.BytesIO(blob))
    while f.readline(1 << 20):
        pass
    t_lines = time.process_time() - t0
    return (f"{n:,} newlines ({len(blob):,} bytes gzipped): bounded_lines {t_new:.2f} CPU s "
            f"(counted {counts.get('blank_lines', 0):,}), readline loop {t_lines:.2f} CPU s, ratio {t_lines / t_new:.0f}x\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--newlines", type=int, default=20_000_000)
    ap.add_argument("--side", choices=["guard", "extraction"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.side:
        print(_side(args.side, args.pages))
        return
    text = f"# ingest guards (load average {os.getloadavg()[0]:.1f})\n\n"
    if (SHARED / "raw").exists():
        text += real_pages(args.pages, args.rounds) + "\n"
    text += hostile_pages() + "\n" + page_sizes() + "\n" + warc_header_line([8, 32, 64]) + "\n" + blank_lines(args.newlines)
    emit(text, args.out)


if __name__ == "__main__":
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="bench_ingest_guards"))
