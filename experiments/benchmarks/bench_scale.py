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

from pipeline.provenance import git_state
from pipeline.rundir import StageFolder

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


def run_child(cfg_path: str, upto: str | None = None) -> None:
    """One pipeline run (through ``upto``); stage starts and the final timings go to stdout as JSON lines."""
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
    runner.run(upto=upto)
    total = time.perf_counter() - t0
    event(done=True, startup_s=startup, total_s=total,
          driver_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          children_maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


# ---------------------------------------------------------------------------
# monitor: the run's process tree from /proc


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far: user + system)."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                f = stat[stat.rindex(")") + 2:].split()
                out[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / _TICK)
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
    """Polls the process tree under ``root``: per-process peak RSS (VmHWM), per-stage largest RSS and CPU time.

    CPU seconds (user + system, every process of the tree, Ray's own included)
    are what a stage costs whatever else the machine is doing; a process's
    last interval before it exits is not counted.
    """

    def __init__(self, root: int, poll: float):
        super().__init__(daemon=True)
        self.root, self.poll = root, poll
        self.stage = "_startup"
        self.stop = threading.Event()
        self.hwm: dict[int, tuple[str, float]] = {}  # pid -> (role, peak MiB)
        self.by_stage: dict[str, dict[str, float]] = {}  # stage -> role -> largest RSS sample (MiB)
        self.tree_peak = 0.0  # largest sum of RSS over the tree
        self.roles: dict[int, str] = {}
        self.cpu_seen: dict[int, float] = {}  # pid -> CPU seconds at the last sample
        self.cpu_by_stage: dict[str, float] = {}
        self.lock = threading.Lock()  # the reader thread samples too, at each stage boundary

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.poll)

    def sample(self) -> None:
        with self.lock:
            self._sample()

    def _sample(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
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
            cpu = table[pid][1]
            self.cpu_by_stage[self.stage] = self.cpu_by_stage.get(self.stage, 0.0) + cpu - self.cpu_seen.get(pid, 0.0)
            self.cpu_seen[pid] = cpu
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


def _output_digest(folder: StageFolder) -> str:
    """SHA-256 over every shard's kept and removed checksums, from the stage manifest."""
    m = folder.manifest()
    h = hashlib.sha256()
    for s in m["shards"]:
        h.update(f"{s['name']} {s['kept']['sha256']} {s['removed']['sha256']}\n".encode())
    return h.hexdigest()


def measure(work: Path, data: Path, docs: int, executor: str, workers: int, shard_docs: int, poll: float,
            upto: str | None = None) -> dict:
    stages_run = STAGES[:STAGES.index(upto) + 1] if upto else STAGES
    run_dir = work / f"run-{docs}-{executor}{workers}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg_path = work / f"{run_dir.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config(run_dir, data, executor, workers, shard_docs), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.benchmarks.bench_scale", "--child", str(cfg_path)]
                            + (["--upto", upto] if upto else []),
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
    for s in stages_run:
        sf = StageFolder(run_dir, s)
        st = sf.stats()
        stages[s] = {
            "docs_in": st["docs_in"], "chars_in": st["chars_in"], "kept": st["kept"],
            "wall_s": st["wall_seconds"], "task_s": st["task_seconds"],
            "plan_s": sf.plan_seconds(),
            "bytes_written": _dir_bytes(sf.root), "output_sha256": _output_digest(sf),
            "peak_rss_mb": {k: round(v, 1) for k, v in mon.by_stage.get(s, {}).items()},
            "cpu_s": round(mon.cpu_by_stage.get(s, 0.0), 1),
        }
    row = {
        "docs": docs, "executor": executor, "workers": workers, "shard_docs": shard_docs,
        "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (git_state()["commit"] or "")[:12] or None,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "startup_s": round(final["startup_s"], 2), "total_s": round(final["total_s"], 2),
        "peak_rss_mb": {k: round(v, 1) for k, v in mon.peaks().items()},
        "tree_peak_rss_mb": round(mon.tree_peak, 1),
        "cpu_s": round(sum(mon.cpu_by_stage.values()), 1),
        "driver_maxrss_mb": round(final["driver_maxrss_mb"], 1),
        "local_workers_maxrss_mb": round(final["children_maxrss_mb"], 1) if executor == "local" else None,
        "stages": stages,
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


# ---------------------------------------------------------------------------
# report


def _key(r: dict) -> tuple:
    return r["docs"], r["executor"], r["workers"], len(r["stages"])


def _stages(r: dict) -> list[str]:
    return [s for s in STAGES if s in r["stages"]]


def _scope(r: dict) -> str:
    return "all" if len(r["stages"]) == len(STAGES) else f"through {_stages(r)[-1]}"


def _cores(r: dict) -> int:
    return min(r["workers"], os.cpu_count() or 1)


def _mb(x: float | None) -> str:
    return "-" if not x else f"{x:,.0f}"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _growth(rows: list[dict], e: str, w: int, stage: str, a: int, b: int) -> str:
    """Per-document cost of ``stage`` at ``b`` over at ``a``: CPU ratio (wall ratio); runs with CPU figures first."""
    def pick(n: int, commit="any") -> dict | None:
        cands = [r for r in rows if (r["docs"], r["executor"], r["workers"]) == (n, e, w) and stage in r["stages"]
                 and (commit == "any" or r.get("commit") == commit)]
        return max(cands, key=lambda r: (r["stages"][stage].get("cpu_s") is not None, r["measured_at"]), default=None)

    rb = pick(b)
    ra = pick(a, rb.get("commit")) if rb else None  # the same code at both sizes
    if not (ra and rb):
        return "-"
    sa, sb = ra["stages"][stage], rb["stages"][stage]
    wall = (sb["wall_s"] / b) / (sa["wall_s"] / a)
    if sa.get("cpu_s") and sb.get("cpu_s"):
        return f"{(sb['cpu_s'] / b) / (sa['cpu_s'] / a):.2f} ({wall:.2f})"
    return f"- ({wall:.2f})"


def _largest_rss(r: dict) -> float:
    return max(v for k, v in r["peak_rss_mb"].items() if k != "workers_seen")


def render(rows: list[dict], cmd: str) -> str:
    rows = sorted(rows, key=lambda r: (r["docs"], -len(r["stages"]), r["executor"] != "local", r["workers"]))
    sizes = sorted({r["docs"] for r in rows})
    runs = sorted({(r["executor"], r["workers"]) for r in rows}, key=lambda k: (k[0] != "local", k[1]))
    by: dict[tuple, dict] = {}  # (docs, executor, workers) -> the run with the most stages
    for r in rows:
        by.setdefault((r["docs"], r["executor"], r["workers"]), r)
    lines = [
        "# Scale: the whole pipeline from 10k to 1M documents, local and Ray", "",
        f"Command: `{cmd}`  ",
        "(`make bench-scale`; one size and executor can be re-measured alone, e.g. `--sizes 1000000 --runs local:2`, "
        "and `--upto minhash_dedup` runs the stages only through MinHash dedup; entries accumulate in "
        "`experiments/results/scale.json` and this file is rendered from all of them).  ",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}. **Shared with other jobs** for every "
        "run measured on 2026-11-23 before about 12:35 UTC (load average between 3 and 17 on 2 cores; at 15, a process "
        "gets about an eighth of a core; the load at the end of each run is in the last table), so wall times are "
        "noisy and can be several times an idle machine's, and ratios "
        "between runs measured minutes apart (local 1 vs 2 workers, Ray vs local) reflect the load as much as the "
        "executor. Memory and bytes written do not depend on the load. The runs of 2026-12-02 (commit ad71d60) "
        "measure the code after the heuristic filters' speed-ups, on an idle machine (load 1-2), and with heliport "
        "as the default language-ID backend: its model (about 0.9 GB) is loaded in every process that runs the "
        "langid stage, hence workers of 1.3-1.7 GiB where fastText's runs of 2026-11-23 stayed near 0.5.  ",
        "Input: the synthetic web (`experiments/synthetic_web.py` `write_large_corpus`, seed 0): blocks of 5,000 "
        "documents, each with the demo's mix (62% of originals clean; 8% exact and 10% near duplicates, half of "
        "them copying the previous block, so copies cross shards and files), about 1,350 characters per document, "
        "in gzipped JSONL files of 50,000 documents (at least 2). Pipeline: the stages of "
        "`experiments/configs/demo.yaml` (ingest with "
        f"`shard_docs: {rows[0]['shard_docs'] if rows else '?'}`, exact_dedup, minhash_dedup with verification, "
        "langid, quality), each run in a fresh process and run folder.", "",
    ]
    missing = [f"{n:,} {e}:{w}" for n in (10_000, 100_000, 1_000_000) for e, w in (("local", 1), ("local", 2), ("ray", 2))
               if not any((r["docs"], r["executor"], r["workers"], len(r["stages"])) == (n, e, w, len(STAGES))
                          for r in rows)]
    if missing:
        lines += ["**Not measured yet (whole pipeline):** " + ", ".join(missing) + ". Runs of the first stages "
                  "only (`--upto minhash_dedup`) are marked in the `stages` column.", ""]
    lines += ["## Whole pipeline", "",
              "| docs | stages | executor | workers | wall s | start-up s | docs/s | docs/s per core | CPU s | "
              "docs per CPU s | peak RSS MiB: driver | largest worker | largest other | whole tree | "
              "kept and removed shards identical |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # the fullest first run at this size made by the same code (outputs of different code need not agree)
        ref = next(x for x in rows if x["docs"] == r["docs"] and x.get("commit") == r.get("commit"))
        common = [s for s in _stages(r) if s in ref["stages"]]
        same = "-" if ref is r else (
            f"{'yes' if all(r['stages'][s]['output_sha256'] == ref['stages'][s]['output_sha256'] for s in common) else '**NO**'}"
            f" (vs {ref['executor']}:{ref['workers']})")
        p = r["peak_rss_mb"]
        lines.append(
            f"| {r['docs']:,} | {_scope(r)} | {r['executor']} | {r['workers']} | {r['total_s']:,.1f} | "
            f"{r['startup_s']:.1f} | {r['docs'] / r['total_s']:,.0f} | {r['docs'] / r['total_s'] / _cores(r):,.0f} | "
            f"{_num(r.get('cpu_s'), '.0f')} | {_num(r['docs'] / r['cpu_s'] if r.get('cpu_s') else None, ',.0f')} | "
            f"{_mb(p['driver'])} | {_mb(p['worker'])} | {_mb(p['other'])} | {_mb(r['tree_peak_rss_mb'])} | {same} |")
    lines += ["", "Outputs are compared only between runs of the same code (commit in the last table; runs before "
              "2026-12-02 did not record it and count as one version). Peak RSS is each process's VmHWM read from /proc every 0.2 s while it ran (the last interval "
              "before a process exits can be missed); `largest other` is Ray's own processes (raylet, GCS, "
              "dashboard agent) or multiprocessing's resource tracker; `whole tree` is the largest sum of RSS over "
              "all the run's processes at one sample. Start-up is Runner construction (Ray starts its local "
              "cluster there; the local executor starts its worker pool inside the first stage).", ""]
    lines += ["## Per stage", "",
              "Rates per core: the stage's documents (and characters of text) divided by its wall time and by the "
              "workers (cores) used; on a shared machine they fall with the load. `CPU s`: user + system CPU "
              "seconds of all the run's processes (Ray's own included) during the stage, sampled from /proc, and "
              "`docs per CPU s` the documents over it: the per-core rate that the load does not change (much). "
              "`plan s`: the global step of the dedup stages (part of the wall time; "
              "exact dedup's runs in the driver, MinHash's as executor tasks plus a driver-side union-find). Peak "
              "RSS per stage: the largest RSS sample of the driver and of any worker while the stage ran.", "",
              "| docs | executor:workers | stage | wall s | plan s | docs/s per core | M chars/s per core | CPU s | "
              "docs per CPU s | MiB written | driver RSS MiB | worker RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for s in _stages(r):
            st, cores = r["stages"][s], _cores(r)
            pr = st["peak_rss_mb"]
            lines.append(
                f"| {r['docs']:,} | {r['executor']}:{r['workers']} | {s} | {st['wall_s']:,.1f} | "
                f"{'-' if st['plan_s'] is None else format(st['plan_s'], ',.1f')} | "
                f"{st['docs_in'] / st['wall_s'] / cores:,.0f} | {st['chars_in'] / st['wall_s'] / cores / 1e6:.2f} | "
                f"{_num(st.get('cpu_s'), ',.1f')} | "
                f"{_num(st['docs_in'] / st['cpu_s'] if st.get('cpu_s') else None, ',.0f')} | "
                f"{st['bytes_written'] / MiB:,.1f} | {_mb(pr.get('driver'))} | {_mb(pr.get('worker'))} |")
    lines += ["", "## Targets", ""]
    big = [n for n in sizes if n >= 100_000]
    if len(big) >= 2:
        a, b = big[-2], big[-1]
        lines += [f"Cost per document at {b:,} / at {a:,} documents (1.00 = linear; target at most 1.20). Each cell: "
                  "CPU seconds ratio (the load-independent cost), then wall-time ratio in brackets (noisy on a "
                  "shared machine); `-`: not measured at both sizes.", "",
                  "| executor:workers | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
        for e, w in runs:
            cells = [_growth(rows, e, w, s, a, b) for s in STAGES]
            if any(c != "-" for c in cells):
                lines.append(f"| {e}:{w} | " + " | ".join(cells) + " |")
        lines.append("")
    else:
        lines += ["Linearity from 100k to 1M documents: not measured yet (needs both sizes).", ""]
    lines += ["Ray (2 workers) / local (2 workers), same size and stages (target: wall time at most 1.30x); the "
              "CPU-seconds ratio is Ray's overhead independent of the load:", ""]
    for r in rows:
        if (r["executor"], r["workers"]) == ("ray", 2):
            loc = next((x for x in rows if (x["docs"], x["executor"], x["workers"]) == (r["docs"], "local", 2)
                        and len(x["stages"]) == len(r["stages"]) and x.get("commit") == r.get("commit")), None)
            if loc:
                cpu = (f"; CPU seconds {r['cpu_s']:,.0f} vs {loc['cpu_s']:,.0f} = {r['cpu_s'] / loc['cpu_s']:.2f}"
                       if r.get("cpu_s") and loc.get("cpu_s") else "")
                lines.append(f"- {r['docs']:,} docs ({_scope(r)}): wall {r['total_s'] / loc['total_s']:.2f} "
                             f"({r['total_s']:,.1f} s vs {loc['total_s']:,.1f} s; Ray start-up {r['startup_s']:.1f} s; "
                             f"measured {loc['measured_at']} and {r['measured_at']}){cpu}")
    if rows:
        top = max(rows, key=_largest_rss)
        lines += ["", f"Largest peak RSS of any process in any run: {_largest_rss(top):,.0f} MiB ({top['docs']:,} docs, "
                      f"{top['executor']}:{top['workers']}, {_scope(top)}); target: under 4 GB at 1M documents."]
    lines += ["", "## When each run was measured", "",
              "| docs | stages | executor:workers | measured | code (commit) | load average (1 min) at end |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['docs']:,} | {_scope(r)} | {r['executor']}:{r['workers']} | {r['measured_at']} | "
                     f"{r.get('commit') or 'not recorded (before 2026-12-02)'} | {r['load_avg_1m_at_end']} |")
    lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sorted({(r["executor"], r["workers"], len(r["stages"])) for r in rows},
                    key=lambda k: (-k[2], k[0] != "local", k[1]))
    fig, (ax_t, ax_s, ax_m) = plt.subplots(1, 3, figsize=(16, 4.8))
    for e, w, n in series:
        rs = sorted((r for r in rows if (r["executor"], r["workers"], len(r["stages"])) == (e, w, n)),
                    key=lambda r: r["docs"])
        tag = f"{e}:{w}" + ("" if n == len(STAGES) else f" through {STAGES[n - 1]}")
        x = [r["docs"] for r in rs]
        line = ax_t.plot(x, [r["total_s"] for r in rs], "o-" if n == len(STAGES) else "o:", label=f"{tag} wall")
        xc = [(r["docs"], r["cpu_s"]) for r in rs if r.get("cpu_s")]
        if xc:
            ax_t.plot(*zip(*xc), "^--", color=line[0].get_color(), alpha=0.6, label=f"{tag} CPU")
        ax_m.plot(x, [r["peak_rss_mb"]["driver"] for r in rs], "o-", label=f"{tag} driver")
        xw = [(r["docs"], r["peak_rss_mb"]["worker"]) for r in rs if r["peak_rss_mb"]["worker"]]
        if xw:  # local:1 runs everything in the driver
            ax_m.plot(*zip(*xw), "s--", label=f"{tag} largest worker")
    # CPU seconds per stage for local:2 (`make demo`'s setting), from whichever run measured the stage
    best = ("local", 2) if any((r["executor"], r["workers"]) == ("local", 2) for r in rows) \
        else (rows[0]["executor"], rows[0]["workers"])
    for s in STAGES:
        pts: dict[int, float] = {}
        for r in sorted(rows, key=lambda r: r["measured_at"]):
            if (r["executor"], r["workers"]) == best and s in r["stages"] and r["stages"][s].get("cpu_s"):
                pts[r["docs"]] = r["stages"][s]["cpu_s"]
        if pts:
            ax_s.plot(*zip(*sorted(pts.items())), "o-", label=s)
    xs = sorted({r["docs"] for r in rows})
    if len(xs) > 1:  # slope-1 guides: linear cost
        for ax in (ax_t, ax_s):
            ys = [y for line in ax.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata()) if x == xs[0]]
            if ys:
                ax.plot(xs, [min(ys) * 0.7 * n / xs[0] for n in xs], ":", color="grey", label="slope 1 (linear)")
    for ax, title, ylabel in ((ax_t, "whole run: wall time (noisy: shared machine) and CPU time", "seconds"),
                              (ax_s, f"CPU seconds per stage ({best[0]}:{best[1]})", "CPU seconds"),
                              (ax_m, "peak RSS per process", "MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
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
    ap.add_argument("--upto", choices=STAGES, help="run the stages only through this one (default: all five)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.upto)
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
            row = measure(work, data, docs, executor, workers, args.shard_docs, args.poll, args.upto)
            row["corpus_generation_s"] = gen_s
            row["invocation"] = " ".join(["bench_scale", *sys.argv[1:]])
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
    from pipeline.errors import run_guarded

    raise SystemExit(run_guarded(main, prog="bench_scale"))
