"""The input edge (issues 23 and 25): every reproducer a new user or a fuzzer hit, as a small test.

Readers of saved datasets and folders, the text field found without being named, a file that loses most
of its records stopping the run with the fields it does have, ``--limit``, globs through symlink loops,
empty and unverifiable compressed files, in-place edits, metadata that must not be overwritten or
written as invalid JSON, misnamed formats, brotli WARC records and pages that would stall the parser.
Every file is built in tmp_path and small; each test runs in seconds.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.check import check_run
from pipeline.config import ConfigError, load_config
from pipeline.ingest.records import InputError
from pipeline.ingest.readers import READERS, detect_format
from pipeline.ingest.readers.base import Reader
from pipeline.ingest.records import Record
from pipeline.runner import Runner
from pipeline.shards import read_json
from pipeline.ingest.stage import DEFAULT_LIMITS
from tests.conftest import ROOT, write_config

DEFAULT_MAX_HTML_CHARS = DEFAULT_LIMITS["max_html_chars"]


def _ingest(tmp_path, inputs, run="run", log=None, **stage):
    cfg = {"run_dir": str(tmp_path / run), "stages": [{"name": "ingest", "inputs": inputs, **stage}]}
    path = write_config(tmp_path / f"{run}.yaml", cfg)
    config = load_config(path)
    results = Runner(config, progress=False, log=log or (lambda m: None)).run()
    return config.run_dir, results


def _rows(run, part):
    m = read_json(run / "ingest" / "manifest.json")
    return [r for sh in m["shards"] for r in pq.read_table(run / "ingest" / sh[part]["path"]).to_pylist()]


def _stats(run):
    return read_json(run / "ingest" / "stats.json")


def _docs(n, field="text", start=0, **extra):
    return [{"id": f"d{i}", field: f"Document {i} says something worth reading. " * 5, **extra}
            for i in range(start, start + n)]


def _jsonl(rows, sep="\n") -> bytes:
    return "".join(json.dumps(r) + sep for r in rows).encode()


def _refused(tmp_path, inputs, run="refused", **stage) -> str:
    """The run stops with one line (an InputError, or a task failure caused by one); returns it."""
    with pytest.raises(Exception) as exc:
        _ingest(tmp_path, inputs, run=run, **stage)
    err = exc.value if isinstance(exc.value, (InputError, ConfigError)) else exc.value.__cause__
    assert isinstance(err, (InputError, ConfigError)), repr(exc.value)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------
# issue 23: readers, the text field, lost records, --limit


def test_a_wrong_text_field_stops_the_run_naming_the_file_reason_and_fields(tmp_path):
    src = tmp_path / "content.jsonl"
    src.write_bytes(_jsonl(_docs(40, field="content", url="http://x")))
    msg = _refused(tmp_path, [{"path": str(src), "text_field": "text"}])
    assert "content.jsonl" in msg and "40 of 40 records (100%) removed as missing_text" in msg
    assert "the records have the fields content, id, url" in msg or "fields id, content, url" in msg \
        or all(f in msg.split("fields")[1] for f in ("content", "id", "url"))
    assert "max_removed_share" in msg
    # allowed by the config, the same file goes through with every record removed and counted
    run, _ = _ingest(tmp_path, [{"path": str(src), "text_field": "text", "max_removed_share": 1.0}], run="allowed")
    assert _stats(run)["removed_by_reason"]["missing_text"]["docs"] == 40
    row = _rows(run, "removed")[0]  # the removed row shows the record, its field names included
    assert json.loads(row["text"]) == _docs(1, field="content", url="http://x")[0] and row["detail"] == "no `text` field"
    # a file of a few records is not held to the share: one bad record of three is no pattern
    small = tmp_path / "small.jsonl"
    small.write_bytes(_jsonl(_docs(3, field="content")))
    run, _ = _ingest(tmp_path, [{"path": str(small), "text_field": "text"}], run="small")
    assert _stats(run)["kept"] == 0


def test_the_text_field_is_found_without_being_named_and_logged(tmp_path):
    lines: list[str] = []
    jsonl = tmp_path / "web.jsonl.gz"
    jsonl.write_bytes(gzip.compress(_jsonl(_docs(20, field="content"))))
    pq.write_table(pa.Table.from_pylist(_docs(10, field="raw_content", start=100)), tmp_path / "cc.parquet")
    run, _ = _ingest(tmp_path, [{"path": str(jsonl)}, {"path": str(tmp_path / "cc.parquet")}], log=lines.append)
    kept = _rows(run, "kept")
    assert len(kept) == 30 and all(r["text"].startswith("Document") for r in kept)
    assert "content" not in json.loads(kept[0]["metadata"])  # the text is not copied into metadata
    log = "\n".join(lines)
    assert "text from `content` (text_field not set" in log and "text from `raw_content`" in log


def _save_dataset(path, rows, splits=None):
    import datasets

    if splits:
        datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in splits.items()}).save_to_disk(str(path))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))


@pytest.mark.parametrize("how", ["path", "format_hf_path", "format_hf_name", "format_hf_disk"])
def test_a_save_to_disk_folder_reads_however_it_is_named(tmp_path, how, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    d = tmp_path / "saved"
    _save_dataset(d, _docs(25, field="content", lang="en"))
    inp = {"path": {"path": str(d)}, "format_hf_path": {"format": "hf", "path": str(d)},
           "format_hf_name": {"format": "hf", "name": str(d)},
           "format_hf_disk": {"format": "hf_disk", "path": str(d)}}[how]
    run, _ = _ingest(tmp_path, [inp])
    kept = _rows(run, "kept")
    assert sorted(r["id"] for r in kept) == sorted(f"d{i}" for i in range(25))
    assert json.loads(kept[0]["metadata"]) == {"lang": "en"}
    assert {r["input_file"] for r in kept} == {"saved"}


def test_a_saved_dataset_dict_reads_its_split(tmp_path):
    d = tmp_path / "dd"
    _save_dataset(d, None, splits={"train": _docs(6), "test": _docs(4, start=50)})
    run, _ = _ingest(tmp_path, [{"path": str(d)}])
    assert len(_rows(run, "kept")) == 6
    run, _ = _ingest(tmp_path, [{"path": str(d), "split": "test"}], run="test")
    assert sorted(r["id"] for r in _rows(run, "kept")) == [f"d{i}" for i in range(50, 54)]
    assert "no split 'dev'" in _refused(tmp_path, [{"path": str(d), "split": "dev"}])


def test_a_config_from_scratch_on_a_saved_dataset_and_a_content_jsonl_runs_end_to_end(tmp_path, capsys):
    from experiments.cli import main

    d = tmp_path / "hfdata"
    _save_dataset(d, _docs(30))
    (tmp_path / "crawl.jsonl").write_bytes(_jsonl(_docs(30, field="content", start=100)))
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("run_dir: out\nstages:\n  - name: ingest\n    inputs:\n      - path: hfdata\n"
                   "      - path: crawl.jsonl\n  - {name: exact_dedup, kind: exact_dedup}\n")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    assert _stats(tmp_path / "out")["kept"] == 60
    assert "text from `content`" in capsys.readouterr().err


def test_limit_reads_the_first_n_records_of_each_input(tmp_path):
    from experiments.cli import main

    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_bytes(_jsonl(_docs(50)))
    cfg = write_config(tmp_path / "c.yaml", {"run_dir": str(tmp_path / "run"), "stages": [
        {"name": "ingest", "inputs": [{"path": str(tmp_path / "*.jsonl")}]}]})
    assert main(["run", str(cfg), "--limit", "7", "--no-progress"]) == 0
    kept = _rows(tmp_path / "run", "kept")
    assert sorted((r["input_file"], r["input_record"]) for r in kept) == \
        [(f, i) for f in ("a.jsonl", "b.jsonl") for i in range(1, 8)]
    assert main(["run", str(cfg), "--no-progress"]) == 0  # without it, the whole input again
    assert _stats(tmp_path / "run")["docs_in"] == 100


def test_readers_come_from_the_entry_point_group_and_a_plugin_reader_is_used_by_format(tmp_path):
    declared = READERS._declared()
    assert {"jsonl", "parquet", "txt", "warc", "hf", "hf_disk"} <= set(declared)
    assert all(declared[n].value.startswith("pipeline.ingest.readers.") for n in ("jsonl", "warc", "hf_disk"))

    class Lines(Reader):
        """One document per line of a plain file (a plug-in reader, as a user would write it)."""

        format = "lines_test"
        suffixes = (".lines",)
        has_fields = False

        def records(self, parse_from=1):
            with open(self.path, encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    yield Record(n, text=line.strip(), meta={})

    READERS.register("lines_test", Lines)
    try:
        (tmp_path / "x.lines").write_text("first line\nsecond line\n")
        assert detect_format(str(tmp_path / "x.lines")) == "lines_test"
        run, _ = _ingest(tmp_path, [{"path": str(tmp_path / "x.lines")}])
        assert [r["text"] for r in _rows(run, "kept")] == ["first line", "second line"]
        assert "did you mean" in _refused(tmp_path, [{"path": str(tmp_path / "x.lines"), "format": "jsnl"}])
    finally:
        READERS._registered.pop("lines_test")


def test_html_extraction_imports_no_reader_or_stage():
    code = ("import sys, filters.quality_features, pipeline.ingest.html; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.ingest')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['pipeline.ingest', 'pipeline.ingest.html', 'pipeline.ingest.records']"


def test_globs_are_expanded_once_per_run(tmp_path, monkeypatch):
    import pipeline.ingest.stage as stage_mod

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_bytes(_jsonl(_docs(3)))
    calls = []
    real = stage_mod.expand_glob
    monkeypatch.setattr(stage_mod, "expand_glob", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    _ingest(tmp_path, [{"path": str(tmp_path / "d" / "*.jsonl")}])
    assert len(calls) == 1


# ---------------------------------------------------------------------------
# issue 25: globs, folders, empty and unverifiable files, in-place edits


def test_a_symlink_loop_under_doublestar_reads_each_file_once(tmp_path):
    loop = tmp_path / "in" / "loop"
    (loop / "d").mkdir(parents=True)
    (loop / "d" / "a.jsonl").write_bytes(_jsonl(_docs(300)))
    os.symlink("..", loop / "d" / "up")     # d/up -> loop: a cycle
    os.symlink(".", loop / "self")          # loop/self -> loop: another
    run, _ = _ingest(tmp_path, [{"path": str(loop / "**" / "*.jsonl")}])
    stats = _stats(run)
    assert stats["docs_in"] == 300
    assert stats["counters"]["inputs_skipped:repeated_folder"] == 2


def test_a_folder_named_by_path_reads_its_jsonl_files(tmp_path):
    folder = tmp_path / "shards"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(_jsonl(_docs(5)))
    (folder / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl(_docs(4, start=10))))
    (folder / "README.md").write_text("what these files are")
    run, _ = _ingest(tmp_path, [{"path": str(folder)}])
    kept = _rows(run, "kept")
    assert sorted({r["input_file"] for r in kept}) == ["a.jsonl", "sub/b.jsonl.gz"] and len(kept) == 9
    assert _stats(run)["counters"] == {"inputs_skipped:unknown_format": 1}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no file winnow reads" in _refused(tmp_path, [{"path": str(empty)}])


@pytest.mark.parametrize("name", ["empty.jsonl.gz", "empty.jsonl.zst", "empty.txt.gz", "empty.warc.gz"])
def test_a_zero_byte_compressed_file_is_an_error(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    msg = _refused(tmp_path, [{"path": str(tmp_path / name)}])
    assert name in msg and "empty (0 bytes)" in msg


def test_a_zero_byte_plain_jsonl_is_an_empty_input(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    run, _ = _ingest(tmp_path, [{"path": str(tmp_path / "empty.jsonl")}])
    assert _stats(run)["docs_in"] == 0


def test_zstd_frames_without_a_checksum_are_counted_and_warned_about(tmp_path):
    data = _jsonl(_docs(300))
    unchecked = zstandard.ZstdCompressor().compress(data)  # zstandard's default: no content checksum
    flipped = bytearray(unchecked)
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / "flipped.jsonl.zst").write_bytes(bytes(flipped))
    lines: list[str] = []
    try:  # a flipped byte may or may not break the stream; either way the run says what it could not check
        run, _ = _ingest(tmp_path, [{"path": str(tmp_path / "flipped.jsonl.zst")}], log=lines.append)
        assert _stats(run)["counters"]["zstd_frames_without_checksum"] == 1
        assert any("warning:" in ln and "no content checksum" in ln and "flipped.jsonl.zst" in ln for ln in lines)
    except Exception as e:  # the damage was detectable after all: refused, naming the file
        assert "flipped.jsonl.zst" in str(e)
    checked = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    checked[len(checked) // 2] ^= 0x01
    (tmp_path / "checked.jsonl.zst").write_bytes(bytes(checked))
    assert "checked.jsonl.zst" in _refused(tmp_path, [{"path": str(tmp_path / "checked.jsonl.zst")}])


def test_an_input_edited_in_place_with_size_and_mtime_restored_is_read_again(tmp_path):
    src = tmp_path / "data" / "a.jsonl"
    src.parent.mkdir()
    src.write_bytes(_jsonl(_docs(20)))
    run, res = _ingest(tmp_path, [{"path": str(src)}])
    assert res[0].status == "ran"
    st = os.stat(src)
    edited = src.read_bytes().replace(b"Document 7 says", b"Document 7 SAYS")
    assert len(edited) == st.st_size
    src.write_bytes(edited)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or `rsync -t` can leave it
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert check_run(run) == [f"ingest: its inputs changed since it ran ({src}); `winnow run` reads them again"]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # checking writes nothing
    _, res = _ingest(tmp_path, [{"path": str(src)}])
    assert res[0].status == "ran"
    assert any("Document 7 SAYS" in r["text"] for r in _rows(run, "kept"))
    assert check_run(run) == []
    # a plain copy of the tree (new inode, mtime and ctime; same bytes) is not re-ingested
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "copy").rename(tmp_path / "data")
    _, res = _ingest(tmp_path, [{"path": str(src)}])
    assert res[0].status == "up to date"


@pytest.mark.parametrize("name, compress, suffix", [
    ("a.jsonl", gzip.compress, ".gz"), ("a.jsonl", lambda b: zstandard.ZstdCompressor().compress(b), ".zst"),
    ("notes.txt", gzip.compress, ".gz")])
def test_a_compressed_file_whose_name_does_not_say_so_is_named_with_the_fix(tmp_path, name, compress, suffix):
    """A gzipped `a.jsonl` used to become 100% bad_encoding rows ("the file is not UTF-8")."""
    src = tmp_path / name
    src.write_bytes(compress(_jsonl(_docs(5))))
    msg = _refused(tmp_path, [{"path": str(src)}])
    assert f"{src}: the file is {'gzip' if suffix == '.gz' else 'zstd'}-compressed but its name does not end in " \
           f"{suffix}; rename it to {name}{suffix}" in msg
    (tmp_path / f"{name}{suffix}").write_bytes(src.read_bytes())
    src.unlink()
    _, res = _ingest(tmp_path, [{"path": str(tmp_path / f"{name}{suffix}")}], run="renamed")
    assert res[0].status == "ran"


def test_check_names_the_edited_and_the_new_files_of_a_glob(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for k, name in enumerate("abc"):
        (data / f"{name}.jsonl").write_bytes(_jsonl(_docs(5, start=5 * k)))
    inputs = [{"path": str(data / "*.jsonl")}]
    run, _ = _ingest(tmp_path, inputs)
    assert check_run(run) == []
    st = os.stat(data / "b.jsonl")
    edited = (data / "b.jsonl").read_bytes().replace(b"Document 7 says", b"Document 7 SAYS")
    (data / "b.jsonl").write_bytes(edited)
    os.utime(data / "b.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns))
    (data / "d.jsonl").write_bytes(_jsonl(_docs(2, start=15)))
    assert check_run(run) == [f"ingest: its inputs changed since it ran ({data / 'b.jsonl'}, {data / 'd.jsonl'} (new)); "
                              "`winnow run` reads them again"]
    # without the remembered hashes (a run folder from before they were kept) check still sees the change
    [cache] = run.rglob("input_hashes.json")
    cache.unlink()
    assert check_run(run) == ["ingest: its inputs changed since it ran (their content differs from what it read); "
                              "`winnow run` reads them again"]


# ---------------------------------------------------------------------------
# issue 25: user metadata


def test_user_fields_named_file_and_record_are_kept(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_bytes(_jsonl(_docs(2, file="original.pdf", record=42)))
    run, _ = _ingest(tmp_path, [{"path": str(src)}])
    row = _rows(run, "kept")[0]
    assert json.loads(row["metadata"]) == {"file": "original.pdf", "record": 42}
    assert (row["input_file"], row["input_record"]) == ("m.jsonl", 1)  # winnow's provenance, apart


def test_binary_parquet_columns_are_named_in_dropped_fields(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["first doc", "second doc"], "blob": [b"\x00\x01", b"\xff"],
                             "lang": ["en", "de"]}), tmp_path / "b.parquet")
    run, _ = _ingest(tmp_path, [{"path": str(tmp_path / "b.parquet")}])
    assert [json.loads(r["metadata"]) for r in _rows(run, "kept")] == [
        {"lang": "en", "dropped_fields": ["blob"]}, {"lang": "de", "dropped_fields": ["blob"]}]


def test_metadata_fields_as_one_name_is_that_field_and_a_number_is_refused(tmp_path):
    src = tmp_path / "u.jsonl"
    src.write_bytes(_jsonl(_docs(2, url="http://example.com/", u=1, r=2, l=3)))
    run, _ = _ingest(tmp_path, [{"path": str(src), "metadata_fields": "url"}])
    assert json.loads(_rows(run, "kept")[0]["metadata"]) == {"url": "http://example.com/"}
    msg = _refused(tmp_path, [{"path": str(src), "metadata_fields": 5}])
    assert "metadata_fields" in msg and "5" in msg


def test_nan_and_infinity_never_reach_metadata_as_invalid_json(tmp_path):
    src = tmp_path / "nan.jsonl"
    src.write_text('{"id": "a", "text": "a document", "score": NaN, "hi": Infinity, "v": [1.5, -Infinity]}\n')
    pq.write_table(pa.table({"id": ["p"], "text": ["parquet doc"], "x": [math.nan]}), tmp_path / "nan.parquet")
    run, _ = _ingest(tmp_path, [{"path": str(src)}, {"path": str(tmp_path / "nan.parquet")}])

    def strict(s):
        return json.loads(s, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c} in {s}"))

    metas = {r["id"]: strict(r["metadata"]) for r in _rows(run, "kept")}
    assert metas == {"a": {"score": "NaN", "hi": "Infinity", "v": [1.5, "-Infinity"]}, "p": {"x": "NaN"}}


# ---------------------------------------------------------------------------
# issue 25: misread formats


def test_jsonl_named_warc_is_refused_with_a_hint(tmp_path):
    src = tmp_path / "pages.warc"
    src.write_bytes(_jsonl(_docs(300)))
    msg = _refused(tmp_path, [{"path": str(src)}])
    assert "pages.warc" in msg and "not a WARC or ARC file" in msg and "format: jsonl" in msg
    other = tmp_path / "pages.jsonl"
    other.write_bytes(_jsonl(_docs(300)))
    assert "not a WARC" in _refused(tmp_path, [{"path": str(other), "format": "warc"}], run="r2")


def test_cr_only_line_endings_are_lines(tmp_path):
    src = tmp_path / "mac.jsonl"
    src.write_bytes(_jsonl(_docs(5), sep="\r"))
    crlf = tmp_path / "dos.jsonl"
    crlf.write_bytes(_jsonl(_docs(5, start=10), sep="\r\n") + b"\r\n")
    run, _ = _ingest(tmp_path, [{"path": str(src)}, {"path": str(crlf)}])
    kept = _rows(run, "kept")
    assert sorted(int(r["id"][1:]) for r in kept) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert [r["input_record"] for r in kept if r["input_file"] == "dos.jsonl"] == [1, 2, 3, 4, 5]
    assert _stats(run)["counters"] == {"blank_lines": 1}


# ---------------------------------------------------------------------------
# issue 25: WARC records and bounded parsing


def _warc(records, gz=True) -> bytes:
    """records: (url, payload bytes, extra HTTP headers)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    for url, payload, headers in records:
        hh = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), *headers], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=hh))
    return buf.getvalue()


def test_brotli_warc_records_are_decoded_or_quarantined_with_a_reason(tmp_path):
    import brotli

    page = b"<html><body><p>" + b"A page that came compressed with brotli. " * 20 + b"</p></body></html>"
    bomb = brotli.compress(b"<html><body><p>" + b"z" * (64 << 20), quality=5)  # 64 MB from a few KB
    warc = tmp_path / "br.warc.gz"
    warc.write_bytes(_warc([
        ("http://a/", brotli.compress(page), [("Content-Encoding", "br")]),
        ("http://b/", b"this is not brotli at all", [("Content-Encoding", "br")]),
        ("http://c/", page, []),
        ("http://d/", bomb, [("Content-Encoding", "br")]),
        ("http://e/", page, [("Content-Encoding", "zstd")]),
    ]))
    run, _ = _ingest(tmp_path, [{"path": str(warc)}], max_record_bytes=1 << 18)
    kept = {json.loads(r["metadata"])["url"]: r for r in _rows(run, "kept")}
    assert "compressed with brotli" in kept["http://a/"]["text"] and "http://c/" in kept
    assert json.loads(kept["http://d/"]["metadata"])["payload_truncated_at"] == 1 << 18  # the bomb is capped
    removed = {json.loads(r["metadata"])["url"]: r for r in _rows(run, "removed")}
    assert removed["http://b/"]["reason"] == "undecodable_content" and "brotli" in removed["http://b/"]["detail"]
    assert removed["http://e/"]["reason"] == "undecodable_content" and "zstd" in removed["http://e/"]["detail"]


@pytest.mark.parametrize("shape", ["after_version", "no_newline_at_all"])
def test_a_warc_header_line_without_newline_is_refused_quickly(tmp_path, shape):
    src = tmp_path / "long.warc"
    body = b"a" * (32 << 20)
    src.write_bytes(b"WARC/1.0\r\nWARC-Type: response\r\nX-Long: " + body if shape == "after_version"
                    else b"WARC/1.0" + body)
    msg = _refused(tmp_path, [{"path": str(src)}])
    assert "long.warc" in msg and "header line longer than" in msg


@pytest.mark.parametrize("case", ["attributes_50k", "attributes_250k", "optgroup_option_50k", "options_20k_closed"])
def test_html_that_would_stall_the_parser_is_quarantined(tmp_path, case):
    html = {
        "attributes_50k": "<html><body><div " + " ".join(f"a{i}=x" for i in range(50_000)) + ">hi</div></body></html>",
        "attributes_250k": "<div " + " ".join(f"a{i}" for i in range(250_000)) + ">hi</div>",
        "optgroup_option_50k": "<select>" + "<optgroup><option>" * 50_000,
        "options_20k_closed": "<p>Choose:</p><select>" + "<option>x</option>" * 20_000 + "</select>",
    }[case]
    fine = "<html><body>" + "<p>A real paragraph of text on a page. </p>" * 50 + "</body></html>"
    src = tmp_path / "pages.jsonl"
    src.write_text(json.dumps({"id": "bad", "html": html}) + "\n" + json.dumps({"id": "fine", "html": fine}) + "\n")
    run, _ = _ingest(tmp_path, [{"path": str(src), "html_field": "html"}])
    assert [r["id"] for r in _rows(run, "kept")] == ["fine"]
    (bad,) = _rows(run, "removed")
    assert bad["reason"] == "html_too_complex"
    assert ("max_html_attributes=2,000" if case.startswith("attributes") else "max_html_options=5,000") in bad["detail"]


def test_quoted_angle_brackets_do_not_hide_attributes_from_the_scan():
    from pipeline.ingest.html import TooComplex, html_scan

    evasive = '<div x"=">" ' + " ".join(f"a{i}" for i in range(5000)) + ">hi</div>"
    quoted = '<div t=">" ' + " ".join(f'a{i}=">"' for i in range(5000)) + ">hi</div>"
    for html in (evasive, quoted):
        with pytest.raises(TooComplex, match="attributes"):
            html_scan(html, max_attributes=2000, max_options=5000)
    # script bodies are not markup: a comparison in code is no tag
    html_scan("<script>" + "if (a <b && c) x();" * 5000 + "</script><p>text</p>", max_attributes=10, max_options=1)


def test_pages_are_cut_to_the_size_the_extractor_handles_in_bounded_time(tmp_path, monkeypatch):
    import pipeline.ingest.html as html_mod

    assert html_mod.TRAFILATURA_MAX_HTML_CHARS == 1 << 20 < DEFAULT_MAX_HTML_CHARS  # 13 s on a 4M table: 1M for it
    monkeypatch.setattr(html_mod, "TRAFILATURA_MAX_HTML_CHARS", 50_000)  # the same rule on a smaller page
    page = "<html><body>" + '<p class="a-long-class-name another-class">Words in a paragraph.</p>\n' * 1_500 \
        + "</body></html>"
    assert 50_000 < len(page) < DEFAULT_MAX_HTML_CHARS
    src = tmp_path / "big.jsonl"
    src.write_text(json.dumps({"id": "big", "html": page}) + "\n")
    metas = {}
    for extractor in ("resiliparse", "trafilatura"):
        run, _ = _ingest(tmp_path, [{"path": str(src), "html_field": "html"}], run=extractor, extractor=extractor)
        metas[extractor] = json.loads(_rows(run, "kept")[0]["metadata"])
    assert "html_truncated" not in metas["resiliparse"] and metas["trafilatura"]["html_truncated"] is True


@pytest.mark.slow  # datasets' own network timeouts (about 25 s)
def test_a_hub_dataset_that_cannot_be_loaded_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _refused(tmp_path, [{"format": "hf", "name": "no-such-org/no-such-dataset"}])
    assert "hf:no-such-org/no-such-dataset: cannot load the dataset" in msg


def test_metadata_is_stored_as_parquet_json(tmp_path):
    import datasets

    src = tmp_path / "m.jsonl"
    src.write_bytes(_jsonl(_docs(3, url="http://example.com/", truth={"kind": "clean"})))
    run, _ = _ingest(tmp_path, [{"path": str(src)}])
    shard = sorted((run / "ingest" / "kept").glob("*.parquet"))[0]
    schema = pq.ParquetFile(shard).schema
    assert str(schema.column(schema.names.index("metadata")).logical_type) == "JSON"  # DuckDB: metadata->>'url'
    ds = datasets.load_dataset("parquet", data_files=str(shard), split="train")
    assert ds[0]["metadata"] == {"url": "http://example.com/", "truth": {"kind": "clean"}}  # decoded to a dict
    assert pq.read_table(shard).column("input_record").type == pa.int64()


def test_input_hashes_are_remembered_so_an_unchanged_input_is_not_read_again(tmp_path, monkeypatch):
    import pipeline.ingest.stage as stage_mod

    src = tmp_path / "a.jsonl"
    src.write_bytes(_jsonl(_docs(20)))
    _ingest(tmp_path, [{"path": str(src)}])
    hashed = []
    real = stage_mod.xxh3_file
    monkeypatch.setattr(stage_mod, "xxh3_file", lambda p: hashed.append(p) or real(p))
    _, res = _ingest(tmp_path, [{"path": str(src)}])
    assert res[0].status == "up to date" and hashed == []  # size, times and inode unchanged: not read
    os.utime(src)  # touched: hashed again, same content, still up to date
    _, res = _ingest(tmp_path, [{"path": str(src)}])
    assert res[0].status == "up to date" and len(hashed) == 1
