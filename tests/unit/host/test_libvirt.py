"""libvirt at the process seam (tests/fake_process.py): the management network vagabond defines
when there is none, and a concurrent definition of it that is not an error; the volumes a warm
image's disk becomes, made by libvirtd and only their owner's to read."""

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


def test_a_frozen_layer_an_overlay_and_an_upload_are_volumes_only_their_owner_reads(processes, tmp_path):
    processes.answer("virsh", "vol-info", "--bytes", stdout="Name: x\nType: file\nCapacity: 8589934592 bytes\n")
    for verb in ("vol-create-from", "vol-create", "vol-upload", "pool-refresh"):
        processes.answer("virsh", verb)
    libvirt.freeze_volume("vagabond-b-1-default.img", "vagabond-warm-b-1-default-2.qcow2")
    libvirt.create_overlay("vagabond-b-1-default.img", "/var/lib/libvirt/images/vagabond-warm-b-1-default-2.qcow2")
    image = tmp_path / "layer.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(60))
    libvirt.upload_volume("vagabond-warm-b-1-default-2.qcow2", image)
    made = [
        i
        for argv, i in zip(processes.calls, processes.inputs, strict=True)
        if argv[3] in ("vol-create-from", "vol-create")
    ]
    assert len(made) == 3 and all("<permissions><mode>0600</mode></permissions>" in xml for xml in made)
    assert "<capacity unit='bytes'>8589934592</capacity>" in made[0], "the frozen layer is as large as the disk"
    assert "<backingStore><path>/var/lib/libvirt/images/vagabond-warm-b-1-default-2.qcow2</path>" in made[1]
    assert "<capacity unit='bytes'>64</capacity><target><format type='raw'/>" in made[2], "exactly the file's bytes"
    assert processes.asked("virsh", "vol-create-from", "--inputpool", "default", "vagabond-b-1-default.img")


def test_an_upload_that_fails_leaves_no_volume(processes, tmp_path):
    processes.answer("virsh", "vol-create")
    processes.fail("virsh", "vol-upload", stderr="error: cannot upload")
    processes.answer("virsh", "vol-delete")
    image = tmp_path / "layer.qcow2"
    image.write_bytes(b"x")
    with pytest.raises(CommandFailed, match="cannot upload"):
        libvirt.upload_volume("vagabond-warm-b-1-default-2.qcow2", image)
    assert processes.asked("virsh", "vol-delete", "vagabond-warm-b-1-default-2.qcow2")


def test_the_networks_leases_are_read_with_their_mac_addresses_whatever_the_client_id_looks_like(processes):
    """virsh's table as libvirt 9 prints it: a client ID of colon-separated hex, a hostname or none."""
    processes.answer(
        "virsh",
        "net-dhcp-leases",
        stdout=(
            " Expiry Time           MAC address         Protocol   IP address           Hostname   Client ID or DUID\n"
            "-" * 80 + "\n"
            " 2026-12-08 01:11:13   52:54:00:7D:15:5f   ipv4       192.168.121.150/24   vagabond   "
            "ff:66:18:dd:42:00:02:00:00:ab:11:cf:69:37:da:a2:d8:bb:bb\n"
            " 2026-12-08 01:12:00   52:54:00:aa:bb:cc   ipv4       192.168.121.7/24     -          "
            "01:52:54:00:aa:bb:cc\n"
            " 2026-12-08 01:12:00   52:54:00:aa:bb:dd   ipv6       fd00::7/64           -          -\n"
        ),
    )
    assert libvirt.leases("vagrant-libvirt") == [
        ("52:54:00:7d:15:5f", "192.168.121.150"),
        ("52:54:00:aa:bb:cc", "192.168.121.7"),
    ]
