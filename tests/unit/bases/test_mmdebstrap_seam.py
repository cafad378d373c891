"""A base disk being made (mmdebstrap.make_disk) at the process seam: when a step fails, what it
mounted is unmounted, its partitions dropped and its loop device detached, in that order, and no
device link is left; a run that goes through asks for what a bootable disk needs."""

from __future__ import annotations

import pytest

from vagabond.bases import diskimage, mmdebstrap
from vagabond.errors import CommandFailed


@pytest.fixture
def disk(processes, monkeypatch, tmp_path):
    monkeypatch.setattr(diskimage, "wait_for", lambda path: None)  # no udev here: /dev/loop9p1 never appears
    processes.answer("losetup", "--find", stdout="/dev/loop9\n")
    processes.answer("losetup", "--detach")
    processes.answer("partx", "--show", stdout="1\n")
    processes.answer("partx", "--add")
    processes.answer("partx", "--delete")
    processes.answer("mkfs.ext4")
    processes.answer("blkid", stdout="0b0e5e5e-1111-4222-8333-444455556666\n")
    processes.answer("mount")
    processes.answer("umount")
    return tmp_path / "disk.raw"


def undo(processes) -> list[list[str]]:
    """What was asked after the failure: the clean-up, in order."""
    return [argv[:2] for argv in processes.calls if argv[0] in ("umount", "partx", "losetup")][-3:]


def test_a_failed_unpack_unmounts_drops_the_partitions_and_detaches_the_loop_device(processes, disk, tmp_path):
    processes.fail("tar", stderr="tar: Unexpected EOF in archive")
    with pytest.raises(CommandFailed, match="Unexpected EOF in archive"):
        mmdebstrap.make_disk(disk, tmp_path / "rootfs.tar", 1, kernel_out=tmp_path / "vmlinuz")
    assert undo(processes) == [["umount", "--recursive"], ["partx", "--delete"], ["losetup", "--detach"]]
    assert processes.asked("umount", str(tmp_path / "mnt")) and processes.asked("losetup", "--detach", "/dev/loop9")
    assert not processes.asked("chroot"), "nothing ran in a root that is not whole"


def test_a_failed_mkfs_detaches_the_loop_device_and_mounts_nothing(processes, disk, tmp_path):
    processes.fail("mkfs.ext4", stderr="mkfs.ext4: Device size reported to be zero")
    with pytest.raises(CommandFailed, match="Device size reported to be zero"):
        mmdebstrap.make_disk(disk, tmp_path / "rootfs.tar", 1, kernel_out=tmp_path / "vmlinuz")
    assert not processes.asked("mount") and not processes.asked("umount")
    assert [argv[:2] for argv in processes.calls[-2:]] == [["partx", "--delete"], ["losetup", "--detach"]]
