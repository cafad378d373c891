"""Boxes from a distribution's generic cloud image: a NoCloud seed makes the vagrant user, one
boot applies it, the guest cleans itself up and powers off, the disk becomes a box."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.request
from pathlib import Path

from vagabond import detect, images, paths, process, timeouts, ui
from vagabond.errors import UsageError, VagabondError
from vagabond.images import BaseBox

# Runs once cloud-init has finished (After=cloud-final), then powers the guest off: the next boot
# starts from a clean cloud-init state, with no machine-id, no SSH host keys and no logs.
FINISH_UNIT = """\
[Unit]
Description=vagabond: clean up after the import boot and power off
After=cloud-final.service
Wants=cloud-final.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'cloud-init clean --logs; truncate -s 0 /etc/machine-id; rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*; sync'
ExecStartPost=/bin/systemctl --no-block poweroff
"""

def user_data() -> str:
    config = {
        "users": [
            "default",
            {
                "name": "vagrant",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [images.INSECURE_PUBLIC_KEY],
            },
        ],
        "ssh_pwauth": False,
        "write_files": [
            {"path": "/etc/systemd/system/vagabond-finish.service", "content": FINISH_UNIT},
            {"path": "/etc/systemd/system/ssh.service.d/host-keys.conf", "content": images.SSH_KEYGEN_DROPIN},
            {"path": "/etc/systemd/system/sshd.service.d/host-keys.conf", "content": images.SSH_KEYGEN_DROPIN},
        ],
        "runcmd": [["systemctl", "daemon-reload"], ["systemctl", "start", "--no-block", "vagabond-finish.service"]],
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"  # JSON is valid YAML


def fetch(image: str, checksum: str | None, dest_dir: Path) -> Path:
    """A local path is used as is; a URL is downloaded once into the cache. Checked when asked."""
    if "://" in image and not image.startswith("file://"):
        target = dest_dir / (hashlib.sha256(image.encode()).hexdigest()[:16] + "-" + Path(image).name)
        if not target.is_file():
            partial = target.with_suffix(".partial")
            with ui.step(f"download {image}"), urllib.request.urlopen(image, timeout=timeouts.CONNECT) as resp, partial.open("wb") as fh:  # noqa: S310
                shutil.copyfileobj(resp, fh, 8 * 2**20)
            partial.replace(target)
        path = target
    else:
        path = Path(image.removeprefix("file://"))
        if not path.is_file():
            raise UsageError(f"image {path} does not exist")
    if checksum:
        kind, _, expected = checksum.partition(":")
        if kind != "sha256":
            raise UsageError(f"checksum {checksum!r}: only sha256:HEX is supported")
        actual = images.sha256_file(path)
        if actual != expected.lower():
            raise VagabondError(f"{path}: sha256 is {actual}, expected {expected}: refusing a changed or corrupt image")
    return path


def import_image(name: str, image: str, *, checksum: str | None = None, out: Path | None = None,
                 driver: str | None = None) -> BaseBox:  # fmt: skip
    """Cloud image -> vagrant-libvirt box in the cache (or --out), with a catalog to add it from."""
    out_dir = out or paths.cache_dir() / "boxes" / name.replace("/", "-") / "imported"
    out_dir.mkdir(parents=True, exist_ok=True)
    source = fetch(image, checksum, paths.cache_dir() / "images")
    if not process.which("cloud-localds"):
        raise UsageError("'cloud-localds' is needed to import cloud images", hint="apt-get install cloud-image-utils")
    decision = detect.choose_driver(driver)
    with images.scratch_dir(out_dir, "vagabond-import-") as work:
        disk = work / "disk.qcow2"
        with ui.step(f"copy {source.name}"):
            process.check(["qemu-img", "convert", "-O", "qcow2", str(source), str(disk)], timeout=timeouts.IMAGE)
        (work / "user-data").write_text(user_data())
        (work / "meta-data").write_text(f"instance-id: vagabond-import-{int(time.time())}\nlocal-hostname: vagabond\n")
        seed = work / "seed.iso"
        process.check(["cloud-localds", str(seed), str(work / "user-data"), str(work / "meta-data")], timeout=timeouts.TOOL)
        timeout = timeouts.for_driver(timeouts.FIRST_BOOT, decision.driver)
        console = out_dir / "import-console.log"
        accel = ["-accel", "kvm", "-cpu", "host"] if decision.driver == "kvm" else ["-accel", "tcg"]
        argv = [
            "qemu-system-x86_64", *accel, "-m", "1024", "-smp", "2", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", f"file:{console}", "-no-reboot",
            "-drive", f"file={disk},if=virtio,format=qcow2,discard=unmap",
            "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
            # No network at all: NoCloud needs none, and the guest must not reach anything.
            "-nic", "none",
        ]  # fmt: skip
        with ui.step(f"first boot with cloud-init ({decision.driver}; the guest powers off when done)"):
            process.check(argv, timeout=timeout, hint=f"the guest's console is in {console}")
        log = console.read_text(errors="replace")
        if "vagabond-finish" not in log:  # systemd names the unit on the console as it starts it
            if "systemd" in log:  # the console shows the boot, but our clean-up unit never ran
                raise VagabondError(f"the guest powered off before cloud-init finished; see {console}")
            ui.info(f"the image's console is not on the serial port: cannot confirm cloud-init finished ({console})")
        box_img = work / "box.img"
        with ui.step("qemu-img convert to compressed qcow2"):
            images.convert_to_qcow2(disk, box_img)
        virtual = images.image_info(box_img)["virtual-size"]
        version = time.strftime("%Y%m%d.%H%M%S", time.gmtime())
        box_file = out_dir / f"{name.replace('/', '-')}.box"
        images.write_box(box_img, box_file, virtual_size_gib=max(1, -(-virtual // 2**30)))
    sha = images.sha256_file(box_file)
    catalog = out_dir / "metadata.json"
    images.write_catalog(catalog, name=name, description=f"imported from {image}", version=version,
                         box_url=box_file.resolve().as_uri(), sha256=sha)  # fmt: skip
    result = BaseBox(name=name, version=version, box_file=box_file, catalog=catalog, kernel=Path(), sha256=sha)
    ui.info(f"imported {name} {version}: {box_file} ({box_file.stat().st_size / 2**20:.0f} MiB)")
    return result
