"""Box archives as vagrant-libvirt reads them (box.img, metadata.json, a Vagrantfile, in one tar,
xz-compressed as one stream), and the one-version catalog `vagrant box add` adds a made box from."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from vagabond import files, process, timeouts

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


def write_box(
    box_img: Path, out: Path, *, virtual_size_gib: int, vagrantfile: str = BOX_VAGRANTFILE, xz: bool = False
) -> Path:
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
