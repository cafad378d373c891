"""The layout rules a reader relies on, checked on the source of every module of every sub-package
(rglob): no import cycle between modules or between sub-packages, the core below everything, the
CLI on top and imported by nothing, one module per fact."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "vagabond"
# Dotted module names (relative to vagabond) -> file: every module, however deep.
MODULES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
SUBPACKAGES = {p.parent.relative_to(PACKAGE).parts[0] for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
# The order of the layers, bottom first: a module may import its own layer and those below.
# The core (top-level modules) is below everything; build orders vm, bases and catalog; cli is on top.
LAYERS = ["core", "definition", "host", "bases", "catalog", "vm", "ci", "build", "cli"]
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
    assert {"definition", "host", "vm", "bases", "catalog", "ci", "cli"} == SUBPACKAGES
    assert all(layer(m) != "unknown" for m in MODULES), [m for m in MODULES if layer(m) == "unknown"]
    assert sum(len(v) for v in graph().values()) > 150, "the import graph came out (nearly) empty"


def test_no_two_modules_share_a_name():
    """A name says which module it is without its package: `vagrant` is the python-vagrant adapter,
    never also a kind of base; a sub-package's name is no module's name either."""
    names: dict[str, list[str]] = {}
    for dotted in MODULES:
        stem = dotted.split(".")[-1]
        if stem not in ("__init__", "__main__"):
            names.setdefault(stem, []).append(dotted)
    for package in SUBPACKAGES:
        names.setdefault(package, []).append(f"{package} (package)")
    assert {n: m for n, m in names.items() if len(m) > 1} == {}


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
    assert asking == {"catalog.catalogs"}, asking


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
    cli/common.py gives once (help and completion load no command module; cli/test_common.py keeps it so)."""
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
    assert _mentions('"state.json"') == {"definition.project"}, "the project's layout, work directories included"


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


UNIT = PACKAGE.parent / "tests" / "unit"
TREE_WIDE = "rules"  # checks over the whole tree, not one module's


def _mirrored_module(test_file: Path) -> Path | None:
    """The module a unit test file is named after: tests/unit/<package>/test_<module>[_<aspect>].py
    tests vagabond/<package>/<module>.py (tests/unit/bench/ tests bench/)."""
    where = test_file.parent.relative_to(UNIT)
    root = PACKAGE.parent / "bench" if where.parts[:1] == ("bench",) else PACKAGE / where
    words = test_file.stem.removeprefix("test_").split("_")
    for n in range(len(words), 0, -1):  # the longest module name the file's name starts with
        candidate = root / ("_".join(words[:n]) + ".py")
        if candidate.is_file():
            return candidate
    return None


def test_unit_tests_mirror_the_package():
    """A module's tests are found by its path: a file named after no module (a half-done rename, a
    test file dropped at the top) fails here, and so does a directory no package has."""
    files = sorted(UNIT.rglob("test_*.py"))
    assert len(files) > 30
    strays = [
        str(f.relative_to(UNIT))
        for f in files
        if f.parent.relative_to(UNIT).parts[:1] != (TREE_WIDE,) and _mirrored_module(f) is None
    ]
    assert strays == []
    for directory in (d for d in UNIT.rglob("*") if d.is_dir() and d.name != "__pycache__"):
        assert (directory / "__init__.py").is_file(), f"{directory}: a test package needs its __init__.py"


def test_the_mirror_finds_modules_and_refuses_strays():
    assert _mirrored_module(UNIT / "vm" / "test_warm.py") == PACKAGE / "vm" / "warm.py"
    assert _mirrored_module(UNIT / "vm" / "test_lifecycle_seam.py") == PACKAGE / "vm" / "lifecycle.py"
    assert _mirrored_module(UNIT / "test_process.py") == PACKAGE / "process.py"
    assert _mirrored_module(UNIT / "host" / "test_warm.py") is None
    assert _mirrored_module(UNIT / "test_boxes.py") is None


# Dotted names that start with "vagabond." and are not modules: test fixtures' attributes, file
# names and media types.
NOT_MODULES = {"argv", "box", "conf", "cwd", "env", "git", "popen", "x", "xml", "yml"}
REFERRING = ("vagabond", "tests", "docs", "scripts", "bench", "examples", "playbooks", "boxes", ".github", "cleanup")
TOP_FILES = ("README.md", "pyproject.toml", "CHANGELOG.md", "action.yml", "Vagrantfile.j2", "mkdocs.yml", ".ci/run")


def _top_level_names(module: str) -> set[str]:
    """What a module defines at its top: functions, classes, assignments, imports."""
    names = set()
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def stale(dotted: str) -> bool:
    """vagabond.<module>[.<name it defines>]: anything else names a module that is not there (a
    rename inside a package that survived it, too: the host package's registry, now its ledger)."""
    parts = dotted.split(".")
    if parts[0] in NOT_MODULES:
        return False
    for n in range(len(parts), 0, -1):
        module = _resolve(".".join(parts[:n]))
        if module:
            rest = parts[n:]
            return len(rest) > 1 or (len(rest) == 1 and rest[0] not in _top_level_names(module))
    return True


def test_the_stale_name_check_sees_a_rename_inside_a_package():
    assert stale("host.registry") and stale("cli.base") and stale("bases.vagrant") and stale("install.origin")
    assert not stale("host.ledger") and not stale("host.install.origin") and not stale("catalog")


def test_every_module_named_in_the_tree_exists():
    """Comments, docstrings, docs and tests name modules by dotted name or path; after a rename, a
    stale one (the module's name before the move) fails here."""
    dotted = re.compile(r"\bvagabond((?:\.[a-z_][a-z_0-9]*)+)")
    paths = re.compile(r"\b(vagabond|tests/unit|tests/integration|tests/e2e)/([a-z_/0-9]+\.py)\b")
    repo = PACKAGE.parent
    texts = [repo / name for name in TOP_FILES]
    for top in REFERRING:
        texts += [p for p in (repo / top).rglob("*") if p.suffix in (".py", ".md", ".j2", ".sh", ".yml", ".yaml")]
    found = []
    for text_file in texts:
        text = text_file.read_text(encoding="utf-8")
        for match in dotted.finditer(text):
            if stale(match.group(1).lstrip(".")):
                found.append(f"{text_file.relative_to(repo)}: vagabond{match.group(1)}")
        for match in paths.finditer(text):
            if not (repo / match.group(1) / match.group(2)).is_file():
                found.append(f"{text_file.relative_to(repo)}: {match.group(0)}")
    assert len(texts) > 100
    assert found == []
