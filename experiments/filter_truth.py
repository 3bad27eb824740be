"""Per-filter precision and recall against the demo corpus's ground truth.

The synthetic web (experiments/synthetic_web.py) stores ``metadata.truth.kind``
for every document. Each filter is meant to catch some kinds (``TARGETS``); a
filter's positives are the documents its own ``decide`` rejects. Every filter
scores every document that reaches its stage and the scores travel with kept and
removed rows alike, so ``decide`` is re-applied to the stored scores: the
numbers do not depend on filter order and need nothing but the run folder.

    python -m experiments.filter_truth runs/demo
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


from filters.apply import decide_filters
from filters.stage import FilterStage
from pipeline.errors import run_guarded
from pipeline.inspection import open_run
from pipeline.rundir import RunFolder

#: Truth kinds each filter family is meant to remove. Families not listed here
#: (a model-based quality filter, a user's plugin) are judged against every
#: kind that is not clean prose in the target language.
TARGETS: dict[str, set[str]] = {
    "langid": {"foreign"},
    "gopher_quality": {"gibberish", "boilerplate", "truncated", "keyword_spam"},
    "gopher_repetition": {"repeated_lines", "keyword_spam"},
    "c4": {"boilerplate", "truncated", "gibberish"},
    "fineweb": {"boilerplate", "repeated_lines", "truncated"},
    "ratios": {"gibberish", "boilerplate", "keyword_spam"},
}
LOW_QUALITY_KINDS = {"boilerplate", "keyword_spam", "repeated_lines", "gibberish", "truncated"}


def _stage_rows(run_dir: Path, stage: str, columns: list[str]) -> list[dict]:
    """Kept and removed rows of a stage with the score columns and the truth kind."""
    rows: list[dict] = []
    for part in ("kept", "removed"):
        for row in RunFolder(run_dir).rows(stage, part=part):
            out = {c: row[c] for c in [*columns, "reason"] if c in row}
            out["_id"] = row["id"]
            out["_kind"] = (json.loads(row.get("metadata") or "{}").get("truth") or {}).get("kind")
            rows.append(out)
    return rows


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def precision_recall(run_dir: str | Path, targets: dict[str, set[str]] | None = None) -> list[dict]:
    """One row per filter (``rule`` = None) and per rule it fired, for every filter stage of the run.

    Counts are over documents that reached the stage and have a truth label. A
    rule row's precision is the share of its rejections that are target kinds;
    its recall is the share of all target documents it rejected first within
    its filter.
    """
    run_dir = Path(run_dir)
    targets = {**TARGETS, **(targets or {})}
    run = RunFolder(run_dir)
    out: list[dict] = []
    for spec in run.stage_configs():
        if spec.get("kind", spec["name"]) != "filter" or not run.is_finished(spec["name"]):
            continue
        stage = FilterStage(spec["name"], {k: v for k, v in spec.items() if k not in ("name", "kind")})
        stage.load_plans(run.plan_dir(spec["name"]))
        filters = stage.filters
        columns = [c for f in filters for c in f.columns]
        rows = [r for r in _stage_rows(run_dir, spec["name"], columns) if r["_kind"]]
        for f in filters:  # each filter on its own: its verdict on every document that reached the stage
            verdicts = decide_filters({c: [r.get(c) for r in rows] for c in columns}, [r["_id"] for r in rows], [f])
            wanted = targets.get(f.name, LOW_QUALITY_KINDS)
            positives = sum(r["_kind"] in wanted for r in rows)
            by_rule: Counter = Counter()
            hits_by_rule: Counter = Counter()
            junk_by_rule: Counter = Counter()
            kinds_by_rule: dict[str, Counter] = {}
            for r, reason in zip(rows, verdicts.reasons):
                if reason is not None:
                    by_rule[reason] += 1
                    hits_by_rule[reason] += r["_kind"] in wanted
                    junk_by_rule[reason] += r["_kind"] != "clean"
                    kinds_by_rule.setdefault(reason, Counter())[r["_kind"]] += 1
            flagged, hits = sum(by_rule.values()), sum(hits_by_rule.values())
            base = {"stage": spec["name"], "filter": f.name, "targets": sorted(wanted), "docs": len(rows),
                    "target_docs": positives}
            out.append({**base, "rule": None, "removed": flagged, "true_pos": hits,
                        "precision": _ratio(hits, flagged), "recall": _ratio(hits, positives),
                        "junk_precision": _ratio(sum(junk_by_rule.values()), flagged),
                        "removed_kinds": dict(sum(kinds_by_rule.values(), Counter()).most_common())})
            for reason in sorted(by_rule):
                out.append({**base, "rule": reason, "removed": by_rule[reason], "true_pos": hits_by_rule[reason],
                            "precision": _ratio(hits_by_rule[reason], by_rule[reason]),
                            "recall": _ratio(hits_by_rule[reason], positives),
                            "junk_precision": _ratio(junk_by_rule[reason], by_rule[reason]),
                            "removed_kinds": dict(kinds_by_rule[reason].most_common())})
    return out


def format_table(rows: list[dict]) -> str:
    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:.1f}%"

    lines = ["| stage | filter / rule | meant to catch | docs | target docs | removed | precision | recall "
             "| junk precision | removed, by true kind |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        label = f"**{r['filter']}**" if r["rule"] is None else f"&nbsp;&nbsp;{r['rule']}"
        lines.append(f"| {r['stage']} | {label} | {', '.join(r['targets']) if r['rule'] is None else ''} | "
                     f"{r['docs']:,} | {r['target_docs']:,} | {r['removed']:,} | {pct(r['precision'])} | "
                     f"{pct(r['recall'])} | {pct(r['junk_precision'])} | {', '.join(f'{k} {n}' for k, n in r['removed_kinds'].items())} |")
    return "\n".join(lines)


DEDUP_KINDS = ("exact_dedup", "minhash_dedup")


def dedup_precision_recall(run_dir: str | Path, near_min_jaccard: float = 0.8) -> list[dict]:
    """Precision and recall of each dedup stage against the planted duplicates.

    Every planted copy names its original (``truth.dup_of``); a document's
    *group* is its original's id (or its own). A removal is correct when the
    removed document and the survivor it names are in the same group. Within a
    stage, a group reaching it with k duplicate members should lose k - 1 of
    them; which members count as duplicates depends on the stage: identical
    copies for ``exact_dedup``, and for ``minhash_dedup`` also near copies whose
    true 5-gram Jaccard is at least ``near_min_jaccard`` (the default threshold).
    """
    run_dir = Path(run_dir)
    out = []
    for spec in RunFolder(run_dir).stage_configs():
        kind = spec.get("kind", spec["name"])
        if kind not in DEDUP_KINDS or not RunFolder(run_dir).is_finished(spec["name"]):
            continue
        docs: dict[str, dict] = {}
        removed: list[tuple[str, str]] = []
        for part in ("kept", "removed"):
            cols = ["id", "metadata"] + (["duplicate_of"] if part == "removed" else [])
            for row in RunFolder(run_dir).rows(spec["name"], cols, part=part):
                docs[row["id"]] = json.loads(row["metadata"]).get("truth") or {}
                if part == "removed":
                    removed.append((row["id"], row["duplicate_of"]))

        def group(doc_id: str) -> str:
            return docs.get(doc_id, {}).get("dup_of") or doc_id

        def is_duplicate_member(doc_id: str) -> bool:
            t = docs[doc_id]
            if t.get("dup_kind") == "exact":
                return True
            return kind == "minhash_dedup" and t.get("dup_kind") == "near" and t.get("jaccard", 0) >= near_min_jaccard

        members: Counter = Counter()
        for doc_id in docs:
            if is_duplicate_member(doc_id):
                members[group(doc_id)] += 1
        # a group whose original also reached the stage: every duplicate member should go; else all but one
        expected = sum(n if group_id in docs else n - 1 for group_id, n in members.items())
        correct = sum(group(r) == group(s) for r, s in removed)
        out.append({"stage": spec["name"], "docs": len(docs), "removed": len(removed), "correct": correct,
                    "expected": expected, "precision": _ratio(correct, len(removed)),
                    "recall": _ratio(min(correct, expected), expected)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", default="runs/demo")
    args = p.parse_args(argv)
    open_run(args.run_dir)  # a wrong path or a config: the same one line as `winnow inspect`
    rows = precision_recall(args.run_dir)
    if not rows:
        print(f"{args.run_dir}: no finished filter stages")
        return 1
    print("Per-filter precision and recall against the synthetic web's ground truth (each filter judged on "
          "every document reaching its stage, independent of filter order). precision/recall: against the kinds "
          "the filter is meant to catch; junk precision: share of its removals that are not clean prose.\n")
    print(format_table(rows))
    dd = dedup_precision_recall(args.run_dir)
    if dd:
        print("\nDedup stages against the planted duplicates (exact copies; near copies with true Jaccard >= 0.8). "
              "Generated texts that coincide by chance (two-word fragments) are real duplicates the truth does not "
              "know of, and count against precision:\n")
        print("| stage | docs | removed | correct | expected | precision | recall |\n|---|---:|---:|---:|---:|---:|---:|")
        for r in dd:
            pct = lambda x: "" if x is None else f"{100 * x:.1f}%"  # noqa: E731
            print(f"| {r['stage']} | {r['docs']:,} | {r['removed']:,} | {r['correct']:,} | {r['expected']:,} | "
                  f"{pct(r['precision'])} | {pct(r['recall'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_guarded(main, prog="filter_truth"))
