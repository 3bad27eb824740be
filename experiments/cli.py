"""`winnow ablation` and `winnow report`: the matched-model experiment commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_ablation(args) -> int:
    from experiments.ablation import run_ablation
    from experiments.report import write_report
    from pipeline.config import load_config

    cfg = load_config(args.config)
    if args.workers:
        cfg.workers = args.workers
    if args.aa:  # the baseline against a copy of itself, in its own folder: the report must find no difference
        from experiments.ablation import experiment_settings

        out_dir = experiment_settings(cfg)["out_dir"] + "_aa"
        cfg.raw["experiment"].update(aa=True, out_dir=out_dir)
    out = run_ablation(cfg, log=_log, only_arms=args.arm)
    if not args.no_report:
        path = write_report(out, command=f"winnow ablation {args.config}")
        print(f"report: {path}")
        print(Path(path).read_text().split("\n## ")[0])
    return 0


def cmd_report(args) -> int:
    from experiments.ablation import experiment_settings
    from experiments.report import write_report
    from pipeline.config import load_config

    target = Path(args.target)
    out = Path(experiment_settings(load_config(target))["out_dir"]) if target.is_file() else target
    if args.export:
        from experiments.report import export_results

        out = export_results(out, Path(args.export))
    path = write_report(out, command=args.command)
    print(f"report: {path}")
    return 0


def cmd_quality_eval(args) -> int:
    from experiments.quality_eval import run

    return run(args, args.parser)


def add_commands(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("ablation", help="run the matched-model ablation described in a config's `experiment:`",
                       description="Run the pipeline, hold out evaluation text, train one tokenizer, draw token-budget "
                                   "subsets per arm, train a matched model per (arm, seed), evaluate (bits per byte, "
                                   "BLiMP) at checkpoints and write report.md. Resumes after an interruption.")
    a.add_argument("config")
    a.add_argument("--arm", action="append", help="train only this arm (repeatable)")
    a.add_argument("--workers", type=int, help="pipeline worker processes")
    a.add_argument("--no-report", action="store_true")
    a.add_argument("--aa", action="store_true",
                   help="A/A check: train only the baseline arm and a copy of it with other seeds (same recipe), "
                        "into <out_dir>_aa; a calibrated report finds no difference (about 95%% of the time)")
    a.set_defaults(fn=cmd_ablation)
    r = sub.add_parser("report", help="write report.md and plots for a finished (or partial) ablation")
    r.add_argument("target", help="the ablation's config, or its output folder")
    r.add_argument("--command", help="the command that reproduces the results, printed in the report")
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
