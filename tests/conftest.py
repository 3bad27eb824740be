"""Shared fixtures and the test lanes.

Two lanes (README, "Two commands"): ``make test`` runs every test not marked ``slow`` (the fast lane,
a few minutes on two cores); ``make test-all`` runs everything (``.ci/run`` calls it). A test that
needs the real data in ``../shared/data`` is marked ``shared_data``: without the data it is not run,
and the summary says how many were left out and why -- never a silent skip. ``make test-all`` sets
``WINNOW_REQUIRE_SHARED_DATA=1``, which turns missing data into an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WINNOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
REQUIRE_SHARED = os.environ.get("WINNOW_REQUIRE_SHARED_DATA", "") not in ("", "0")

_left_out: list[str] = []


def pytest_collection_modifyitems(config, items):
    unmarked = [i.nodeid for i in items if "shared" in getattr(i, "fixturenames", ())
                and i.get_closest_marker("shared_data") is None]
    if unmarked:
        raise pytest.UsageError("tests that use the `shared` fixture must be marked shared_data: " + ", ".join(unmarked))
    if SHARED.exists():
        return
    need = [i for i in items if i.get_closest_marker("shared_data") is not None]
    if need and REQUIRE_SHARED:
        raise pytest.UsageError(f"{len(need)} selected tests need the real data at {SHARED}, which is missing "
                                f"(set WINNOW_SHARED_DATA to its folder)")
    if need:
        config.hook.pytest_deselected(items=need)
        items[:] = [i for i in items if i.get_closest_marker("shared_data") is None]
        _left_out.extend(i.nodeid for i in need)


def pytest_terminal_summary(terminalreporter):
    if _left_out:
        terminalreporter.write_line(
            f"NOTE: {len(_left_out)} tests marked shared_data were not run: the real data is not at {SHARED} "
            f"(set WINNOW_SHARED_DATA, or see README: Data).", yellow=True)


def write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_pipeline(cfg: dict, tmp: Path, name: str = "config.yaml", **kw):
    """Run a config dict through the real runner (in-process) and return the run folder."""
    from pipeline.config import load_config
    from pipeline.runner import Runner

    cfg_path = write_config(tmp / name, cfg)
    config = load_config(cfg_path)
    Runner(config, progress=False, log=lambda m: None, **kw).run()
    return config.run_dir


@pytest.fixture
def shared() -> Path:
    """The real data folder; only for tests marked shared_data (they do not run without it)."""
    return SHARED


def comparable_bytes(path: Path) -> bytes:
    """A file's bytes for "same result?" comparisons: a manifest without its provenance (who wrote it, when)."""
    from pipeline.provenance import without_provenance
    from pipeline.rundir import MANIFEST
    from pipeline.shards import canonical_json, read_json

    if path.name == MANIFEST:
        return canonical_json(without_provenance(read_json(path))).encode("utf-8")
    return path.read_bytes()


def result_bytes(run: Path) -> dict[str, bytes]:
    """What a run produced, by path relative to ``run``, for "same bytes?" comparisons: every shard, scores,
    plan file and manifest (without provenance). Left out: what says when or how it ran (stats.json, the
    _done/ and plan markers, _cache/, the lock, winnow.log) and pipeline.json, which names run_dir."""
    from pipeline.rundir import CACHE, DONE, LOCK, LOG, PIPELINE, PLAN_MARKER, STATS

    out = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run)
        if p.is_file() and p.name not in (STATS, PLAN_MARKER, PIPELINE, LOCK, LOG) \
                and DONE not in rel.parts and CACHE not in rel.parts:
            out[str(rel)] = comparable_bytes(p)
    return out
