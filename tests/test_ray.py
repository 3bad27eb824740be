"""`executor: ray` gives the same run as the local executor, stage by stage, on real raw data.

One local Ray cluster (2 CPUs) serves the module. The pipeline runs ingest
(usenet subset + HTML web pages), exact and MinHash dedup (the latter through
the distributed shuffle plan), langid and quality filters, once with the local
executor and once on Ray: kept ids, removed rows with reasons, manifests, stats
counts and dedup plan summaries must be identical. On planted near-copies the
distributed MinHash plan must write the same bytes as the local one for each
verification and survivor setting.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from experiments.cli import main
from pipeline.check import check_run
from pipeline.provenance import without_provenance
from pipeline.runner import Runner
from pipeline.shards import read_json
from tests.conftest import SHARED, run_pipeline
from tests.test_dedup import config as dedup_config
from tests.test_dedup import corpus, output_bytes  # noqa: F401  (corpus is a fixture)

ray = pytest.importorskip("ray")

from pipeline.executors import TaskError  # noqa: E402
from pipeline.executors import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow

STAGES = ["ingest", "exact_dedup", "minhash_dedup", "langid", "quality"]
TIMING_KEYS = {"wall_seconds", "task_seconds", "docs_per_second"}


@pytest.fixture(scope="module")
def ray_cluster():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def real_config(run_dir: Path, executor: str) -> dict:
    raw = SHARED / "raw"
    return {
        "run_dir": str(run_dir), "workers": 2, "executor": executor,
        "executor_options": {"shuffle_partitions": 3} if executor == "ray" else {},
        "stages": [
            {"name": "ingest", "shard_docs": 400, "inputs": [
                {"path": str(raw / "usenet-20news.jsonl.gz"), "source": "usenet", "limit": 1500},
                {"path": str(raw / "webpages-html.jsonl.gz"), "source": "web", "html_field": "html", "limit": 600},
            ]},
            {"name": "exact_dedup", "kind": "exact_dedup", "url_dedup": True},
            # a low threshold and keep: longest exercise verification, chains and survivor choice
            {"name": "minhash_dedup", "kind": "minhash_dedup", "threshold": 0.5, "keep": "longest"},
            {"name": "langid", "kind": "filter", "filters": [{"langid": {"languages": ["en"], "threshold": 0.65}}]},
            {"name": "quality", "kind": "filter", "filters": ["c4", "gopher_repetition", "gopher_quality", "fineweb"]},
        ],
    }


def outcome(run: Path, stage: str) -> dict:
    """Everything a stage decided, without timings: kept ids, removed rows with reasons, manifest, stats."""
    manifest = without_provenance(read_json(run / stage / "manifest.json"))  # not who wrote it, or when
    kept, removed = [], []
    for sh in manifest["shards"]:
        kept += pq.read_table(run / stage / sh["kept"]["path"], columns=["id"]).column("id").to_pylist()
        table = pq.read_table(run / stage / sh["removed"]["path"])
        cols = [c for c in ("id", "reason", "details", "duplicate_of", "similarity") if c in table.column_names]
        removed += table.select(cols).to_pylist()
    stats = {k: v for k, v in read_json(run / stage / "stats.json").items() if k not in TIMING_KEYS}
    plan = run / stage / "plan" / "summary.json"
    return {"kept": kept, "removed": removed, "manifest": manifest, "stats": stats,
            "plan": read_json(plan) if plan.exists() else None}


@pytest.mark.shared_data
def test_ray_run_matches_local(tmp_path, ray_cluster):
    local = run_pipeline(real_config(tmp_path / "local", "local"), tmp_path, "local.yaml")
    distributed = run_pipeline(real_config(tmp_path / "ray", "ray"), tmp_path, "ray.yaml")
    assert check_run(distributed) == []
    for stage in STAGES:
        a, b = outcome(local, stage), outcome(distributed, stage)
        assert a["stats"]["docs_in"] > 0
        for part in ("kept", "removed", "stats", "plan"):
            assert a[part] == b[part], f"{stage}: {part} differs between local and Ray"
        assert json.dumps(a["manifest"], sort_keys=True) == json.dumps(b["manifest"], sort_keys=True), stage
    assert outcome(local, "minhash_dedup")["plan"]["removed"] > 0, "the dedup comparison must remove something"

    # the distributed plan shuffled: no reduce task saw every band entry
    shuffle = read_json(distributed / "minhash_dedup" / "plan" / "shuffle_stats.json")
    assert shuffle["partitions"] == 3
    assert 0 < shuffle["max_entries_in_one_task"] < shuffle["total_band_entries"]
    assert all(t["peak_rss_mb"] > 0 for t in shuffle["tasks"])


@pytest.mark.shared_data
@pytest.mark.parametrize("params", [{}, {"verify": False}, {"keep": "longest", "threshold": 0.5, "bands": 16, "rows": 8}],
                         ids=["default", "no-verify", "longest-low-threshold"])
def test_distributed_minhash_plan_is_byte_identical(corpus, ray_cluster, params):  # noqa: F811
    """Planted near-copies in real posts: every dedup file (decisions, kept, removed) has the same bytes."""
    slug = "-".join(f"{k}{v}" for k, v in params.items()) or "default"
    local_cfg, ray_cfg = (dedup_config(corpus, f"{kind}-{slug}", **params) for kind in ("local", "ray"))
    Runner(local_cfg, progress=False, log=lambda m: None).run()
    Runner(ray_cfg, executor=RayExecutor(2, progress=False, shuffle_partitions=5), progress=False,
           log=lambda m: None).run()
    local, distributed = Path(local_cfg.run_dir), Path(ray_cfg.run_dir)
    assert (distributed / "dedup" / "plan" / "shuffle_stats.json").exists(), "the Ray run must use the shuffle plan"
    summary = read_json(local / "dedup" / "plan" / "summary.json")
    assert summary["removed"] > 0 and summary == read_json(distributed / "dedup" / "plan" / "summary.json")
    assert output_bytes(local) == output_bytes(distributed)


@pytest.mark.shared_data
def test_ray_rerun_resumes(tmp_path, ray_cluster):
    """A second Ray run over a finished one redoes nothing, like the local executor."""
    cfg = real_config(tmp_path / "run", "ray")
    cfg["stages"] = cfg["stages"][:3]
    cfg["stages"][0]["inputs"] = cfg["stages"][0]["inputs"][:1]
    run = run_pipeline(cfg, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*.parquet")}
    run_pipeline(cfg, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.parquet")} == before


@pytest.mark.shared_data
def test_cli_executor_ray(tmp_path, ray_cluster, monkeypatch):
    """`winnow run CONFIG --executor ray --address auto` runs on Ray (here: the session Ray already has)."""
    import yaml

    mapped = []
    ray_map = RayExecutor.map
    monkeypatch.setattr(RayExecutor, "map", lambda self, fn, *a: mapped.append(fn.__name__) or ray_map(self, fn, *a))
    cfg = real_config(tmp_path / "run", "local")
    cfg["stages"] = cfg["stages"][:2]
    cfg["stages"][0]["inputs"] = cfg["stages"][0]["inputs"][:1]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "config.yaml"), "--executor", "ray", "--address", "auto", "--no-progress"]) == 0
    assert check_run(tmp_path / "run") == []
    assert mapped == ["source_task", "score_task", "decide_task"]


def _fail_on(x: int) -> int:
    if x == 3:
        raise ValueError("bad shard")
    return x * x


def test_ray_map_yields_results_and_names_failed_task(ray_cluster):
    ex = RayExecutor(workers=2, progress=False)
    assert sorted(ex.map(_fail_on, [(i,) for i in range(3)], "square")) == [(0, 0), (1, 1), (2, 4)]
    with pytest.raises(TaskError, match=r"square: task shard-3 failed: ValueError: bad shard"):
        list(ex.map(_fail_on, [(i,) for i in range(5)], "square", [f"shard-{i}" for i in range(5)]))
