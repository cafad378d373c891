"""Disk images and box archives: raw disks, qcow2 conversion, metadata.json, checksums."""

from __future__ import annotations

import hashlib
import json
import struct
import tarfile
from pathlib import Path

from vagabond import process

# Vagrant's published insecure public key (RSA). Boxes carry it so `vagrant up` can log in the first
# time; vagabond renders `config.ssh.insert_key = false`, so it stays (see Vagrantfile.j2).
INSECURE_PUBLIC_KEY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key"
)

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


def convert_to_qcow2(source: Path, target: Path, *, compress: bool = True, timeout: float = 1800) -> None:
    argv = ["qemu-img", "convert", "-O", "qcow2"]
    if compress:
        argv.append("-c")
    argv += [str(source), str(target)]
    process.run(argv, timeout=timeout)


def image_info(path: Path) -> dict:
    return json.loads(process.run(["qemu-img", "info", "--output=json", str(path)], timeout=120).stdout)


def sha256_file(path: Path, chunk: int = 4 * 2**20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


BOX_VAGRANTFILE = """\
# Box defaults for vagrant-libvirt. The driver is left to the project's Vagrantfile (vagabond
# renders it explicitly), so a box never forces kvm onto a host that cannot run it.
Vagrant.configure('2') do |config|
  config.vm.synced_folder '.', '/vagrant', disabled: true
end
"""


def write_box(box_img: Path, out: Path, *, virtual_size_gib: int, vagrantfile: str = BOX_VAGRANTFILE) -> Path:
    """Assemble a vagrant-libvirt box (v1 format: box.img + metadata.json + Vagrantfile) as a tar."""
    metadata = {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size_gib}
    staging = out.with_name(out.name + ".parts")
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "metadata.json").write_text(json.dumps(metadata) + "\n")
    (staging / "Vagrantfile").write_text(vagrantfile)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w") as tar:  # qcow2 is already compressed: plain tar
        tar.add(staging / "metadata.json", arcname="metadata.json")
        tar.add(staging / "Vagrantfile", arcname="Vagrantfile")
        tar.add(box_img, arcname="box.img")
    tmp.replace(out)
    for p in staging.iterdir():
        p.unlink()
    staging.rmdir()
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
    path.write_text(json.dumps(catalog, indent=2) + "\n")
