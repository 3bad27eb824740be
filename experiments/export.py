"""Export a stage's kept documents for training elsewhere: JSON Lines, Parquet, a Hugging Face dataset
(``datasets.load_from_disk`` opens it), or tokenized shards a training loop memory-maps.

What is exported is chosen once, the same for every format:

* all kept documents of the stage, in the stage's order; or
* with ``weights`` (per source) and/or ``token_budget``, documents drawn per source in a seeded order
  (:func:`pipeline.heldout.order_key`, so the same seed gives the same subset) until each source has
  its share of the budget in tokens. A source that has fewer tokens than its share is taken whole and
  the shortfall is reported (``repeat=True`` draws it again, epoch after epoch, instead, as dolma's mixer
  upsamples). Counting tokens needs a tokenizer, and tokenizes the stage once more than the export.
  The drawn documents are written in stage order (memory stays bounded); a document drawn twice
  appears in the first and the second pass over the stage.

Token shards (``format="tokens"``): ``tokens-00000.bin``... are flat arrays of token ids (uint16 when
every id fits, else uint32), each document followed by the end-of-text token when the tokenizer has one;
``index.parquet`` gives every document's id, source, shard, offset and length (in tokens, without the
separator); the tokenizer is saved beside them in ``tokenizer/``. :class:`TokenShards` reads them back.

Every export is written into a temporary folder beside the destination and renamed into place when
complete, and carries ``export.json``: the run, the stage and its output fingerprint, the settings,
per-source counts, every file with its checksum, and the provenance of the code that wrote it.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigProblem, InputProblem
from pipeline.heldout import order_key
from pipeline.inspection import open_run, read_failure, read_manifest, require_stage
from pipeline.rundir import RunFolder
from pipeline.shards import canonical_json, sha256_file

FORMATS = ("jsonl", "parquet", "hf", "tokens")
EXPORT_FILE = "export.json"
#: The columns every export carries (metadata as a typed struct when every document's metadata fits one).
COLUMNS = ("id", "text", "source", "metadata")
EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
#: Vocabulary sizes ``--train-tokenizer`` accepts: at least the 256 bytes and end-of-text; at most 2**20, four
#: times the largest vocabularies in use (a bigger number is a typo, and the trainer aborts the process on it).
TRAINED_VOCAB = (257, 1 << 20)


class ExportError(InputProblem, ValueError):
    """The run, stage or destination cannot be exported as asked."""


class ExportSettingError(ConfigProblem, ValueError):
    """An export option that cannot be used (unknown source in weights, a budget without a tokenizer)."""


@dataclass
class ExportSettings:
    format: str = "jsonl"
    weights: dict[str, float] | None = None
    token_budget: int | None = None
    seed: int = 0
    repeat: bool = False
    tokenizer: str | None = None        # a tokenizer.json, a folder holding one, or a transformers name/folder
    train_tokenizer: int | None = None  # or: train a byte-level BPE of this vocabulary on the kept documents
    shard_docs: int = 50_000            # documents per JSONL/Parquet file
    shard_tokens: int = 100_000_000     # tokens per token shard
    compress: bool = False              # JSONL as .jsonl.gz
    force: bool = False                 # replace an earlier export at the destination


# ---------------------------------------------------------------------------
# tokenizers: the `tokenizers` library's own files, or anything transformers can load


class Tok:
    """One interface over a ``tokenizers.Tokenizer`` and a transformers tokenizer."""

    def __init__(self, spec: str | None, trained: Any = None):
        self.spec = spec
        self.fast = None
        self.hf = None
        if trained is not None:
            self.fast = trained
        elif spec is None:
            raise ExportSettingError("a tokenizer is needed (--tokenizer PATH or --train-tokenizer VOCAB)")
        else:
            path = Path(spec)
            if not path.exists() and (path.suffix == ".json" or spec.startswith((".", "/", "~"))):
                raise ExportSettingError(f"--tokenizer {spec}: no such file or folder")  # not a hub name: say so
            file = path / "tokenizer.json" if path.is_dir() else path
            if file.is_file() and file.suffix == ".json":
                from tokenizers import Tokenizer

                try:
                    self.fast = Tokenizer.from_file(str(file))
                except Exception as e:  # tokenizers raises its own Exception type
                    raise ExportSettingError(f"--tokenizer {spec}: not a tokenizers file ({e})") from None
            else:
                try:
                    from transformers import AutoTokenizer

                    self.hf = AutoTokenizer.from_pretrained(spec)
                except (OSError, ValueError) as e:
                    raise ExportSettingError(f"--tokenizer {spec}: cannot load it (a tokenizer.json, a folder, "
                                             f"or a transformers tokenizer name): {' '.join(str(e).split())[:300]}") from None

    @property
    def vocab_size(self) -> int:
        return self.fast.get_vocab_size() if self.fast is not None else len(self.hf)

    @property
    def eos_id(self) -> int | None:
        if self.hf is not None:
            return self.hf.eos_token_id
        for name in EOS_NAMES:
            i = self.fast.token_to_id(name)
            if i is not None:
                return i
        return None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.fast is not None:
            return [e.ids for e in self.fast.encode_batch(texts, add_special_tokens=False)]
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.fast is not None:
            return self.fast.decode(ids, skip_special_tokens=False)
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def save(self, folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        if self.fast is not None:
            self.fast.save(str(folder / "tokenizer.json"))
        else:
            self.hf.save_pretrained(str(folder))
        return {"source": self.spec or "trained", "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "files": sorted(p.name for p in folder.iterdir())}


def load_tokenizer(folder: str | Path) -> Tok:
    """The tokenizer an export saved in ``tokenizer/``."""
    return Tok(str(folder))


# ---------------------------------------------------------------------------
# which documents


def _kept(run: RunFolder, stage: str, columns: list[str]) -> Iterator[dict]:
    """The stage's kept rows; a shard that cannot be read is one line pointing at `winnow check`."""
    try:
        yield from run.rows(stage, columns)
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        raise read_failure(run, stage, e) from None


def _token_counts(run: RunFolder, stage: str, tok: Tok, batch: int = 256) -> tuple[list[str], list[str], list[int]]:
    ids, sources, counts = [], [], []
    buf: list[dict] = []

    def flush():
        for d, toks in zip(buf, tok.encode_batch([d["text"] for d in buf])):
            ids.append(d["id"])
            sources.append(d["source"])
            counts.append(len(toks))
        buf.clear()

    for d in _kept(run, stage, ["id", "text", "source"]):
        buf.append(d)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return ids, sources, counts


def select(run: RunFolder, stage: str, s: ExportSettings, tok: Tok | None) -> tuple[dict[int, int] | None, dict]:
    """How many times each row (its position in stage order) is exported, and per-source accounting;
    ``None`` means every kept document once."""
    if not s.weights and s.token_budget is None:
        return None, {}
    if tok is None:
        raise ExportSettingError("weights and a token budget are in tokens: give --tokenizer or --train-tokenizer")
    ids, sources, counts = _token_counts(run, stage, tok)
    available: dict[str, int] = {}
    for src, n in zip(sources, counts):
        available[src] = available.get(src, 0) + n
    weights = dict(s.weights or {src: float(n) for src, n in available.items()})
    unknown = sorted(set(weights) - set(available))
    if unknown:
        raise ExportSettingError(f"weights name sources that stage {stage} does not have: {', '.join(unknown)} "
                                 f"(sources: {', '.join(sorted(available))})")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ExportSettingError("weights must be >= 0 with a positive sum")
    total_w = sum(weights.values())
    budget = s.token_budget
    if budget is None:  # the largest budget every source can fill without repeating
        budget = int(min(available[src] * total_w / w for src, w in weights.items() if w > 0))
    targets = {src: int(round(budget * w / total_w)) for src, w in weights.items()}
    by_source: dict[str, list[int]] = {}
    for i, src in enumerate(sources):
        if src in targets:
            by_source.setdefault(src, []).append(i)
    draws: dict[int, int] = {}
    report: dict[str, dict] = {}
    for src in sorted(targets):
        rows = sorted(by_source.get(src, []), key=lambda i: order_key(s.seed, ids[i], f"export:{src}"))
        got, epochs, taken = 0, 0, 0
        while got < targets[src] and rows and counts_positive(rows, counts):
            epochs += 1
            for i in rows:
                if got >= targets[src]:
                    break
                draws[i] = draws.get(i, 0) + 1
                got += counts[i]
                taken += 1
            if not s.repeat:
                break
        report[src] = {"weight": weights[src], "target_tokens": targets[src], "tokens": got, "docs": taken,
                       "available_tokens": available[src], "epochs": epochs,
                       "short_by_tokens": max(0, targets[src] - got)}
    return draws, {"token_budget": budget, "sources": report}


def counts_positive(rows: list[int], counts: list[int]) -> bool:
    return any(counts[i] for i in rows)


def _chosen_rows(run: RunFolder, stage: str, draws: dict[int, int] | None, columns: list[str]) -> Iterator[dict]:
    """The selected rows, streamed in stage order; a document drawn k times appears once in each of
    the first k passes, so repeats are spread over the export, not side by side."""
    if draws is None:
        yield from _kept(run, stage, columns)
        return
    for epoch in range(1, max(draws.values(), default=0) + 1):
        for pos, d in enumerate(_kept(run, stage, columns)):
            if draws.get(pos, 0) >= epoch:
                yield d


# ---------------------------------------------------------------------------
# metadata: a typed struct when every document's metadata fits one


def _metadata_type(run: RunFolder, stage: str) -> pa.DataType | None:
    """The struct type all metadata objects share (keys unified, types promoted), or None (keep JSON text)."""
    unified: pa.DataType | None = None
    for path in run.shard_files(stage, "kept", nonempty=True):
        metas = [json.loads(m or "{}") for m in pq.read_table(path, columns=["metadata"]).column("metadata").to_pylist()]
        try:
            t = pa.array(metas).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        if not pa.types.is_struct(t):
            return None
        if unified is None:
            unified = t
        else:
            try:
                unified = pa.unify_schemas([pa.schema([pa.field("m", unified)]), pa.schema([pa.field("m", t)])],
                                           promote_options="permissive").field("m").type
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return None
    if unified is None or unified.num_fields == 0 or _has_null_type(unified):
        return None
    return unified


def _has_null_type(t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_null_type(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_null_type(t.value_type)
    return False


def _table(rows: list[dict], meta_type: pa.DataType | None) -> pa.Table:
    cols = {"id": pa.array([r["id"] for r in rows], pa.string()),
            "text": pa.array([r["text"] for r in rows], pa.large_string()),
            "source": pa.array([r["source"] for r in rows], pa.string())}
    if meta_type is None:
        cols["metadata"] = pa.array([r["metadata"] for r in rows], pa.string())
    else:
        cols["metadata"] = pa.array([json.loads(r["metadata"] or "{}") for r in rows], meta_type)
    return pa.table(cols)


# ---------------------------------------------------------------------------
# writers


def _batches(rows: Iterator[dict], n: int) -> Iterator[list[dict]]:
    buf: list[dict] = []
    for r in rows:
        buf.append(r)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def _write_jsonl(rows: Iterator[dict], out: Path, s: ExportSettings) -> list[dict]:
    files = []
    for k, batch in enumerate(_batches(rows, s.shard_docs)):
        name = f"part-{k:05d}.jsonl" + (".gz" if s.compress else "")
        data = "".join(json.dumps({"id": r["id"], "text": r["text"], "source": r["source"],
                                   "metadata": json.loads(r["metadata"] or "{}")}, ensure_ascii=False) + "\n"
                       for r in batch).encode("utf-8")
        (out / name).write_bytes(gzip.compress(data, mtime=0) if s.compress else data)
        files.append({"path": name, "docs": len(batch)})
    return files


def _write_parquet(rows: Iterator[dict], out: Path, s: ExportSettings, meta_type) -> list[dict]:
    files = []
    for k, batch in enumerate(_batches(rows, s.shard_docs)):
        name = f"part-{k:05d}.parquet"
        pq.write_table(_table(batch, meta_type), out / name, compression="zstd")
        files.append({"path": name, "docs": len(batch)})
    return files


def _write_hf(rows: Iterator[dict], out: Path, tmp: Path, s: ExportSettings, meta_type) -> list[dict]:
    """Parquet shards first, then ``Dataset.from_parquet(...).save_to_disk(out)`` (datasets' cache kept in tmp)."""
    import datasets

    staging = tmp / "parquet"
    staging.mkdir()
    parts = _write_parquet(rows, staging, s, meta_type)
    files = [str(staging / p["path"]) for p in parts]
    quiet = not sys.stderr.isatty() and datasets.is_progress_bar_enabled()
    if quiet:  # datasets' bars are carriage-return lines that flood a redirected log
        datasets.disable_progress_bars()
    try:
        if files:
            ds = datasets.Dataset.from_parquet(files, cache_dir=str(tmp / "cache"), keep_in_memory=False)
        else:
            ds = datasets.Dataset.from_dict({c: [] for c in COLUMNS})
        ds.save_to_disk(str(out))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return [{"path": p.name} for p in sorted(out.iterdir()) if p.is_file()]


def _write_tokens(rows: Iterator[dict], out: Path, s: ExportSettings, tok: Tok) -> tuple[list[dict], dict]:
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    eos = tok.eos_id
    sep = [] if eos is None else [eos]
    index = {"id": [], "source": [], "shard": [], "offset": [], "length": []}
    files: list[dict] = []
    shard, pos, handle = 0, 0, None
    checked = equal = 0

    def open_shard(k: int):
        return open(out / f"tokens-{k:05d}.bin", "wb")

    handle = open_shard(shard)
    for batch in _batches(rows, 256):
        encoded = tok.encode_batch([r["text"] for r in batch])
        for r, ids in zip(batch, encoded):
            if pos and pos + len(ids) + len(sep) > s.shard_tokens:
                handle.close()
                files.append({"path": f"tokens-{shard:05d}.bin", "tokens": pos})
                shard, pos = shard + 1, 0
                handle = open_shard(shard)
            arr = np.asarray(ids + sep, dtype=dtype)
            handle.write(arr.tobytes())
            for key, v in (("id", r["id"]), ("source", r["source"]), ("shard", shard), ("offset", pos),
                           ("length", len(ids))):
                index[key].append(v)
            pos += len(arr)
            if checked < 200:  # whether decoding gives the text back (exact for byte-level BPE)
                checked += 1
                equal += tok.decode(ids) == r["text"]
    handle.close()
    files.append({"path": f"tokens-{shard:05d}.bin", "tokens": pos})
    pq.write_table(pa.table({"id": pa.array(index["id"], pa.string()), "source": pa.array(index["source"], pa.string()),
                             "shard": pa.array(index["shard"], pa.int32()), "offset": pa.array(index["offset"], pa.int64()),
                             "length": pa.array(index["length"], pa.int64())}), out / "index.parquet")
    files.append({"path": "index.parquet", "docs": len(index["id"])})
    info = tok.save(out / "tokenizer")
    info.update(dtype=np.dtype(dtype).name, separator="eos after every document" if sep else "none",
                roundtrip={"checked": checked, "equal": equal}, tokens=int(sum(f.get("tokens", 0) for f in files)))
    return files, info


# ---------------------------------------------------------------------------


def _destination(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not (dest / EXPORT_FILE).is_file():
            raise ExportError(f"{dest} is not empty and is not a winnow export (no {EXPORT_FILE}); choose a new "
                              f"or empty folder")
        if not force:
            raise ExportError(f"{dest} already holds an export; pass --force to replace it")


def export(run_dir: str | Path, stage: str, dest: str | Path, s: ExportSettings, log=print) -> dict:
    """Write ``stage``'s kept documents to ``dest`` in ``s.format``; returns the export record."""
    from pipeline.provenance import provenance

    if s.format not in FORMATS:
        raise ExportSettingError(f"format must be one of {', '.join(FORMATS)}, got {s.format!r}")
    lo, hi = TRAINED_VOCAB
    if s.train_tokenizer is not None and not lo <= s.train_tokenizer <= hi:
        raise ExportSettingError(f"--train-tokenizer: a vocabulary of {lo} to {hi:,} tokens, got {s.train_tokenizer:,}")
    run, names = open_run(run_dir)  # a wrong path, stage or unfinished stage: the same line as `winnow inspect`
    require_stage(run, names, stage)
    manifest, dest = read_manifest(run, stage), Path(dest)
    _destination(dest, s.force)
    if s.weights:  # before any tokenizer is loaded or trained: a typo in a source name is one line, at once
        sources = {d["source"] for d in _kept(run, stage, ["source"])}
        unknown = sorted(set(s.weights) - sources)
        if unknown:
            raise ExportSettingError(f"weights name sources that stage {stage} does not have: {', '.join(unknown)} "
                                     f"(sources: {', '.join(sorted(sources))})")
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        above = next((q for q in dest.parents if q.exists()), None)
        why = f"{above} is not a folder" if above is not None and not above.is_dir() else e.strerror or str(e)
        raise ExportError(f"{dest}: cannot write there ({why})") from None
    try:
        out = tmp / "out"
        out.mkdir()
        tok = None
        if s.train_tokenizer:
            from experiments.tokenizer import train_tokenizer
            from tokenizers import Tokenizer

            train_tokenizer(Path(run_dir), stage, tmp / "trained.json", vocab_size=s.train_tokenizer, seed=s.seed)
            tok = Tok(None, trained=Tokenizer.from_file(str(tmp / "trained.json")))
        elif s.tokenizer:
            tok = Tok(s.tokenizer)
        if s.format == "tokens" and tok is None:
            raise ExportSettingError("format tokens needs a tokenizer (--tokenizer PATH or --train-tokenizer VOCAB)")
        draws, mix = select(run, stage, s, tok)
        rows = _chosen_rows(run, stage, draws, list(COLUMNS))
        meta_type = _metadata_type(run, stage) if s.format in ("parquet", "hf") else None
        tok_info = None
        if s.format == "jsonl":
            files = _write_jsonl(rows, out, s)
        elif s.format == "parquet":
            files = _write_parquet(rows, out, s, meta_type)
        elif s.format == "hf":
            files = _write_hf(rows, out, tmp, s, meta_type)
        else:
            files, tok_info = _write_tokens(rows, out, s, tok)
        for f in files:
            f["sha256"] = sha256_file(out / f["path"])
        docs = sum(draws.values()) if draws is not None else manifest["totals"]["kept"]
        record = {
            "run_dir": str(Path(run_dir).resolve()), "stage": stage,
            "stage_output_fingerprint": manifest.get("output_fingerprint"),
            "format": s.format, "documents": docs,
            "selection": {"weights": s.weights, "token_budget": s.token_budget, "seed": s.seed, "repeat": s.repeat,
                          **mix} if draws is not None else "every kept document, in stage order",
            "metadata": "struct" if meta_type is not None else "JSON text" if s.format != "tokens" else None,
            "tokenizer": tok_info, "files": files, "provenance": provenance(),
        }
        (out / EXPORT_FILE).write_text(canonical_json(record), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest) if any(dest.iterdir()) else dest.rmdir()
        os.replace(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for src, r in (mix.get("sources") or {}).items():
        if r["short_by_tokens"]:
            log(f"warning: source {src} has {r['available_tokens']:,} tokens, short of its share "
                f"{r['target_tokens']:,} by {r['short_by_tokens']:,} (--repeat draws it again)")
    return record


# ---------------------------------------------------------------------------
# reading token shards back


class TokenShards:
    """Token shards written by :func:`export`: ``TokenShards(DIR)[i]`` is document i's token ids
    (a memory-mapped view), ``.text(i)`` decodes it, ``.shard(k)`` is a whole shard for a training loop."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.info = json.loads((self.folder / EXPORT_FILE).read_text(encoding="utf-8"))
        self.dtype = np.dtype(self.info["tokenizer"]["dtype"])
        self.index = pq.read_table(self.folder / "index.parquet").to_pydict()
        self._maps: dict[int, np.ndarray] = {}
        self._tok: Tok | None = None

    def __len__(self) -> int:
        return len(self.index["id"])

    def shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            self._maps[k] = np.memmap(self.folder / f"tokens-{k:05d}.bin", dtype=self.dtype, mode="r")
        return self._maps[k]

    def __getitem__(self, i: int) -> np.ndarray:
        k, off, n = self.index["shard"][i], self.index["offset"][i], self.index["length"][i]
        return self.shard(k)[off:off + n]

    def text(self, i: int) -> str:
        if self._tok is None:
            self._tok = load_tokenizer(self.folder / "tokenizer")
        return self._tok.decode(self[i])
