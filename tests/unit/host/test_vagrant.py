"""The python-vagrant adapter at the process seam: a stub `vagrant` on PATH records what it is asked.

vm.Vagrant replaces python-vagrant's three private runners with vagabond's process gateway; these
tests fail when python-vagrant renames them or stops routing its public methods through them.
"""

from __future__ import annotations

import inspect
import json

import pytest
import vagrant as python_vagrant

from tests.conftest import stub_programs
from vagabond.errors import CommandFailed
from vagabond.host import vagrant as vm

STUB = r"""#!/bin/sh
printf '%s\n' "$(pwd)|$*" >> "$STUB_LOG"
case "$1" in
  up) echo "==> default: Machine booted and ready!" ;;
  ssh-config) printf 'Host default\n  HostName 192.168.121.9\n  User vagrant\n' ;;
  status) echo "1700000000,default,state,running"; echo "1700000000,default,provider-name,libvirt" ;;
  box) echo "1700000000,,box-name,vagabond/debian12"; echo "1700000000,,box-provider,libvirt"
       echo "1700000000,,box-version,20261127.1" ;;
  halt) echo "Vagrant halt failed: domain is locked" >&2; exit 7 ;;
esac
"""


@pytest.fixture
def stub(tmp_path, monkeypatch):
    stub_programs(tmp_path, monkeypatch, vagrant=STUB)
    log = tmp_path / "vagrant.log"
    monkeypatch.setenv("STUB_LOG", str(log))
    root = tmp_path / "wd"
    root.mkdir()
    return root, log


def calls(log) -> list[tuple[str, str]]:
    return [tuple(line.split("|", 1)) for line in log.read_text().splitlines()]


def test_python_vagrant_still_has_the_runners_vagabond_replaces():
    for name, params in (
        ("_call_vagrant_command", ["self", "args"]),
        ("_run_vagrant_command", ["self", "args"]),
        ("_stream_vagrant_command", ["self", "args"]),
    ):
        assert name in vars(python_vagrant.Vagrant), f"python-vagrant no longer has {name}"
        assert list(inspect.signature(getattr(python_vagrant.Vagrant, name)).parameters) == params


def test_up_runs_in_the_work_directory_through_the_gateway(stub):
    root, log = stub
    lines = []
    vm.Vagrant(root, stream=lines.append).up(provider="libvirt", provision=False)
    assert calls(log) == [(str(root), "up --no-provision --provider=libvirt")]
    assert lines == ["==> default: Machine booted and ready!\n"], "output streams to the sink"


def test_queries_are_parsed_by_python_vagrant_from_our_runner(stub):
    root, log = stub
    v = vm.Vagrant(root)
    assert v.ssh_config(vm_name="default").startswith("Host default\n  HostName 192.168.121.9")
    assert [(s.name, s.state, s.provider) for s in v.status()] == [("default", "running", "libvirt")]
    assert v.box_versions("vagabond/debian12") == ["20261127.1"]
    assert [c[1] for c in calls(log)] == [
        "ssh-config default",
        "status --machine-readable",
        "box list --machine-readable",
    ]


def test_a_failure_is_never_swallowed(stub):
    root, _ = stub
    with pytest.raises(
        CommandFailed,
        match=r"^Command '.*/vagrant halt' returned 7\. Last output: Vagrant halt failed: domain is locked$",
    ):
        vm.Vagrant(root).halt()


def test_catalog_boxes_are_added_without_a_name_and_with_the_version_pinned(stub):
    root, log = stub
    vm.Vagrant(root).box_add_catalog("file:///cache/metadata.json", "1.2.3")
    assert calls(log)[-1][1] == "box add --force --provider libvirt --box-version 1.2.3 file:///cache/metadata.json"


def test_has_box_reads_the_store_on_disk(tmp_path):
    home = tmp_path / "vagrant.d"
    (home / "boxes" / "org-VAGRANTSLASH-b" / "1.0" / "amd64" / "libvirt").mkdir(parents=True)
    (home / "boxes" / "org-VAGRANTSLASH-b" / "1.0" / "amd64" / "libvirt" / "metadata.json").write_text(json.dumps({}))
    v = vm.Vagrant(env={"VAGRANT_HOME": str(home)})
    assert v.has_box("org/b", "1.0") and not v.has_box("org/b", "2.0")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("org/b", None, ">= 1.2, < 2"), "box add --provider libvirt --box-version >= 1.2, < 2 org/b"),
        (
            ("org/b", "https://boxes.example.org/b/metadata.json", "~> 1.0"),
            "box add --provider libvirt --box-version ~> 1.0 https://boxes.example.org/b/metadata.json",
        ),
        (
            ("org/b", "https://boxes.example.org/b.box", None, "sha256:" + "c" * 64),
            "box add --provider libvirt --name org/b --checksum-type sha256 --checksum "
            + "c" * 64
            + " https://boxes.example.org/b.box",
        ),
    ],
)
def test_a_base_box_is_added_the_way_its_box_file_names_it(stub, args, expected):
    root, log = stub
    vm.Vagrant(root).box_add_base(*args)
    assert calls(log)[-1][1] == expected


def test_any_version_in_the_store_counts(tmp_path):
    home = tmp_path / "vagrant.d"
    v = vm.Vagrant(env={"VAGRANT_HOME": str(home)})
    assert not v.has_any_version("org/b")
    (home / "boxes" / "org-VAGRANTSLASH-b" / "0" / "libvirt").mkdir(parents=True)  # Vagrant < 2.4's layout
    assert v.has_any_version("org/b") and not v.has_any_version("org/c")
