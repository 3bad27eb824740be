"""Filters are applied in one place (filters/apply.py): the pipeline's filter stage, quality-eval and
the ground-truth measurement give the same scores and verdicts, and the plug-in contract is enforced
there with errors that name the filter and the document (issue 24; issue 23's contract items)."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.filter_truth import precision_recall
from experiments.quality_eval import config_scores
from experiments.synthetic_web import write_corpus
from filters.apply import apply_filters, score_filters
from filters.base import Filter, FilterError, register_filter
from filters.stage import FilterStage
from pipeline.config import load_config
from pipeline.document import Document, iter_documents
from pipeline.rundir import RunFolder
from pipeline.runner import Runner
from pipeline.executors import TaskError
from tests.conftest import write_config

HEURISTICS = ["c4", "gopher_repetition", "gopher_quality", "fineweb"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run: ingest -> one heuristic filter stage (C4 edits text, the others read the edited text)."""
    tmp = tmp_path_factory.mktemp("apply")
    write_corpus(tmp / "corpus", n_docs=300, seed=11)
    cfg_path = write_config(tmp / "c.yaml", {"run_dir": str(tmp / "run"), "workers": 1, "stages": [
        {"name": "ingest", "shard_docs": 100, "inputs": [{"path": str(tmp / "corpus" / "web-*.jsonl.gz")}]},
        {"name": "quality", "kind": "filter", "filters": HEURISTICS}]})
    Runner(load_config(cfg_path), progress=False, log=lambda m: None).run()
    return cfg_path, RunFolder(tmp / "run")


def _docs(folder: RunFolder) -> list[Document]:
    return list(iter_documents(folder.table("ingest", ["id", "text", "source", "metadata"])))


def _stage_rows(folder: RunFolder) -> dict[str, dict]:
    rows = {}
    for part in ("kept", "removed"):
        for r in folder.rows("quality", part=part):
            rows[r["id"]] = r
    return rows


def test_pipeline_apply_filters_and_quality_eval_give_identical_scores(run):
    cfg_path, folder = run
    docs = _docs(folder)
    stage = load_config(cfg_path).stage_object(load_config(cfg_path).stage("quality"))
    applied = apply_filters(docs, stage.filters)
    evaluated, info = config_scores([str(cfg_path)], docs)
    rows = _stage_rows(folder)
    assert len(rows) == len(docs) == 300 and not info["skipped"]
    columns = [c for f in stage.filters for c in f.columns]
    for c in columns:
        in_memory = applied.scores.columns[c].to_pylist()
        from_run = [rows[d.id][c] for d in docs]
        assert in_memory == from_run, c
        if c in evaluated:  # quality-eval keeps the numeric columns, missing values as NaN
            expected = np.array([np.nan if v is None else float(v) for v in from_run])
            assert np.array_equal(evaluated[c], expected, equal_nan=True), c
    assert sum(c in evaluated for c in columns) >= 10
    # verdicts: the run's reason for each removed document is apply_filters' reason
    assert applied.verdicts.reasons == [rows[d.id].get("reason") for d in docs]
    # and quality-eval's per-filter pass is each filter's own verdict
    for f in stage.filters:
        assert np.array_equal(evaluated[f"{f.ref} pass"], applied.verdicts.keep_by_filter[f.ref].astype(float))


def test_text_edits_reach_later_filters_in_every_path(run):
    """The test above could not fail if no edit mattered: C4 changes texts, and gopher scores differ on them."""
    cfg_path, folder = run
    docs = _docs(folder)
    stage = load_config(cfg_path).stage_object(load_config(cfg_path).stage("quality"))
    alone = score_filters([Document(d.id, d.text) for d in docs], [f for f in stage.filters if f.name != "c4"])
    chained = apply_filters(docs, stage.filters).scores
    assert chained.text is not None and sum(a != d.text for a, d in zip(chained.text, docs)) > 20
    differs = [c for c in alone.columns if alone.columns[c].to_pylist() != chained.columns[c].to_pylist()]
    assert len(differs) >= 3, differs
    assert all(d.text == t for d, t in zip(docs, [d.text for d in _docs(folder)]))  # the caller's docs untouched


def test_filter_truth_re_decides_the_stored_scores_like_the_run(run):
    _, folder = run
    rows = precision_recall(folder.root)
    stats = folder.stats("quality")
    first_by_rule = {r: v["docs"] for r, v in stats["removed_by_reason"].items()}
    by_rule = {r["rule"]: r["removed"] for r in rows if r["rule"]}
    # a filter's own verdict covers at least the documents it removed first in the run
    assert all(by_rule.get(rule, 0) >= n for rule, n in first_by_rule.items())
    assert {r["filter"] for r in rows} == {"c4", "gopher_repetition", "gopher_quality", "fineweb"}


# ---------------------------------------------------------------------------
# the plug-in contract


def _doc(i: int, text: str = "The quick brown fox jumps over the lazy dog. It was not amused at all.") -> Document:
    return Document(id=f"doc-{i}", text=text)


class _Base(Filter):
    columns = {"n": "int"}

    def score(self, doc):
        return {"n": len(doc.text)}

    def decide(self, s):
        return s["n"] > 10


def test_a_score_key_that_is_not_a_column_names_the_filter_and_key():
    class Typo(_Base):
        name = "typo"

        def score(self, doc):
            return {"n_chars": len(doc.text)}

    with pytest.raises(FilterError, match=r"^filter typo: score returned key 'n_chars', which is not one of its "
                                          r"columns \(document 'doc-0'\); its columns are n$"):
        apply_filters([_doc(0)], [Typo()])


def test_a_removal_without_a_reason_is_named_after_the_filter():
    class Nameless(_Base):  # no `name`, decide gives no rule
        def decide(self, s):
            return False

    out = apply_filters([_doc(0)], [Nameless()])
    assert out.verdicts.reasons == ["Nameless"] and out.verdicts.failed == [["Nameless"]]


def test_an_exception_in_score_names_the_document_and_the_filter():
    class Fragile(_Base):
        name = "fragile"

        def score(self, doc):
            return {"n": 1 // (len(doc.text) - 3)}

    docs = [_doc(0), _doc(1, "abc"), _doc(2)]
    with pytest.raises(FilterError, match=r"^filter fragile: score failed on document 'doc-1': ZeroDivisionError"):
        apply_filters(docs, [Fragile()])


def test_an_exception_in_a_batch_scorer_is_traced_to_its_document():
    class Batch(_Base):
        name = "batch"

        def score_batch(self, docs):
            return [{"n": len(d.text) // (len(d.text) - 3)} for d in docs]

        def score(self, doc):
            return self.score_batch([doc])[0]

    with pytest.raises(FilterError, match=r"document 'doc-7'"):
        apply_filters([_doc(i) if i != 7 else _doc(7, "xyz") for i in range(10)], [Batch()])


@pytest.mark.parametrize("typ, value, shown", [("int", 2.0, "float 2.0"), ("int", True, "bool True"),
                                               ("float", "0.5", "str '0.5'"), ("bool", 1, "int 1"),
                                               ("str", 5, "int 5")])
def test_a_value_of_another_type_is_an_error_not_a_silent_cast(typ, value, shown):
    class Wrong(Filter):
        name = "wrong"
        columns = {"x": typ}

        def score(self, doc):
            return {"x": value}

        def decide(self, s):
            return True

    with pytest.raises(FilterError, match=rf"^filter wrong: column 'x' is declared '{typ}' but score returned "
                                          rf"{shown} for document 'doc-0'"):
        apply_filters([_doc(0)], [Wrong()])


def test_numpy_scalars_and_widening_ints_are_accepted():
    class Numpy(Filter):
        name = "numpy"
        columns = {"f": "float", "i": "int", "b": "bool"}

        def score(self, doc):
            return {"f": np.float32(0.5) if doc.id == "doc-0" else 3, "i": np.int64(4), "b": np.bool_(True)}

        def decide(self, s):
            return bool(s["b"])

    out = apply_filters([_doc(0), _doc(1)], [Numpy()])
    assert out.scores.columns["f"].to_pylist() == [0.5, 3.0] and out.scores.columns["i"].to_pylist() == [4, 4]


def test_decide_must_answer_keep_or_remove():
    class Forgot(_Base):
        name = "forgot"

        def decide(self, s):
            if s["n"] < 5:
                return False, "short"  # and forgot `return True`

    with pytest.raises(FilterError, match=r"^filter forgot: decide returned None for document 'doc-0'"):
        apply_filters([_doc(0)], [Forgot()])


def test_every_failed_rule_is_listed_first_one_is_the_reason():
    class Two(_Base):
        name = "two"

        def decide(self, s):
            return False, ["too_short", "too_dull"], {"n": s["n"]}

    class Three(_Base):
        name = "three"

        def decide(self, s):
            return False, "nope"

    out = apply_filters([_doc(0)], [Two(), Three()])
    assert out.verdicts.reasons == ["two:too_short"] and out.verdicts.details == ['{"n": 70}']
    assert out.verdicts.failed == [["two:too_short", "two:too_dull", "three:nope"]]


def test_declared_columns_are_checked_when_the_stage_is_built():
    @register_filter(name="bad_type_filter")
    class BadType(_Base):
        columns = {"n": "double"}

    with pytest.raises(FilterError, match="column 'n' has type 'double'; expected one of float, int, str, bool"):
        FilterStage("quality", {"filters": ["bad_type_filter"]})

    @register_filter(name="reserved_filter")
    class Reserved(_Base):
        columns = {"reason": "str"}

    with pytest.raises(FilterError, match="column name 'reason' is reserved"):
        FilterStage("quality", {"filters": ["reserved_filter"]})


def test_a_contract_error_in_a_run_is_one_line_naming_filter_and_document(tmp_path):
    @register_filter(name="typo_in_run")
    class TypoInRun(_Base):
        def score(self, doc):
            return {"count": 1}

    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hello there"}\n{"id": "b", "text": "hi"}\n')
    cfg = write_config(tmp_path / "c.yaml", {"run_dir": str(tmp_path / "run"), "stages": [
        {"name": "ingest", "inputs": [{"path": str(tmp_path / "in.jsonl")}]},
        {"name": "f", "kind": "filter", "filters": ["typo_in_run"]}]})
    with pytest.raises(TaskError) as e:
        Runner(load_config(cfg), progress=False, log=lambda m: None).run()
    msg = str(e.value)
    assert "\n" not in msg and "filter typo_in_run: score returned key 'count'" in msg and "document 'a'" in msg


# ---------------------------------------------------------------------------
# what a filter stage writes: original text on removed rows, every failed rule, no text in the cache


def test_removed_documents_keep_the_text_they_entered_with(run):
    _, folder = run
    before = {r["id"]: r["text"] for r in folder.rows("ingest", ["id", "text"])}
    removed = list(folder.rows("quality", part="removed"))
    assert removed and all(r["text"] == before[r["id"]] for r in removed)
    edited = [r for r in removed if r["edited_text"] is not None]
    # C4 removed whole pages after dropping lines: the edit is there, beside the original
    assert edited and all(r["edited_text"] != r["text"] and len(r["edited_text"]) < len(r["text"]) for r in edited)
    assert any(r["reason"] == "c4:too_few_sentences" and r["edited_text"] is not None for r in edited)
    # kept rows carry the edited text, which is what the next stage and the training subsets read
    kept = {r["id"]: r["text"] for r in folder.rows("quality", ["id", "text"])}
    assert sum(kept[i] != before[i] for i in kept) > 20


def test_every_rule_a_removed_document_fails_is_listed(run):
    _, folder = run
    removed = list(folder.rows("quality", part="removed"))
    assert all(r["failed_rules"][0] == r["reason"] for r in removed)
    several = [r for r in removed if len(r["failed_rules"]) > 1]
    assert several, "no document failed two filters: the column would not show more than the reason"
    families = {rule.split(":")[0] for r in several for rule in r["failed_rules"]}
    assert len(families) >= 2


def test_the_score_cache_does_not_copy_the_text(run):
    _, folder = run
    stage = folder.stage("quality")
    shard = stage.manifest()["shards"][0]["name"]
    scores = stage.read_scores(shard)
    assert "text" not in scores.column_names and "text_spans" in scores.column_names
    spans = [s for s in scores.column("text_spans").to_pylist() if s is not None]
    assert spans and all(len(s) % 2 == 0 for s in spans)
    assert scores.column("text_edited").null_count == scores.num_rows  # every C4 edit is a selection of spans


def test_select_rebuilds_the_edited_text_from_the_cache(run, tmp_path):
    """A new threshold re-decides without scoring; the kept texts are rebuilt from the spans, identical."""
    import shutil

    import yaml

    cfg_path, folder = run
    copy = tmp_path / "run"
    shutil.copytree(folder.root, copy)
    raw = yaml.safe_load(cfg_path.read_text())
    raw["run_dir"] = str(copy)
    raw["stages"][1]["filters"] = ["c4", "gopher_repetition", {"gopher_quality": {"min_words": 60}}, "fineweb"]
    cfg = load_config(write_config(tmp_path / "c.yaml", raw))
    Runner(cfg, progress=False, log=lambda m: None).run(select_only="quality")
    after = {r["id"]: r["text"] for r in RunFolder(copy).rows("quality", ["id", "text"])}
    before = {r["id"]: r["text"] for r in folder.rows("quality", ["id", "text"])}
    assert set(after) <= set(before) and len(after) < len(before)
    assert all(after[i] == before[i] for i in after)


def test_text_spans_round_trip_and_fall_back_when_not_a_selection():
    from filters.stage import apply_spans, text_spans

    original = "  Title\nA first line.\n\nmenu | login\nA second line.  \n"
    for edited in ["A first line.\nA second line.", "Title\nA second line.", "", original, "\n\nA first line."]:
        spans = text_spans(original, edited)
        assert spans is not None and apply_spans(original, spans) == edited, edited
    assert text_spans(original, "A FIRST line.") is None  # rewritten, not selected: stored whole


def test_winnow_filters_name_describes_parameters_and_columns(capsys):
    from experiments.cli import main

    assert main(["filters", "gopher_quality"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gopher_quality -- Gopher quality rules")
    assert "min_words" in out and "default 50" in out and "decides only" in out
    assert "tokenizer" in out and "scoring (changing it re-scores)" in out
    assert "gopher_word_count" in out and "int" in out
    assert main(["filters", "c4"]) == 0 and "Edits text" in capsys.readouterr().out
    assert main(["filters", "quality_classifier"]) == 0
    assert "Trains a model" in capsys.readouterr().out
    assert main(["filters", "gopher_qualty"]) == 2
    assert "did you mean gopher_quality?" in capsys.readouterr().err
