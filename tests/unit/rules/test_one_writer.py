"""One writer: only vagabond/files.py creates, writes, copies, moves, deletes, links or chmods a
file on the host, so the rules (no link followed, whole or not at all, the mode given) hold by
construction. Every other call that does, found in the syntax tree of every module, is one of the
exceptions below with its reason; a new one fails here until it goes through files or is listed,
and a listed one that is gone fails too (the list stays true)."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.conftest import REPO

PACKAGE = REPO / "vagabond"
PATH_METHODS = {"write_text", "write_bytes", "mkdir", "touch", "unlink", "symlink_to", "hardlink_to", "chmod"}
PATH_METHODS |= {"chown", "rmdir", "rename"}
OS_FUNCS = {"unlink", "remove", "rename", "replace", "chmod", "fchmod", "chown", "symlink", "link", "makedirs"}
OS_FUNCS |= {"mkdir", "rmdir", "truncate", "mknod", "mkfifo", "removedirs", "open"}
SHUTIL = {"copy", "copy2", "copyfile", "copytree", "move", "rmtree", "chown", "copymode", "copystat"}

GUEST_ROOT = "writes inside a guest's root file system, mounted in a 0700 scratch directory vagabond made"
EXCEPTIONS = {
    "vagabond.bases.mmdebstrap:configure_guest": GUEST_ROOT,
    "vagabond.bases.mmdebstrap:_scrub": GUEST_ROOT,
    "vagabond.bases.mmdebstrap:make_disk": GUEST_ROOT
    + "; and the /dev/disk/by-uuid link udev would make, removed after",
    "vagabond.bases.mmdebstrap:build": "removes the raw disk in its own scratch directory once converted",
    "vagabond.bases.cloudimage:import_image": "cloud-init's seed files, in the import's own scratch directory",
    "vagabond.bases.cloudimage:fetch": "removes a download in vagabond's cache that failed its checksum",
    "vagabond.bases.diskimage:scratch_dir": "is the scratch directory: mkdtemp (0700, an unguessable name), "
    "and rmtree only once nothing is mounted inside",
    "vagabond.build:build": "removes its own image in the output directory (its name begins with a dot)",
    "vagabond.build:flatten_and_compact": "removes its own raw image in a scratch directory",
    "vagabond.host.detect:probe_kvm_device": "opens /dev/kvm read-write only to see whether it can (no file is made)",
    "vagabond.host.prepare:ensure_swap": "the swap file, root's, in a root-only directory: made, chmodded 0600, "
    "and removed only when it is vagabond's (checked by its header)",
    "vagabond.catalog.stores:delete": "a directory catalog's key, never resolved: a link is removed as the link",
    "vagabond.catalog.stores:put_file": "removes the version directory its own failed upload made, if empty",
    "vagabond.definition.project:init": "a new project's files, created exclusively (mode x): never over anything",
    "vagabond.vm.playbooks:write_provisioning": "removes a file vagabond rendered, checked to be no link first",
    "vagabond.vm.remote:control_dir": "ssh's control socket directory: 0700 under /run or $XDG_RUNTIME_DIR",
    "vagabond.vm.workdir:busy": "opens a lock file without following a link (the flock probe)",
    "vagabond.vm.workdir:forget_console": "removes a console log vagabond saved in its own work directory",
}


class _Visitor(ast.NodeVisitor):
    """Each writing call, by the module and the function (dotted when nested) it is in."""

    def __init__(self, module: str, found: dict[str, set[str]]) -> None:
        self.module, self.found, self.stack = module, found, []

    def visit_FunctionDef(self, node):
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        if what := _writing_call(node):
            self.found[f"{self.module}:{'.'.join(self.stack) or '<module>'}"].add(what)
        self.generic_visit(node)


def writes() -> dict[str, set[str]]:
    """module:function -> the writing calls in it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module != "vagabond.files":
            _Visitor(module, found).visit(ast.parse(path.read_text()))
    return found


def _writing_call(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Attribute):
        base = func.value.id if isinstance(func.value, ast.Name) else None
        if base == "os" and func.attr in OS_FUNCS:
            return f"os.{func.attr}"
        if base == "shutil" and func.attr in SHUTIL:
            return f"shutil.{func.attr}"
        if base not in ("os", "shutil", "files") and func.attr in PATH_METHODS:
            return f"Path.{func.attr}"
    if isinstance(func, ast.Name) and func.id == "open":
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+"):
            return f"open({mode.value!r})"
    return None


def test_only_files_writes_and_each_exception_says_why():
    found = writes()
    unlisted = {site: sorted(calls) for site, calls in found.items() if site not in EXCEPTIONS}
    assert unlisted == {}, "write through vagabond.files, or list the exception with its reason"
    stale = sorted(set(EXCEPTIONS) - set(found))
    assert stale == [], "listed exceptions that no longer write: remove them"


def test_the_rule_finds_what_it_is_for(tmp_path):
    tree = ast.parse(
        "import os, shutil\n"
        "def f(p):\n"
        "    p.write_text('x'); os.replace('a', 'b'); shutil.copyfile('a', 'b'); open('x', 'w')\n"
        "    files.write_text(p, 'x'); open('x'); p.read_text(); 'a'.replace('a', 'b')\n"
    )
    calls = sorted(filter(None, (_writing_call(n) for n in ast.walk(tree) if isinstance(n, ast.Call))))
    assert calls == ["Path.write_text", "open('w')", "os.replace", "shutil.copyfile"]


def test_no_write_then_rename_outside_files():
    """A rename into place is files.move's (or atomic's): grep finds none elsewhere."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "files.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ("os.replace(", "os.rename(", ".rename(", "partial.replace(", "tmp.replace(")):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
