"""The stage runner: schedules score / plan / decide, resumes, checks, records.

Resume rule: a shard counts as finished only when its marker in ``_done/`` exists
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
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.config import PipelineConfig
from pipeline.errors import InputProblem
from pipeline.executors import make_executor, run_all
from pipeline.shards import (
    MANIFEST_FILE_KEYS,
    TMP_MARK,
    StageLayout,
    atomic_write_json,
    canonical_json,
    clean_temp_files,
    file_matches,
    fingerprint,
    inside,
    read_json,
    read_parquet,
    remove_inside,
    write_parquet,
)
from pipeline.outputs import (  # noqa: F401  (re-exported: the runner's public surface)
    ConservationError,
    apply_decision,
    marker_valid,
    text_chars,
    write_shard_outputs,
)
from pipeline.stage import Stage, StageContext, build_stage, cached_stage


class StaleScoresError(InputProblem, RuntimeError):
    """`winnow select` needs cached scores, and they are missing or stale."""


class RunFolderError(InputProblem, ValueError):
    """The run folder cannot be used as asked (not a winnow run, foreign files, not writable)."""


_SHARD_FILES = (("kept", ".parquet"), ("removed", ".parquet"), ("scores", ".parquet"),
                ("_done", ".json"), ("scores/_done", ".json"))
# ingest names shards part-<file>-<chunk> and marks finished input files file-<file>
_WINNOW_STEM = re.compile(r"^(part-\d+-\d+|file-\d+)$")
_FILE_MARKER = re.compile(r"^file-\d+\.json$")


def _winnow_file_name(name: str, ext: str) -> bool:
    return TMP_MARK in name or bool(_WINNOW_STEM.match(name[: -len(ext)]))


def _is_marker_or_marked(path: Path) -> bool:
    """For a stale file off the shard pattern: a marker, or a shard file that has one."""
    if path.suffix == ".json":
        return _is_marker(path)
    root = path.parent.parent  # kept/, removed/ and scores/ sit in the stage folder
    return any((root / d / f"{path.stem}.json").exists() for d in ("_done", "scores/_done"))


def _is_marker(path: Path) -> bool:
    """A marker winnow wrote: a JSON object with a fingerprint (read only for names off the usual pattern)."""
    try:
        m = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and "fingerprint" in m


def _foreign_files(layout: StageLayout) -> list[Path]:
    """Files in a stage folder that winnow would not have written there (stage-specific ``plan/`` aside).

    A shard file is winnow's when its name follows the shard pattern or a marker names its shard; a
    marker is winnow's when its name follows the pattern or it reads as a marker.
    """
    root = layout.root
    out: list[Path] = []
    marked = {p.stem for d in ("_done", "scores/_done") if (root / d).is_dir()
              for p in (root / d).glob("*.json") if _winnow_file_name(p.name, ".json") or _is_marker(p)}
    sub_dirs = {"kept", "removed", "scores", "_done", "plan"}
    for p in sorted(root.iterdir()):
        if p.name in sub_dirs and p.is_dir() and not p.is_symlink():
            continue
        if p.name in ("manifest.json", "stats.json") and p.is_file() and not p.is_symlink():
            continue
        if TMP_MARK in p.name and p.is_file():
            continue
        out.append(p)
    for sub, ext in _SHARD_FILES:
        d = root / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if sub == "scores" and p.name == "_done" and p.is_dir() and not p.is_symlink():
                continue
            if p.is_symlink() or not p.is_file() or not p.name.endswith(ext):
                out.append(p)
            elif not _winnow_file_name(p.name, ext) and p.name[: -len(ext)] not in marked:
                out.append(p)
    return out


# ---------------------------------------------------------------------------
# task functions (module level so worker processes can run them)

_stage = cached_stage


def _ctx(c: dict) -> StageContext:
    return StageContext(
        run_dir=Path(c["run_dir"]), stage_dir=Path(c["stage_dir"]), plan_dir=Path(c["plan_dir"]),
        shards=list(c["shards"]), seed=c["seed"],
        input_stage_dir=Path(c["input_stage_dir"]) if c.get("input_stage_dir") else None,
    )


def score_task(spec: dict, ctx_d: dict, shard: str, score_fp: str) -> dict:
    stage, ctx = _stage(spec), _ctx(ctx_d)
    ctx.shard = shard
    layout = StageLayout(ctx.run_dir, stage.name)
    t0 = time.perf_counter()
    table = read_parquet(ctx.input_path(shard))
    scores = stage.score(table, ctx)
    if scores.num_rows != table.num_rows:
        raise ConservationError(f"{stage.name}/{shard}: score returned {scores.num_rows} rows for {table.num_rows}")
    if "id" not in scores.column_names:
        scores = scores.append_column("id", table.column("id"))
    f = write_parquet(layout.root, layout.scores(shard), scores)
    marker = {"shard": shard, "fingerprint": score_fp, "scores": f.to_dict(),
              "rows": table.num_rows, "seconds": round(time.perf_counter() - t0, 4)}
    atomic_write_json(layout.scores_marker(shard), marker)
    return marker


def decide_task(spec: dict, ctx_d: dict, shard: str, stage_fp: str) -> dict:
    stage, ctx = _stage(spec), _ctx(ctx_d)
    ctx.shard = shard
    layout = StageLayout(ctx.run_dir, stage.name)
    t0 = time.perf_counter()
    table = read_parquet(ctx.input_path(shard))
    if stage.has_scores:
        scores = read_parquet(layout.root / layout.scores(shard))
        if scores.num_rows != table.num_rows or scores.column("id") != table.column("id"):
            raise StaleScoresError(f"{stage.name}/{shard}: cached scores are not aligned with the input shard")
    else:
        scores = pa.table({})
    decision = stage.decide(table, scores, ctx)
    kept, removed = apply_decision(table, decision, stage.name)
    return write_shard_outputs(layout, shard, table.num_rows, text_chars(table), kept, removed,
                               stage_fp, time.perf_counter() - t0)


def source_task(spec: dict, ctx_d: dict, task: dict, stage_fp: str) -> list[dict]:
    """One unit of a source stage's reading work (e.g. one input file of ingest)."""
    return _stage(spec).run_source_task(task, _ctx(ctx_d), stage_fp)


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


class Runner:
    def __init__(self, config: PipelineConfig, executor=None, force: bool = False, progress: bool = True,
                 log=None):
        self.config = config
        self.run_dir = Path(config.run_dir)
        self._owns_executor = executor is None
        self.executor = executor or make_executor(config.executor, config.workers, progress,
                                                  config.executor_options)
        self.force = force
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    # -- public ---------------------------------------------------------
    def run(self, upto: str | None = None, select_only: str | None = None) -> list[StageResult]:
        """Run stages up to ``upto`` (all by default), skipping those already up to date.

        With ``select_only``, that stage is re-decided from cached scores and no
        scorer runs; :class:`StaleScoresError` if its scores are not current.
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
            return self._run_checked(upto, select_only)
        except OSError as e:
            where = Path(e.filename).absolute() if e.filename is not None else None
            in_run = where is not None and (where == self.run_dir or self.run_dir in where.parents)
            if in_run and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise RunFolderError(f"cannot write to the run folder {self.run_dir}: {e.strerror}: "
                                     f"{e.filename}") from None
            raise

    def _run_checked(self, upto: str | None, select_only: str | None) -> list[StageResult]:
        self._check_run_folder()
        self._write_pipeline_json()
        results = []
        prev: dict | None = None
        stages = self.config.upto(select_only or upto)
        for spec in stages:
            only_select = select_only == spec["name"]
            if select_only and not only_select:
                # upstream of the selected stage must already be complete and current
                prev = self._require_current(spec, prev)
                continue
            res = self._run_stage(spec, prev, select_only=only_select)
            results.append(res)
            prev = read_json(StageLayout(self.run_dir, spec["name"]).manifest)
        return results

    # -- run-folder safety ---------------------------------------------
    def _check_run_folder(self) -> None:
        """Refuse a folder that holds files but is not a winnow run (unless ``force``)."""
        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise RunFolderError(f"run_dir {d} exists and is not a folder")
        if self.force or not d.exists() or (d / "pipeline.json").exists():
            return
        entries = sorted(p.name for p in d.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise RunFolderError(
                f"run_dir {d} is not empty ({shown}) and is not a winnow run (no pipeline.json); "
                f"choose a new or empty run_dir, or pass --force to use it anyway")

    def _write_pipeline_json(self) -> None:
        """Record the stages and config; an unchanged file is not rewritten (an up-to-date run writes nothing)."""
        path = self.run_dir / "pipeline.json"
        content = {
            "stages": [{"name": s["name"], "kind": s["kind"]} for s in self.config.stages],
            "config": self.config.raw,
            "seed": self.config.seed,
        }
        try:
            if path.is_file() and path.read_text(encoding="utf-8") == canonical_json(content):
                return
        except (OSError, UnicodeDecodeError):
            pass
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, content)

    def _check_stage_folder(self, layout: StageLayout) -> None:
        """Refuse to run a stage whose folder holds files winnow did not write (``--force`` wipes it instead)."""
        root = layout.root
        if not root.exists() and not root.is_symlink():
            return
        if not inside(self.run_dir, root) or root.is_symlink() or not root.is_dir():
            raise RunFolderError(f"stage folder {root} is not a folder inside the run folder {self.run_dir}")
        if self.force:
            return
        foreign = _foreign_files(layout)
        if foreign:
            shown = ", ".join(str(p.relative_to(self.run_dir)) for p in foreign[:3])
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise RunFolderError(
                f"stage folder {root} holds files winnow did not write ({shown}{more}); move them away, "
                f"or pass --force to delete the stage folder and redo the stage")

    def _manifest_files_present(self, layout: StageLayout, manifest: dict) -> bool:
        """The up-to-date fast path's cheap check: every listed file exists with its recorded size."""
        for sh in manifest.get("shards", []):
            for part in ("kept", "removed"):
                if not file_matches(layout.root / sh[part]["path"], sh[part], verify_hash=False):
                    self.log(f"[{layout.root.name}] {sh[part]['path']} is missing or changed size; "
                             f"verifying finished shards")
                    return False
        return True

    # -- internals ------------------------------------------------------
    def _require_current(self, spec: dict, prev_manifest: dict | None) -> dict:
        layout = StageLayout(self.run_dir, spec["name"])
        if not layout.manifest.exists():
            raise StaleScoresError(f"stage {spec['name']} has not been run; run `winnow run` first")
        return read_json(layout.manifest)

    def _fingerprints(self, stage: Stage, spec: dict, prev: dict | None) -> tuple[str, str, str]:
        if prev is None:
            input_fp = stage.input_fingerprint()  # a source stage: its external inputs
        else:
            input_fp = prev["output_fingerprint"]
        score_fp = fingerprint("score", spec["kind"], stage.scoring_config(), input_fp)
        stage_fp = fingerprint("stage", spec["kind"], stage.decision_config(), score_fp)
        return input_fp, score_fp, stage_fp

    def _ctx_dict(self, spec: dict, prev: dict | None, shards: list[str]) -> dict:
        layout = StageLayout(self.run_dir, spec["name"])
        return {
            "run_dir": str(self.run_dir), "stage_dir": str(layout.root), "plan_dir": str(layout.plan_dir),
            "shards": shards, "seed": self.config.seed,
            "input_stage_dir": str(self.run_dir / prev["stage"]) if prev else None,
        }

    def _run_stage(self, spec: dict, prev: dict | None, select_only: bool = False) -> StageResult:
        stage = build_stage(spec)
        if stage.reads_inputs:
            stage.run_dir = self.run_dir  # a source stage never reads inputs from inside the run folder
        layout = StageLayout(self.run_dir, spec["name"])
        input_fp, score_fp, stage_fp = self._fingerprints(stage, spec, prev)
        if layout.manifest.exists() and not self.force:
            try:
                m = read_json(layout.manifest)
            except (OSError, ValueError):  # a damaged manifest: the stage is redone from its verified shards
                self.log(f"[{spec['name']}] manifest.json is unreadable; verifying finished shards")
                m = {}
            if m.get("fingerprint") == stage_fp and self._manifest_files_present(layout, m):
                self.log(f"[{spec['name']}] up to date ({m['totals']['kept']:,} kept of {m['totals']['rows_in']:,})")
                return StageResult(spec["name"], "up to date", read_json(layout.stats) if layout.stats.exists() else {})
        self._check_stage_folder(layout)  # before anything in it is written or deleted
        if self.force and not select_only and layout.root.exists():
            self.log(f"[{spec['name']}] --force: deleting {layout.root}")
            remove_inside(self.run_dir, layout.root)
        layout.root.mkdir(parents=True, exist_ok=True)
        clean_temp_files(layout.root, self.run_dir)
        self.log(f"[{spec['name']}] {stage.describe()}")
        t0 = time.perf_counter()

        if stage.reads_inputs:
            markers = self._run_source(stage, spec, stage_fp)
        else:
            shards = [s["name"] for s in prev["shards"]]
            ctx_d = self._ctx_dict(spec, prev, shards)
            markers = self._run_shards(stage, spec, layout, ctx_d, shards, score_fp, stage_fp, select_only)
        wall = time.perf_counter() - t0
        manifest, stats = self._finalize(spec, layout, markers, input_fp, score_fp, stage_fp, wall)
        self.log(self._summary_line(spec["name"], stats))
        return StageResult(spec["name"], "selected" if select_only else "ran", stats)

    def _run_source(self, stage, spec, stage_fp) -> list[dict]:
        tasks = stage.source_tasks()
        ctx_d = self._ctx_dict(spec, None, [])
        args = [(spec, ctx_d, t, stage_fp) for t in tasks]
        labels = [t.get("label", str(i)) for i, t in enumerate(tasks)]
        results = run_all(self.executor, source_task, args, f"{spec['name']}", labels)
        markers = [m for task_markers in results for m in task_markers]
        for m in markers:  # what a source task wants said (a detected text field, an unverifiable file)
            for note in m.get("notes") or ():
                self.log(f"[{spec['name']}] {note}")
        return markers

    def _run_shards(self, stage, spec, layout, ctx_d, shards, score_fp, stage_fp, select_only) -> list[dict]:
        need_score = []
        if stage.has_scores:
            for sh in shards:
                if not marker_valid(layout, layout.scores_marker(sh), score_fp, files=("scores",)):
                    need_score.append(sh)
            if select_only and need_score:
                raise StaleScoresError(
                    f"stage {spec['name']}: {len(need_score)} of {len(shards)} shards have no current scores "
                    f"(e.g. {need_score[0]}); `winnow select` never re-scores -- run `winnow run` instead"
                )
        todo = [sh for sh in shards if not marker_valid(layout, layout.done_marker(sh), stage_fp)]
        done = {sh: read_json(layout.done_marker(sh)) for sh in shards if sh not in todo}
        if len(done):
            self.log(f"[{spec['name']}] resuming: {len(done)} of {len(shards)} shards already finished")
        if stage.needs_plan():
            if need_score:
                run_all(self.executor, score_task,
                        [(spec, ctx_d, sh, score_fp) for sh in need_score], f"{spec['name']} score", need_score)
            plan_marker = layout.plan_dir / "_plan_done.json"
            plan_ok = plan_marker.exists() and read_json(plan_marker).get("fingerprint") == stage_fp
            if not plan_ok:
                todo = list(shards)  # a new plan invalidates every decision
                done = {}
                if layout.plan_dir.exists():
                    remove_inside(self.run_dir, layout.plan_dir)
                layout.plan_dir.mkdir(parents=True)
                t0 = time.perf_counter()
                plan_ctx = _ctx(ctx_d)
                plan_ctx.executor = self.executor
                stage.plan(plan_ctx)
                atomic_write_json(plan_marker, {"fingerprint": stage_fp, "seconds": round(time.perf_counter() - t0, 3)})
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

    def _finalize(self, spec, layout, markers, input_fp, score_fp, stage_fp, wall) -> tuple[dict, dict]:
        shard_entries = []
        for m in markers:
            shard_entries.append({"name": m["shard"], "rows_in": m["rows_in"],
                                  "kept": {k: m["kept"][k] for k in MANIFEST_FILE_KEYS},
                                  "removed": {k: m["removed"][k] for k in MANIFEST_FILE_KEYS}})
        stale = self._remove_stale_files(self.run_dir, layout, {m["shard"] for m in markers})
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
        atomic_write_json(layout.stats, stats)
        atomic_write_json(layout.manifest, manifest)
        return manifest, stats

    @staticmethod
    def _remove_stale_files(run_dir: Path, layout: StageLayout, shards: set[str]) -> int:
        """Delete shard files (winnow's own, see :func:`_foreign_files`) of shards not in this run; returns how many.

        Ingest's per-input-file markers (``_done/file-N.json``) go too, as they always did, uncounted.
        """
        n = 0
        for sub, ext in _SHARD_FILES:
            d = layout.root / sub
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.is_file() and not p.is_symlink() and p.name.endswith(ext) and \
                        p.name[: -len(ext)] not in shards and (_winnow_file_name(p.name, ext) or _is_marker_or_marked(p)):
                    remove_inside(run_dir, p)
                    n += not _FILE_MARKER.match(p.name)  # ingest's per-input-file markers are not shards
        return n

    @staticmethod
    def _summary_line(name: str, stats: dict) -> str:
        n_in, kept = stats["docs_in"], stats["kept"]
        pct = 100.0 * kept / n_in if n_in else 0.0
        top = ", ".join(f"{r} {v['docs']:,}" for r, v in sorted(stats["removed_by_reason"].items(),
                                                                key=lambda kv: -kv[1]["docs"])[:4])
        rate = f"{stats['docs_per_second']:,.0f} docs/s" if stats.get("docs_per_second") else ""
        return f"[{name}] {n_in:,} in -> {kept:,} kept ({pct:.1f}%)" + (f"; removed: {top}" if top else "") + f"  [{stats['wall_seconds']:.1f}s, {rate}]"
