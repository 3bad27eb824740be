"""`winnow check` for an ablation folder: every artifact as recorded, and the chain of fingerprints unbroken.

What is checked (one line per problem):

- ``eval_sets.json`` and ``tokenizer.json`` have the checksums their manifests
  recorded;
- every subset's ``tokens.npy`` has its manifest's checksum and was drawn with
  the tokenizer now in the folder;
- every run is finished (``done.json``, an evaluation marker ``eval.json`` and
  ``final_items.npz`` with the marker's checksum), was trained on the subset
  now at the recorded place (same fingerprint: a subset redrawn since makes
  the run stale) and holds its final model in Hugging Face format (``final/``).

An exported results folder (``winnow report --export``) keeps no tokenizer,
subsets or models; only what it keeps is checked.
"""
from __future__ import annotations

from pathlib import Path

from experiments.subsets import SUBSET_MANIFEST
from pipeline.shards import read_json, sha256_file


def check_experiment(out: Path, allow_unfinished: bool = False) -> list[str]:
    out = Path(out)
    problems: list[str] = []
    if not (out / "experiment.json").exists():
        return [f"{out}: no experiment.json -- not an ablation folder"]
    try:
        read_json(out / "experiment.json")
    except (OSError, ValueError) as e:
        return [f"experiment.json: unreadable ({type(e).__name__}: {e})"]
    exported = not (out / "tokenizer.json").exists()
    for name, manifest in (("eval_sets.json", "eval_sets.manifest.json"), ("tokenizer.json", "tokenizer.manifest.json")):
        if exported:  # an exported folder keeps no tokenizer, and its eval_sets.json holds ids only
            continue
        problems += _check_sha(out / name, out / manifest, "sha256", name)
    tok_sha = None if exported else sha256_file(out / "tokenizer.json")
    subsets: dict[str, dict] = {}
    for m_path in sorted((out / "subsets").rglob(SUBSET_MANIFEST)) if (out / "subsets").exists() else []:
        rel = m_path.parent.relative_to(out).as_posix()
        try:
            m = read_json(m_path)
        except (OSError, ValueError) as e:
            problems.append(f"{rel}/{SUBSET_MANIFEST}: unreadable ({type(e).__name__})")
            continue
        subsets[rel] = m
        problems += _check_sha(m_path.parent / "tokens.npy", m_path, "tokens_sha256", f"{rel}/tokens.npy")
        if tok_sha and m.get("tokenizer_sha256") != tok_sha:
            problems.append(f"{rel}: drawn with another tokenizer (stale; `winnow ablation` redraws it)")
    runs = sorted(d for d in (out / "runs").glob("*") if d.is_dir()) if (out / "runs").exists() else []
    if not runs:
        problems.append(f"{out}: no runs")
    for d in runs:
        name = f"runs/{d.name}"
        needed = ["done.json"] + (["final_items.npz"] if exported else ["eval.json"])
        missing = [f for f in needed if not (d / f).exists()]
        if missing:
            if not allow_unfinished:
                problems.append(f"{name}: unfinished (no {missing[0]}; `winnow ablation` resumes it)")
            continue
        rec_path = d / "run.json" if (d / "run.json").exists() else d / "arm.json"
        if not rec_path.exists():
            problems.append(f"{name}: no run.json")
            continue
        rec = read_json(rec_path)
        ev = read_json(d / "eval.json") if (d / "eval.json").exists() else {}
        if ev.get("items_sha256"):
            problems += _check_sha(d / "final_items.npz", d / "eval.json", "items_sha256", f"{name}/final_items.npz")
        elif not (d / "final_items.npz").exists():
            problems.append(f"{name}/final_items.npz: missing")
        sub_dir = rec.get("subset_dir")
        if not exported and sub_dir:
            sub = subsets.get(sub_dir)
            if sub is None:
                problems.append(f"{name}: its subset {sub_dir} is missing")
            elif sub.get("fingerprint") != (rec.get("subset") or {}).get("fingerprint"):
                problems.append(f"{name}: trained on another draw of {sub_dir} (stale; `winnow ablation` retrains it)")
        if not exported and not (d / "final" / "model.safetensors").exists():
            problems.append(f"{name}/final: no saved model (model.safetensors)")
    return problems


def _check_sha(path: Path, manifest: Path, key: str, what: str) -> list[str]:
    if not path.exists():
        return [f"{what}: missing"]
    if not manifest.exists():
        return [f"{what}: no manifest ({manifest.name}) to check it against"]
    want = read_json(manifest).get(key)
    if want and sha256_file(path) != want:
        return [f"{what}: checksum differs from {manifest.name} (altered)"]
    return []
