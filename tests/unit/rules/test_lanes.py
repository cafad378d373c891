"""The two lanes the suite runs in at once (tests/lanes.py) keep out of each other's way: what a
module that shares nothing says it does, the accounts tests make, the processes they stop."""

from __future__ import annotations

import re

from tests import helpers, lanes
from tests.conftest import REPO

# What belongs to the host lane: this host's libvirt, the VMs' namespace, the shared cache,
# accounts and processes of the host as a whole.
HOST_THINGS = re.compile(r"virsh|qemu:///|\bNETNS\b|VAGABOND_NETNS|SHARED_CACHE|useradd|pkill|killall|sandbox\.sh")


def real_modules() -> list[str]:
    return sorted(
        p.relative_to(REPO).as_posix()
        for tier in ("e2e", "integration")
        for p in (REPO / "tests" / tier).glob("test_*.py")
    )


def shares_something(text: str) -> list[str]:
    return sorted(set(HOST_THINGS.findall(text)))


def test_the_named_modules_exist():
    for path in [*lanes.TWIN_MODULES, *lanes.UNSHARED]:
        assert (REPO / path).is_file(), f"tests/lanes.py names {path}, which does not exist"


def test_a_module_that_shares_nothing_uses_nothing_of_the_host_lane():
    assert shares_something('virsh("list")\nsubprocess.run(["pkill", "-x", "x"])') == ["pkill", "virsh"]
    for path in lanes.UNSHARED:
        found = shares_something((REPO / path).read_text())
        assert not found, f"{path} is said to share nothing (tests/lanes.py) but uses {found}: it is the host lane's"


def test_every_vm_of_this_hosts_libvirt_is_in_the_host_lane():
    modules = real_modules()
    assert "tests/e2e/test_lifecycle.py" in modules and len(modules) > 20
    for path in modules:
        if path in lanes.TWIN_MODULES:
            assert lanes.lane(path) == lanes.TWIN
        elif path.startswith("tests/e2e/") or shares_something((REPO / path).read_text()):
            assert lanes.lane(path) == lanes.HOST, path
    assert lanes.lane("tests/unit/vm/test_warm.py") is None
    new_module = "/".join(("tests", "integration", "test_not_written_yet.py"))  # (a path no rule looks for)
    assert lanes.lane(new_module) == lanes.HOST, "a new real module shares by default"


def test_a_test_account_never_takes_the_runner_twins_uid():
    """`useradd` on this host (not in a twin's chroot) takes its ids from helpers.USER_IDS."""
    assert "UID_MIN=20000" in helpers.USER_IDS
    calls = 0
    for path in real_modules() + ["tests/e2e/conftest.py"]:
        text = (REPO / path).read_text()
        for m in re.finditer(r'"useradd"', text):
            before = text[max(0, m.start() - 120) : m.start()]
            if '"chroot"' in before:
                continue
            calls += 1
            assert "USER_IDS" in text[m.start() : m.start() + 80], f"{path}: useradd without helpers.USER_IDS"
    assert calls >= 2, "the laptop user's and the CI user's useradd"


def test_no_test_stops_a_program_by_name_host_wide():
    """A libvirtd stopped by name would be every libvirtd, the twin's too: the sandbox's is found
    by its namespace (helpers.sandbox_pids)."""
    for path in real_modules():
        text = (REPO / path).read_text()
        assert not re.search(r'"pkill", "-x"|"killall"', text), f"{path} stops programs by name, host-wide"


def test_the_whole_suite_runs_in_two_lanes():
    script = (REPO / "scripts" / "test.sh").read_text()
    assert "set -- -n 2\n" in script
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"pytest-xdist>=' in pyproject


def test_the_scheduler_keeps_each_lane_on_one_worker():
    """The conftest's pytest-xdist scheduler: each lane one scope, any other test a scope of its own."""
    from tests import conftest

    scheduler = conftest.pytest_xdist_make_scheduler(_Config(), None)
    twin = next(iter(lanes.TWIN_MODULES))
    assert scheduler._split_scope("tests/e2e/test_fips.py::test_x") == lanes.HOST
    assert scheduler._split_scope("tests/e2e/test_plain.py::test_y[a::b]") == lanes.HOST
    assert scheduler._split_scope(f"{twin}::test_z[ubuntu-26.04]") == lanes.TWIN
    assert scheduler._split_scope("tests/unit/test_files.py::test_w") == "tests/unit/test_files.py::test_w"


class _Config:
    """What pytest-xdist's scheduler reads of the configuration."""

    class option:
        maxschedchunk = None
        loadscopereorder = True

    def getvalue(self, name):
        return {"tx": ["popen"] * 2, "numprocesses": 2}.get(name)
