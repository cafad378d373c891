"""The VMs' network namespace: VM-facing programs start inside it, everything else where vagabond runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vagabond import process, sandbox
from vagabond.errors import ToolMissing, UsageError
from vagabond.host import vagrant as vm


@pytest.fixture
def fake_netns(tmp_path, monkeypatch):
    """A namespace 'vms' that exists (its file under a fake /run/netns) and that we are not in."""
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "vms").write_text("")
    monkeypatch.setattr(sandbox, "NETNS_DIR", tmp_path / "netns")
    monkeypatch.setenv("VAGABOND_NETNS", "vms")
    return tmp_path


def test_no_namespace_leaves_argv_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("VAGABOND_NETNS", "")
    assert sandbox.wrap(["ssh", "x"]) == ["ssh", "x"]
    monkeypatch.delenv("VAGABOND_NETNS")
    monkeypatch.setattr(sandbox, "SETTING", tmp_path / "absent")
    assert sandbox.configured() is None


def test_the_setting_file_names_the_namespace(monkeypatch, tmp_path):
    monkeypatch.delenv("VAGABOND_NETNS")
    monkeypatch.setattr(sandbox, "SETTING", tmp_path / "netns")
    (tmp_path / "netns").write_text("vagabond\n")
    assert sandbox.configured() == "vagabond"


def test_vm_facing_programs_enter_the_namespace(fake_netns):
    assert sandbox.wrap(["/usr/bin/ssh", "-F", "cfg", "default"]) == [
        "ip",
        "netns",
        "exec",
        "vms",
        "/usr/bin/ssh",
        "-F",
        "cfg",
        "default",
    ]


def test_a_process_already_inside_is_not_wrapped_again(fake_netns, monkeypatch):
    # A namespace file that is this process's own network namespace.
    monkeypatch.setattr(sandbox, "NETNS_DIR", Path("/proc/self/ns"))
    monkeypatch.setenv("VAGABOND_NETNS", "net")
    assert sandbox.wrap(["ssh"]) == ["ssh"]


def test_a_missing_namespace_says_how_to_start_it(fake_netns, monkeypatch):
    monkeypatch.setenv("VAGABOND_NETNS", "gone")
    with pytest.raises(
        UsageError,
        match=r"^the VMs' network namespace 'gone' does not exist \(start it with 'scripts/sandbox.sh start'",
    ):
        sandbox.wrap(["ssh"])


def test_a_name_with_a_slash_is_refused(monkeypatch):
    monkeypatch.setenv("VAGABOND_NETNS", "../../etc")
    with pytest.raises(UsageError, match="is not a network namespace name"):
        sandbox.wrap(["ssh"])


def test_process_run_wraps_only_when_asked(fake_netns, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ip", "prog"):  # a fake `ip` that shows what it was asked to run
        (bin_dir / name).write_text('#!/bin/sh\necho "$(basename "$0") $*"\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert process.check(["prog", "a"]).stdout == "prog a\n"
    assert process.check(["prog", "a"], vm_network=True).stdout == f"ip netns exec vms {bin_dir}/prog a\n"
    with pytest.raises(ToolMissing, match="^'no-such-program' was not found"):
        process.check(["no-such-program"], vm_network=True)


def test_vagrant_talks_to_vms_from_the_namespace_and_downloads_from_the_host():
    assert vm.Vagrant._vm_facing(["up", "--provider=libvirt"]) and vm.Vagrant._vm_facing(["ssh-config", "default"])
    assert vm.Vagrant._vm_facing(["destroy", "-f"]) and vm.Vagrant._vm_facing(["halt"])
    assert not vm.Vagrant._vm_facing(["box", "add", "--force", "http://127.0.0.1/metadata.json"])
    assert not vm.Vagrant._vm_facing(["box", "list"]) and not vm.Vagrant._vm_facing(["--version"])


def test_runs_take_turns_creating_domains(tmp_path, monkeypatch):
    import threading
    import time

    from vagabond.host import libvirt

    monkeypatch.setattr(libvirt, "TURN_LOCK", tmp_path / "turn.lock")
    first, order = libvirt.CreationTurn(), []
    first.acquire()
    second = threading.Thread(
        target=lambda: (
            libvirt.CreationTurn().acquire(on_wait=lambda: order.append("waited")),
            order.append("second has it"),
        )
    )
    second.start()
    time.sleep(0.3)
    assert order == ["waited"], "the second run must wait while the first creates its domain"
    first.release()  # from another thread than the one that took it, as vagabond's output reader does
    second.join(timeout=5)
    assert order == ["waited", "second has it"]
    first.release()  # releasing twice is harmless
