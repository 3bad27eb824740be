"""The stage runner: schedules score / plan / decide, resumes, checks, records.

Resume rule: a shard counts as finished only when its marker exists
and names the current fingerprint; the marker is written after the shard files,
so a kill at any moment leaves either a finished shard or one that is redone.
Each output shard depends only on its input shard, the stage config and (for
stages with a global step) the plan, so a resumed run writes the same bytes as
an uninterrupted one.

Fingerprints chain: a stage's *scoring* fingerprint covers its scoring
parameters and its input (the previous stage's kept-shard checksums); its
*stage* fingerprint adds the decision parameters. Changing a threshold
therefore re-decides from cached scores, and anything upstream changing
re-scores.
"""
from __future__ import annotations

import errno
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.config import PipelineConfig
from pipeline.errors import InputProblem
from pipeline.executors import TaskError, make_executor, run_all
from pipeline.document import REMOVED_FIELDS
from pipeline.outputs import ConservationError, apply_decision, text_chars, write_shard_outputs
from pipeline.provenance import KEY as PROVENANCE_KEY
from pipeline.provenance import config_record, provenance, version_string
from pipeline.rundir import RunFolder, RunFolderError, RunInUse, StageFolder
from pipeline.shards import MANIFEST_FILE_KEYS, file_matches, fingerprint, read_json, read_parquet
from pipeline.stage import Stage, StageContext, stage_for, use_stage

__all__ = ["Runner", "StageResult", "StaleScoresError", "RunFolderError", "RunInUse", "ConservationError",
           "score_task", "decide_task", "source_task", "score_and_decide_task"]


class StaleScoresError(InputProblem, RuntimeError):
    """`winnow select` needs cached scores, and they are missing or stale."""


# ---------------------------------------------------------------------------
# task functions (module level so worker processes can run them)

def _open_shard_task(spec: dict, ctx_d: dict, shard: str) -> tuple[Stage, StageContext, pa.Table]:
    """A shard task's stage (built once per process), its context for ``shard`` and the shard it reads."""
    stage, ctx = stage_for(spec), StageContext.from_dict(ctx_d)
    ctx.shard = shard
    return stage, ctx, read_parquet(ctx.input_path(shard))


def score_task(spec: dict, ctx_d: dict, shard: str, score_fp: str) -> dict:
    t0 = time.perf_counter()
    stage, ctx, table = _open_shard_task(spec, ctx_d, shard)
    folder = ctx.folder
    scores = stage.score(table, ctx)
    if scores.num_rows != table.num_rows:
        raise ConservationError(f"{stage.name}/{shard}: score returned {scores.num_rows} rows for {table.num_rows}")
    if "id" not in scores.column_names:
        scores = scores.append_column("id", table.column("id"))
    f = folder.write_part("scores", shard, scores)
    marker = {"shard": shard, "fingerprint": score_fp, "scores": f.to_dict(),
              "rows": table.num_rows, "seconds": round(time.perf_counter() - t0, 4)}
    folder.write_scores_marker(marker)
    return marker


def decide_task(spec: dict, ctx_d: dict, shard: str, stage_fp: str) -> dict:
    t0 = time.perf_counter()
    stage, ctx, table = _open_shard_task(spec, ctx_d, shard)
    folder = ctx.folder
    if stage.has_scores:
        scores = folder.read_scores(shard)
        if scores.num_rows != table.num_rows or scores.column("id") != table.column("id"):
            raise StaleScoresError(f"{stage.name}/{shard}: cached scores are not aligned with the input shard")
    else:
        scores = pa.table({})
    decision = stage.decide(table, scores, ctx)
    kept, removed = apply_decision(table, decision, stage.name)
    return write_shard_outputs(folder, shard, table.num_rows, text_chars(table), kept, removed,
                               stage_fp, time.perf_counter() - t0)


def source_task(spec: dict, ctx_d: dict, task: dict, stage_fp: str) -> list[dict]:
    """One unit of a source stage's reading work (one input file of ingest).

    The stage only yields rows (:meth:`Stage.read_source`); the runner cuts them into shards of
    ``stage.source_shard_rows()`` rows named ``part-<task>-<chunk>``, writes each with its marker,
    resumes from the first shard that is not finished (the stage is asked for rows from there on),
    and marks the task finished once the stage's closing check passed.
    """
    stage, ctx = stage_for(spec), StageContext.from_dict(ctx_d)
    folder = ctx.folder
    index = task["index"]
    done = folder.read_source_marker(index)
    if done is not None and done.get("fingerprint") == stage_fp and isinstance(done.get("shards"), list):
        finished = [folder.valid_marker(s, stage_fp) for s in done["shards"]]
        if all(finished):
            return finished

    def shard(c: int) -> str:
        return f"part-{index:05d}-{c:05d}"

    markers: list[dict] = []
    while (m := folder.valid_marker(shard(len(markers)), stage_fp)) is not None:
        markers.append(m)
    read = stage.read_source(task, start=sum(m["rows_in"] for m in markers))
    kept_schema = stage.source_schema()
    removed_schema = pa.schema(list(kept_schema) + REMOVED_FIELDS)
    per_shard = stage.source_shard_rows()
    buf: list[dict] = []
    t0 = time.perf_counter()

    def flush() -> None:
        nonlocal t0
        kept = pa.Table.from_pylist([r for r in buf if r.get("reason") is None], schema=kept_schema)
        removed = pa.Table.from_pylist([{**r, "stage": stage.name} for r in buf if r.get("reason") is not None],
                                       schema=removed_schema)
        # characters in = what the shard holds (a removed row may keep only a preview of a huge record)
        markers.append(write_shard_outputs(folder, shard(len(markers)), len(buf), text_chars(kept) + text_chars(removed),
                                           kept, removed, stage_fp, time.perf_counter() - t0))
        buf.clear()
        t0 = time.perf_counter()

    for row in read:
        buf.append(row)
        if len(buf) >= per_shard:
            flush()
    if buf or not markers:
        flush()
    extra = read.finish(markers)  # may raise: e.g. a file that lost most records to one reason
    if extra:
        markers[-1].update(extra)
        folder.write_marker(markers[-1])
    folder.write_source_marker(index, {"fingerprint": stage_fp, "shards": [m["shard"] for m in markers],
                                       "label": task.get("label")})
    return markers


def score_and_decide_task(spec: dict, ctx_d: dict, shard: str, score_fp: str, stage_fp: str, need_score: bool) -> dict:
    """Score (unless cached) and decide in one pass, for stages without a global plan."""
    if need_score:
        score_task(spec, ctx_d, shard, score_fp)
    return decide_task(spec, ctx_d, shard, stage_fp)


# ---------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "up to date", "selected"
    stats: dict


class RunLog:
    """The run folder's log: what each run that changed the folder said, with the time of each line.

    Lines are kept in memory until the run first changes the folder (:meth:`start`), then appended to the
    log file with a header naming the command, the winnow version and commit; a run that finds everything
    up to date writes nothing (so it also works on a read-only copy). :meth:`end` adds how the run ended.
    A log that cannot be written is skipped, never a reason to fail a run.
    """

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.pending: list[str] = []
        self.file = None
        self.failed = False

    @staticmethod
    def _stamp() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def add(self, msg: str) -> None:
        lines = [f"{self._stamp()} {line}" for line in str(msg).splitlines() or [""]]
        if self.file is None:
            self.pending.extend(lines)
            return
        self._write(lines)

    def start(self) -> None:
        if self.file is not None or self.failed:
            return
        try:
            self.file = open(self.folder.log_path, "a", encoding="utf-8")
        except OSError:
            self.failed = True
            return
        argv = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "(library call)"
        self._write([f"{self._stamp()} ==== {argv}  [{version_string()}, pid {os.getpid()}]", *self.pending])
        self.pending = []

    def _write(self, lines: list[str]) -> None:
        try:
            self.file.write("\n".join(lines) + "\n")
            self.file.flush()
        except (OSError, ValueError):
            self.failed = True

    def end(self, error: BaseException | None) -> None:
        if self.file is None:
            self.pending = []
            return
        if error is None:
            self.add("finished")
        elif isinstance(error, KeyboardInterrupt):
            self.add("interrupted (Ctrl-C); finished shards are kept")
        else:
            self.add(f"failed: {type(error).__name__}: {' '.join(str(error).split())[:2000]}")
        try:
            self.file.close()
        except OSError:
            pass
        self.file = None


class Runner:
    """Runs a config's stages in order in its run folder, which it holds (the run lock) while it runs."""

    def __init__(self, config: PipelineConfig, executor=None, force: bool = False, progress: bool = True,
                 log=None):
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.folder = RunFolder(self.run_dir)
        self.force = force
        self.progress = progress
        self._say = log or (lambda msg: print(msg, file=sys.stderr))
        self._runlog = RunLog(self.folder)
        self._plan_distrusted: set[str] = set()  # stages whose plan the up-to-date check already refused
        self._owns_executor = executor is None
        self.executor = executor or make_executor(config.executor, config.workers, progress,
                                                  config.executor_options, log=self.log)

    def log(self, msg: str) -> None:
        """Say ``msg`` (stderr by default) and keep it for the run folder's log."""
        self._say(msg)
        self._runlog.add(msg)

    # -- public ---------------------------------------------------------
    def run(self, upto: str | None = None, select_only: str | None = None) -> list[StageResult]:
        """Run stages up to ``upto`` (all by default), skipping those already up to date.

        With ``select_only``, that stage is re-decided from cached scores and no
        scorer runs; :class:`StaleScoresError` if its scores are not current.
        A second process on the same run folder is refused (:class:`RunInUse`).
        """
        try:
            return self._run(upto, select_only)
        except KeyboardInterrupt:  # Ctrl-C: end the workers now rather than wait for their tasks
            if self._owns_executor and hasattr(self.executor, "abort"):
                self.executor.abort()
            raise
        finally:
            if self._owns_executor and hasattr(self.executor, "close"):
                self.executor.close()

    def _run(self, upto: str | None, select_only: str | None) -> list[StageResult]:
        try:
            self.folder.check_usable(self.force)
            with self.folder.lock():
                try:
                    results = self._run_checked(upto, select_only)
                except BaseException as e:
                    self._runlog.end(e)
                    raise
                self._runlog.end(None)
                return results
        except TaskError as e:  # a worker's full disk is the run's full disk
            cause = e.__cause__
            if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RunFolderError(f"no space left for the run folder {self.run_dir} ({cause.filename}); finished "
                                     f"shards are kept: free space and rerun to resume") from None
            raise
        except OSError as e:
            where = Path(e.filename).absolute() if e.filename is not None else None
            in_run = where is not None and (where == self.run_dir or self.run_dir in where.parents)
            if in_run and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise RunFolderError(f"cannot write to the run folder {self.run_dir}: {e.strerror}: "
                                     f"{e.filename}") from None
            if in_run and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RunFolderError(f"no space left for the run folder {self.run_dir} ({e.filename}); finished "
                                     f"shards are kept: free space and rerun to resume") from None
            raise

    def _run_checked(self, upto: str | None, select_only: str | None) -> list[StageResult]:
        self.folder.sweep_temp_files()
        if self.folder.write_pipeline({
            "stages": [{"name": s["name"], "kind": s["kind"]} for s in self.config.stages],
            "config": self.config.raw,
            "seed": self.config.seed,
            # who made it (ignored when deciding whether the file changed): code, packages, host, date, config file
            PROVENANCE_KEY: {**provenance(), "config_file": config_record(self.config.path)},
        }):
            self._runlog.start()
        results = []
        prev: dict | None = None
        stages = self.config.upto(select_only or upto)
        for spec in stages:
            only_select = select_only == spec["name"]
            if select_only and not only_select:
                # upstream of the selected stage must already be complete and current
                prev = self._require_current(spec)
                continue
            res = self._run_stage(spec, prev, select_only=only_select)
            results.append(res)
            prev = self.folder.stage(spec["name"]).manifest()
        return results

    def _plan_unchanged(self, stage: Stage, folder: StageFolder) -> bool:
        """The up-to-date fast path's plan check: every plan file listed, none added, each its recorded size."""
        if not stage.needs_plan():
            return True
        problem = folder.plan_problem(verify_hash=False)
        if problem:
            self.log(f"[{folder.name}] the plan cannot be trusted ({problem}); planning again")
            self._plan_distrusted.add(folder.name)
        return problem is None

    def _stats_match(self, folder: StageFolder, manifest: dict) -> bool:
        if folder.stats_match(manifest):
            return True
        self.log(f"[{folder.name}] {folder.stats_path.name} is damaged or does not match the manifest; "
                 f"rebuilding it from the finished shards")
        return False

    def _manifest_files_present(self, folder: StageFolder, manifest: dict) -> bool:
        """The up-to-date fast path's cheap check: every listed file exists with its recorded size."""
        for sh in manifest.get("shards", []):
            for part in ("kept", "removed"):
                if not file_matches(folder.path(sh[part]["path"]), sh[part], verify_hash=False):
                    self.log(f"[{folder.name}] {sh[part]['path']} is missing or changed size; "
                             f"verifying finished shards")
                    return False
        return True

    # -- internals ------------------------------------------------------
    def _require_current(self, spec: dict) -> dict:
        folder = self.folder.stage(spec["name"])
        if not folder.is_finished():
            raise StaleScoresError(f"stage {spec['name']} has not been run; run `winnow run` first")
        return folder.manifest()

    def _fingerprints(self, stage: Stage, spec: dict, prev: dict | None,
                      tasks: list[dict] | None) -> tuple[str, str, str]:
        if prev is None:
            input_fp = stage.input_fingerprint(tasks)  # a source stage: its external inputs
        else:
            input_fp = prev["output_fingerprint"]
        score_fp = fingerprint("score", spec["kind"], stage.scoring_config(), input_fp)
        stage_fp = fingerprint("stage", spec["kind"], stage.decision_config(), score_fp)
        return input_fp, score_fp, stage_fp

    def _ctx_dict(self, folder: StageFolder, prev: dict | None, shards: list[str]) -> dict:
        input_folder = self.folder.stage(prev["stage"]) if prev else None
        return StageContext.for_stage(folder, self.config.seed, shards, input_folder).to_dict()

    def _run_stage(self, spec: dict, prev: dict | None, select_only: bool = False) -> StageResult:
        stage = self.config.stage_object(spec)  # built once, when the config was loaded
        use_stage(spec, stage)  # tasks run in this process use this object too
        if stage.reads_inputs:
            stage.run_dir = self.run_dir  # a source stage never reads inputs from inside the run folder
        folder = self.folder.stage(spec["name"])
        tasks = stage.source_tasks() if stage.reads_inputs else None  # inputs expanded once per run
        input_fp, score_fp, stage_fp = self._fingerprints(stage, spec, prev, tasks)
        if folder.is_finished() and not self.force:
            try:
                m = folder.manifest()
            except (OSError, ValueError) as e:  # a damaged manifest: the stage is redone from its verified shards
                why = getattr(e, "reason", "") or f"{type(e).__name__}: {e}"
                self.log(f"[{spec['name']}] {folder.manifest_path.name} is unreadable or damaged ({why}); "
                         f"verifying finished shards")
                m = {}
            if isinstance(m, dict) and m.get("fingerprint") == stage_fp and self._manifest_files_present(folder, m) \
                    and self._plan_unchanged(stage, folder) and self._stats_match(folder, m):
                self.log(f"[{spec['name']}] up to date ({m['totals']['kept']:,} kept of {m['totals']['rows_in']:,})")
                return StageResult(spec["name"], "up to date", folder.stats() or {})
        self._runlog.start()  # the run changes the folder from here on: its log is written
        # before anything in it is written or deleted: our temp files swept, foreign files refused
        folder.prepare(force=self.force, wipe=self.force and not select_only, log=self.log)
        self.log(f"[{spec['name']}] {stage.describe()}")
        t0 = time.perf_counter()

        if stage.reads_inputs:
            markers = self._run_source(spec, folder, stage_fp, tasks)
        else:
            shards = [s["name"] for s in prev["shards"]]
            ctx_d = self._ctx_dict(folder, prev, shards)
            markers = self._run_shards(stage, spec, folder, ctx_d, shards, score_fp, stage_fp, select_only)
        wall = time.perf_counter() - t0
        manifest, stats = self._finalize(spec, folder, markers, input_fp, score_fp, stage_fp, wall)
        self.log(self._summary_line(spec["name"], stats))
        return StageResult(spec["name"], "selected" if select_only else "ran", stats)

    def _run_source(self, spec, folder: StageFolder, stage_fp, tasks: list[dict]) -> list[dict]:
        ctx_d = self._ctx_dict(folder, None, [])
        args = [(spec, ctx_d, t, stage_fp) for t in tasks]
        labels = [t.get("label", str(i)) for i, t in enumerate(tasks)]
        results = run_all(self.executor, source_task, args, f"{spec['name']}", labels)
        markers = [m for task_markers in results for m in task_markers]
        for m in markers:  # what a source task wants said (a detected text field, an unverifiable file)
            for note in m.get("notes") or ():
                self.log(f"[{spec['name']}] {note}")
        return markers

    def _run_shards(self, stage, spec, folder: StageFolder, ctx_d, shards, score_fp, stage_fp,
                    select_only) -> list[dict]:
        need_score = []
        if stage.has_scores:
            need_score = [sh for sh in shards if not folder.valid_scores_marker(sh, score_fp)]
            if select_only and need_score:
                raise StaleScoresError(
                    f"stage {spec['name']}: {len(need_score)} of {len(shards)} shards have no current scores "
                    f"(e.g. {need_score[0]}); `winnow select` never re-scores -- run `winnow run` instead"
                )
        done = {}
        for sh in shards:
            m = folder.valid_marker(sh, stage_fp)
            if m is not None:
                done[sh] = m
        todo = [sh for sh in shards if sh not in done]
        plan_problem = None
        if stage.needs_plan():
            plan_problem = folder.plan_problem(stage_fp) if folder.plan_marker_path.exists() else "no plan yet"
        if len(done) and not plan_problem:
            self.log(f"[{spec['name']}] resuming: {len(done)} of {len(shards)} shards already finished")
        if stage.needs_plan():
            if need_score:
                run_all(self.executor, score_task,
                        [(spec, ctx_d, sh, score_fp) for sh in need_score], f"{spec['name']} score", need_score)
            if plan_problem:
                if plan_problem not in ("no plan yet", "made for other settings or input") and \
                        spec["name"] not in self._plan_distrusted:
                    self.log(f"[{spec['name']}] the plan cannot be trusted ({plan_problem}); planning again")
                todo = list(shards)  # a new plan invalidates every decision
                done = {}
                folder.reset_plan()
                t0 = time.perf_counter()
                plan_ctx = StageContext.from_dict(ctx_d)
                plan_ctx.executor = self.executor
                stage.plan(plan_ctx)
                folder.write_plan_marker(stage_fp, time.perf_counter() - t0)
            results = run_all(self.executor, decide_task,
                              [(spec, ctx_d, sh, stage_fp) for sh in todo], f"{spec['name']} decide", todo)
        else:
            ns = set(need_score)
            results = run_all(self.executor, score_and_decide_task,
                              [(spec, ctx_d, sh, score_fp, stage_fp, sh in ns) for sh in todo],
                              f"{spec['name']}", todo)
        for m in results:
            done[m["shard"]] = m
        return [done[sh] for sh in shards]

    def _finalize(self, spec, folder: StageFolder, markers, input_fp, score_fp, stage_fp, wall) -> tuple[dict, dict]:
        shard_entries = []
        for m in markers:
            shard_entries.append({"name": m["shard"], "rows_in": m["rows_in"],
                                  "kept": {k: m["kept"][k] for k in MANIFEST_FILE_KEYS},
                                  "removed": {k: m["removed"][k] for k in MANIFEST_FILE_KEYS}})
        stale = folder.remove_stale({m["shard"] for m in markers})
        if stale:
            self.log(f"[{spec['name']}] deleted {stale} files of shards a previous run wrote and this one did not")
        totals = {
            "rows_in": sum(m["rows_in"] for m in markers),
            "kept": sum(m["kept"]["rows"] for m in markers),
            "removed": sum(m["removed"]["rows"] for m in markers),
        }
        if totals["rows_in"] != totals["kept"] + totals["removed"]:
            raise ConservationError(f"stage {spec['name']}: totals do not add up: {totals}")
        manifest = {
            "stage": spec["name"],
            "kind": spec["kind"],
            "fingerprint": stage_fp,
            "score_fingerprint": score_fp,
            "input_fingerprint": input_fp,
            "output_fingerprint": fingerprint([e["kept"]["sha256"] for e in shard_entries]),
            "shards": shard_entries,
            "totals": totals,
            PROVENANCE_KEY: provenance(),  # who wrote it; compare manifests with without_provenance()
        }
        by_reason: Counter = Counter()
        by_reason_chars: Counter = Counter()
        for m in markers:
            for r, (n, c) in m["removed_by_reason"].items():
                by_reason[r] += n
                by_reason_chars[r] += c
        cpu = sum(m.get("seconds", 0) for m in markers)
        stats = {
            "stage": spec["name"],
            "kind": spec["kind"],
            "docs_in": totals["rows_in"],
            "chars_in": sum(m["chars_in"] for m in markers),
            "kept": totals["kept"],
            "kept_chars": sum(m["kept_chars"] for m in markers),
            "removed": totals["removed"],
            "removed_chars": sum(by_reason_chars.values()),
            "removed_by_reason": {r: {"docs": by_reason[r], "chars": by_reason_chars[r]} for r in sorted(by_reason)},
            "shards": len(markers),
            "wall_seconds": round(wall, 3),
            "task_seconds": round(cpu, 3),
            "docs_per_second": round(totals["rows_in"] / wall, 1) if wall > 0 else None,
        }
        for m in markers:  # stage-specific counters (e.g. ingest's skipped WARC records)
            for k, v in (m.get("counters") or {}).items():
                stats.setdefault("counters", {}).setdefault(k, 0)
                stats["counters"][k] += v
        folder.write_stats(stats)
        folder.write_manifest(manifest)
        return manifest, stats

    @staticmethod
    def _summary_line(name: str, stats: dict) -> str:
        n_in, kept = stats["docs_in"], stats["kept"]
        pct = 100.0 * kept / n_in if n_in else 0.0
        top = ", ".join(f"{r} {v['docs']:,}" for r, v in sorted(stats["removed_by_reason"].items(),
                                                                key=lambda kv: -kv[1]["docs"])[:4])
        rate = f"{stats['docs_per_second']:,.0f} docs/s" if stats.get("docs_per_second") else ""
        return f"[{name}] {n_in:,} in -> {kept:,} kept ({pct:.1f}%)" + (f"; removed: {top}" if top else "") + f"  [{stats['wall_seconds']:.1f}s, {rate}]"
