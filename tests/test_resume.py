"""A run killed with SIGKILL at any point resumes to byte-identical output."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.check import check_run
import pytest

from tests.conftest import ROOT, result_bytes, run_pipeline, write_config

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _config(run_dir: Path, shared: Path) -> dict:
    return {
        "run_dir": str(run_dir),
        "workers": 1,
        "stages": [
            {"name": "ingest", "shard_docs": 800,
             "inputs": [{"path": str(shared / "raw" / "usenet-20news.jsonl.gz"), "source": "usenet"},
                        {"path": str(shared / "raw" / "webpages-html.jsonl.gz"), "html_field": "html",
                         "source": "web"}]},
            {"name": "length", "kind": "filter",
             "filters": [{"slow_filter:SlowLengthFilter": {"min_chars": 400, "sleep": 0.15}}]},
        ],
    }


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "data"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _start(cfg_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", str(cfg_path), "--no-progress"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, folder: Path, markers: int, timeout: float = 120) -> int:
    """SIGKILL ``proc`` once ``folder`` holds at least ``markers`` finished-shard markers."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        n = len(list(folder.glob("part-*.json"))) if folder.exists() else 0
        if n >= markers:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return n
        if proc.poll() is not None:
            raise AssertionError(f"run finished before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for shards")


def test_sigkill_mid_stage_then_resume_is_byte_identical(tmp_path, shared):
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    try:
        reference = run_pipeline(_config(tmp_path / "ref", shared), tmp_path, "ref.yaml")
    finally:
        sys.path.remove(str(ROOT / "tests" / "data"))

    cfg_path = write_config(tmp_path / "killed.yaml", _config(tmp_path / "killed", shared))
    run = tmp_path / "killed"
    # kill 1: in the middle of ingest
    n1 = _kill_when(_start(cfg_path), run / "ingest" / "_done", markers=3)
    assert not (run / "ingest" / "manifest.json").exists()
    # a killed run is not a finished one: `winnow check` says so, --partial or not
    for allow in (False, True):
        assert check_run(run, allow_unstarted=allow)[0].startswith("ingest: stage did not finish")
    # kill 2: in the middle of the filter stage (ingest is resumed first)
    n2 = _kill_when(_start(cfg_path), run / "length" / "_done", markers=4)
    assert not (run / "length" / "manifest.json").exists()
    # resume to the end
    proc = _start(cfg_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "resuming" in err.decode()
    assert n1 >= 3 and n2 >= 4

    ref, got = result_bytes(reference), result_bytes(run)
    assert sorted(ref) == sorted(got)
    different = [k for k in ref if ref[k] != got[k]]
    assert different == []
    assert check_run(run) == []
    assert not list(run.rglob("*.tmp-*")), "temporary files left behind"
