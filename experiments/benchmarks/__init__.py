"""Measurement scripts: each prints its table and, with ``--out``, writes it where the results index says."""
from __future__ import annotations

from pathlib import Path


def emit(text: str, out: Path | None) -> None:
    """Print a results table and, when asked, write it to ``out`` (folders created)."""
    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
