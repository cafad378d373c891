"""Property-based: random box files, versions, catalogs and option values driven through the CLI.
Whatever comes in, vagabond answers with an exit code and one-line errors, never a traceback, and
writes nothing outside the directories it was given (an audit hook sees every file opened for writing)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests import helpers
from vagabond.catalog.catalogs import open_catalog
from vagabond.cli.app import app
from vagabond.errors import EXIT_CODES

pytestmark = pytest.mark.filterwarnings("ignore")
runner = CliRunner()
KNOWN_CODES = {code for code, _ in EXIT_CODES}
_WRITES: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _WRITES is None or event != "open":
        return
    path, mode, flags = args
    if isinstance(path, (str, bytes, os.PathLike)) and (
        (isinstance(mode, str) and any(c in mode for c in "wax+"))
        or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    ):
        _WRITES.append(os.path.realpath(os.fsdecode(path)))


sys.addaudithook(_audit)  # hooks cannot be removed: it records only while `writes_confined_to` runs


@contextmanager
def writes_confined_to(*roots: Path):
    global _WRITES
    _WRITES = []
    try:
        yield
    finally:
        written, _WRITES = _WRITES, None
    allowed = [os.path.realpath(r) for r in roots]
    # Devices opened read-write to probe them (detect opens /dev/kvm to see whether it works) are not files.
    outside = [
        w for w in written if not w.startswith("/dev/") and not any(w == r or w.startswith(r + os.sep) for r in allowed)
    ]
    assert outside == [], f"wrote outside {allowed}: {outside}"


def check_answer(result) -> None:
    assert result.exit_code in KNOWN_CODES, (result.exit_code, result.output[-2000:], result.exception)
    assert "Traceback" not in result.output, result.output[-3000:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception


@contextmanager
def sandbox_dirs():
    """A project and every place vagabond may write (cache, state, Vagrant home) inside one temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="vagabond-prop-"))
    old = {k: os.environ.get(k) for k in ("VAGABOND_CACHE", "VAGABOND_STATE", "VAGRANT_HOME", "XDG_RUNTIME_DIR")}
    os.environ.update(
        VAGABOND_CACHE=str(root / "cache"),
        VAGABOND_STATE=str(root / "state"),
        VAGRANT_HOME=str(root / "vagrant.d"),
        XDG_RUNTIME_DIR=str(root / "run"),
    )
    (root / "run").mkdir(mode=0o700)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(cwd)
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(root, ignore_errors=True)


# --- box files ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=40)
)
KEYS = [
    "description",
    "base",
    "box",
    "kind",
    "suite",
    "image",
    "checksum",
    "version",
    "url",
    "guest",
    "resources",
    "memory",
    "cpus",
    "disk",
    "modes",
    "selinux",
    "fips",
    "playbooks",
    "path",
    "vars",
    "prebuilt",
    "name",
    "catalog",
    "machines",
    "primary",
    "synced_folders",
    "src",
    "dest",
    "type",
    "exclude",
    "forwarded_ports",
    "guest",
    "host",
    "host_ip",
    "protocol",
    "env",
    "resource",
    "../x",
]
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
# Mostly-valid boxes (a real description and base, random everything else) reach the renderer too.
skeletons = st.fixed_dictionaries(
    {
        "description": st.text(max_size=60),
        "base": st.sampled_from([{"box": "a/b"}, {"box": "org/x", "version": ">= 1"}]),
    },
    optional={
        "guest": st.sampled_from(["debian", "redhat", "bsd"]),
        "env": st.dictionaries(st.text(max_size=5), st.text(max_size=20)),
        "synced_folders": st.lists(
            st.fixed_dictionaries({"src": st.text(max_size=20), "dest": st.text(max_size=20)}), max_size=2
        ),
        "resources": st.dictionaries(st.sampled_from(["memory", "cpus", "disk"]), st.integers(-5, 5000), max_size=3),
        "machines": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=3),
    },
)
box_docs = st.one_of(st.dictionaries(st.sampled_from(KEYS), values, max_size=8), skeletons)
raw_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(doc=box_docs, text=raw_text, as_text=st.booleans(), driver=st.sampled_from(["kvm", "qemu", "xen", ""]))
def test_random_box_files_get_an_answer_never_a_traceback(doc, text, as_text, driver):
    with sandbox_dirs() as root:
        (root / "boxes").mkdir()
        body = text if as_text else json.dumps(doc)  # JSON is YAML
        (root / "boxes" / "rand.yaml").write_bytes(body.encode("utf-8", "surrogatepass"))
        with writes_confined_to(root):
            check_answer(runner.invoke(app, ["list", "--json"]))
            args = ["render", "rand", "-o", str(root / "out" / "Vagrantfile")] + (
                ["--driver", driver] if driver else []
            )
            check_answer(runner.invoke(app, args, env={"VAGABOND_DRIVER": ""}))


def test_the_write_check_catches_a_write_outside(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(AssertionError, match="wrote outside"):
        with writes_confined_to(tmp_path / "in"):
            (tmp_path / "out.txt").write_text("x")
    with writes_confined_to(tmp_path / "in"):
        (tmp_path / "in" / "ok.txt").write_text("x")
        (tmp_path / "out.txt").read_text()  # reading is fine


# --- publish: versions, names, catalogs ---------------------------------------------------------

versions = st.one_of(
    st.from_regex(r"\A\d{1,3}(\.\d{1,3}){0,3}\Z"),
    st.text(max_size=20),
    st.sampled_from(["../../x", "latest", "1.0.beta", "/etc", "..", "1/2", "1.0\n2"]),
)
names = st.one_of(st.just("org/tiny"), st.text(max_size=20), st.sampled_from(["../x", "a/b/c", "org/../../x"]))
catalog_docs = st.one_of(
    values,
    st.fixed_dictionaries(
        {"name": st.sampled_from(["org/tiny", "other/box"]), "versions": st.lists(values, max_size=3)}
    ),
)
urls = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["file:///etc/passwd", "CAT/../victim", "CAT/1/../../victim", "http://127.0.0.1:9/x.box"]),
)


@pytest.fixture(scope="module")
def tiny_box(tmp_path_factory):
    return helpers.tiny_box(tmp_path_factory.mktemp("tiny"), disk=b"disk")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    version=versions,
    name=names,
    keep=st.one_of(st.none(), st.integers(-1, 3)),
    force=st.booleans(),
    existing=st.one_of(st.none(), catalog_docs),
    url=urls,
    garbage_catalog=st.booleans(),
)
def test_random_publishes_never_write_outside_the_catalog(
    tiny_box, version, name, keep, force, existing, url, garbage_catalog
):
    with sandbox_dirs() as root:
        cat, victim = root / "cat", root / "victim"
        cat.mkdir()
        victim.write_text("keep me")
        box = root / "in" / "tiny.box"
        box.parent.mkdir()
        shutil.copy(tiny_box, box)
        if existing is not None:
            if garbage_catalog:
                (cat / "metadata.json").write_text(json.dumps(existing))
            else:
                entry = {"version": "1", "providers": [{"name": "libvirt", "url": url.replace("CAT", cat.as_uri())}]}
                (cat / "metadata.json").write_text(json.dumps({"name": "org/tiny", "versions": [entry]}))
        args = ["publish", str(box), "--catalog", str(cat), "--name", name, "--version", version]
        args += (["--keep", str(keep)] if keep is not None else []) + (["--force"] if force else [])
        with writes_confined_to(cat, root / "state", root / "cache"):
            result = runner.invoke(app, args)
        check_answer(result)
        assert victim.read_text() == "keep me"
        listed = (
            {
                p.get("url")
                for v in json.loads((cat / "metadata.json").read_text()).get("versions", [])
                for p in v.get("providers", [])
            }
            if (cat / "metadata.json").is_file() and result.exit_code == 0
            else set()
        )
        for stored in cat.rglob("*.box"):
            assert result.exit_code != 0 or stored.as_uri() in listed, "a box file the catalog does not name"


@settings(max_examples=100, deadline=None)
@given(doc=catalog_docs, raw=st.binary(max_size=80), use_raw=st.booleans())
def test_random_catalogs_are_a_reason_for_up_never_a_crash(tmp_path_factory, doc, raw, use_raw):
    meta = tmp_path_factory.mktemp("cat") / "metadata.json"
    meta.write_bytes(raw if use_raw else json.dumps(doc).encode())
    found, why = open_catalog(meta.as_uri()).find_current("d" * 64, "org/tiny")
    assert found is None or found.name == "org/tiny"
    assert isinstance(why, str) and "\n" not in why


# --- workflow options ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    command=st.text(max_size=60),
    runs_on=st.text(min_size=1, max_size=20),
    cron=st.text(min_size=1, max_size=20),
    spec=st.text(min_size=1, max_size=30),
)
def test_random_workflow_options_give_a_workflow_that_says_exactly_that_or_an_error(command, runs_on, cron, spec):
    from ruamel.yaml import YAML

    with sandbox_dirs() as root:
        out = root / "wf.yml"
        with writes_confined_to(root):
            result = runner.invoke(
                app,
                [
                    "ci",
                    "github",
                    "--boxes",
                    "debian12-selinux",
                    "--test-command",
                    command,
                    "--runs-on",
                    runs_on,
                    "--cron",
                    cron,
                    "--vagabond-spec",
                    spec,
                    "-o",
                    str(out),
                ],
            )
        check_answer(result)
        if result.exit_code == 0:
            doc = YAML(typ="safe").load(out.read_text())
            assert doc["jobs"]["test"]["env"]["TEST_COMMAND"] == command
            assert set(doc) == {"name", "on", "permissions", "concurrency", "jobs"} | (
                {"env"} if "env" in doc else set()
            )


# --- hostile layouts: links, deep JSON, alias-heavy YAML ----------------------------------------

LINK_PLACES = [
    "vagabond-provision",
    "Vagrantfile",
    ".Vagrantfile.tmp",
    "vagabond-provision/site.yml",
    ".vagabond/debian12/state.json",
    ".vagabond/debian12/ssh_config",
    ".vagabond/debian12/.lock",
    ".vagabond/debian12/logs",
    "state/ledger.json",
]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _alias_yaml(levels: int, fan: int) -> str:
    lines = ["a0: &a0 [x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "description: x\nbase: {box: a/b}\nvars:\n" + "".join(f"  {line}\n" for line in lines)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    links=st.lists(st.sampled_from(LINK_PLACES), unique=True, max_size=4),
    depth=st.sampled_from([1, 60, 70, 5000, 200000]),
    deep_in=st.sets(st.sampled_from(["state", "ledger", "catalog"])),
    levels=st.integers(1, 9),
    fan=st.integers(1, 9),
)
def test_hostile_layouts_get_an_answer_and_touch_nothing_outside(links, depth, deep_in, levels, fan):
    """Links planted where vagabond writes, JSON nested past any parser, YAML that expands into
    millions of nodes: every command answers (an exit code, one line), the victim is untouched,
    and nothing is written outside the project and vagabond's own directories."""
    with sandbox_dirs() as root:
        project, victim = root / "project", root / "victim"
        (project / "boxes").mkdir(parents=True)
        victim.mkdir()
        (victim / "precious").write_text("mine")
        catalog_file = root / "catalog" / "metadata.json"
        catalog_file.parent.mkdir()
        catalog_file.write_text(_nested(depth) if "catalog" in deep_in else "{}")
        (project / "boxes" / "debian12.yaml").write_text(
            "description: x\nbase: {kind: mmdebstrap, suite: bookworm, box: vagabond/debian12}\n"
            f"prebuilt: {{name: org/x, catalog: '{catalog_file.as_uri()}'}}\n"
        )
        (project / "boxes" / "aliases.yaml").write_text(_alias_yaml(levels, fan))
        wd = project / ".vagabond" / "debian12"
        wd.mkdir(parents=True)
        if "state" in deep_in:
            (wd / "state.json").write_text(_nested(depth))
        (root / "state").mkdir()
        if "ledger" in deep_in:
            (root / "state" / "ledger.json").write_text(_nested(depth))
        for place in links:
            target = (project if not place.startswith("state/") else root) / place
            if any(parent.is_symlink() for parent in target.parents):
                continue  # below a link placed already: it would land in the victim's directory itself
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                continue
            target.symlink_to(victim / "precious" if "." in target.name else victim)
        os.chdir(project)
        with writes_confined_to(project, root / "state", root / "cache", root / "run"):
            for argv in (
                ["list", "--json"],
                ["render", "debian12", "-o", "."],
                ["render", "aliases", "-o", "out"],
                ["prebuilt", "debian12", "--json"],
                ["run", "debian12", "--", "true"],
            ):
                result = runner.invoke(app, argv)
                check_answer(result)
                assert result.stderr.count("error: ") <= 1 or argv[0] == "list", result.stderr
        assert sorted(p.name for p in victim.iterdir()) == ["precious"] and (victim / "precious").read_text() == "mine"
