"""libvirt at the process seam (tests/fake_process.py): the management network vagabond defines
when there is none, and a concurrent definition of it that is not an error."""

from __future__ import annotations

import pytest

from vagabond.errors import CommandFailed
from vagabond.host import libvirt


def test_the_management_network_is_defined_and_started_when_there_is_none(processes):
    processes.answer("virsh", "net-list", "--all", stdout="default\n")
    processes.answer("virsh", "net-list", "--name", stdout="default\n")
    processes.answer("virsh", "net-define")
    processes.answer("virsh", "net-start")
    assert libvirt.make_management_network() is True
    assert processes.asked("virsh", "net-start", libvirt.MGMT_NETWORK)


def test_an_existing_management_network_is_used_as_it_is(processes):
    processes.answer("virsh", "net-list", "--all", stdout="default\nvagrant-libvirt\n")
    assert libvirt.make_management_network() is False
    assert not processes.asked("virsh", "net-define") and not processes.asked("virsh", "net-start")


def test_one_defined_meanwhile_by_a_run_without_the_turn_is_no_error(processes):
    processes.answer("virsh", "net-list", "--all", stdout="default\nvagrant-libvirt\n")
    processes.answer("virsh", "net-list", "--all", stdout="default\n", times=2)  # before the define, twice
    processes.fail("virsh", "net-define", stderr="error: network 'vagrant-libvirt' already exists")
    assert libvirt.make_management_network() is False
    assert processes.asked("virsh", "net-define"), "it tried, and the network it found then is not its own"


def test_a_definition_libvirt_refuses_is_the_error_it_is(processes):
    processes.answer("virsh", "net-list", "--all", stdout="default\n")
    processes.fail("virsh", "net-define", stderr="error: XML error: unsupported configuration")
    with pytest.raises(CommandFailed, match="unsupported configuration"):
        libvirt.make_management_network()
