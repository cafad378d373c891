"""Disk images: raw disks with their partition tables, loop devices, qcow2, and the offline
compaction that leaves only live data in a box's image."""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vagabond import interrupts, process, timeouts, ui
from vagabond.errors import VagabondError

SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, room for GRUB's core image before the partition


def write_mbr(disk: Path, size_bytes: int) -> None:
    """A sparse raw disk with an MBR and one bootable Linux partition filling it."""
    with disk.open("wb") as fh:
        fh.truncate(size_bytes)
        sectors = size_bytes // SECTOR - PARTITION_START
        # status (0x80 = active), CHS first (unused), type 0x83 (Linux), CHS last, LBA first, sectors
        entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", PARTITION_START, sectors)
        fh.seek(446)
        fh.write(entry)
        fh.seek(510)
        fh.write(b"\x55\xaa")


# GPT partition type of GRUB's core image on a BIOS machine (no EFI), as in generic cloud images.
BIOS_BOOT_PARTITION = "21686148-6449-6E6F-744E-656564454649"


def write_gpt(disk: Path, size_bytes: int) -> None:
    """A sparse raw disk laid out like a distribution's generic cloud image: GPT, a 1 MiB BIOS boot
    partition for GRUB, and the root partition last, filling the rest (so growpart can extend it)."""
    with disk.open("wb") as fh:
        fh.truncate(size_bytes)
    table = f"label: gpt\nstart=2048, size=2048, type={BIOS_BOOT_PARTITION}, name=bios\nstart=4096, type=L, name=root\n"
    process.check(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], input=table, timeout=timeouts.TOOL
    )


def convert_to_qcow2(source: Path, target: Path, *, compress: bool = True, timeout: float = timeouts.IMAGE) -> None:
    argv = ["qemu-img", "convert", "-O", "qcow2"]
    if compress:
        argv.append("-c")
    argv += [str(source), str(target)]
    process.check(argv, timeout=timeout)


def wait_for(path: Path, timeout: float = timeouts.DEVICE_NODE) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise VagabondError(f"{path} did not appear after partx; is this kernel's loop driver usable?")
        time.sleep(0.1)


@contextlib.contextmanager
def attached(raw: Path) -> Iterator[tuple[str, list[str]]]:
    """A raw disk image as a loop device, and its partitions as block devices (needs root)."""
    with contextlib.ExitStack() as stack:
        loop = process.check(["losetup", "--find", "--show", str(raw)], timeout=timeouts.TOOL).stdout.strip()
        stack.callback(process.run, ["losetup", "--detach", loop], timeout=timeouts.TOOL)
        # This kernel has no MSDOS partition scan for loop devices (losetup -P finds nothing): partx does.
        listed = process.run(["partx", "--show", "--noheadings", "--output", "NR", loop], timeout=timeouts.TOOL)
        numbers = listed.stdout.split() if listed.ok else []
        if numbers:
            if kernel_partitions(loop):  # an earlier use's, whose delete failed: partx --add would refuse
                _delete_partitions(loop)
            process.check(["partx", "--add", loop], timeout=timeouts.TOOL)
            stack.callback(_delete_partitions, loop)
        parts = [f"{loop}p{n}" for n in numbers]
        for part in parts:
            wait_for(Path(part))
        yield loop, parts


def kernel_partitions(loop: str) -> list[str]:
    """The partitions the kernel holds for a loop device (its /sys entries), whatever is attached."""
    name = Path(loop).name
    return sorted(p.name for p in (Path("/sys/class/block") / name).glob(f"{name}p*"))


def _delete_partitions(loop: str) -> None:
    """The loop device's partitions out of the kernel again. A partition still open for a moment
    (a lazy unmount, e2fsck just done) refuses: asked again for a few seconds, as a partition left
    behind makes every later `partx --add` on this device fail."""
    deadline = time.monotonic() + timeouts.DEVICE_NODE
    while not process.run(["partx", "--delete", loop], timeout=timeouts.TOOL).ok and kernel_partitions(loop):
        if time.monotonic() > deadline:
            ui.warning(f"partx could not remove the partitions of {loop}: the next use of {loop} removes them")
            return
        time.sleep(0.2)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (/proc/self/mountinfo escapes spaces as \\040)."""
    root = str(path.resolve())
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_under(path: Path) -> list[str]:
    """Unmount what a stopped program left mounted below ``path`` (lazily: a busy mount goes as soon
    as it is free), so that the directory can be removed. Returns what was unmounted."""
    done = []
    for point in mounts_under(path):
        if process.run(["umount", "--lazy", point], timeout=timeouts.TOOL).ok:
            done.append(point)
    return done


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A working directory that goes away afterwards, whatever happened in it. What a stopped
    program left mounted inside (a chroot's /dev, /proc, /sys) is unmounted first; if anything is
    still mounted there, the directory is kept: removing it would reach into the host's own files."""
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        with interrupts.cleanup():
            unmount_under(work)
            if left := mounts_under(work):
                ui.info(f"kept {work}: {', '.join(left)} could not be unmounted (remove it by hand once they are)")
            else:
                shutil.rmtree(work, ignore_errors=True)


def compact_filesystems(raw: Path) -> list[str]:
    """Offline, on a halted guest's raw disk: give each ext2/3/4 file system a fresh journal (the
    old one holds stale data blocks) and discard its free blocks (the loop device punches holes in
    the image), so that the image keeps only live data. Other file systems are left as they are
    (the guest's own fstrim already ran). Returns what was compacted."""
    done = []
    with attached(raw) as (loop, parts):
        for dev in parts or [loop]:
            fstype = process.run(["blkid", "-o", "value", "-s", "TYPE", dev], timeout=timeouts.TOOL).stdout.strip()
            if fstype not in ("ext2", "ext3", "ext4"):
                continue
            _e2fsck(dev)
            features = process.check(["dumpe2fs", "-h", dev], timeout=timeouts.FILESYSTEM).stdout
            if "has_journal" in features:
                process.check(["tune2fs", "-O", "^has_journal", dev], timeout=timeouts.FILESYSTEM)
                process.check(
                    ["tune2fs", "-O", "has_journal", dev], timeout=timeouts.FILESYSTEM
                )  # a new journal is written zeroed
            _e2fsck(dev, "-E", "discard")
            done.append(f"{dev} ({fstype})")
    return done


def _e2fsck(dev: str, *extra: str) -> None:
    result = process.run(["e2fsck", "-f", "-y", *extra, dev], timeout=timeouts.FSCK)
    if result.returncode not in (0, 1):  # 1: errors were corrected
        raise VagabondError(f"e2fsck {dev} exited {result.returncode}: {result.stdout.strip()[-300:]}")


def image_info(path: Path) -> dict:
    return json.loads(process.check(["qemu-img", "info", "--output=json", str(path)], timeout=timeouts.TOOL).stdout)
