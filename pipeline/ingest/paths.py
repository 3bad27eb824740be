"""Which paths an input names: globs and folder walks that read regular files inside the input folder,
visit every folder once (a symlink loop under ``**`` ends; each file is found once), and never enter
the run folder.

``glob.glob(recursive=True)`` follows a symlink to a parent folder again and again (one 300-line file
was read 41 times through ``d/up -> ..``, and ``self -> .`` kept expansion running past two minutes), so
globs are matched here by one walk that remembers the folders it has been in.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

from pipeline.ingest.records import InputError

MAGIC = "*?["


def has_magic(path: str) -> bool:
    return any(c in path for c in MAGIC)


def inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies under it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def glob_root(pattern: str) -> str:
    """The folder a glob searches: its leading components up to the first wildcard."""
    prefix = []
    for part in Path(pattern).parts:
        if has_magic(part):
            break
        prefix.append(part)
    return os.path.join(*prefix) if prefix else "."


def _count(skipped: dict, why: str) -> None:
    skipped[why] = skipped.get(why, 0) + 1


def _hidden_ok(name: str, pattern: str) -> bool:
    """As glob: a wildcard does not match a name starting with a dot unless the pattern does too."""
    return not name.startswith(".") or pattern.startswith(".")


def expand_glob(pattern: str, run_root: str | None, skipped: dict) -> list[str]:
    """Paths matching ``pattern`` (``**`` matches any number of folders), each folder entered once.

    A folder reached a second time (a symlink loop, or two links to one folder) is not
    searched again and is counted (``repeated_folder``); a symlinked folder leading
    outside the searched folder is not entered (``outside_input_folder``), nor is the run
    folder (``inside_run_dir``). Matches are sorted; what they are is checked by
    :func:`skip_reason`.
    """
    root = glob_root(pattern)
    parts = list(Path(pattern).parts)[len(Path(root).parts) if root != "." else 0:]
    real_root = os.path.realpath(root)
    found: set[str] = set()
    seen: set[tuple[int, int, int]] = set()
    stack: list[tuple[str, int, bool]] = [(root, 0, False)]
    while stack:
        folder, i, via_link = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino, i)
        if key in seen:
            if via_link:
                _count(skipped, "repeated_folder")
            continue
        seen.add(key)
        if i == len(parts):
            continue
        part = parts[i]
        last = i == len(parts) - 1
        if part == "**":
            stack.append((folder, i + 1, via_link))  # ** matching no folder at all
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            _count(skipped, "unreadable")
            continue
        if not has_magic(part) and part != "**":
            entries = [e for e in entries if e.name == part]
        for e in entries:
            path = os.path.join(folder, e.name) if folder != "." else e.name
            try:
                is_dir = e.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if part == "**":
                if is_dir and _hidden_ok(e.name, ""):
                    if _enterable(path, e, real_root, run_root, skipped):
                        stack.append((path, i, via_link or e.is_symlink()))
                continue
            if not fnmatch.fnmatchcase(e.name, part) or (has_magic(part) and not _hidden_ok(e.name, part)):
                continue
            if last:
                found.add(path)
            elif is_dir and _enterable(path, e, real_root, run_root, skipped):
                stack.append((path, i + 1, via_link or e.is_symlink()))
        if part == "**" and last:  # a trailing ** matches every file below
            for e in entries:
                if _hidden_ok(e.name, ""):
                    found.add(os.path.join(folder, e.name) if folder != "." else e.name)
    return sorted(found)


def _enterable(path: str, entry: os.DirEntry, real_root: str, run_root: str | None, skipped: dict) -> bool:
    real = os.path.realpath(path)
    if entry.is_symlink() and not inside(real, real_root):
        _count(skipped, "outside_input_folder")
        return False
    if run_root is not None and inside(real, run_root):
        _count(skipped, "inside_run_dir")
        return False
    return True


def walk_folder(folder: str, run_root: str | None, skipped: dict) -> list[str]:
    """Every regular file under ``folder`` (hidden names aside), each folder entered once, sorted."""
    return [p for p in expand_glob(os.path.join(glob_escape(folder), "**", "*"), run_root, skipped)
            if not os.path.isdir(p)]


def glob_escape(path: str) -> str:
    """``path`` with its wildcard characters made literal."""
    return "".join(f"[{c}]" if c in MAGIC else c for c in path)


def skip_reason(path: str, root: str | None, run_root: str | None) -> str | None:
    """Why a path found by a glob or folder walk is not read, or None to read it.

    Only regular files (and, for globs, folders) are read: a FIFO would block
    forever, a dangling symlink has nothing to read, a symlink that leads outside
    the folder being searched may expose files the input never named, and files
    inside the run folder are this pipeline's own output.
    """
    if os.path.islink(path) and not os.path.exists(path):
        return "dangling_symlink"
    real = os.path.realpath(path)
    if root is not None and not inside(real, os.path.realpath(root)):
        return "outside_input_folder"
    if run_root is not None and inside(real, run_root):
        return "inside_run_dir"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISDIR(mode):
        return None
    return None if stat.S_ISREG(mode) else "not_regular_file"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def require_regular_file(path: str) -> None:
    """Refuse anything but a regular file before opening it (opening a FIFO blocks forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        dangling = " (a dangling symlink)" if os.path.islink(path) else ""
        raise InputError(f"{path}: file not found{dangling}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: is {_file_kind(mode)}, not a regular file; only regular files are read")
