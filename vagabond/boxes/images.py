"""Disk images and box archives: raw disks, qcow2 conversion, box files and their one-version
catalogs, the base boxes vagabond makes (BaseBox), and what every guest it makes carries."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vagabond import files, interrupts, process, timeouts, ui
from vagabond.errors import VagabondError

# Vagrant's published insecure public key (RSA). Boxes carry it so `vagrant up` can log in the first
# time; vagabond renders `config.ssh.insert_key = false`, so it stays (see Vagrantfile.j2).
INSECURE_PUBLIC_KEY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key"
)

# Each VM's own SSH key: vagabond hands the guest a public key of its run in an SMBIOS OEM string
# (libvirt's <sysinfo>, rendered by Vagrantfile.j2), and this unit makes it the vagrant user's only
# key before sshd starts. Vagrant's published insecure key then opens nothing, for anyone else on
# the host's libvirt network; a VM started without such a string (plain `vagrant up`) keeps the
# box's key. The string is read from /sys, as every kernel with DMI has it (CentOS 7's too).
AUTHORIZED_KEY_PREFIX = "vagabond:authorized-key="
AUTHORIZED_KEY_SCRIPT_PATH = "/usr/local/libexec/vagabond-authorized-key"
AUTHORIZED_KEY_SCRIPT = f"""\
#!/bin/sh
# vagabond: this VM's SSH key, handed over by the host in an SMBIOS OEM string (type 11).
key=""
for f in /sys/firmware/dmi/entries/11-*/raw; do
  [ -r "$f" ] || continue
  key=$(tr '\\000' '\\n' < "$f" | sed -n 's/^.*{AUTHORIZED_KEY_PREFIX}//p' | head -n 1)
  [ -n "$key" ] && break
done
case "$key" in
  ssh-ed25519\\ *|ssh-rsa\\ *|ecdsa-sha2-*) ;;
  *) exit 0 ;;  # none given: the box's own key stays
esac
umask 077
mkdir -p /home/vagrant/.ssh
printf '%s\\n' "$key" > /home/vagrant/.ssh/authorized_keys
chown -R vagrant: /home/vagrant/.ssh
if command -v restorecon >/dev/null 2>&1; then restorecon -R /home/vagrant/.ssh; fi
exit 0
"""
AUTHORIZED_KEY_UNIT_NAME = "vagabond-authorized-key.service"
AUTHORIZED_KEY_UNIT = f"""\
[Unit]
Description=vagabond: this VM's own SSH key, from the host (SMBIOS OEM string)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sshd.service ssh.socket multi-user.target

[Service]
Type=oneshot
ExecStart={AUTHORIZED_KEY_SCRIPT_PATH}

[Install]
WantedBy=multi-user.target
"""
# sshd takes keys only: a password (the box convention's vagrant/vagrant) would open the VM to anyone
# on the host's libvirt network.
SSHD_DROPIN = "UseDNS no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"

# Debian's sshd does not create missing host keys (RHEL's sshd-keygen does); boxes ship none so
# that each VM makes its own: this drop-in makes sshd do so.
SSH_KEYGEN_DROPIN = """\
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""


@dataclass(frozen=True)
class BaseBox:
    """A base box vagabond made (built or imported) in its cache: the .box file and a one-version
    catalog to add it from."""

    name: str
    version: str
    box_file: Path
    catalog: Path
    sha256: str

    INFO = "base.json"
    VERIFIED = ".verified"  # the box file's identity when its sha256 was last checked

    @property
    def catalog_url(self) -> str:
        return self.catalog.resolve().as_uri()

    def save(self, directory: Path) -> None:
        files.write_json(directory / self.INFO, {k: str(v) for k, v in self.__dict__.items()})
        self._stamp(directory)

    def _identity(self) -> list[int]:
        # ctime and inode change with every write of the file, a CI cache restore included (tar
        # can set mtime back, never ctime): an unchanged identity is the file that was checked.
        st = self.box_file.stat()
        return [st.st_size, st.st_ino, st.st_ctime_ns]

    def _stamp(self, directory: Path) -> None:
        files.write_json(directory / self.VERIFIED, self._identity())

    @classmethod
    def load(cls, directory: Path) -> BaseBox | None:
        """The base box recorded in ``directory``, when its box file is still there and still the
        one that was made: checked against its recorded sha256 whenever the file changed since the
        last check (a cache restored it), None (and said) when it does not match."""
        try:
            data = files.loads((directory / cls.INFO).read_bytes(), str(directory / cls.INFO), max_bytes=2**16)
            data.pop("kernel", None)  # written by earlier versions, never read
            box = cls(**{k: Path(v) if k in ("box_file", "catalog") else v for k, v in data.items()})
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        if not (box.box_file.is_file() and box.catalog.is_file()):
            return None
        try:
            checked = files.loads((directory / cls.VERIFIED).read_bytes(), "stamp", max_bytes=256)
        except (OSError, ValueError):
            checked = None
        if checked != box._identity():
            with ui.step(f"sha256 of {box.box_file.name} (changed since it was last checked)"):
                actual = files.sha256_file(box.box_file)
            if actual != box.sha256:
                ui.warning(f"{box.box_file}: sha256 {actual[:12]}... is not the {box.sha256[:12]}... it was made with: "
                           "making it again")  # fmt: skip
                return None
            box._stamp(directory)
        return box


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
    process.check(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], input=table, timeout=timeouts.TOOL)


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
            process.check(["partx", "--add", loop], timeout=timeouts.TOOL)
            stack.callback(process.run, ["partx", "--delete", loop], timeout=timeouts.TOOL)
        parts = [f"{loop}p{n}" for n in numbers]
        for part in parts:
            wait_for(Path(part))
        yield loop, parts


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
                process.check(["tune2fs", "-O", "has_journal", dev], timeout=timeouts.FILESYSTEM)  # a new journal is written zeroed
            _e2fsck(dev, "-E", "discard")
            done.append(f"{dev} ({fstype})")
    return done


def _e2fsck(dev: str, *extra: str) -> None:
    result = process.run(["e2fsck", "-f", "-y", *extra, dev], timeout=timeouts.FSCK)
    if result.returncode not in (0, 1):  # 1: errors were corrected
        raise VagabondError(f"e2fsck {dev} exited {result.returncode}: {result.stdout.strip()[-300:]}")


def image_info(path: Path) -> dict:
    return json.loads(process.check(["qemu-img", "info", "--output=json", str(path)], timeout=timeouts.TOOL).stdout)


BOX_VAGRANTFILE = """\
# Box defaults for vagrant-libvirt. The driver is left to the project's Vagrantfile (vagabond
# renders it explicitly), so a box never forces kvm onto a host that cannot run it.
Vagrant.configure('2') do |config|
  config.vm.synced_folder '.', '/vagrant', disabled: true
end
"""


# A disk image repeats itself hundreds of MiB apart (libraries, kernel modules, SELinux's copies of
# its policy): a 256 MiB dictionary finds those repeats where -9's 64 MiB does not, 8% smaller on a
# debian12-selinux box. Compressing then needs 2.7 GiB per thread; xz stays within 40% of RAM by
# using fewer threads, then a smaller dictionary. Unpacking needs 257 MiB. xz itself, not Python's
# lzma: it can use every core (--threads=0).
XZ_OPTIONS = ["--threads=0", "--memlimit-compress=40%", "--lzma2=preset=9,dict=256MiB"]


def write_box(box_img: Path, out: Path, *, virtual_size_gib: int, vagrantfile: str = BOX_VAGRANTFILE,
              xz: bool = False) -> Path:  # fmt: skip
    """Assemble a vagrant-libvirt box (v1 format: box.img + metadata.json + Vagrantfile) as a tar.

    With xz, the whole tar is compressed as one stream (box.img should then be an uncompressed,
    sparse qcow2): far smaller than qcow2's per-cluster zlib, and Vagrant's bsdtar unpacks it as is."""
    metadata = {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size_gib}
    # Whatever happens (an interrupt during xz), no half-written box stays behind: it is made in a
    # private directory beside the target and moved into place whole.
    with files.private_dir(out.parent) as work:
        tmp = work / "box.tar"
        with tarfile.open(tmp, "w") as tar:
            for name, data in (("metadata.json", json.dumps(metadata) + "\n"), ("Vagrantfile", vagrantfile)):
                member = tarfile.TarInfo(name)
                member.size, member.mode, member.mtime = len(data.encode()), 0o644, int(time.time())
                tar.addfile(member, io.BytesIO(data.encode()))
            tar.add(box_img, arcname="box.img")
        if xz:
            process.check(["xz", *XZ_OPTIONS, "--force", str(tmp)], timeout=timeouts.COMPRESS)
        files.move(tmp.with_name(tmp.name + ".xz") if xz else tmp, out)
    return out


def write_catalog(path: Path, *, name: str, description: str, version: str, box_url: str, sha256: str) -> None:
    """A one-version Vagrant box catalog (metadata.json) that `vagrant box add URL` understands."""
    catalog = {
        "name": name,
        "description": description,
        "versions": [
            {
                "version": version,
                "providers": [
                    {
                        "name": "libvirt",
                        "url": box_url,
                        "checksum_type": "sha256",
                        "checksum": sha256,
                        "architecture": "amd64",
                        "default_architecture": True,
                    }
                ],
            }
        ],
    }
    files.write_json(path, catalog)
