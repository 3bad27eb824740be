"""Hostile and damaged input (issue 15, ingest side): nothing is lost silently, nothing crashes, nothing hangs.

Every file here is built in tmp_path and small, so the whole module runs in seconds. Each class of
problem has a test: truncated streams of every format, records that cannot be converted, HTML nested
deep enough to stall extraction, a YAML alias bomb, archives of blank lines, FIFOs and symlinks found
by globs and folder walks, and a run folder inside the input glob.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.config import ConfigError, load_config
from pipeline.ingest.html import TooDeep, check_html, html_nesting
from pipeline.ingest.readers.warc import WarcReader
from pipeline.ingest.records import InputError
from pipeline.ingest.stage import DEFAULT_LIMITS, IngestStage, expand_inputs
from pipeline.ingest.streams import bounded_lines, check_zstd_frames
from pipeline.shards import read_json
from tests.conftest import run_pipeline


def _ingest(tmp_path, inputs, run="run", **stage):
    cfg = {"run_dir": str(tmp_path / run), "stages": [{"name": "ingest", "inputs": inputs, **stage}]}
    return run_pipeline(cfg, tmp_path, f"{run}.yaml")


def _rows(run, part):
    m = read_json(run / "ingest" / "manifest.json")
    return [r for sh in m["shards"] for r in pq.read_table(run / "ingest" / sh[part]["path"]).to_pylist()]


def _stats(run):
    return read_json(run / "ingest" / "stats.json")


def _jsonl(n, start=0):
    return "".join(json.dumps({"id": f"d{i}", "text": f"Document {i} says something. " * 20}) + "\n"
                   for i in range(start, start + n)).encode()


def _refused(tmp_path, path, inputs=None):
    """Ingesting ``path`` stops with one line that names it; returns the message."""
    with pytest.raises(Exception) as exc:
        _ingest(tmp_path, inputs or [{"path": str(path)}])
    msg = str(exc.value)
    assert path.name in msg, msg
    assert "\n" not in msg, msg
    err = exc.value if isinstance(exc.value, InputError) else exc.value.__cause__
    assert isinstance(err, InputError), repr(exc.value)
    return msg


# ---------------------------------------------------------------------------
# truncated streams: refused with an error naming the file, in every format


def _warc(gz: bool, n: int = 10, html=None) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("x.warc", {"software": "test"}))
    for i in range(n):
        body = html or f"<html><body><p>Page {i}. {'Some words on a page. ' * 20}</p></body></html>"
        hh = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(f"http://example.com/{i}", "response",
                                            payload=io.BytesIO(body.encode()), http_headers=hh))
    return buf.getvalue()


def test_truncated_streams_of_every_format_are_refused_naming_the_file(tmp_path):
    data = _jsonl(3000)
    zst = zstandard.ZstdCompressor().compress(data)
    gz = gzip.compress(data)
    warc_gz, warc = _warc(gz=True), _warc(gz=False)
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a"] * 500, "text": ["some text"] * 500}), buf)
    cases = {
        "half.jsonl.zst": zst[: len(zst) // 2],
        "half.jsonl.gz": gz[: len(gz) // 2],
        "twothirds.warc.gz": warc_gz[: len(warc_gz) * 2 // 3],
        "lastshort.warc": warc[:-40],  # the last record's payload is shorter than its Content-Length
        "cut.txt.gz": gzip.compress(b"a text file " * 1000)[:-20],
        "cut.txt.zst": zstandard.ZstdCompressor().compress(b"a text file " * 1000)[:-20],
        "cut.parquet": buf.getvalue()[:-100],
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        msg = _refused(tmp_path, p)
        assert any(w in msg for w in ("truncated", "cut short", "corrupt")), msg
        assert "finished shards of this file kept" in msg


def test_zstd_frame_walk_accepts_whole_files_and_refuses_every_cut(tmp_path):
    frames = [zstandard.ZstdCompressor(level=1, write_checksum=bool(i % 2)).compress(_jsonl(40, 40 * i))
              for i in range(3)]
    blob = b"".join(frames)
    p = tmp_path / "multi.jsonl.zst"
    p.write_bytes(blob)
    assert check_zstd_frames(str(p)) == (3, 2)  # frames 0 and 2 were written without a checksum
    boundaries = {len(frames[0]), len(frames[0]) + len(frames[1])}
    for cut in random.Random(0).sample(range(1, len(blob)), 150):
        p.write_bytes(blob[:cut])
        if cut in boundaries:
            continue
        with pytest.raises(InputError, match="truncated zstd"):
            check_zstd_frames(str(p))
    p.write_bytes(blob + b"garbage")
    with pytest.raises(InputError, match="not a zstd stream"):
        check_zstd_frames(str(p))


@pytest.mark.parametrize("gz", [False, True])
def test_warc_cut_anywhere_is_refused_unless_cut_between_records(tmp_path, gz):
    """Every cut of a WARC either raises or yields only complete records (a cut exactly between
    records leaves a shorter valid file; nothing can tell it apart)."""
    blob = _warc(gz=gz, n=4)
    p = tmp_path / ("x.warc.gz" if gz else "x.warc")
    limits = {**DEFAULT_LIMITS, "extractor_meta": {"resiliparse": {"extractor": "resiliparse"}}}

    def read():
        return [(r.id, r.text) for r in WarcReader(str(p), {}, limits).records()]

    p.write_bytes(blob)
    full = read()
    assert len(full) == 4
    silent = 0
    for cut in random.Random(1).sample(range(1, len(blob)), 120):
        p.write_bytes(blob[:cut])
        try:
            got = read()
        except InputError as e:
            assert str(p) in str(e) and "\n" not in str(e)
            continue
        assert got == full[: len(got)], f"cut at {cut} of {len(blob)} gave a damaged record"
        silent += 1
    assert silent < 12  # only cuts at (or in the blank lines between) record boundaries


# ---------------------------------------------------------------------------
# one bad record is one quarantined row; the file goes on


def test_unconvertible_records_are_quarantined_one_row_each(tmp_path):
    lines = [
        '{"id": "a\\ud800", "text": "fine"}',                           # lone surrogate in the id
        '{"id": "u", "url": "http://x/\\udfff", "text": "fine"}',       # ... in the URL
        '{"id": "k", "bad\\ud800key": 1, "text": "fine"}',               # ... in a metadata key
        '{"id": "big", "n": ' + "9" * 5000 + ', "text": "fine"}',          # beyond Python's int digit limit
        '{"id": "deep", "text": "fine", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",  # beyond recursion
        '{"id": "ok", "text": "a good document"}',
    ]
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")  # with a UTF-8 BOM
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "first", "text": "line one"}).encode() + b"\n")
    run = _ingest(tmp_path, [{"path": str(src), "url_field": "url"}, {"path": str(bom)}])
    kept = {r["id"] for r in _rows(run, "kept")}
    assert kept == {"ok", "first"}  # the BOM is stripped: line 1 of bom.jsonl is a document
    removed = {r["input_record"]: (r["reason"], r["detail"]) for r in _rows(run, "removed")}
    assert {k: v[0] for k, v in removed.items()} == {1: "bad_encoding", 2: "bad_encoding", 3: "bad_encoding",
                                                     4: "malformed", 5: "malformed"}
    assert "`id`" in removed[1][1] and "`url`" in removed[2][1] and "field name" in removed[3][1]
    assert "digits" in removed[4][1] and "nested too deeply" in removed[5][1]
    assert all(r["input_file"] == "bad.jsonl" for r in _rows(run, "removed"))


def test_parquet_non_string_columns(tmp_path):
    import datetime

    ok = tmp_path / "ts.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b"], "text": ["first doc", "second doc"],
        "ts": pa.array([datetime.datetime(2020, 1, 1), datetime.datetime(2021, 6, 1)], pa.timestamp("us", tz="UTC")),
        "price": pa.array([1, 2], pa.decimal128(5, 2)),
    }), ok)
    run = _ingest(tmp_path, [{"path": str(ok)}])
    meta = [json.loads(r["metadata"]) for r in _rows(run, "kept")]
    assert meta[0]["ts"].startswith("2020-01-01") and meta[1]["price"] == "2.00"  # stored as their text

    far = tmp_path / "far.parquet"  # a timestamp Python's datetime cannot hold
    pq.write_table(pa.table({"id": ["a"], "text": ["x"],
                             "ts": pa.array([10 ** 18], pa.timestamp("us"))}), far)
    assert "column `ts`" in _refused(tmp_path, far)
    # ...and left out with metadata_fields, the file reads
    run = _ingest(tmp_path, [{"path": str(far), "metadata_fields": []}], run="run-far")
    assert [r["id"] for r in _rows(run, "kept")] == ["a"]

    wrong = tmp_path / "wrongtext.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": pa.array([datetime.datetime(2020, 1, 1)], pa.timestamp("s"))}), wrong)
    assert "column `text` holds timestamp" in _refused(tmp_path, wrong)


# ---------------------------------------------------------------------------
# bounded per-document work


def test_deeply_nested_html_is_quarantined_not_extracted_for_minutes(tmp_path):
    shallow = "<html><body>" + "<div><p>Some words in a paragraph.</p></div>" * 200 + "</body></html>"
    src = tmp_path / "html.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "divs", "html": "<div>" * 30000 + "deep text"},      # 38 s in main-content extraction unguarded
        {"id": "wide", "html": ("<div>" * 900 + "text" + "</div>" * 900) * 30},  # deep enough, many times over
        {"id": "items", "html": "<li><p>an item " * 20000},          # the tag scan overcounts; the tree is flat
        {"id": "fine", "html": shallow},
    ]))
    run = _ingest(tmp_path, [{"path": str(src), "html_field": "html"}])
    assert {r["id"] for r in _rows(run, "kept")} == {"items", "fine"}
    removed = {r["id"]: r for r in _rows(run, "removed")}
    assert {k: r["reason"] for k, r in removed.items()} == {"divs": "html_too_deep", "wide": "html_too_deep"}
    assert "max_html_depth=1,000" in removed["divs"]["detail"]
    assert "max_html_depth_sum" in removed["wide"]["detail"]

    warc = tmp_path / "deep.warc.gz"  # the same guard on WARC responses
    warc.write_bytes(_warc(gz=True, n=2, html="<html><body>" + "<div>" * 30000 + "x"))
    run = _ingest(tmp_path, [{"path": str(warc)}], run="run-warc")
    assert [r["reason"] for r in _rows(run, "removed")] == ["html_too_deep"] * 2


def test_html_nesting_is_measured_on_the_parsed_tree_when_the_tag_scan_is_over():
    assert html_nesting("<div>" * 998) == (1000, sum(range(1, 1001)) + 2)  # implied <html>, <head>, <body>
    assert html_nesting("<li><p>x" * 5000)[0] == 4  # html, body, li, p: a new <li> closes the last one
    lim = lambda depth, total: {**DEFAULT_LIMITS, "max_html_depth": depth, "max_html_depth_sum": total}  # noqa: E731
    check_html("<li><p>x" * 5000, lim(10, 10 ** 9))
    check_html("<div>" * 900, lim(1000, 10 ** 9))
    with pytest.raises(TooDeep, match="max_html_depth=1,000"):
        check_html("<div>" * 1100, lim(1000, 10 ** 9))
    with pytest.raises(TooDeep, match="max_html_depth_sum=100"):
        check_html("<div></div>" * 101, lim(1000, 100))


def test_yaml_alias_bomb_is_refused_in_one_line(tmp_path):
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")  # 9**9 strings once expanded
    assert bomb.stat().st_size < 700
    with pytest.raises(ConfigError) as exc:
        load_config(bomb)
    assert "aliases are not allowed" in str(exc.value) and "\n" not in str(exc.value)


def test_an_archive_of_blank_lines_is_counted_not_written(tmp_path):
    src = tmp_path / "newlines.jsonl.gz"
    body = b"\n" * 20_000_000 + b'{"id": "only", "text": "the one document"}\n' + b"  \r\n\t\n" * 1000
    src.write_bytes(gzip.compress(body, 9))
    assert src.stat().st_size < 40_000
    run = _ingest(tmp_path, [{"path": str(src)}])
    stats = _stats(run)
    assert stats["docs_in"] == 1 and stats["kept"] == 1
    assert stats["counters"] == {"blank_lines": 20_002_000}
    assert _rows(run, "kept")[0]["input_record"] == 20_000_001  # line numbers stay true


def test_bounded_lines_matches_a_plain_split_at_every_chunk_boundary():
    """The bulk blank-line skipping must not change which lines come out, their numbers or lengths."""
    rng = random.Random(3)
    pieces = [b"", b" ", b"\t", b"\r", b"x", b"{}", b"ab c", b"y" * 9, b"z" * 10, b"w" * 11,
              b" " * 25, b" " * 11 + b"v", b"  u", b"\r" * 10]  # whitespace-only lines over the limit are blank
    data = b"\n".join(rng.choice(pieces) for _ in range(400)) + rng.choice([b"", b"\n", b"tail"])
    limit = 10
    expect, blank = [], 0
    lines = data.split(b"\n")
    for n, content in enumerate(lines, start=1):
        line = content + (b"\n" if n < len(lines) else b"")
        if not line:
            continue  # nothing after the last newline
        if not line.strip():
            blank += 1
        else:
            expect.append((n, line if len(content) <= limit else None, len(line)))
    for chunk in (1, 2, 3, 7, 64, 1 << 20):
        counts: dict = {}
        assert list(bounded_lines(io.BytesIO(data), limit, counts, chunk_bytes=chunk)) == expect, chunk
        assert counts.get("blank_lines", 0) == blank, chunk


def test_resume_with_blank_lines_gives_the_same_bytes(tmp_path):
    src = tmp_path / "gaps.jsonl"
    src.write_bytes(b"".join(line + b"\n" * (i % 3) for i, line in enumerate(_jsonl(50).splitlines(True))))
    full = _ingest(tmp_path, [{"path": str(src)}], run="full", shard_docs=7)
    cut = _ingest(tmp_path, [{"path": str(src)}], run="cut", shard_docs=7)
    done = cut / "ingest" / "_done"
    for marker in sorted(done.glob("part-*.json"))[3:] + list(done.glob("file-*.json")):
        marker.unlink()  # as if killed after three shards
    (cut / "ingest" / "manifest.json").unlink()
    _ingest(tmp_path, [{"path": str(src)}], run="cut", shard_docs=7)
    shas = lambda run: [(s["kept"]["sha256"], s["removed"]["sha256"])  # noqa: E731
                        for s in read_json(run / "ingest" / "manifest.json")["shards"]]
    assert shas(cut) == shas(full)
    blank = sum(i % 3 for i in range(50))
    assert _stats(cut)["counters"] == _stats(full)["counters"] == {"blank_lines": blank}


# ---------------------------------------------------------------------------
# what is read: regular files inside the input folder, never the run folder


def test_globs_and_folders_read_regular_files_only_and_say_what_they_skipped(tmp_path):
    data = tmp_path / "data"
    (data / "txt").mkdir(parents=True)
    (data / "a.jsonl").write_bytes(_jsonl(3))
    os.mkfifo(data / "pipe.jsonl")                                       # would block forever
    os.symlink(data / "gone.jsonl", data / "dangling.jsonl")             # nothing to read
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(_jsonl(1, 100))
    os.symlink(secret, data / "escape.jsonl")                            # leads outside data/
    os.symlink(data / "a.jsonl", data / "alias.jsonl")                   # inside data/: followed
    (data / "txt" / "one.txt").write_text("a text file")
    os.mkfifo(data / "txt" / "pipe.txt")
    os.symlink("/etc/passwd", data / "txt" / "passwd.txt")
    os.symlink(data / "txt" / "missing.txt", data / "txt" / "dangling.txt")
    run = _ingest(tmp_path, [{"path": str(data / "*.jsonl")}, {"path": str(data / "txt")}])
    ids = sorted(r["id"] for r in _rows(run, "kept"))
    assert ids == ["d0", "d0", "d1", "d1", "d2", "d2", "one.txt"]  # a.jsonl and its alias; no d100
    assert _stats(run)["counters"] == {
        "inputs_skipped:dangling_symlink": 2, "inputs_skipped:not_regular_file": 2,
        "inputs_skipped:outside_input_folder": 2}
    stage = IngestStage("ingest", {"inputs": [{"path": str(data / "*.jsonl")}]})
    stage.source_tasks()  # the run log's stage line says what the glob skipped
    assert ("globs skipped 1 dangling_symlink, 1 not_regular_file, 1 outside_input_folder"
            in stage.describe())


def test_a_named_fifo_dangling_symlink_or_compressed_parquet_is_a_one_line_error(tmp_path):
    os.mkfifo(tmp_path / "named.txt")
    assert "FIFO" in _refused(tmp_path, tmp_path / "named.txt")
    os.symlink(tmp_path / "nowhere.jsonl", tmp_path / "link.jsonl")
    assert "dangling symlink" in _refused(tmp_path, tmp_path / "link.jsonl")
    gz = tmp_path / "table.parquet.gz"
    gz.write_bytes(gzip.compress(b"PAR1"))
    assert "compressed parquet file" in _refused(tmp_path, gz)
    for bad in ({"path": ["a", "b"]}, "just-a-string"):
        with pytest.raises(InputError, match="input #0"):
            expand_inputs([bad])


def test_a_run_folder_inside_the_input_glob_is_not_reingested(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(100)], "text": ["words"] * 100}), src / "in.parquet")
    inputs = [{"path": str(tmp_path / "**" / "*.parquet")}]
    for attempt in range(2):  # the second run sees the first run's shards under the same glob
        cfg = {"run_dir": str(src / "run"), "stages": [{"name": "ingest", "inputs": inputs}]}
        run = run_pipeline(cfg, tmp_path, "glob.yaml", force=True)
        assert _stats(run)["docs_in"] == 100, attempt
    tasks = expand_inputs(inputs, run_dir=src / "run")
    assert [t["label"] for t in tasks] == ["data/in.parquet"]  # named relative to the glob's folder
    assert tasks[0]["skipped"] == {"inside_run_dir": 1}  # the run folder is not entered
    with pytest.raises(InputError, match="inside the run folder"):
        expand_inputs([{"path": str(src / "run" / "ingest" / "kept")}], run_dir=src / "run")
