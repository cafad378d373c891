"""A base disk being made (mmdebstrap.make_disk) at the process seam: when a step fails, what it
mounted is unmounted, its partitions dropped and its loop device detached, in that order, and no
device link is left; a run that goes through asks for what a bootable disk needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vagabond import paths
from vagabond.bases import diskimage, guest, made, mmdebstrap
from vagabond.definition import boxfile
from vagabond.errors import CommandFailed, UsageError, VagabondError


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


UUID = "0b0e5e5e-1111-4222-8333-444455556666"


def a_root(root):
    """What tar leaves of a Debian root file system, as far as making a box reads and writes it."""
    for directory in ("etc/default", "etc/systemd/network", "etc/systemd/system", "etc/ssh", "home", "boot/grub"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/initramfs-tools").mkdir(parents=True, exist_ok=True)
    (root / "etc/initramfs-tools/modules").write_text("# from the package\n")
    (root / "etc/sudoers.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("the build host's key: must not ship")
    (root / "boot/vmlinuz-6.1.0-28-amd64").write_text("kernel")
    (root / "var/cache/apt/archives").mkdir(parents=True)
    (root / "var/cache/apt/archives/bash.deb").write_text("deb")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    return root


def programs_in_the_guest(processes, root):
    """chroot answering as it would: useradd --create-home makes the home directory."""
    processes.answer("chroot")
    processes.answer("chroot", "useradd", effect=lambda argv: (Path(argv[1]) / "home/vagrant").mkdir())


def chroot_commands(processes) -> list[list[str]]:
    return [argv[2:] for argv in processes.asked("chroot")]


def test_configure_guest_makes_a_vagrant_base_box(processes, tmp_path):
    root = a_root(tmp_path / "root")
    programs_in_the_guest(processes, root)
    mmdebstrap.configure_guest(root, UUID)
    assert (root / "etc/fstab").read_text().startswith(f"UUID={UUID} / ext4 ")
    assert (root / "etc/systemd/network/20-dhcp.network").read_text() == mmdebstrap.NETWORK_UNIT
    keys = root / "home/vagrant/.ssh/authorized_keys"
    assert keys.read_text() == guest.INSECURE_PUBLIC_KEY + "\n" and keys.stat().st_mode & 0o777 == 0o600
    assert (root / "home/vagrant/.ssh").stat().st_mode & 0o777 == 0o700
    sudoers = root / "etc/sudoers.d/vagrant"
    assert sudoers.read_text().startswith("vagrant ALL=(ALL) NOPASSWD: ALL") and sudoers.stat().st_mode & 0o777 == 0o440
    modules = (root / "etc/initramfs-tools/modules").read_text()
    assert modules.startswith("# from the package\n") and all(f"\n{m}\n" in modules for m in guest.INITRAMFS_MODULES)
    script = root / guest.AUTHORIZED_KEY_SCRIPT_PATH.lstrip("/")
    assert script.stat().st_mode & 0o777 == 0o755
    assert [argv[:2] for argv in chroot_commands(processes)] == [
        ["systemctl", "enable"],
        ["systemctl", "mask"],
        ["useradd", "--create-home"],
        ["chown", "-R"],
    ]
    enabled = chroot_commands(processes)[0]
    assert enabled[2:] == ["systemd-networkd", "ssh", guest.AUTHORIZED_KEY_UNIT_NAME]
    assert "systemd-networkd-wait-online.service" in chroot_commands(processes)[1]
    assert all(call[1] == str(root) for call in processes.asked("chroot")), "every command in the guest's root"


def test_configure_guest_for_a_cloud_image_leaves_the_user_to_cloud_init(processes, tmp_path):
    root = a_root(tmp_path / "root")
    processes.answer("chroot")
    mmdebstrap.configure_guest(root, UUID, vagrant_user=False)
    assert not (root / "home/vagrant").exists() and not (root / "etc/sudoers.d/vagrant").exists()
    assert [argv[:2] for argv in chroot_commands(processes)] == [["systemctl", "enable"], ["systemctl", "mask"]]


def test_a_failing_useradd_stops_before_any_key_or_sudo_rule(processes, tmp_path):
    root = a_root(tmp_path / "root")
    processes.answer("chroot")
    processes.fail("chroot", "useradd", stderr="useradd: group vagrant exists")
    with pytest.raises(CommandFailed, match="group vagrant exists"):
        mmdebstrap.configure_guest(root, UUID)
    assert not (root / "home/vagrant/.ssh").exists() and not (root / "etc/sudoers.d/vagrant").exists()


@pytest.fixture
def whole_disk(processes, disk, monkeypatch, tmp_path):
    """make_disk's programs answering as on a host that makes the disk: tar unpacks a root,
    update-grub writes a grub.cfg that names the root file system by UUID."""
    by_uuid = tmp_path / "dev-disk-by-uuid"
    monkeypatch.setattr(mmdebstrap, "BY_UUID", by_uuid)
    processes.answer("tar", "--extract", effect=lambda argv: a_root(Path(argv[argv.index("--directory") + 1])))
    programs_in_the_guest(processes, tmp_path / "mnt")

    def update_grub(argv):  # as grub-mkconfig: root=UUID=... only when udev's link names the partition
        link = by_uuid / UUID
        root = f"UUID={UUID}" if link.is_symlink() and os.readlink(link) == "/dev/loop9p1" else "/dev/loop9p1"
        (Path(argv[1]) / "boot/grub/grub.cfg").write_text(f"linux /vmlinuz root={root} ro\n")

    processes.answer("chroot", "update-grub", effect=update_grub)
    return by_uuid


def test_a_whole_run_makes_a_bootable_disk_and_cleans_up_after_itself(processes, disk, whole_disk, tmp_path):
    kernel = tmp_path / "vmlinuz"
    mmdebstrap.make_disk(disk, tmp_path / "rootfs.tar", 2, kernel_out=kernel)
    in_guest = [argv[2] for argv in processes.asked("chroot")]
    assert in_guest[-3:] == ["grub-install", "update-initramfs", "update-grub"]
    assert processes.asked("chroot", "grub-install", "--target=i386-pc", "--modules=part_msdos ext2", "/dev/loop9")
    assert processes.asked("mount", "--bind", "/proc") and processes.asked("mount", "--rbind", "/dev")
    assert kernel.read_text() == "kernel", "the probe kernel comes out of the guest's /boot"
    assert not list(whole_disk.iterdir()), "the by-uuid link made for update-grub is gone"
    mnt = tmp_path / "mnt"
    assert (mnt / "etc/machine-id").read_text() == "", "each VM gets its own machine-id"
    assert not list((mnt / "etc/ssh").glob("ssh_host_*")), "no host key of the build ships"
    assert not list((mnt / "var/cache/apt/archives").iterdir())
    assert undo(processes) == [["umount", "--recursive"], ["partx", "--delete"], ["losetup", "--detach"]]
    assert disk.stat().st_size == 2 * 2**30


def test_a_grub_cfg_without_the_root_uuid_is_refused_and_everything_undone(processes, disk, whole_disk, tmp_path):
    processes.answer(
        "chroot",
        "update-grub",
        effect=lambda argv: (tmp_path / "mnt/boot/grub/grub.cfg").write_text("root=/dev/loop9p1"),
    )
    with pytest.raises(VagabondError, match="update-grub did not write root=UUID"):
        mmdebstrap.make_disk(disk, tmp_path / "rootfs.tar", 1, kernel_out=tmp_path / "vmlinuz")
    assert not (tmp_path / "vmlinuz").exists()
    assert not list(whole_disk.iterdir())
    assert undo(processes) == [["umount", "--recursive"], ["partx", "--delete"], ["losetup", "--detach"]]


@pytest.fixture
def debian12(monkeypatch, tmp_path):
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mmdebstrap.os, "geteuid", lambda: 0)
    return boxfile.find_box("debian12", paths.shipped_boxes_dir())


def test_a_base_build_goes_from_mmdebstrap_to_a_box_in_the_cache_once(processes, disk, whole_disk, debian12, tmp_path):
    processes.answer("mmdebstrap", effect=lambda argv: Path(argv[-1]).write_bytes(b"the root file system"))
    processes.answer("qemu-img", "convert", effect=lambda argv: Path(argv[-1]).write_bytes(b"qcow2"))
    base = mmdebstrap.build(debian12)
    assert [argv[0] for argv in processes.calls if argv[0] in ("mmdebstrap", "tar", "qemu-img")] == [
        "mmdebstrap",
        "tar",
        "qemu-img",
    ]
    assert processes.asked("mmdebstrap")[0][-2] == "bookworm"
    directory = mmdebstrap.cache_dir_for(debian12.spec.base)
    assert base.box_file.parent == directory and base.box_file.is_file()
    assert base.sha256 == made.files.sha256_file(base.box_file)
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith("vagabond-base-")) == [], "scratch gone"
    assert (tmp_path / "cache/kernels/vmlinuz-bookworm").read_text() == "kernel"
    assert mmdebstrap.cached(debian12.spec.base) == base
    again = len(processes.calls)
    assert mmdebstrap.build(debian12) == base and len(processes.calls) == again, "the second build is the cached one"
    assert len(list((tmp_path / "cache/rootfs").glob("bookworm-*.tar"))) == 1, "the root file system is kept"


def test_a_failed_mmdebstrap_leaves_no_root_file_system_and_no_box(processes, debian12, tmp_path):
    processes.fail("mmdebstrap", stderr="E: apt-get update failed")
    with pytest.raises(CommandFailed, match="apt-get update failed"):
        mmdebstrap.build(debian12)
    cache = tmp_path / "cache"
    assert [p.name for p in (cache / "rootfs").iterdir()] == []
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_missing_archive_key_is_one_line_that_names_the_keyring_package(processes, debian12):
    processes.fail("mmdebstrap", stderr="W: GPG error: NO_PUBKEY 6ED0E7B82643E131")
    with pytest.raises(UsageError, match="a key is missing") as caught:
        mmdebstrap.build(debian12)
    assert "debian-archive-keyring" in caught.value.hint


def test_a_base_build_as_a_user_says_how_to_build_it_as_root_and_runs_nothing(processes, debian12, monkeypatch):
    monkeypatch.setattr(mmdebstrap.os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match="is built once, as root") as caught:
        mmdebstrap.build(debian12)
    assert "sudo" in caught.value.hint and processes.calls == []
