"""Exact and MinHash dedup on small real data (Usenet posts), through the real runner."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.dedup import minhash as mh
from pipeline.dedup.stages import MinHashDedup, normalise_text, normalise_url
from pipeline.inspection import format_clusters
from pipeline.config import config_from_dict
from pipeline.runner import Runner
from pipeline.shards import read_json, read_parquet
from tests.conftest import SHARED

USENET = SHARED / "raw" / "usenet-20news.jsonl.gz"
needs_data = pytest.mark.shared_data


def usenet_posts(n: int) -> list[dict]:
    rows = []
    with gzip.open(USENET, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if len(r["text"].split()) >= 80:
                rows.append({"id": r["id"], "text": r["text"]})
            if len(rows) >= n:
                break
    return rows


def substitute_words(text: str, fraction: float, rng: np.random.Generator) -> str:
    words = text.split()
    for i in rng.choice(len(words), size=max(1, int(fraction * len(words))), replace=False):
        words[i] = f"zz{rng.integers(1e9)}"
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """600 real posts, exact copies differing in case/spacing, and planted near-copies at known Jaccard."""
    rng = np.random.default_rng(7)
    posts = usenet_posts(600)
    rows = [dict(p, url=f"http://www.example.org/{k}") for k, p in enumerate(posts)]
    exact = []
    for k in range(0, 50, 10):  # exact copies after case and whitespace normalisation, longer last
        rows.append({"id": f"exact-{k}", "text": "  " + posts[k]["text"].upper().replace(" ", "   ") + "  ",
                     "url": f"https://example.org/copy-{k}"})
        exact.append((posts[k]["id"], f"exact-{k}"))
    rows.append({"id": "same-url", "text": "A different page body at a known address.",
                 "url": "https://EXAMPLE.org/3/#top"})
    planted = []
    long_posts = [k for k, p in enumerate(posts) if len(p["text"].split()) >= 200]
    for k in long_posts[:20]:  # near-copies with 1 word in 400 substituted: Jaccard ~0.95-0.98
        copy = substitute_words(posts[k]["text"], 1 / 400, rng)
        j = mh.jaccard(*mh.shingle_sets([posts[k]["text"], copy]))
        rows.append({"id": f"near-{k}", "text": copy})
        planted.append((posts[k]["id"], f"near-{k}", j))
    far = substitute_words(posts[500]["text"], 0.15, rng)  # Jaccard well under 0.8
    rows.append({"id": "far-500", "text": far})
    path = tmp_path_factory.mktemp("corpus") / "usenet.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"path": path, "exact": exact, "planted": planted, "far": (posts[500]["id"], "far-500"),
            "root": tmp_path_factory.mktemp("runs")}


def config(corpus: dict, run: str, workers: int = 1, **stage_params) -> object:
    dedup = {"name": "dedup", "kind": stage_params.pop("kind", "minhash_dedup"), **stage_params}
    return config_from_dict({"run_dir": str(corpus["root"] / run), "workers": workers, "stages": [
        {"name": "ingest", "inputs": [{"path": str(corpus["path"]), "source": "usenet", "url_field": "url"}],
         "shard_docs": 150},
        dedup]})


def run(cfg) -> Path:
    Runner(cfg, progress=False, log=lambda m: None).run()
    return Path(cfg.run_dir)


def removed_rows(run_dir: Path, stage: str = "dedup") -> dict[str, dict]:
    out = {}
    for sh in read_json(run_dir / stage / "manifest.json")["shards"]:
        for r in read_parquet(run_dir / stage / sh["removed"]["path"]).to_pylist():
            out[r["id"]] = r
    return out


def output_bytes(run_dir: Path) -> dict[str, bytes]:
    """Every shard and plan file of the dedup stage (markers and timings excluded)."""
    stage = run_dir / "dedup"
    return {str(p.relative_to(stage)): p.read_bytes() for p in sorted(stage.rglob("*.parquet"))}


# ---------------------------------------------------------------------------
# exact dedup


def test_normalise_text_options():
    t = "Hello,  World!\n42 times_"
    assert normalise_text(t, True, True, False, False) == "hello, world! 42 times_"
    assert normalise_text(t, False, False, True, False) == "Hello  World\n42 times"
    assert normalise_text(t, True, True, True, True) == "hello world 00 times"
    assert normalise_url("HTTPS://www.Example.org/a/#frag") == normalise_url("http://example.org/a") == "example.org/a"


@needs_data
@pytest.mark.parametrize("keep", ["first", "longest"])
def test_exact_dedup_survivor_policy(corpus, keep):
    rd = run(config(corpus, f"exact-{keep}", kind="exact_dedup", keep=keep))
    removed = removed_rows(rd)
    for original, copy in corpus["exact"]:
        loser, survivor = (copy, original) if keep == "first" else (original, copy)  # the copy is longer
        assert removed[loser]["reason"] == "exact_dedup:duplicate"
        assert removed[loser]["duplicate_of"] == removed[loser]["cluster_id"] == survivor
        assert removed[loser]["similarity"] == 1.0
    assert len(removed) == len(corpus["exact"])  # near-copies differ: not exact duplicates


@needs_data
def test_exact_dedup_normalisation_is_configurable_and_url_dedup(corpus):
    strict = removed_rows(run(config(corpus, "exact-strict", kind="exact_dedup", lowercase=False)))
    assert not strict  # the copies are upper-cased
    removed = removed_rows(run(config(corpus, "exact-url", kind="exact_dedup", url_dedup=True)))
    assert removed["same-url"]["reason"] == "exact_dedup:duplicate_url"
    assert removed["same-url"]["duplicate_of"] == usenet_posts(4)[3]["id"]


# ---------------------------------------------------------------------------
# MinHash


def test_shingling_and_signatures_match_reference():
    texts = ["", "one two", "Ünïcode wörds — “quoted” 東京 and_more words here", "a b c d e f g a b c d e"]
    for text, hashed in zip(texts, mh.shingle_sets(texts, 5)):
        assert len(hashed) == len(mh.shingles(text, 5))
    sig, counts = mh.MinHasher(64, 5, seed=3).signatures(texts)
    assert sig.shape == (4, 64) and counts.tolist() == [0, 1, 3, 8]
    assert (sig[0] == mh.EMPTY_SLOT).all()
    again, _ = mh.MinHasher(64, 5, seed=3).signatures(texts[::-1])
    assert (again[::-1] == sig).all()  # per-document, independent of the batch


@needs_data
def test_lsh_candidates_equal_datasketch(corpus):
    from datasketch import LeanMinHash, MinHashLSH

    texts = [json.loads(line)["text"] for line in corpus["path"].read_text().splitlines()]
    sig, counts = mh.MinHasher(128, 5, seed=1).signatures(texts)
    bands, rows = mh.optimal_bands_rows(0.5, 128)  # a low threshold: many candidates to compare
    lsh = MinHashLSH(threshold=0.5, num_perm=128, params=(bands, rows))
    members = np.flatnonzero(counts > 0)
    for i in members:
        lsh.insert(int(i), LeanMinHash(seed=1, hashvalues=sig[i], scheme="affine32"))
    theirs = {(min(i, j), max(i, j)) for i in members
              for j in lsh.query(LeanMinHash(seed=1, hashvalues=sig[i], scheme="affine32")) if j != i}
    ours = {(int(g[a]), int(g[b])) for groups in mh.band_buckets(sig, bands, rows, members)
            for g in groups for a in range(len(g)) for b in range(a + 1, len(g))}
    assert len(theirs) > len(corpus["planted"]) and ours == theirs


@needs_data
@pytest.mark.slow
def test_planted_near_duplicates_found(corpus):
    rd = run(config(corpus, "mh"))
    removed = removed_rows(rd)
    for original, copy, j in corpus["planted"]:
        assert 0.94 <= j < 1
        assert removed[copy]["duplicate_of"] == removed[copy]["cluster_id"] == original
        assert removed[copy]["reason"] == "minhash_dedup:near_duplicate"
        assert abs(removed[copy]["similarity"] - j) < 0.15
    for original, copy in corpus["exact"]:  # normalised copies have identical shingles
        assert removed[copy]["duplicate_of"] == original and removed[copy]["similarity"] == 1.0
    assert "far-500" not in removed
    shown = format_clusters(rd, "dedup", n=2, color=False)
    assert "survivor" in shown and ("{+" in shown or "[-" in shown)


@needs_data
@pytest.mark.slow
def test_one_and_two_workers_give_identical_bytes(corpus):
    one = output_bytes(run(config(corpus, "w1", workers=1)))
    two = output_bytes(run(config(corpus, "w2", workers=2)))
    assert one.keys() == two.keys() and one == two


@needs_data
def test_new_threshold_reclusters_without_rehashing(corpus, monkeypatch):
    rd = run(config(corpus, "retune", threshold=0.8))
    before = removed_rows(rd)

    def no_rehash(*a, **k):
        raise AssertionError("signatures were recomputed")

    monkeypatch.setattr(MinHashDedup, "score", no_rehash)
    after = removed_rows(run(config(corpus, "retune", threshold=0.95, verify=False)))
    assert set(after) < set(before)
    assert read_json(rd / "dedup" / "plan" / "summary.json")["threshold"] == 0.95


@needs_data
@pytest.mark.slow
def test_kill_and_resume_gives_identical_output(corpus):
    reference = output_bytes(run(config(corpus, "resume-ref")))
    rd = run(config(corpus, "resume"))
    stage = rd / "dedup"
    # what a kill mid-stage leaves: some scores and decisions unfinished, the plan not marked done
    for marker in sorted((stage / "_done").iterdir())[1::2] + sorted((stage / "scores" / "_done").iterdir())[:2]:
        marker.unlink()
    (stage / "plan" / "_plan_done.json").unlink()
    (stage / "manifest.json").unlink()
    for p in sorted((stage / "kept").iterdir())[:2]:
        p.write_bytes(b"torn")
    assert output_bytes(run(config(corpus, "resume"))) == reference


# ---------------------------------------------------------------------------
# bands x rows chosen for recall


def test_recall_banding_is_the_cheapest_that_meets_the_target():
    for threshold, num_perm, target in [(0.8, 128, 0.97), (0.8, 128, 0.95), (0.5, 64, 0.97), (0.9, 112, 0.99)]:
        bands, rows = mh.recall_bands_rows(threshold, num_perm, target)
        assert bands * rows <= num_perm and mh.candidate_probability(threshold, bands, rows) >= target
        cost = mh.false_candidate_mass(threshold, bands, rows)
        for r in range(1, num_perm + 1):  # brute force: nothing feasible does less verification work
            for b in range(1, num_perm // r + 1):
                if mh.candidate_probability(threshold, b, r) >= target:
                    assert mh.false_candidate_mass(threshold, b, r) >= cost - 1e-12
    # the S-curve: the balanced optimum misses most pairs at the threshold, the recall choice does not
    assert mh.candidate_probability(0.8, *mh.optimal_bands_rows(0.8, 128)) < 0.5
    assert mh.candidate_probability(0.85, *mh.recall_bands_rows(0.8, 128, 0.97)) > 0.99
    with pytest.raises(ValueError, match="raise num_perm"):
        mh.recall_bands_rows(0.5, 2, 0.97)  # two slots: at best 1 - 0.5**2 = 0.75


def test_stage_banding_options():
    default = MinHashDedup("d", {})
    assert (default.opts["bands"], default.opts["rows"]) == mh.recall_bands_rows(0.8, 128, mh.DEFAULT_RECALL_TARGET)
    assert "P(candidate | J=threshold)=0.97" in default.describe()
    unverified = MinHashDedup("d", {"verify": False})  # candidates are removals: the balanced optimum
    assert (unverified.opts["bands"], unverified.opts["rows"]) == mh.optimal_bands_rows(0.8, 128)
    assert (MinHashDedup("d", {"verify": False, "recall_target": 0.99}).opts["bands"],
            MinHashDedup("d", {"verify": False, "recall_target": 0.99}).opts["rows"]) \
        == mh.recall_bands_rows(0.8, 128, 0.99)
    given = MinHashDedup("d", {"bands": 9, "rows": 13, "recall_target": 0.99})
    assert (given.opts["bands"], given.opts["rows"]) == (9, 13) and "given" in given.describe()
    assert default.decision_config() != MinHashDedup("d", {"recall_target": 0.9}).decision_config()
    assert "recall_target" not in default.scoring_config()  # re-banding re-uses the signatures
    with pytest.raises(ValueError, match="stage d: .recall_target"):
        MinHashDedup("d", {"recall_target": 1.5})


def planted_recall(docs: list[dict], truth: list[tuple[str, str, float]], tmp: Path, threshold: float = 0.8,
                   **stage_params) -> tuple[dict[float, tuple[int, int]], list[float]]:
    """Runs ingest -> minhash_dedup (defaults unless given) and returns ({bucket start: (found, true pairs)}
    for the true pairs at or above ``threshold``, true Jaccard of every reported (removed, survivor) pair)."""
    from experiments.benchmarks.dedup_quality import BUCKETS, bucket_counts, run_pipeline

    run = "-".join(f"{k}{v}" for k, v in stage_params.items()) or "default"
    rep, reported, summary = run_pipeline(docs, tmp, "planted", run, {"threshold": threshold, **stage_params}, 1)
    assert summary["bands"] * summary["rows"] <= summary["num_perm"]
    texts = {r["id"]: r["text"] for r in docs}
    reported_j = [mh.jaccard(*mh.shingle_sets([texts[a], texts[b]])) for a, b in reported]
    tp, found, _ = bucket_counts(truth, rep, reported_j)
    recall = {BUCKETS[k]: (int(found[k]), int(tp[k])) for k in range(len(tp)) if BUCKETS[k] >= threshold}
    return recall, reported_j


def assert_recall_and_precision(recall: dict, reported_j: list[float], threshold: float = 0.8) -> None:
    for lo, (found, pairs) in recall.items():
        assert pairs >= 30, f"bucket {lo}: only {pairs} true pairs, too few to measure recall"
        assert found / pairs >= 0.95, f"recall {found}/{pairs} in true-Jaccard bucket from {lo}"
    assert reported_j and min(reported_j) >= threshold  # precision 1.00: every removal is a true near-duplicate


@pytest.mark.slow
def test_synthetic_web_near_duplicates_recall_and_precision(tmp_path):
    """The demo web's planted copies (true 5-gram Jaccard recorded in truth) at or above the threshold."""
    from experiments.synthetic_web import generate

    docs = generate(3000, seed=11)
    truth = [(d["truth"]["dup_of"], d["id"], d["truth"]["jaccard"]) for d in docs if d["truth"].get("dup_of")]
    assert sum(0.7 <= j < 0.8 for _, _, j in truth) >= 30  # just below the threshold: must not be removed
    rows = [{"id": d["id"], "text": d["text"]} for d in docs]
    recall, reported_j = planted_recall(rows, truth, tmp_path)
    assert_recall_and_precision(recall, reported_j)
    found, pairs = planted_recall(rows, truth, tmp_path, bands=9, rows=13)[0][0.8]  # the old default banding
    assert found / pairs < 0.9  # its S-curve (0.40 at J = 0.8) misses many: this test can tell them apart


@needs_data
@pytest.mark.slow
@pytest.mark.shared_data
def test_usenet_planted_near_duplicates_recall_and_precision(tmp_path):
    """Real Usenet posts with copies planted at measured Jaccard 0.6-1.0, among 1,500 other real posts."""
    from experiments.benchmarks.dedup_quality import plant_copy

    rng = np.random.default_rng(16)
    posts = [p for p in usenet_posts(3000) if len(p["text"].split()) >= 150][:1700]
    originals, others = posts[:200], posts[200:]
    donors = " ".join(p["text"] for p in others[:100]).split()
    rows, truth = list(posts), []
    for k, post in enumerate(originals):
        copy, j = plant_copy(post["text"], donors, float(rng.uniform(0.6, 1.0)), rng)
        rows.append({"id": f"copy-{k}", "text": copy})
        truth.append((post["id"], f"copy-{k}", j))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    recall, reported_j = planted_recall(rows, truth, tmp_path)
    assert_recall_and_precision(recall, reported_j)


def test_num_perm_is_bounded_and_the_bound_itself_is_usable():
    assert MinHashDedup("d", {"num_perm": mh.MAX_NUM_PERM}).opts["num_perm"] == mh.MAX_NUM_PERM
    with pytest.raises(ValueError, match=r"`num_perm` must be an integer in \[2, 4096\], got 4097"):
        MinHashDedup("d", {"num_perm": mh.MAX_NUM_PERM + 1})
    with pytest.raises(ValueError, match=r"got 128.0"):
        MinHashDedup("d", {"num_perm": 128.0})
