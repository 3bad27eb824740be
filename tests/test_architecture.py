"""The import graph: no cycles, and imports only point down (experiments, whose `cli` is the top floor -> filters -> pipeline core).

Read statically from the source (every ``import`` and ``from ... import``,
including those inside functions), so a lazy import cannot hide an upward
dependency or a cycle. No exemptions: every module is on a floor and every
import is checked. Also: no module imports another module's private
(``_underscore``) name, and only :mod:`pipeline.rundir` knows the run folder's
file names.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "filters", "experiments")

#: Lower number = lower floor. A module may import its own floor or lower ones only.
def floor(module: str) -> int:
    if module == "experiments.cli":
        return 4  # the top floor: nothing imports it
    if module.startswith("experiments.benchmarks"):
        return 3  # measurement scripts: may use anything but the CLI, nothing uses them
    if module.startswith("experiments"):
        return 2
    if module.startswith("filters"):
        return 1
    return 0  # pipeline core


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports (``from pkg import mod`` resolves to ``pkg.mod`` when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import pipeline.dedup.minhash` -> the module itself
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_graph_is_read_from_real_modules():
    g = _graph()
    assert {"pipeline.runner", "pipeline.stage", "filters.base", "experiments.ablation", "experiments.cli"} <= set(g)
    assert "pipeline.stage" in g["filters.stage"]  # the reader sees from-imports
    assert "pipeline.dedup.minhash" in g["pipeline.dedup.stages"]  # and `from pkg import module`


def test_imports_only_point_down():
    upward = sorted(f"{src} -> {dst}" for src, dsts in _graph().items() for dst in dsts if floor(dst) > floor(src))
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def test_nothing_imports_the_cli():
    users = sorted(src for src, dsts in _graph().items() if "experiments.cli" in dsts)
    assert users == []


def test_no_import_cycles():
    g = _graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _private_imports() -> list[str]:
    """``from project.module import _name`` and ``project.module._name`` between different modules."""
    mods = _modules()
    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}  # local name -> project module it refers to (``import pipeline.runner as r``)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and node.module != name:
                        found.append(f"{name}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PACKAGES:
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                dotted = []
                while isinstance(base, ast.Attribute):
                    dotted.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id in aliases:
                    target = ".".join([aliases[base.id], *reversed(dotted)])
                    if target in mods and target != name:
                        found.append(f"{name}: {target}.{node.attr}")
    return sorted(found)


def test_no_module_imports_another_modules_private_name():
    assert _private_imports() == []


#: The run folder's file and folder names, as source text: only pipeline/rundir.py may spell them.
RUN_FOLDER_NAMES = re.compile(r"(?<![\w.])manifest\.json|(?<![\w.])pipeline\.json|(?<![\w.])stats\.json|"
                              r"\b_done\b|_plan_done|(?<![\w.])(?:kept|removed|scores)/")


def test_only_the_run_folder_module_knows_its_file_names():
    hits = []
    for name, path in _modules().items():
        if name == "pipeline.rundir":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if RUN_FOLDER_NAMES.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == [], "run-folder file names outside pipeline/rundir.py:\n" + "\n".join(hits)


def test_the_file_name_and_private_import_checks_can_fail(tmp_path, monkeypatch):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("def _hidden():\n    pass\n")
    (tmp_path / "filters" / "b.py").write_text("from pipeline.a import _hidden\nimport pipeline.a as m\nm._hidden()\n"
                                               "P = run / 'x' / 'manifest.json'\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _private_imports() == ["filters.b: from pipeline.a import _hidden", "filters.b: pipeline.a._hidden"]
    with pytest.raises(AssertionError, match="filters/b.py:4"):
        test_only_the_run_folder_module_knows_its_file_names()


@pytest.mark.parametrize("name", ["inspect", "types", "random", "json", "io", "ast", "statistics"])
def test_no_module_shadows_the_standard_library(name):
    assert all(not n.endswith("." + name) for n in _modules())


def test_a_planted_cycle_and_upward_import_are_caught(tmp_path, monkeypatch):
    """The checks above can fail: a fake tree with a cycle and an upward import trips both."""
    for pkg, body in {"pipeline": "from filters import x\n", "filters": "from pipeline import y\n"}.items():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "y.py").write_text("from filters import x\n")
    (tmp_path / "filters" / "x.py").write_text("from pipeline import y\n")
    (tmp_path / "experiments").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    g = _graph()
    assert g["pipeline.y"] == {"filters.x"} and g["filters.x"] == {"pipeline.y"}
    with pytest.raises(AssertionError, match="upward imports"):
        test_imports_only_point_down()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
