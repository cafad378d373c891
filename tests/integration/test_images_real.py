"""Offline compaction of a guest disk, for real: loop devices, e2fsck, tune2fs (root only)."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import require_tool
from vagabond.bases import archive, diskimage

pytestmark = pytest.mark.real


def allocated_mib(path: Path) -> float:
    return path.stat().st_blocks * 512 / 2**20


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("REAL TOOL MISSING: loop devices need root")
    require_tool("losetup", "partx", "mkfs.ext4", "e2fsck", "tune2fs", "dumpe2fs", "qemu-img", "xz")
    raw = tmp_path / "disk.raw"
    diskimage.write_mbr(raw, 512 * 2**20)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with diskimage.attached(raw) as (_, parts):
        subprocess.run(["mkfs.ext4", "-q", parts[0]], check=True)
        subprocess.run(["mount", parts[0], mnt], check=True)
        try:
            (mnt / "keep").write_text("live data\n")
            subprocess.run(
                ["setfattr", "-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0", mnt / "keep"], check=True
            )
            # 200 MiB of incompressible data, written and deleted: the blocks stay dirty in the image.
            subprocess.run(
                ["dd", "if=/dev/urandom", f"of={mnt / 'junk'}", "bs=1M", "count=200", "status=none"], check=True
            )
            subprocess.run(["sync"], check=True)
            (mnt / "junk").unlink()
        finally:
            subprocess.run(["umount", mnt], check=True)
    return raw


def test_compaction_keeps_live_data_and_drops_the_rest(disk, tmp_path):
    require_tool("setfattr", "getfattr")
    before = allocated_mib(disk)
    assert before > 200
    compacted = diskimage.compact_filesystems(disk)
    assert len(compacted) == 1 and compacted[0].endswith("p1 (ext4)")
    after = allocated_mib(disk)
    assert after < 50, f"{before:.0f} MiB allocated before, {after:.0f} MiB after"
    mnt = tmp_path / "check"
    mnt.mkdir()
    with diskimage.attached(disk) as (_, parts):
        assert subprocess.run(["e2fsck", "-fn", parts[0]], capture_output=True).returncode == 0
        assert "has_journal" in subprocess.run(["dumpe2fs", "-h", parts[0]], capture_output=True, text=True).stdout
        subprocess.run(["mount", "-o", "ro", parts[0], mnt], check=True)
        try:
            assert (mnt / "keep").read_text() == "live data\n"
            label = subprocess.run(
                ["getfattr", "--only-values", "-n", "security.selinux", mnt / "keep"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert label.rstrip("\0") == "system_u:object_r:etc_t:s0", "SELinux labels must survive"
        finally:
            subprocess.run(["umount", mnt], check=True)


def test_xz_box_is_a_tar_vagrant_can_unpack(disk, tmp_path):
    diskimage.compact_filesystems(disk)
    img = tmp_path / "box.img"
    diskimage.convert_to_qcow2(disk, img, compress=False)
    box = archive.write_box(img, tmp_path / "x.box", virtual_size_gib=1, xz=True)
    assert box.read_bytes()[:6] == b"\xfd7zXZ\x00"
    listing = subprocess.run(["xz", "--list", "-vv", box], capture_output=True, text=True, check=True).stdout
    assert "--lzma2=dict=256MiB" in listing, listing  # the large dictionary, not -9's 64 MiB
    with tarfile.open(box) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
    out = tmp_path / "unpacked"
    out.mkdir()
    # The same command Vagrant runs to unpack a box it adds.
    subprocess.run(["bsdtar", "--no-same-owner", "--no-same-permissions", "-x", "-m", "-C", out, "-f", box], check=True)
    assert diskimage.image_info(out / "box.img")["format"] == "qcow2"


def test_a_gpt_disk_like_a_cloud_image(tmp_path):
    """write_gpt: a BIOS boot partition for GRUB and the root partition last, filling the disk."""
    if os.geteuid() != 0:
        pytest.skip("REAL TOOL MISSING: loop devices need root")
    require_tool("losetup", "partx", "sfdisk")
    raw = tmp_path / "disk.raw"
    diskimage.write_gpt(raw, 256 * 2**20)
    dump = subprocess.run(["sfdisk", "--dump", str(raw)], capture_output=True, text=True, check=True).stdout
    assert "label: gpt" in dump
    lines = [line for line in dump.splitlines() if line.startswith(str(raw))]
    assert len(lines) == 2 and f"type={diskimage.BIOS_BOOT_PARTITION}" in lines[0] and "size=        2048" in lines[0]
    assert "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4" in lines[1]
    with diskimage.attached(raw) as (_, parts):
        assert len(parts) == 2
        size = int(
            subprocess.run(["blockdev", "--getsize64", parts[-1]], capture_output=True, text=True, check=True).stdout
        )
        assert 250 * 2**20 < size < 256 * 2**20, "the root partition fills the rest of the disk"
