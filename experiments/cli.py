"""The `winnow` command line: the top floor. It imports the pipeline core, the filters and the
experiments; nothing imports it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
exit codes: 0 ok, 1 `check` found problems, 2 usage, 3 config, 4 input (file, run folder or stage output),
  5 run failure, 70 internal error (a bug: rerun with --debug and report it), 130 interrupted.

examples:
  winnow run experiments/configs/demo.yaml                 run every stage (resumes; skips finished work)
  winnow run CONFIG --stage langid                         run up to and including `langid`
  winnow select CONFIG --stage quality                     re-apply changed thresholds from cached scores
  winnow inspect runs/demo                                 the funnel: docs and chars per stage, removals by reason
  winnow inspect runs/demo --stage quality --removed --reason gopher_repetition -n 5
  winnow inspect runs/demo --id ID                         one document through every stage, and why it was removed
  winnow check runs/demo                                   verify every shard against its manifest
"""


def _add_run_args(p: argparse.ArgumentParser,
                  stage_help: str = "run stages up to and including this one (default: all)") -> None:
    p.add_argument("config", help="pipeline YAML (inputs, ordered stages, filter parameters)")
    p.add_argument("--stage", help=stage_help)
    p.add_argument("--workers", type=_count(1), help="parallel shard workers (default: config `workers`, else 1)")
    p.add_argument("--executor", choices=["local", "ray"], help="where shard tasks run (default: config, else local)")
    p.add_argument("--address", help="Ray cluster address for --executor ray (e.g. `auto`)")
    p.add_argument("--run-dir", help="override the config's run_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _count(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number >= ``minimum`` (``-n 0`` or ``--chars -5`` is a usage error),
    and <= ``maximum`` when one is given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected a whole number <= {maximum:,}, got {value:,}")
        return value

    parse.__name__ = "count"
    return parse


def _load(args):
    from pipeline.config import load_config

    overrides = {}
    if getattr(args, "run_dir", None):
        overrides["run_dir"] = str(Path(args.run_dir).resolve())
    if getattr(args, "workers", None):
        overrides["workers"] = args.workers
    if getattr(args, "executor", None):
        overrides["executor"] = args.executor
    cfg = load_config(args.config, overrides)
    if getattr(args, "address", None):
        if cfg.executor != "ray":  # else it was ignored and the run went local, on one machine
            from pipeline.errors import UsageError

            raise UsageError(f"--address {args.address}: goes with the Ray executor (--executor ray, or "
                             f"`executor: ray` in the config); this run's executor is {cfg.executor}")
        cfg.executor_options["address"] = args.address
    return cfg


def cmd_run(args) -> int:
    from pipeline.inspection import format_funnel
    from pipeline.runner import Runner

    cfg = _load(args)
    if args.limit is not None:
        _limit_inputs(cfg, args.limit)
    runner = Runner(cfg, force=args.force, progress=not args.no_progress)
    runner.run(upto=args.stage)
    print(format_funnel(cfg.run_dir))
    return 0


def _limit_inputs(cfg, limit: int) -> None:
    """`--limit N`: the source stage reads the first N records of each input (a quick trial run). It is a
    stage parameter like any other, so the next run without it redoes the stage on the whole input."""
    cfg.stages[0]["limit"] = limit
    first = cfg.raw["stages"][0]  # recorded in the run's pipeline record too
    cfg.raw["stages"][0] = {**first, "limit": limit} if isinstance(first, dict) else {"name": first, "limit": limit}


def cmd_select(args) -> int:
    from pipeline.errors import InputProblem, UsageError
    from pipeline.inspection import format_funnel
    from pipeline.rundir import RunFolder
    from pipeline.runner import Runner

    cfg = _load(args)
    if not args.stage:  # "every stage" has no meaning here: re-deciding one stage changes the next one's input
        raise UsageError(f"winnow select needs --stage: the one stage whose thresholds you changed (stages of "
                         f"{args.config}: {', '.join(cfg.stage_names())}); it never runs a scorer")
    cfg.upto(args.stage)  # an unknown stage is named before anything is read
    if cfg.stage_object(cfg.stage(args.stage)).reads_inputs:
        raise UsageError(f"stage {args.stage} reads the inputs: it has no cached scores to re-decide; "
                         f"`winnow run {args.config}` reads them again")
    if not RunFolder(cfg.run_dir).is_run():
        raise InputProblem(f"run_dir {cfg.run_dir} holds no winnow run yet; `winnow select` re-decides from the "
                           f"scores a run cached: `winnow run {args.config}` first")
    results = Runner(cfg, progress=not args.no_progress).run(select_only=args.stage)
    later = cfg.stage_names()[cfg.stage_names().index(args.stage) + 1:]
    print(format_funnel(cfg.run_dir))
    if results and results[-1].status == "up to date":
        print(f"\nnothing to re-decide: stage {args.stage} is up to date with the thresholds in {args.config}")
    elif later:
        print(f"\nnote: stages after {args.stage} ({', '.join(later)}) now see a different input; "
              f"`winnow run` brings them up to date.")
    return 0


def cmd_check(args) -> int:
    from experiments.check import check_experiment
    from pipeline.check import check_run
    from pipeline.inspection import open_run
    from pipeline.rundir import RunFolder

    target = Path(args.run_dir)
    if (target / "experiment.json").exists() and not RunFolder(target).is_run():  # an ablation folder
        problems = check_experiment(target, allow_unfinished=args.partial)
        what = "every artifact matches its manifest and every run its subset"
    else:
        if not RunFolder(target).is_run():  # not a run at all: one line saying what it is (exit 4), not a finding
            open_run(args.run_dir)
        problems = check_run(target, deep=not args.quick, allow_unstarted=args.partial)
        what = None
        if (target / "ablation" / "experiment.json").exists():  # the run's ablation folder, checked with it
            problems += [f"ablation: {p}" for p in check_experiment(target / "ablation", allow_unfinished=args.partial)]
    if what and not problems:
        print(f"ok: {args.run_dir}: {what}")
        return 0
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {args.run_dir}", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"ok: {args.run_dir}: every stage finished, every shard matches its manifest; rows in = kept + removed "
          f"in every stage and = the previous stage's kept")
    return 0


def cmd_inspect(args) -> int:
    import pyarrow as pa

    from pipeline.errors import InputProblem
    from pipeline.inspection import (format_clusters, format_document, format_funnel, format_trace, iter_rows,
                                     open_run, read_failure, require_stage, trace_document)

    run, names = open_run(args.run_dir)
    if args.id is not None:
        print(format_trace(trace_document(run.root, args.id), args.id, max_chars=args.chars))
        return 0
    if args.clusters:
        stage = args.stage or _first_dedup_stage(run)
        if stage is None:
            raise InputProblem(f"{run.root} has no dedup stage; name one with --stage")
        require_stage(run, names, stage)
        try:
            print(format_clusters(run.root, stage, args.n))
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:
            raise read_failure(run, stage, e) from None
        return 0
    if not args.stage:
        print(format_funnel(run.root))
        return 0
    require_stage(run, names, args.stage)
    shown = 0
    try:
        for row in iter_rows(run.root, args.stage, removed=args.removed or bool(args.reason), reason=args.reason):
            print(format_document(row, max_chars=args.chars))
            print()
            shown += 1
            if shown >= args.n:
                break
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        raise read_failure(run, args.stage, e) from None
    if not shown and args.reason:
        reasons = sorted((run.stats(args.stage) or {}).get("removed_by_reason") or {})
        print(f"no documents removed with reason {args.reason!r} in stage {args.stage}"
              + (f"; its reasons: {', '.join(reasons)}" if reasons else "; it removed none"))
    elif not shown:
        print(f"no {'removed' if args.removed else 'kept'} documents in stage {args.stage}")
    return 0


def _first_dedup_stage(run) -> str | None:
    """The first stage of a dedup kind, as the run records it (no stage name is assumed)."""
    for s in run.pipeline().get("stages", []):
        if isinstance(s, dict) and s.get("kind") in ("minhash_dedup", "exact_dedup"):
            return s.get("name")
    return None


def cmd_filters(args) -> int:
    from filters.base import available_filters, describe_filter, filter_class
    from pipeline.errors import UsageError
    from pipeline.stage import STAGES

    if args.name:
        try:
            cls = filter_class(args.name)
        except KeyError as e:
            raise UsageError(str(e)) from None
        origin = available_filters().get(args.name, (None, None))[1]
        print(describe_filter(cls, origin))
        return 0

    print("Filters (use in a `kind: filter` stage's `filters:` list):")
    for name, (cls, origin) in available_filters().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {name:<22} {doc}  [{origin}]")
    print("\nStage kinds (a stage's `kind:`):")
    for e in STAGES.entries():
        doc = (e.obj.__doc__ or "").strip().splitlines()[0] if e.obj.__doc__ else ""
        print(f"  {e.name:<22} {doc}  [{e.origin}]")
    print("\nYour own: `package.module:Name` in the config, or a `winnow.filters` / `winnow.stages` entry point "
          "in your package (listed here once installed).")
    return 0


def cmd_train_quality(args) -> int:
    from experiments.quality_models import train_quality

    train_quality(_load(args), only=args.only)
    return 0


def cmd_demo_corpus(args) -> int:
    from experiments.synthetic_web import write_corpus
    from pipeline.errors import InputProblem

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputProblem(f"{args.out} exists and is not a folder")
    info = write_corpus(Path(args.out), n_docs=args.docs, seed=args.seed)
    print(f"wrote {info['documents']:,} documents in {info['files']} files to {args.out} (seed {args.seed})")
    return 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_ablation(args) -> int:
    from experiments.ablation import run_ablation
    from experiments.report import write_report
    from pipeline.config import load_config

    cfg = load_config(args.config)
    if args.pipeline_workers:
        cfg.workers = args.pipeline_workers
    if args.out_dir:
        cfg.raw["experiment"]["out_dir"] = str(Path(args.out_dir).resolve())
    if args.aa:  # the baseline against a copy of itself, in its own folder: the report must find no difference
        from experiments.ablation import experiment_settings

        out_dir = experiment_settings(cfg)["out_dir"] + "_aa"
        cfg.raw["experiment"].update(aa=True, out_dir=out_dir)
    _check_ablation_choices(cfg, args)
    if args.plan:
        from experiments.plan import plan_ablation, table

        plan = plan_ablation(cfg, log=_log, workers=args.workers, executor=args.executor, only_scales=args.scale,
                             retime=args.retime, settings_from=args.settings_from)
        print("\n".join(table(plan)))
        return 0
    out = run_ablation(cfg, log=_log, only_arms=args.arm, workers=args.workers, executor=args.executor,
                       only_scales=args.scale, retime=args.retime, settings_from=args.settings_from)
    if not args.no_report:
        path = write_report(out)  # the Reproduce line: the command, the config's path and sha256, the commit
        print(f"report: {path}")
        print(Path(path).read_text().split("\n## ")[0])
    return 0


def _check_ablation_choices(cfg, args) -> None:
    """--arm, --scale and --settings-from name things of this experiment: a typo is one line before any work,
    not a whole run of every arm (--scale on a one-rung experiment was ignored) or a silent fall-back."""
    from experiments.ablation import experiment_settings
    from pipeline.errors import InputProblem, UsageError
    from pipeline.params import nearest

    s = experiment_settings(cfg)
    for flag, given, names, what in (("--arm", args.arm, [a["name"] for a in s["arms"]], "arms"),
                                     ("--scale", args.scale, [r["name"] for r in s["scales"] or []], "rungs")):
        for name in given or []:
            if not names:
                raise UsageError(f"{flag} {name}: the experiment has no `scales:` (it is one rung)")
            if name not in names:
                raise UsageError(f"{flag} {name}: no such {what[:-1]}{nearest(name, names)}; {what}: {', '.join(names)}")
    if args.settings_from and not (Path(args.settings_from) / "experiment.json").is_file():
        raise InputProblem(f"--settings-from {args.settings_from}: no experiment.json there (give the results folder "
                           f"of an earlier ablation)")


def _report_destination(dest: Path, out: Path) -> None:
    """`report --export DEST`: a new or empty folder, or an earlier export; never the ablation itself, a pipeline
    run or a folder of someone else's files."""
    from pipeline.errors import InputProblem

    if dest.exists() and not dest.is_dir():
        raise InputProblem(f"--export {dest}: exists and is not a folder")
    if dest.is_dir() and dest.resolve() == out.resolve():
        raise InputProblem(f"--export {dest}: that is the ablation folder itself; choose a new or empty folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "experiment.json").is_file():
        raise InputProblem(f"--export {dest}: not empty and not an exported report (no experiment.json); "
                           f"choose a new or empty folder")


def cmd_report(args) -> int:
    from experiments.ablation import experiment_settings
    from experiments.report import write_report
    from pipeline.config import load_config
    from pipeline.errors import InputProblem
    from pipeline.rundir import RunFolder

    target = Path(args.target)
    if not target.exists():
        raise InputProblem(f"{args.target}: no such file or folder (give the ablation's config, or its output folder)")
    out = Path(experiment_settings(load_config(target))["out_dir"]) if target.is_file() else target
    if not (out / "experiment.json").is_file():
        what = "a pipeline run folder, not an ablation's" if RunFolder(out).is_run() else "not an ablation folder"
        raise InputProblem(f"{out}: {what} (no experiment.json); `winnow ablation CONFIG` writes one"
                           + (" (into the config's experiment.out_dir)" if target.is_file() else ""))
    if args.export:
        from experiments.report import export_results

        _report_destination(Path(args.export), out)
        out = export_results(out, Path(args.export))
    path = write_report(out, command=args.command)
    print(f"report: {path}")
    return 0


def cmd_quality_eval(args) -> int:
    from experiments.quality_eval import run

    return run(args, args.parser)


def _weights(text: str) -> dict[str, float]:
    """``web=0.7,wiki=0.3`` -> ``{"web": 0.7, "wiki": 0.3}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected SOURCE=WEIGHT[,SOURCE=WEIGHT...], got {part!r}")
    return out


def cmd_export(args) -> int:
    from experiments.export import ExportSettings, export

    s = ExportSettings(format=args.format, weights=args.weights, token_budget=args.token_budget, seed=args.seed,
                       repeat=args.repeat, tokenizer=args.tokenizer, train_tokenizer=args.train_tokenizer,
                       shard_docs=args.shard_docs, shard_tokens=args.shard_tokens, compress=args.gzip,
                       force=args.force)
    rec = export(args.run_dir, args.stage, args.to, s, log=_log)
    tok = rec.get("tokenizer") or {}
    extra = f", {tok['tokens']:,} tokens ({tok['dtype']})" if tok.get("tokens") is not None else ""
    print(f"exported {rec['documents']:,} documents of {args.stage} as {args.format} to {args.to}{extra}")
    return 0


def add_export_command(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export", help="write a stage's kept documents for training: JSONL, Parquet, a HF dataset or token shards",
        description="Write the kept documents of STAGE in RUN_DIR to a new folder: JSON Lines or Parquet files, a "
                    "Hugging Face dataset (datasets.load_from_disk opens it), or token shards for a training loop "
                    "(flat uint16/uint32 token files, index.parquet, the tokenizer saved beside them). Optionally "
                    "mix sources by weight and stop at a token budget (seeded draw). The folder gets export.json: "
                    "the run, stage, settings, counts, checksums and the code that wrote it.")
    e.add_argument("run_dir")
    e.add_argument("--stage", required=True, help="the stage whose kept documents to export")
    e.add_argument("--to", required=True, metavar="DIR", help="a new or empty folder")
    e.add_argument("--format", choices=["jsonl", "parquet", "hf", "tokens"], default="jsonl")
    e.add_argument("--tokenizer", metavar="PATH", help="a tokenizer.json, a folder holding one, or a transformers "
                                                       "tokenizer (name or folder)")
    e.add_argument("--train-tokenizer", type=int, metavar="VOCAB",
                   help="instead: train a byte-level BPE of this vocabulary size (257 to 1,048,576) on the stage's "
                        "documents")
    e.add_argument("--weights", type=_weights, metavar="SRC=W,...", help="per-source mixing weights (tokens)")
    e.add_argument("--token-budget", type=_count(1), metavar="N", help="stop at N tokens in all")
    e.add_argument("--repeat", action="store_true", help="draw a source again when it is short of its share")
    e.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    e.add_argument("--shard-docs", type=_count(1), default=50_000, help="documents per JSONL/Parquet file")
    e.add_argument("--shard-tokens", type=_count(1), default=100_000_000, help="tokens per token shard")
    e.add_argument("--gzip", action="store_true", help="JSONL files as .jsonl.gz")
    e.add_argument("--force", action="store_true", help="replace an earlier export in DIR")
    e.set_defaults(fn=cmd_export)


def add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("ablation", help="run the matched-model ablation described in a config's `experiment:`",
                       description="Run the pipeline, hold out evaluation text, train one tokenizer, draw token-budget "
                                   "subsets per arm, train a matched model per (arm, seed), evaluate (bits per byte, "
                                   "BLiMP) at checkpoints and write report.md. Resumes after an interruption.")
    a.add_argument("config")
    a.add_argument("--arm", action="append", help="train only this arm (repeatable)")
    a.add_argument("--scale", action="append", help="run only this rung of `experiment.scales` (repeatable)")
    a.add_argument("--workers", type=_count(1),
                   help="training runs at once (default: experiment.execution.workers, else the config's `workers`; "
                        "one per GPU on CUDA); a run's results do not depend on it")
    a.add_argument("--executor", choices=["local", "ray"],
                   help="where training runs execute (default: experiment.execution.executor, else local); Ray "
                        "requests train.threads CPUs and execution.gpus_per_run GPUs per run")
    a.add_argument("--out-dir", help="write the experiment here instead of experiment.out_dir")
    a.add_argument("--pipeline-workers", type=_count(1), help="pipeline worker processes (default: the config's `workers`)")
    a.add_argument("--no-report", action="store_true")
    a.add_argument("--aa", action="store_true",
                   help="A/A check: train only the baseline arm and a copy of it with other seeds (same recipe), "
                        "into <out_dir>_aa; a calibrated report finds no difference (about 95%% of the time)")
    a.add_argument("--plan", action="store_true",
                   help="train nothing: prepare the data (pipeline, evaluation sets, tokenizer, subsets), time a few "
                        "steps and one evaluation per model size with the executor's parallelism, and print the "
                        "grid's predicted wall time, documents per subset, epochs, tokens per parameter, the minimum "
                        "detectable effect at the configured seeds and the seeds the equivalence margin needs "
                        "(from experiment.prior_spread); written to plan.json, which the report compares with the run")
    a.add_argument("--retime", action="store_true",
                   help="measure training precision / compile / threads again instead of reusing the recorded ones")
    a.add_argument("--settings-from", metavar="RESULTS_DIR",
                   help="reuse the training settings recorded in this results folder's experiment.json (e.g. a "
                        "committed result), so a re-run trains exactly as it did")
    a.set_defaults(fn=cmd_ablation)
    r = sub.add_parser("report", help="write report.md and plots for a finished (or partial) ablation")
    r.add_argument("target", help="the ablation's config, or its output folder")
    r.add_argument("--command", help="the command that reproduces the results, printed in the report (default: "
                                     "`winnow ablation CONFIG` from experiment.json, beside the config's sha256 "
                                     "and the commit)")
    r.add_argument("--export", metavar="DIR",
                   help="first copy the files the report needs (per-run logs, curves, per-item evaluation values; "
                        "no checkpoints or token arrays) to DIR, then write the report there: a folder small enough "
                        "to commit, from which `winnow report DIR` rebuilds the same report")
    r.set_defaults(fn=cmd_report)
    from experiments.quality_eval import __doc__ as quality_eval_doc, add_arguments

    q = sub.add_parser("quality-eval", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="agreement of every quality scorer of the configs with labelled documents "
                            "(ROC AUC, Spearman, bootstrap intervals)",
                       description=quality_eval_doc)
    add_arguments(q)
    q.set_defaults(fn=cmd_quality_eval, parser=q)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="winnow",
        description="winnow: turn a raw corpus into filtered, inspectable subsets (ingest -> exact dedup -> "
                    "MinHash dedup -> language ID -> heuristic filters -> model-based quality), then train "
                    "matched models to compare them. Every stage writes its kept and removed documents as Parquet "
                    "shards, its funnel numbers and a checksummed manifest under the run folder.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the pipeline (or up to --stage), resuming finished shards",
                       description="Run the stages of CONFIG in order. Finished shards are skipped; a stage whose "
                                   "config or input changed is redone (re-using cached scores when only thresholds "
                                   "changed).")
    _add_run_args(r)
    r.add_argument("--force", action="store_true", help="redo the stages from scratch, cached scores included")
    r.add_argument("--limit", type=_count(1), metavar="N",
                   help="read only the first N records of each input file (a quick trial; the next run without "
                        "--limit reads everything again)")
    r.set_defaults(fn=cmd_run)

    s = sub.add_parser("select", help="re-apply thresholds of one stage from cached scores (no re-scoring)",
                       description="Re-decide STAGE with the thresholds now in CONFIG, reading the scores cached "
                                   "by the last run. Never runs a scorer: fails if the scores are missing or stale.")
    _add_run_args(s, stage_help="the stage to re-decide (required; stages before it must be up to date)")
    s.set_defaults(fn=cmd_select)

    c = sub.add_parser("check", help="verify a run folder (or an ablation folder) against its manifests",
                       description="An ablation folder (experiment.json): every artifact has the checksum its "
                                   "manifest recorded, every run finished on the subset now in the folder, with its "
                                   "final model. A run folder: check RUN_DIR against the pipeline it records (and its "
                                   "ablation/ folder if there is one): every stage present and finished "
                                   "(manifest written), every shard present with the checksum and row count of "
                                   "its manifest, removed rows carry a reason, rows in = kept + removed, and each "
                                   "stage's rows in = the previous stage's kept rows (per shard and in total). "
                                   "Exit 1 on any problem.")
    c.add_argument("run_dir", help="a pipeline run folder or an ablation folder")
    c.add_argument("--quick", action="store_true", help="compare sizes, not SHA-256 checksums and row counts")
    c.add_argument("--partial", action="store_true",
                   help="accept a run stopped on purpose with `run --stage`: later stages may be absent "
                        "if they were never started")
    c.set_defaults(fn=cmd_check)

    i = sub.add_parser("inspect", help="print the funnel, or sample documents of a stage",
                       description="Without --stage: documents and characters per stage and removals by reason. "
                                   "With --stage: sample kept (default) or --removed documents. With --id: one "
                                   "document's journey through the stages.")
    i.add_argument("run_dir")
    i.add_argument("--stage", help="stage to sample from")
    i.add_argument("--removed", action="store_true", help="show removed documents instead of kept ones")
    i.add_argument("--reason", help="only removed documents with this reason (or reason family, e.g. `gopher_quality`)")
    i.add_argument("-n", type=_count(1), default=5, help="how many documents (default 5)")
    i.add_argument("--chars", type=_count(0), default=1200, help="characters of text to show per document")
    i.add_argument("--clusters", action="store_true",
                   help="show duplicate clusters of a dedup stage (default: the run's first dedup stage)")
    i.add_argument("--id", metavar="ID",
                   help="follow one document through every stage: kept or removed at each, the rule that removed "
                        "it, its scores and text length, and its text as it entered the stage that removed it")
    i.set_defaults(fn=cmd_inspect)

    f = sub.add_parser("filters", help="list the available filters and stage kinds, or describe one filter",
                       description="Without NAME: every filter and stage kind winnow can find, plug-ins included. "
                                   "With NAME: that filter's description, parameters (defaults, units, accepted "
                                   "values, which ones only decide), score columns and their types.")
    f.add_argument("name", nargs="?", metavar="NAME", help="a filter name (or package.module:Name) to describe")
    f.set_defaults(fn=cmd_filters)

    d = sub.add_parser("demo-corpus", help="write the synthetic web corpus the demo runs on",
                       description="Generate a seeded synthetic web corpus with ground truth in every document's "
                                   "metadata (clean prose, boilerplate, spam, gibberish, other languages, exact and "
                                   "near duplicates). No copied text.")
    d.add_argument("out")
    d.add_argument("--docs", type=_count(1), default=3000)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=cmd_demo_corpus)

    q = sub.add_parser(
        "train-quality", help="train the quality classifier and reference LM named in CONFIG",
        description="Train every `quality_classifier` (fastText, word bigrams; positives: reference corpus "
                    "train split, negatives: the raw corpus after `negatives_from_stage`) and `ref_perplexity` "
                    "(byte n-gram LM on the reference train split) filter of CONFIG, running the stages the "
                    "training data comes from first. Each model is saved beside MODEL.manifest.json and "
                    "MODEL.ids.parquet (every document id used).")
    q.add_argument("config")
    q.add_argument("--only", metavar="FILTER",
                   help="train only this filter's model (e.g. quality_classifier, ref_perplexity, quality_combined)")
    q.add_argument("--run-dir", help="override the config's run_dir")
    q.set_defaults(fn=cmd_train_quality)

    add_experiment_commands(sub)
    add_export_command(sub)
    p.add_argument("--version", action=_VersionAction, help="print the winnow version and git commit, then exit")
    p.add_argument("--debug", action="store_true", help="on an error, print the traceback too (also WINNOW_DEBUG=1)")
    for command in sub.choices.values():  # `winnow run CONFIG --debug` works as well as `winnow --debug run`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="on an error, print the traceback too")
    return p


class _VersionAction(argparse.Action):
    """``--version``, computed only when asked (it runs git once)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from pipeline.provenance import version_string

        print(version_string())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    """Parse, run one command, and turn every failure into one line and an exit code (pipeline/errors.py)."""
    from pipeline.errors import run_guarded

    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    return run_guarded(lambda: args.fn(args), debug=bool(getattr(args, "debug", False)))


if __name__ == "__main__":
    sys.exit(main())
