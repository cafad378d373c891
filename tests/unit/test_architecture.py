"""The layout rules a reader relies on, checked on the source: no import cycles, one module per fact."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vagabond"
MODULES = {p.stem: p for p in PACKAGE.glob("*.py")}


def _vagabond_imports(node: ast.AST) -> list[str]:
    """vagabond modules an import statement names (`from vagabond import a, b`, `from vagabond.c import d`)."""
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "vagabond":
            return [a.name for a in node.names if a.name in MODULES]
        if node.module.startswith("vagabond."):
            return [node.module.split(".")[1]]
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("vagabond.")]
    return []


def _module_level_imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # typing only: never executed
        found.update(_vagabond_imports(node))
    return found


def graph() -> dict[str, set[str]]:
    return {name: _module_level_imports(ast.parse(path.read_text())) - {name} for name, path in MODULES.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(graph()) is None


def test_every_function_level_import_says_what_it_saves():
    bare = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        bare.append(f"{name}.py:{inner.lineno}: {here.strip()}")
    assert bare == []


def _mentions(needle: str) -> set[str]:
    return {name for name, path in MODULES.items() if needle in path.read_text()}


def test_only_process_starts_programs():
    assert _mentions("import subprocess") == {"process"}


def test_only_libvirt_runs_virsh_and_knows_its_log_directory():
    assert _mentions('["virsh"') == {"libvirt"}
    assert _mentions("/var/log/libvirt") == {"libvirt"}


def test_only_workdir_knows_the_work_directory_layout():
    for name in ('"state.json"', '/ ".lock"', '"ssh_config"', '"inventory.ini"'):
        assert _mentions(name) == {"workdir"}, name


def test_errors_live_in_errors_py():
    owners = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("Error" in ast.unparse(b) or ast.unparse(b) in
                                                      ("StepFailed", "Interrupted") for b in node.bases):  # fmt: skip
                owners.add(name)
    assert owners == {"errors"}
