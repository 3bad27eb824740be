"""How the whole pipeline's cost grows with the corpus: 10k, 100k and 1M synthetic-web documents.

For each size the synthetic web is generated (streamed, seeded, cached under
``--data``) and the demo pipeline's stages (experiments/configs/demo.yaml:
ingest, exact_dedup, minhash_dedup, langid, quality; only run_dir, inputs,
executor and workers changed, ``shard_docs`` set by ``--shard-docs``) run in a
fresh process and run folder with the local executor (1 and 2 workers) and Ray
(2 workers). A monitor in this process reads ``/proc`` of the run's process
tree every ``--poll`` seconds: peak RSS (VmHWM) of the driver, of the largest
worker and of the largest other process (Ray's raylet, GCS, ...), and the
largest RSS seen per stage. Per stage it records wall time, docs/s and text
M chars/s per core (rate / workers), bytes written under the stage folder,
and the SHA-256 of every kept and removed shard, so outputs of the executors
can be compared byte for byte.

Measurements accumulate in ``--json`` (one entry per size x executor x
workers; a rerun replaces its entries), and the report (``--out``) and the
log-log plot (``--plot``) are rendered from all of them, so the 1M point can be
measured later, on a quieter machine, with ``--sizes 1000000``.

    .venv/bin/python -m experiments.benchmarks.bench_scale [--sizes 10000 100000 1000000] [--runs local:1 local:2 ray:2]
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "experiments" / "configs" / "demo.yaml"
RESULTS = ROOT / "experiments" / "results"
STAGES = ["ingest", "exact_dedup", "minhash_dedup", "langid", "quality"]
SEED = 0
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# corpus and config


def corpus(data_root: Path, docs: int, workers: int) -> tuple[Path, float]:
    """The synthetic web of ``docs`` documents, generated once (a stamp marks a finished corpus)."""
    from experiments.synthetic_web import write_large_corpus

    out = data_root / f"web-{docs}-seed{SEED}"
    stamp = out / ".stamp.json"
    if stamp.exists():
        return out, json.loads(stamp.read_text())["seconds"]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    info = write_large_corpus(out, docs, SEED, workers=workers)
    seconds = time.perf_counter() - t0
    stamp.write_text(json.dumps({**info, "seconds": round(seconds, 1)}))
    return out, seconds


def config(run_dir: Path, data: Path, executor: str, workers: int, shard_docs: int) -> dict:
    """demo.yaml's stages with this run's folder, input and executor (no ablation section)."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    stages = raw["stages"]
    ingest = next(s for s in stages if s["name"] == "ingest")
    ingest["shard_docs"] = shard_docs
    ingest["inputs"] = [{**ingest["inputs"][0], "path": str(data / "web-*.jsonl.gz")}]
    return {"description": f"bench_scale: {raw.get('description', 'demo')}", "run_dir": str(run_dir),
            "seed": raw.get("seed", 0), "workers": workers, "executor": executor, "stages": stages}


# ---------------------------------------------------------------------------
# child: one pipeline run


def run_child(cfg_path: str) -> None:
    """One pipeline run; stage starts and the final timings go to stdout as JSON lines."""
    import resource

    from pipeline.config import load_config
    from pipeline.runner import Runner

    def event(**kw) -> None:
        print(json.dumps({"t": time.time(), **kw}), flush=True)

    def log(msg: str) -> None:
        if msg.startswith("["):
            event(log=msg, stage=msg[1:msg.index("]")])

    cfg = load_config(cfg_path)
    t0 = time.perf_counter()
    runner = Runner(cfg, progress=False, log=log)
    startup = time.perf_counter() - t0
    event(stage="_startup_done")
    runner.run()
    total = time.perf_counter() - t0
    event(done=True, startup_s=startup, total_s=total,
          driver_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          children_maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


# ---------------------------------------------------------------------------
# monitor: the run's process tree from /proc


def _ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                out[int(d)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def _status(pid: int) -> dict[str, float]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if cmd.startswith("ray::") or "default_worker.py" in cmd or "multiprocessing.spawn" in cmd \
            or "spawn_main" in cmd:
        return "worker"
    return "other"


class Monitor(threading.Thread):
    """Polls the process tree under ``root``: per-process peak RSS (VmHWM) and per-stage largest RSS."""

    def __init__(self, root: int, poll: float):
        super().__init__(daemon=True)
        self.root, self.poll = root, poll
        self.stage = "_startup"
        self.stop = threading.Event()
        self.hwm: dict[int, tuple[str, float]] = {}  # pid -> (role, peak MiB)
        self.by_stage: dict[str, dict[str, float]] = {}  # stage -> role -> largest RSS sample (MiB)
        self.tree_peak = 0.0  # largest sum of RSS over the tree
        self.roles: dict[int, str] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.poll)

    def sample(self) -> None:
        parents = _ppid_map()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        todo, tree = [self.root], []
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        total = 0.0
        stage = self.by_stage.setdefault(self.stage, {})
        for pid in tree:
            st = _status(pid)
            if "VmRSS" not in st:
                continue
            role = self.roles.setdefault(pid, _role(pid, self.root))
            total += st["VmRSS"]
            self.hwm[pid] = (role, max(st.get("VmHWM", 0.0), self.hwm.get(pid, (role, 0.0))[1]))
            stage[role] = max(stage.get(role, 0.0), st["VmRSS"])
        self.tree_peak = max(self.tree_peak, total)

    def peaks(self) -> dict[str, float]:
        out = {"driver": 0.0, "worker": 0.0, "other": 0.0}
        for role, mb in self.hwm.values():
            out[role] = max(out[role], mb)
        out["workers_seen"] = sum(1 for r, _ in self.hwm.values() if r == "worker")
        return out


# ---------------------------------------------------------------------------
# one measurement


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _output_digest(stage_dir: Path) -> str:
    """SHA-256 over every shard's kept and removed checksums, from the stage manifest."""
    m = json.loads((stage_dir / "manifest.json").read_text())
    h = hashlib.sha256()
    for s in m["shards"]:
        h.update(f"{s['name']} {s['kept']['sha256']} {s['removed']['sha256']}\n".encode())
    return h.hexdigest()


def measure(work: Path, data: Path, docs: int, executor: str, workers: int, shard_docs: int, poll: float) -> dict:
    run_dir = work / f"run-{docs}-{executor}{workers}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg_path = work / f"{run_dir.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config(run_dir, data, executor, workers, shard_docs), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.benchmarks.bench_scale", "--child", str(cfg_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mon = Monitor(proc.pid, poll)
    mon.start()
    stderr: list[str] = []
    err_reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    err_reader.start()
    final: dict = {}
    starts: dict[str, float] = {}
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("done"):
            final = ev
        elif ev.get("stage") and ev["stage"] not in starts:
            mon.sample()  # close the previous stage's window with a last sample
            starts[ev["stage"]] = ev["t"]
            mon.stage = ev["stage"]
            print(f"  {ev.get('log', ev['stage'])}", file=sys.stderr, flush=True)
        elif ev.get("log"):
            print(f"  {ev['log']}", file=sys.stderr, flush=True)
    rc = proc.wait()
    mon.stop.set()
    mon.join()
    err_reader.join()
    if rc or not final:
        raise RuntimeError(f"{executor}:{workers} on {docs:,} docs failed (exit {rc}):\n{''.join(stderr)[-3000:]}")
    stages = {}
    for s in STAGES:
        sd = run_dir / s
        st = json.loads((sd / "stats.json").read_text())
        plan = sd / "plan" / "_plan_done.json"
        stages[s] = {
            "docs_in": st["docs_in"], "chars_in": st["chars_in"], "kept": st["kept"],
            "wall_s": st["wall_seconds"], "task_s": st["task_seconds"],
            "plan_s": json.loads(plan.read_text())["seconds"] if plan.exists() else None,
            "bytes_written": _dir_bytes(sd), "output_sha256": _output_digest(sd),
            "peak_rss_mb": {k: round(v, 1) for k, v in mon.by_stage.get(s, {}).items()},
        }
    row = {
        "docs": docs, "executor": executor, "workers": workers, "shard_docs": shard_docs,
        "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "startup_s": round(final["startup_s"], 2), "total_s": round(final["total_s"], 2),
        "peak_rss_mb": {k: round(v, 1) for k, v in mon.peaks().items()},
        "tree_peak_rss_mb": round(mon.tree_peak, 1),
        "driver_maxrss_mb": round(final["driver_maxrss_mb"], 1),
        "local_workers_maxrss_mb": round(final["children_maxrss_mb"], 1) if executor == "local" else None,
        "stages": stages,
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


# ---------------------------------------------------------------------------
# report


def _key(r: dict) -> tuple:
    return r["docs"], r["executor"], r["workers"]


def _cores(r: dict) -> int:
    return min(r["workers"], os.cpu_count() or 1)


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(rows: list[dict], cmd: str) -> str:
    rows = sorted(rows, key=lambda r: (r["docs"], r["executor"] != "local", r["workers"]))
    sizes = sorted({r["docs"] for r in rows})
    runs = sorted({(r["executor"], r["workers"]) for r in rows}, key=lambda k: (k[0] != "local", k[1]))
    by = {_key(r): r for r in rows}
    lines = [
        "# Scale: the whole pipeline from 10k to 1M documents, local and Ray", "",
        f"Command: `{cmd}`  ",
        "(`make bench-scale`; each size/executor pair can be re-measured alone with `--sizes N --runs EXECUTOR:WORKERS`, "
        "entries accumulate in `scale.json`).  ",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}; the load average at the end of each "
        "run is in the last table: the machine was **shared with other jobs** for runs measured before 12:35 UTC on "
        "2026-11-23, so their timings are noisy (compare ratios measured close together, not absolutes).  ",
        "Input: the synthetic web (`experiments/synthetic_web.py`, seed 0, blocks of 5,000 documents with the demo's "
        "mix: 62% of originals clean, 18% exact or near duplicates, half of them copying the previous block), "
        "about 1,350 characters per document. Pipeline: the stages of `experiments/configs/demo.yaml` "
        f"(ingest with `shard_docs: {rows[0]['shard_docs'] if rows else '?'}`, exact_dedup, minhash_dedup with "
        "verification, langid, quality), each run in a fresh process and run folder.", "",
    ]
    # whole-run table
    lines += ["## Whole pipeline", "",
              "| docs | executor | workers | wall s | start-up s | docs/s | docs/s per core | peak RSS MiB: driver | "
              "largest worker | largest other | whole tree | kept/removed shards identical |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next(x for x in rows if x["docs"] == r["docs"])  # the first run at this size (local:1 if measured)
        same = "-" if ref is r else (
            f"{'yes' if all(r['stages'][s]['output_sha256'] == ref['stages'][s]['output_sha256'] for s in STAGES) else '**NO**'}"
            f" (vs {ref['executor']}:{ref['workers']})")
        p = r["peak_rss_mb"]
        lines.append(
            f"| {r['docs']:,} | {r['executor']} | {r['workers']} | {r['total_s']:,.1f} | {r['startup_s']:.1f} | "
            f"{r['docs'] / r['total_s']:,.0f} | {r['docs'] / r['total_s'] / _cores(r):,.0f} | {_mb(p['driver'])} | "
            f"{_mb(p['worker'] or None)} | {_mb(p['other'] or None)} | {_mb(r['tree_peak_rss_mb'])} | {same} |")
    lines += ["", "Peak RSS is each process's VmHWM read from /proc while it ran (a process's last "
              "poll interval before it exits can be missed); `other` is Ray's own processes (raylet, GCS, "
              "dashboard agent) or multiprocessing's resource tracker; `whole tree` is the largest sum of RSS over "
              "all the run's processes at one poll.", ""]
    # per-stage table
    lines += ["## Per stage", "",
              "Rates per core are the stage's documents (and characters of text) divided by its wall time and by the "
              "workers used (cores, at most 2). `plan s` is the global step of the dedup stages (inside the wall "
              "time). Peak RSS per stage: the largest RSS sample of the driver and of any worker while the stage ran.",
              "",
              "| docs | executor:workers | stage | wall s | plan s | docs/s per core | M chars/s per core | "
              "MiB written | driver RSS MiB | worker RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for s in STAGES:
            st = r["stages"][s]
            cores = _cores(r)
            pr = st["peak_rss_mb"]
            lines.append(
                f"| {r['docs']:,} | {r['executor']}:{r['workers']} | {s} | {st['wall_s']:,.1f} | "
                f"{'-' if st['plan_s'] is None else format(st['plan_s'], ',.1f')} | "
                f"{st['docs_in'] / st['wall_s'] / cores:,.0f} | {st['chars_in'] / st['wall_s'] / cores / 1e6:.2f} | "
                f"{st['bytes_written'] / MiB:,.1f} | {_mb(pr.get('driver'))} | {_mb(pr.get('worker'))} |")
    # linearity and targets
    lines += ["", "## Targets", ""]
    big = [n for n in sizes if n >= 100_000]
    if len(big) >= 2:
        a, b = big[-2], big[-1]
        lines += [f"Cost per document at {b:,} / at {a:,} (1.00 = linear; target at most 1.20):", "",
                  "| executor:workers | " + " | ".join(STAGES) + " | whole run |",
                  "|---|" + "---|" * (len(STAGES) + 1)]
        for e, w in runs:
            ra, rb = by.get((a, e, w)), by.get((b, e, w))
            if ra and rb:
                cells = [f"{(rb['stages'][s]['wall_s'] / b) / (ra['stages'][s]['wall_s'] / a):.2f}" for s in STAGES]
                cells.append(f"{(rb['total_s'] / b) / (ra['total_s'] / a):.2f}")
                lines.append(f"| {e}:{w} | " + " | ".join(cells) + " |")
        lines.append("")
    else:
        lines += ["Linearity from 100k to 1M: needs both sizes measured (see the status note below).", ""]
    lines += ["Ray (2 workers) wall time / local (2 workers), same size (target at most 1.30):", ""]
    for n in sizes:
        ray, loc = by.get((n, "ray", 2)), by.get((n, "local", 2))
        if ray and loc:
            lines.append(f"- {n:,} docs: {ray['total_s'] / loc['total_s']:.2f} "
                         f"({ray['total_s']:,.1f} s vs {loc['total_s']:,.1f} s; Ray start-up {ray['startup_s']:.1f} s; "
                         f"measured {loc['measured_at']} / {ray['measured_at']})")
    peak = max(rows, key=lambda r: max(v for k, v in r["peak_rss_mb"].items() if k != "workers_seen"), default=None)
    if peak:
        pv = max(v for k, v in peak["peak_rss_mb"].items() if k != "workers_seen")
        lines += ["", f"Largest peak RSS of any process: {pv:,.0f} MiB ({peak['docs']:,} docs, "
                      f"{peak['executor']}:{peak['workers']}); target under 4 GB at 1M documents."]
    lines += ["", "## When each run was measured", "", "| docs | executor:workers | measured | load average (1 min) at end |",
              "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['docs']:,} | {r['executor']}:{r['workers']} | {r['measured_at']} | {r['load_avg_1m_at_end']} |")
    lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted({(r["executor"], r["workers"]) for r in rows}, key=lambda k: (k[0] != "local", k[1]))
    fig, (ax_t, ax_s, ax_m) = plt.subplots(1, 3, figsize=(16, 4.8))
    for e, w in runs:
        rs = sorted((r for r in rows if (r["executor"], r["workers"]) == (e, w)), key=lambda r: r["docs"])
        x = [r["docs"] for r in rs]
        ax_t.plot(x, [r["total_s"] for r in rs], "o-", label=f"{e}:{w} whole run")
        ax_m.plot(x, [r["peak_rss_mb"]["driver"] for r in rs], "o-", label=f"{e}:{w} driver")
        xw = [(r["docs"], r["peak_rss_mb"]["worker"]) for r in rs if r["peak_rss_mb"]["worker"]]
        if xw:  # local:1 runs everything in the driver
            ax_m.plot(*zip(*xw), "s--", label=f"{e}:{w} largest worker")
    # per-stage curves of the run measured at most sizes (local:2 on a tie: the configuration of `make demo`)
    best = max(runs, key=lambda k: (len({r["docs"] for r in rows if (r["executor"], r["workers"]) == k}),
                                    k == ("local", 2)))
    ref = sorted((r for r in rows if (r["executor"], r["workers"]) == best), key=lambda r: r["docs"])
    for s in STAGES:
        ax_s.plot([r["docs"] for r in ref], [r["stages"][s]["wall_s"] for r in ref], "o-", label=s)
    for ax, title, ylabel in ((ax_t, "wall time, whole pipeline", "seconds"),
                              (ax_s, f"wall time per stage ({best[0]}:{best[1]})", "seconds"),
                              (ax_m, "peak RSS", "MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    xs = sorted({r["docs"] for r in rows})
    if len(xs) > 1 and ref:  # a slope-1 guide through the smallest point: linear cost
        ax_t.plot(xs, [ref[0]["total_s"] * n / ref[0]["docs"] for n in xs], ":", color="grey", label="linear")
        ax_t.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="corpus sizes")
    ap.add_argument("--runs", nargs="+", default=["local:1", "local:2", "ray:2"], help="EXECUTOR:WORKERS pairs")
    ap.add_argument("--shard-docs", type=int, default=5000, help="ingest shard size (default 5000)")
    ap.add_argument("--data", default=str(ROOT / "runs" / "scale" / "corpora"), help="where corpora are generated and cached")
    ap.add_argument("--work", default=str(ROOT / "runs" / "scale"), help="run folders (deleted after each run)")
    ap.add_argument("--gen-workers", type=int, default=2, help="processes generating a corpus")
    ap.add_argument("--poll", type=float, default=0.2, help="seconds between /proc samples")
    ap.add_argument("--json", default=str(RESULTS / "scale.json"), help="accumulated measurements")
    ap.add_argument("--out", default=str(RESULTS / "scale.md"))
    ap.add_argument("--plot", default=str(RESULTS / "scale.png"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child)
        return
    runs = []
    for spec in args.runs:
        executor, _, workers = spec.partition(":")
        if executor not in ("local", "ray") or not workers.isdigit():
            ap.error(f"--runs: expected EXECUTOR:WORKERS (local:2, ray:2), got {spec!r}")
        runs.append((executor, int(workers)))
    work, data_root = Path(args.work), Path(args.data)
    work.mkdir(parents=True, exist_ok=True)
    store = Path(args.json)
    rows = json.loads(store.read_text())["runs"] if store.exists() else []
    for docs in args.sizes:
        data, gen_s = corpus(data_root, docs, args.gen_workers)
        print(f"{docs:,} docs: corpus {data} ({gen_s:.0f} s to generate)", file=sys.stderr)
        for executor, workers in runs:
            print(f"{docs:,} docs, {executor}:{workers}", file=sys.stderr, flush=True)
            row = measure(work, data, docs, executor, workers, args.shard_docs, args.poll)
            row["corpus_generation_s"] = gen_s
            print(f"  -> {row['total_s']:.1f} s, peak RSS {row['peak_rss_mb']}", file=sys.stderr, flush=True)
            rows = [r for r in rows if _key(r) != _key(row)] + [row]
            tmp = store.with_name(f".{store.name}.tmp")
            tmp.write_text(json.dumps({"runs": sorted(rows, key=_key)}, indent=1))
            tmp.replace(store)
    cmd = ".venv/bin/python -m experiments.benchmarks.bench_scale --sizes 10000 100000 1000000 " \
          "--runs local:1 local:2 ray:2"
    out = Path(args.out)
    out.write_text(render(rows, cmd))
    plot(rows, Path(args.plot))
    print(out.read_text())


if __name__ == "__main__":
    main()
