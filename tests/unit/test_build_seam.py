"""vagabond build at its seams: what a failed build leaves (nothing: its VM destroyed, no half
image), and that it builds from the base box without changing its caller's options."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import write_box
from vagabond import build
from vagabond.definition import boxfile
from vagabond.errors import CommandFailed
from vagabond.process import Result
from vagabond.vm import lifecycle, playbooks
from vagabond.vm.workdir import Workdir


@pytest.fixture
def world(project, monkeypatch):
    write_box(project, "b", "description: x\nbase: {box: a/b}\n")
    box = boxfile.find_box("b", project / "boxes")
    seen: dict[str, list] = {"up": [], "destroy": [], "guest": []}
    monkeypatch.setattr(lifecycle, "up", lambda box, wd, opts: seen["up"].append(opts))
    monkeypatch.setattr(lifecycle, "destroy", lambda box, wd: seen["destroy"].append(wd.prefix) or [])
    return box, Workdir.for_box(box), seen


def test_a_build_that_fails_in_the_guest_destroys_its_vm_and_leaves_no_image(world, monkeypatch, tmp_path):
    box, wd, seen = world

    def guest(wd, machine, argv, **kwargs):
        seen["guest"].append(argv[-1])
        if argv[-1] == build.CLEAN_GUEST:  # the guest's cleanup fails
            raise CommandFailed.from_result(Result(["ssh", "default"], 1, "", "no space left on device", 0.1))
        return Result(["ssh"], 0, "", "", 0.1)

    monkeypatch.setattr(build.remote, "check", guest)
    opts = lifecycle.UpOptions()
    out = tmp_path / "dist"
    with pytest.raises(CommandFailed, match="no space left on device"):
        build.build(box, wd, opts, out=out, version="1.0.0")
    assert len(seen["guest"]) == 2 and seen["guest"][-1] == build.CLEAN_GUEST, "it stopped at the cleanup"
    assert seen["destroy"] == [wd.prefix], "the build's VM is destroyed when a step fails"
    assert not out.exists() or list(out.iterdir()) == [], "no half-written image or box"
    assert opts.prebuilt is True and seen["up"][0].prebuilt is False, "built from the base; the caller's options intact"


def test_a_build_whose_domain_has_no_disk_says_so_and_cleans_up(world, monkeypatch, tmp_path):
    box, wd, seen = world
    monkeypatch.setattr(build.remote, "check", lambda wd, machine, argv, **kw: Result(["ssh"], 0, "", "", 0.1))
    monkeypatch.setattr(build, "_wait_shut_off", lambda domain, timeout: None)
    monkeypatch.setattr(lifecycle, "halt", lambda box, wd: None)
    monkeypatch.setattr(build.libvirt, "domain_volumes", lambda domain: [])
    with pytest.raises(build.VagabondError, match=rf"domain {wd.domain('default')} has no disk to package"):
        build.build(box, wd, lifecycle.UpOptions(), out=tmp_path / "dist", version="1.0.0")
    assert seen["destroy"] == [wd.prefix]


@pytest.fixture
def guest_and_disk(world, processes, monkeypatch, tmp_path):
    """A build whose guest answers every command, whose domain has one disk, and whose programs
    (qemu-img, the compaction's losetup, e2fsck and tune2fs, xz) answer as on a real host."""
    box, wd, seen = world
    monkeypatch.setattr(build.remote, "check", lambda wd, machine, argv, **kw: seen["guest"].append(argv[-1]))
    monkeypatch.setattr(build, "_wait_shut_off", lambda domain, timeout: None)
    monkeypatch.setattr(lifecycle, "halt", lambda box, wd: None)
    disk = tmp_path / "pool" / "vm.img"
    disk.parent.mkdir()
    disk.write_bytes(b"overlay")
    monkeypatch.setattr(build.libvirt, "domain_volumes", lambda domain: [str(disk)])
    processes.answer("qemu-img", "convert", "-O", "raw", effect=lambda argv: Path(argv[-1]).write_bytes(b"r" * 8192))
    processes.answer("qemu-img", "convert", "-O", "qcow2", effect=lambda argv: Path(argv[-1]).write_bytes(b"qcow2"))
    processes.answer("qemu-img", "info", stdout=json.dumps({"virtual-size": 3 * 2**30 + 1}))
    processes.answer("xz", effect=lambda argv: Path(argv[-1]).rename(argv[-1] + ".xz"))
    processes.answer("losetup", "--find", stdout="/dev/loop7\n")
    processes.answer("losetup", "--detach")
    processes.answer("partx", "--show", stdout="1\n")
    processes.answer("partx", "--add")
    processes.answer("partx", "--delete")
    processes.answer("blkid", stdout="ext4\n")
    processes.answer("e2fsck")
    processes.answer("dumpe2fs", stdout="Filesystem features: has_journal ext_attr\n")
    processes.answer("tune2fs")
    monkeypatch.setattr(build.diskimage, "wait_for", lambda path: None)
    return box, wd, seen


@pytest.mark.parametrize("root", [True, False])
def test_a_whole_build_packages_the_guest_disk_and_destroys_its_vm(
    guest_and_disk, processes, monkeypatch, root, tmp_path
):
    box, wd, seen = guest_and_disk
    monkeypatch.setattr(build.os, "geteuid", lambda: 0 if root else 1000)
    out = tmp_path / "dist"
    info = build.build(box, wd, lifecycle.UpOptions(), out=out, version="1.2.3")
    target = out / "vagabond-b-1.2.3-libvirt.box"
    assert info["path"] == str(target) and info["version"] == "1.2.3" and info["name"] == "vagabond/b"
    assert sorted(p.name for p in out.iterdir()) == [target.name, target.name + ".json"], (
        "no image, raw or scratch left"
    )
    assert json.loads((out / (target.name + ".json")).read_text())["sha256"] == info["sha256"]
    assert seen["guest"][1:] == [build.CLEAN_GUEST, build.RESTORE_KEY_AND_POWER_OFF]
    assert playbooks.DEFINITION_FILE in seen["guest"][0] and info["definition_digest"] in seen["guest"][0]
    assert seen["destroy"] == [wd.prefix]
    with tarfile.open(target) as tar:  # the test's xz only renamed the tar
        assert json.loads(tar.extractfile("metadata.json").read())["virtual_size"] == 4, "GiB, rounded up"
        assert tar.extractfile("box.img").read() == b"qcow2"
    compaction = processes.asked("tune2fs")
    assert [argv[1:3] for argv in compaction] == ([["-O", "^has_journal"], ["-O", "has_journal"]] if root else [])
    assert bool(processes.asked("e2fsck", "-E", "discard")) is root
    assert processes.asked("qemu-img", "convert", "-O", "qcow2")[0][4] != "-c", "the box is compressed whole, by xz"


def test_a_failed_compaction_leaves_neither_raw_nor_image_and_destroys_the_vm(
    guest_and_disk, processes, monkeypatch, tmp_path
):
    box, wd, seen = guest_and_disk
    monkeypatch.setattr(build.os, "geteuid", lambda: 0)
    processes.answer("e2fsck", returncode=8, stdout="e2fsck: Bad magic number in super-block")
    out = tmp_path / "dist"
    with pytest.raises(build.VagabondError, match="e2fsck /dev/loop7p1 exited 8"):
        build.build(box, wd, lifecycle.UpOptions(), out=out, version="1.2.3")
    assert list(out.iterdir()) == []
    assert seen["destroy"] == [wd.prefix]
    assert [argv[:2] for argv in processes.calls if argv[0] in ("losetup", "partx")][-2:] == [
        ["partx", "--delete"],
        ["losetup", "--detach"],
    ]
