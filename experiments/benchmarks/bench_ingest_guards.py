"""What ingest's hostile-input guards cost on real pages, and what they save on hostile ones.

1. HTML nesting guard (``check_html_nesting``) vs resiliparse main-content extraction on the same
   real pages (``webpages-html.jsonl.gz``), best of ``--rounds`` alternating rounds (the machine is
   shared); also how many pages the tag scan sends to the exact tree walk.
2. The same guard vs extraction on ``'<div>' * depth`` for a few depths: extraction grows with the
   square of the depth, the guard refuses in linear time.
3. ``bounded_lines`` on a small gzip of many newlines (blank lines skipped in bulk) vs a plain
   ``readline`` loop over the same stream (what one Python step per line costs).

    .venv/bin/python -m experiments.benchmarks.bench_ingest_guards [--pages 400] [--rounds 3]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import time
from pathlib import Path

from pipeline.ingest import (
    DEFAULT_LIMITS,
    TooDeep,
    bounded_lines,
    check_html_nesting,
    extract_text,
    html_nesting_bound,
)

SHARED = Path(os.environ.get("WINNOW_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
DEPTH, DEPTH_SUM = DEFAULT_LIMITS["max_html_depth"], DEFAULT_LIMITS["max_html_depth_sum"]


def _timed(fn, items) -> float:
    t0 = time.perf_counter()
    for x in items:
        try:
            fn(x)
        except TooDeep:
            pass
    return time.perf_counter() - t0


def real_pages(n: int, rounds: int) -> None:
    src = SHARED / "raw" / "webpages-html.jsonl.gz"
    with gzip.open(src, "rt") as f:
        pages = [json.loads(line)["html"] for _, line in zip(range(n), f)]
    guard = lambda h: check_html_nesting(h, DEPTH, DEPTH_SUM)  # noqa: E731
    extract = lambda h: extract_text(h, "resiliparse")  # noqa: E731
    best_g = best_e = float("inf")
    for _ in range(rounds):
        best_g = min(best_g, _timed(guard, pages))
        best_e = min(best_e, _timed(extract, pages))
    exact = sum(1 for h in pages if (lambda d, s: d > DEPTH or s > DEPTH_SUM)(*html_nesting_bound(h)))
    mb = sum(map(len, pages)) / 1e6
    print(f"real pages: {len(pages)} pages, {mb:.1f}M chars: guard {best_g:.2f}s, extraction {best_e:.2f}s, "
          f"guard/extraction {best_g / best_e:.2f}; {exact} pages took the exact tree walk")


def deep_divs(depths: list[int]) -> None:
    for d in depths:
        html = "<div>" * d + "text"
        g = _timed(lambda h: check_html_nesting(h, DEPTH, DEPTH_SUM), [html])
        e = _timed(lambda h: extract_text(h, "resiliparse"), [html])
        print(f"'<div>' * {d:>6,}: guard {g:.3f}s, extraction {e:.3f}s")


def blank_lines(n: int) -> None:
    blob = gzip.compress(b"\n" * n, 9)
    t0 = time.perf_counter()
    counts: dict = {}
    for _ in bounded_lines(gzip.GzipFile(fileobj=io.BytesIO(blob)), 1 << 20, counts):
        pass
    t_new = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = gzip.GzipFile(fileobj=io.BytesIO(blob))
    while f.readline(1 << 20):
        pass
    t_lines = time.perf_counter() - t0
    print(f"{n:,} newlines ({len(blob):,} bytes gzipped): bounded_lines {t_new:.2f}s "
          f"(counted {counts.get('blank_lines', 0):,}), readline loop {t_lines:.2f}s, ratio {t_lines / t_new:.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--newlines", type=int, default=20_000_000)
    args = ap.parse_args()
    if (SHARED / "raw").exists():
        real_pages(args.pages, args.rounds)
    deep_divs([1_000, 4_000, 8_000])
    blank_lines(args.newlines)


if __name__ == "__main__":
    main()
