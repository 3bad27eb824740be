"""`winnow check RUN_DIR`: verify a run against its pipeline and its manifests.

The run's pipeline record lists the stages in order; every one must have a
folder and a manifest (a stage killed mid-way has markers but no manifest),
and the chain must hold: each stage's rows in = the previous stage's kept
rows, shard by shard and in total, and its input fingerprint = the previous
stage's output fingerprint (otherwise it was computed from other data).
Within a stage: every listed shard file is present with its size (and, unless
``deep=False``, its SHA-256 and row count), removed rows carry a reason, rows
in = kept + removed, and no unlisted shard file lies beside them.

``allow_unstarted`` accepts a run stopped on purpose (``winnow run --stage``):
stages after the last finished one may be absent, but only if none of them
was started.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.rundir import MANIFEST, PIPELINE, PLAN, STATS, RunFolder, StageFolder, manifest_problem
from pipeline.shards import check_name, read_json, sha256_file


class CheckError(RuntimeError):
    pass


def _load(path: Path, problems: list[str], what: str) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        problems.append(f"{what}: unreadable ({type(e).__name__}: {e})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{what}: not a JSON object")
        return None
    return data


def check_run(run_dir: Path, deep: bool = True, allow_unstarted: bool = False) -> list[str]:
    """Return a list of problems (empty when the run is complete and consistent)."""
    run = RunFolder(run_dir)
    problems: list[str] = []
    if not run.pipeline_path.exists():
        return [f"{run_dir}: no {PIPELINE} -- not a winnow run folder"]
    pipeline = _load(run.pipeline_path, problems, PIPELINE)
    if pipeline is None:
        return problems
    try:
        stages = [check_name(s["name"]) for s in pipeline["stages"]]
    except (KeyError, TypeError, ValueError) as e:
        return [f"{PIPELINE}: bad stage list ({e})"]
    if not stages:
        return [f"{PIPELINE}: no stages"]
    holder = run.lock_holder()
    if holder is not None:
        problems.append(f"a winnow process (pid {holder.get('pid', '?')}) is running in this folder now; "
                        f"check again when it has finished")

    folders = [run.stage(name) for name in stages]
    last_finished = max((i for i, f in enumerate(folders) if f.is_finished()), default=-1)
    prev: dict | None = None  # the previous stage's manifest, when it could be read
    for i, (name, folder) in enumerate(zip(stages, folders)):
        if not folder.is_finished():
            if allow_unstarted and i > last_finished and not folder.root.exists():
                continue
            if not folder.root.exists():
                problems.append(f"{name}: stage folder missing ({PIPELINE} lists it)")
            else:
                problems.append(f"{name}: stage did not finish: no {MANIFEST} ({folder.marker_count()} shard "
                                f"markers; killed or failed? `winnow run` resumes it)")
            prev = None
            continue
        m = _load(folder.manifest_path, problems, f"{name}/{MANIFEST}")
        if m is not None and manifest_problem(m):
            problems.append(f"{name}/{MANIFEST}: damaged ({manifest_problem(m)}); `winnow run` redoes the stage "
                            f"from its verified shards")
            m = None
        if m is None:
            prev = None
            continue
        if i == 0 and deep:
            problems.extend(_check_inputs(run, name, m))
        if not folder.stats_match(m):
            problems.append(f"{name}/{STATS}: damaged or does not count what the manifest lists; `winnow run` "
                            f"rebuilds it")
        if folder.plan_marker_path.exists():
            plan = folder.plan_problem(m.get("fingerprint"), verify_hash=deep)
            if plan and plan != "plan marker lists no checksums":  # made by a winnow that did not record them
                problems.append(f"{name}/{PLAN}: cannot be trusted ({plan}); `winnow run` plans the stage again")
        try:
            problems.extend(_check_stage(folder, m, prev, deep))
        except (KeyError, TypeError, ValueError, OSError) as e:
            problems.append(f"{name}: cannot check ({type(e).__name__}: {e}); manifest or shard malformed")
            prev = None
            continue
        prev = m
    return problems


def _check_inputs(run: RunFolder, name: str, m: dict) -> list[str]:
    """A source stage's inputs, as the run's config names them, must still have the content it read
    (an input edited in place, even with its size and mtime restored, is found by its content hash).
    Inputs that cannot be read here (the run folder was copied to another machine) are not compared."""
    from pipeline.errors import WinnowError
    from pipeline.stage import build_stage

    try:
        entry = next(s for s in run.stage_configs() if (s.get("name") if isinstance(s, dict) else s) == name)
        spec = dict(entry) if isinstance(entry, dict) else {"name": entry}
        spec.setdefault("kind", spec["name"])
        stage = build_stage(spec)
        if not stage.reads_inputs:
            return []
        stage.run_dir, stage.remember_inputs = run.root, False
        tasks = stage.source_tasks()
        if stage.input_fingerprint(tasks) == m.get("input_fingerprint"):
            return []
        changed = stage.changed_inputs(tasks)
    except (WinnowError, OSError, ValueError, KeyError, TypeError, StopIteration):
        return []
    which = "their content differs from what it read"
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        which = ", ".join(changed[:5]) + more
    return [f"{name}: its inputs changed since it ran ({which}); `winnow run` reads them again"]


def _check_stage(folder: StageFolder, m: dict, prev: dict | None, deep: bool) -> list[str]:
    problems: list[str] = []
    name = folder.name
    if m.get("stage") != name:
        problems.append(f"{name}/{MANIFEST}: names stage {m.get('stage')!r}")
    shards = m.get("shards") or []
    listed = set()
    total_in = total_kept = total_removed = 0
    prev_kept = {sh["name"]: sh["kept"]["rows"] for sh in prev["shards"]} if prev else None
    for sh in shards:
        for part in ("kept", "removed"):
            f = sh[part]
            listed.add(f["path"])
            problems.extend(_check_file(folder, f, part, deep))
        if sh["rows_in"] != sh["kept"]["rows"] + sh["removed"]["rows"]:
            problems.append(f"{name}/{sh['name']}: {sh['rows_in']} in != {sh['kept']['rows']} kept + "
                            f"{sh['removed']['rows']} removed")
        if prev_kept is not None and prev_kept.get(sh["name"]) != sh["rows_in"]:
            problems.append(f"{name}/{sh['name']}: {sh['rows_in']} rows in, but the previous stage kept "
                            f"{prev_kept.get(sh['name'])}")
        total_in += sh["rows_in"]
        total_kept += sh["kept"]["rows"]
        total_removed += sh["removed"]["rows"]
    if prev is not None:
        if set(prev_kept) != {sh["name"] for sh in shards}:
            problems.append(f"{name}: shard list differs from the previous stage's")
        if total_in != prev["totals"]["kept"]:
            problems.append(f"{name}: {total_in} rows in, but the previous stage ({prev['stage']}) kept "
                            f"{prev['totals']['kept']}")
        if m.get("input_fingerprint") != prev.get("output_fingerprint"):
            problems.append(f"{name}: computed from another version of {prev['stage']}'s output "
                            f"(stale; `winnow run` redoes it)")
    for part in ("kept", "removed"):
        for rel in folder.unlisted_files(part, listed):
            problems.append(f"{name}/{rel}: not in the manifest")
    t = m.get("totals") or {}
    if (t.get("rows_in"), t.get("kept"), t.get("removed")) != (total_in, total_kept, total_removed):
        problems.append(f"{name}: manifest totals {t} do not match its shards")
    return problems


def _check_file(folder: StageFolder, f: dict, part: str, deep: bool) -> list[str]:
    name = folder.name
    p = folder.path(f["path"])
    if not p.is_file():
        return [f"{name}/{f['path']}: missing"]
    if p.stat().st_size != f["bytes"]:
        return [f"{name}/{f['path']}: checksum differs from manifest ({p.stat().st_size} bytes, manifest says "
                f"{f['bytes']}: truncated or altered)"]
    if not deep:
        return []
    if sha256_file(p) != f["sha256"]:
        return [f"{name}/{f['path']}: checksum differs from manifest (altered)"]
    out = []
    rows = pq.ParquetFile(p).metadata.num_rows
    if rows != f["rows"]:
        out.append(f"{name}/{f['path']}: {rows} rows, manifest says {f['rows']}")
    if part == "removed" and rows:
        reasons = pq.read_table(p, columns=["reason"]).column("reason").to_pylist()
        if any(not r for r in reasons):
            out.append(f"{name}/{f['path']}: removed rows without a reason")
    return out
