"""The layout rules a reader relies on, checked on the source of every module of every sub-package
(rglob): no import cycle between modules or between sub-packages, the core below everything, the
CLI on top and imported by nothing, one module per fact."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vagabond"
# Dotted module names (relative to vagabond) -> file: every module, however deep.
MODULES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
SUBPACKAGES = {p.parent.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
# The order of the layers, bottom first: a module may import its own layer and those below.
# The core (top-level modules) is below everything; build orders vm, boxes and publish; cli is on top.
LAYERS = ["core", "spec", "host", "boxes", "publish", "vm", "ci", "build", "cli"]
CORE = {
    "errors",
    "process",
    "timeouts",
    "paths",
    "ui",
    "github",
    "interrupts",
    "sandbox",
    "files",
    "redaction",
    "environment",
    "__init__",
}
ENTRY = {"entry", "__main__"}  # the console entry point: above the CLI, below nothing but the interpreter


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top in SUBPACKAGES:
        return top
    if top in CORE:
        return "core"
    if top == "build":
        return "build"
    return "entry" if top in ENTRY else "unknown"


def _resolve(name: str) -> str | None:
    """A dotted name under vagabond as the module it is (a package's __init__ when it is one)."""
    if name in MODULES:
        return name
    if f"{name}.__init__" in MODULES:
        return f"{name}.__init__"
    return None


def _vagabond_imports(node: ast.AST) -> list[str]:
    """The vagabond modules an import statement names, as keys of MODULES."""
    found = []
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "vagabond":
        base = node.module.removeprefix("vagabond").lstrip(".")
        for alias in node.names:
            # `from vagabond.x import y`: y is a module of x, or a name defined in x
            target = _resolve(f"{base}.{alias.name}".lstrip(".")) or (_resolve(base) if base else None)
            if target:
                found.append(target)
    if isinstance(node, ast.Import):
        found += [
            t
            for a in node.names
            if a.name.startswith("vagabond.") and (t := _resolve(a.name.removeprefix("vagabond.")))
        ]
    return found


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
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checks_see_the_whole_tree():
    """After a move this must still look at every module (a glob of the top level alone would
    pass, checking nothing)."""
    assert len(MODULES) == len(list(PACKAGE.rglob("*.py"))) > 40
    assert {"spec", "host", "vm", "boxes", "publish", "ci", "cli"} <= SUBPACKAGES
    assert all(layer(m) != "unknown" for m in MODULES), [m for m in MODULES if layer(m) == "unknown"]
    assert sum(len(v) for v in graph().values()) > 150, "the import graph came out (nearly) empty"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_modules():
    assert find_cycle(graph()) is None


def test_no_import_cycles_between_subpackages_and_every_import_goes_down():
    edges: dict[str, set[str]] = {}
    upward = []
    for module, imported in graph().items():
        for target in imported:
            a, b = layer(module), layer(target)
            if a != b:
                edges.setdefault(a, set()).add(b)
            if a != "entry" and b == "entry" or (a in LAYERS and b in LAYERS and LAYERS.index(b) > LAYERS.index(a)):
                upward.append(f"{module} ({a}) imports {target} ({b})")
    assert upward == []
    assert find_cycle(edges) is None
    assert not any("cli" in targets for source, targets in edges.items() if source != "entry"), (
        "only the entry point imports cli"
    )


def test_no_import_cycle_even_through_an_import_inside_a_function():
    """A deferred import hides a cycle from the module-level graph, not from the reader."""
    edges = {}
    for name, path in MODULES.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(_vagabond_imports(node))
        edges[name] = found - {name}
    assert find_cycle(edges) is None


def test_a_catalogs_kind_is_chosen_in_one_place():
    """open_catalog dispatches on the URL; nothing else asks which kind a catalog is."""
    question = re.compile(r"\bis_oci\(|scheme == oci\.SCHEME|\"oci://\"\)")
    asking = {m for m, p in MODULES.items() if question.search(p.read_text())}
    assert asking == {"publish.catalogs"}, asking


def test_the_core_imports_only_the_core():
    for module, imported in graph().items():
        if layer(module) == "core":
            assert {layer(t) for t in imported} <= {"core"}, module


def test_no_module_outside_cli_is_over_450_lines():
    long = {m: n for m, p in MODULES.items() if layer(m) != "cli" and (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_every_module_starts_with_a_docstring():
    assert [m for m, p in MODULES.items() if ast.get_docstring(ast.parse(p.read_text())) is None] == []


def test_every_function_level_import_says_what_it_saves():
    """Outside the CLI: there each command imports what it uses, all alike, for the reason
    cli/base.py gives once (help and completion load no command module; test_cli keeps it so)."""
    bare = []
    for name, path in MODULES.items():
        if name.startswith("cli."):
            continue
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
    assert _mentions('["virsh"') == {"host.libvirt"}
    assert _mentions("/var/log/libvirt") == {"host.libvirt"}


def test_only_workdir_knows_the_work_directory_layout():
    for name in ('/ ".lock"', '"ssh_config"', '"inventory.ini"'):
        assert _mentions(name) == {"vm.workdir"}, name
    assert _mentions('"state.json"') == {"spec.project"}, "the project's layout, work directories included"


def test_only_files_writes_then_renames():
    """Write-then-rename, temporary names and link refusal live in one module."""
    assert _mentions("mkstemp") | _mentions("os.replace(") | _mentions("O_NOFOLLOW") <= {"files", "vm.workdir"}
    assert _mentions("mkstemp") == {"files"} and _mentions("os.replace(") == {"files"}


def test_errors_live_in_errors_py():
    owners = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                "Error" in ast.unparse(b) or ast.unparse(b) in ("StepFailed", "Interrupted") for b in node.bases
            ):
                owners.add(name)
    assert owners == {"errors"}


def test_command_failures_are_built_in_one_place():
    """CommandFailed.from_result: redaction and the failed command's last lines cannot be forgotten."""
    built = {m for m, p in MODULES.items() if "CommandFailed(" in p.read_text() and m != "errors"}
    assert built == set(), built


def test_the_layout_table_names_every_module_and_nothing_else():
    """Each row of the layout table (docs/contributing.md) for a part of the package names, in
    backticks, every module of that part: a module added, moved or removed without it fails here."""
    readme = (PACKAGE.parent / "docs" / "contributing.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`vagabond/"):
            rows[cells[0].strip("`").split(" ")[0].split("`")[0]] = cells[1]
    for part in sorted(SUBPACKAGES | {""}):
        key = f"vagabond/{part}/" if part else "vagabond/"
        assert key in rows, f"the layout table has no row for {key}"
        named = set(re.findall(r"`([a-z_0-9]+)`", rows[key])) - {"Store"}
        directory = PACKAGE / part if part else PACKAGE
        modules = {p.stem for p in directory.glob("*.py")} - {"__init__", "__main__"}
        if not part:
            modules -= {"build"}  # a row of its own
        assert named == modules, (
            f"{key}: the table names {sorted(named - modules)}, not modules there; misses {sorted(modules - named)}"
        )
    assert "vagabond/build.py" in rows
