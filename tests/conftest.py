"""Shared fixtures: where the real data lives, and a small helper to run a pipeline."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WINNOW_SHARED_DATA", ROOT.parent / "shared" / "data"))

needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real data not found at {SHARED}")


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
    if not SHARED.exists():
        pytest.skip(f"real data not found at {SHARED}")
    return SHARED
