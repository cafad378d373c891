"""Boxes from a distribution's generic cloud image: a NoCloud seed makes the vagrant user, one
boot applies it, the guest cleans itself up and powers off, the disk becomes a box."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

from vagabond import files, paths, process, timeouts, ui
from vagabond.bases import archive, diskimage, guest
from vagabond.bases.made import MadeBase
from vagabond.definition.schema import Box
from vagabond.errors import UsageError, VagabondError
from vagabond.host import detect

# Runs once cloud-init has finished (After=cloud-final), then powers the guest off. Every later
# boot of the box is an ordinary one: cloud-init is switched off (its stages cost a boot under
# emulation 10 s and more, and with no seed it probes for cloud metadata services), so what it
# did for the import boot's network card is made to fit any card: the network configuration it
# wrote names that card's MAC address, and each VM has another. No machine-id, no SSH host keys,
# no logs stay.
FINISH_SCRIPT_PATH = "/usr/local/libexec/vagabond-finish"
FINISH_SCRIPT = """\
#!/bin/sh
# vagabond: the import boot's last step (run once, then the guest powers off).
command -v cloud-init >/dev/null 2>&1 && cloud-init clean --logs
for f in /etc/sysconfig/network-scripts/ifcfg-*; do
  [ -f "$f" ] && sed -i '/^HWADDR=/d; /^MACADDR=/d' "$f"
done
for f in /etc/NetworkManager/system-connections/*.nmconnection; do
  [ -f "$f" ] && sed -i '/^mac-address=/d' "$f"
done
for f in /etc/netplan/*.yaml; do
  [ -f "$f" ] && sed -i '/macaddress:/d; /match:/d; /set-name:/d' "$f"
done
mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
sync
# The host reads this line on the serial console (a quiet boot shows systemd's units no more).
echo "vagabond-finish: the import boot is complete" > /dev/console 2>/dev/null || true
"""
FINISH_UNIT = f"""\
[Unit]
Description=vagabond: clean up after the import boot and power off
After=cloud-final.service
Wants=cloud-final.service

[Service]
Type=oneshot
ExecStart={FINISH_SCRIPT_PATH}
ExecStartPost=/bin/systemctl --no-block poweroff
"""

# CentOS 7 is end of life: its mirrorlist is gone, so a stock image's yum fails. The import boot
# points yum at CentOS's vault for 7.9.2009 (the SELinux playbook's vagabond_yum_baseurl can point
# it elsewhere later); any other image leaves the file unused and removes it.
CENTOS7_VAULT = "https://vault.centos.org/7.9.2009"
CENTOS7_REPOS = "# Written by vagabond's import: CentOS 7 is end of life and its mirrorlist is gone.\n" + "".join(
    f"[{repo}]\nname=CentOS-7.9.2009 - {repo}\nbaseurl={CENTOS7_VAULT}/{path}/$basearch/\ngpgcheck=1\n"
    f"gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7\n\n"
    for repo, path in (("base", "os"), ("updates", "updates"), ("extras", "extras"))
)
CENTOS7_REPOS_STAGED = "/etc/vagabond/centos7-vault.repo"
CENTOS7_SWITCH = (
    f"if grep -qs ' release 7[.]' /etc/centos-release; then cp {CENTOS7_REPOS_STAGED} "
    f"/etc/yum.repos.d/CentOS-Base.repo; fi; rm -f {CENTOS7_REPOS_STAGED}; rmdir /etc/vagabond 2>/dev/null; true"
)


def user_data() -> str:
    config = {
        "users": [
            "default",
            {
                "name": "vagrant",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [guest.INSECURE_PUBLIC_KEY],
            },
        ],
        "ssh_pwauth": False,
        "write_files": [
            {"path": FINISH_SCRIPT_PATH, "content": FINISH_SCRIPT, "permissions": "0755"},
            {"path": "/etc/systemd/system/vagabond-finish.service", "content": FINISH_UNIT},
            {"path": "/etc/systemd/system/ssh.service.d/host-keys.conf", "content": guest.SSH_KEYGEN_ALL_DROPIN},
            {"path": "/etc/systemd/system/sshd.service.d/host-keys.conf", "content": guest.SSH_KEYGEN_ALL_DROPIN},
            {"path": CENTOS7_REPOS_STAGED, "content": CENTOS7_REPOS},
            {"path": guest.AUTHORIZED_KEY_SCRIPT_PATH, "content": guest.AUTHORIZED_KEY_SCRIPT, "permissions": "0755"},
            {"path": f"/etc/systemd/system/{guest.AUTHORIZED_KEY_UNIT_NAME}", "content": guest.AUTHORIZED_KEY_UNIT},
            {"path": "/etc/ssh/sshd_config.d/50-vagabond.conf", "content": guest.SSHD_DROPIN},
        ],
        "runcmd": [
            ["sh", "-c", CENTOS7_SWITCH],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", guest.AUTHORIZED_KEY_UNIT_NAME],
            ["systemctl", "start", "--no-block", "vagabond-finish.service"],
        ],
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"  # JSON is valid YAML


_GNU = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S.*)$")  # <digest>  <file>  (sha256sum, "*" for binary mode)
_BSD = re.compile(r"^SHA256\s*\((.+)\)\s*=\s*([0-9a-fA-F]{64})$")  # SHA256 (file) = digest


def parse_checksums(text: str, filename: str) -> str | None:
    """A distribution's checksum file (sha256sum's lines or the BSD form, signed or not): the
    sha256 it gives for ``filename``."""
    for line in text.splitlines():
        line = line.strip()
        if (m := _GNU.match(line)) and Path(m[2]).name == filename:
            return m[1].lower()
        if (m := _BSD.match(line)) and Path(m[1]).name == filename:
            return m[2].lower()
    return None


def _open(url: str, headers: dict[str, str] | None = None):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeouts.CONNECT)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, a timeout, a malformed URL
        reason = getattr(exc, "reason", None) or exc
        raise VagabondError(
            f"cannot download {url}: {' '.join(str(reason).split())}",
            hint="check the network, or give a local copy with --image PATH, which is checked "
            "against the box's checksum all the same",
        ) from None


def expected_sha256(image: str, checksum: str | None, checksums_url: str | None) -> tuple[str | None, str]:
    """The sha256 the image must have, and where that comes from (None: nothing to check it against)."""
    if checksum:
        kind, _, value = checksum.partition(":")
        if kind != "sha256":
            raise UsageError(f"checksum {checksum!r}: only sha256:HEX is supported")
        return value.lower(), "the pinned checksum"
    if checksums_url:
        with _open(checksums_url) as resp:
            text = resp.read(2**20).decode("utf-8", "replace")
        name = Path(image.removeprefix("file://")).name
        found = parse_checksums(text, name)
        if found is None:
            raise VagabondError(f"{checksums_url} gives no sha256 for {name}", hint="check the image's file name")
        return found, checksums_url
    return None, ""


def _download(url: str, partial: Path) -> None:
    """Into ``partial``, resuming what an earlier attempt left there, with progress. The server's
    announced length must arrive in full: a short body is an error (the part stays for the next
    attempt to resume), never a file taken as whole."""
    have = partial.stat().st_size if partial.is_file() else 0
    with _open(url, {"Range": f"bytes={have}-"} if have else None) as resp:
        resumed = bool(have) and resp.status == 206
        length = resp.headers.get("Content-Length")
        total = int(length) + (have if resumed else 0) if length and length.isdigit() else None
        done = have if resumed else 0
        with ui.step(f"download {url}" + (f" (resuming at {have / 2**20:.0f} MiB)" if resumed else "")):
            told = time.monotonic()
            with files.open_download(partial, resume=resumed) as fh:
                while block := resp.read(8 * 2**20):
                    fh.write(block)
                    done += len(block)
                    if time.monotonic() - told > 10:
                        told = time.monotonic()
                        ui.info(
                            f"download: {done / 2**20:.0f} of {total / 2**20:.0f} MiB"
                            if total
                            else f"download: {done / 2**20:.0f} MiB"
                        )
    if total is not None and done != total:
        raise VagabondError(
            f"download of {url} ended after {done} of the {total} bytes the server announced",
            hint="run the command again: it resumes where this one stopped",
        )


def fetch(image: str, checksum: str | None, dest_dir: Path, checksums_url: str | None = None) -> Path:
    """The image as a local file, checked against its sha256 before anything uses it. A local path
    (or file:// URL) is used where it is; a download is kept in the cache under its sha256, so the
    same image is downloaded once; an interrupted download resumes. A download takes its final
    name only once it matches; a cached copy is checked again before each use (a CI cache restores
    files vagabond did not write). A file that does not match is refused, and a download of it is
    not kept."""
    expected, source = expected_sha256(image, checksum, checksums_url)
    local = "://" not in image or image.startswith("file://")
    if local:
        path = Path(image.removeprefix("file://"))
        if not path.is_file():
            raise UsageError(f"image {path} does not exist")
        candidate = path
    else:
        files.make_dirs(dest_dir)
        name = Path(urllib.parse.urlparse(image).path).name or "image"
        key = expected or hashlib.sha256(image.encode()).hexdigest()
        path = dest_dir / f"{key[:16]}-{name}"
        candidate = path if path.is_file() else path.with_name(path.name + ".partial")
        if candidate != path:
            _download(image, candidate)
    if expected is None:
        ui.warning(f"{image} is not checked against a checksum (the box file names none)")
        if candidate != path:
            files.move(candidate, path)
        return path
    with ui.step(f"sha256 of {candidate.name}"):
        actual = files.sha256_file(candidate)
    if actual != expected:
        if not local:
            candidate.unlink(missing_ok=True)  # a download (or a cached copy) that does not match is not kept
        raise VagabondError(
            f"{image}: sha256 is {actual}, {source} says {expected}: refusing a changed or corrupt image"
            + ("" if local else "; the download was removed")
        )
    if candidate != path:
        files.move(candidate, path)
    return path


def import_image(
    name: str,
    image: str,
    *,
    checksum: str | None = None,
    checksums_url: str | None = None,
    out: Path | None = None,
    driver: str | None = None,
    disk_gib: int | None = None,
) -> MadeBase:
    """Cloud image -> vagrant-libvirt box in the cache (or --out), with a catalog to add it from.
    With disk_gib, a smaller image is grown to that size before its first boot, where cloud-init's
    growpart and resizefs extend the root partition and its file system."""
    out_dir = out or paths.cache_dir() / "boxes" / name.replace("/", "-") / "imported"
    source = fetch(image, checksum, paths.cache_dir() / "images", checksums_url)  # nothing is made before it is good
    files.make_dirs(out_dir)
    if not process.which("cloud-localds"):
        raise UsageError("'cloud-localds' is needed to import cloud images", hint="apt-get install cloud-image-utils")
    decision = detect.probe_and_decide(driver)
    with diskimage.scratch_dir(out_dir, "vagabond-import-") as work:
        disk = work / "disk.qcow2"
        with ui.step(f"copy {source.name}"):
            process.check(["qemu-img", "convert", "-O", "qcow2", str(source), str(disk)], timeout=timeouts.IMAGE)
        if disk_gib and diskimage.image_info(disk)["virtual-size"] < disk_gib * 2**30:
            process.check(["qemu-img", "resize", str(disk), f"{disk_gib}G"], timeout=timeouts.TOOL)
        (work / "user-data").write_text(user_data())
        (work / "meta-data").write_text(f"instance-id: vagabond-import-{int(time.time())}\nlocal-hostname: vagabond\n")
        seed = work / "seed.iso"
        process.check(
            ["cloud-localds", str(seed), str(work / "user-data"), str(work / "meta-data")], timeout=timeouts.TOOL
        )
        timeout = timeouts.for_driver(timeouts.FIRST_BOOT, decision.driver)
        console = out_dir / "import-console.log"
        accel = ["-accel", "kvm", "-cpu", "host"] if decision.driver == "kvm" else ["-accel", "tcg"]
        argv = [
            "qemu-system-x86_64",
            *accel,
            "-m",
            "1024",
            "-smp",
            "2",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            f"file:{console}",
            "-no-reboot",
            "-drive",
            f"file={disk},if=virtio,format=qcow2,discard=unmap",
            "-drive",
            f"file={seed},if=virtio,format=raw,readonly=on",
            # No network at all: NoCloud needs none, and the guest must not reach anything.
            "-nic",
            "none",
        ]
        with ui.step(f"first boot with cloud-init ({decision.driver}; the guest powers off when done)"):
            process.check(argv, timeout=timeout, hint=f"the guest's console is in {console}")
        log = console.read_text(errors="replace")
        if "vagabond-finish" not in log:  # the finish script's line (or systemd naming the unit)
            if "systemd" in log:  # the console shows the boot, but our clean-up unit never ran
                raise VagabondError(f"the guest powered off before cloud-init finished; see {console}")
            ui.info(f"the image's console is not on the serial port: cannot confirm cloud-init finished ({console})")
        box_img = work / "box.img"
        with ui.step("qemu-img convert to compressed qcow2"):
            diskimage.convert_to_qcow2(disk, box_img)
        virtual = diskimage.image_info(box_img)["virtual-size"]
        version = time.strftime("%Y%m%d.%H%M%S", time.gmtime())
        box_file = out_dir / f"{name.replace('/', '-')}.box"
        archive.write_box(box_img, box_file, virtual_size_gib=max(1, -(-virtual // 2**30)))
    sha = files.sha256_file(box_file)
    catalog = out_dir / "metadata.json"
    archive.write_catalog(
        catalog,
        name=name,
        description=f"imported from {image}",
        version=version,
        box_url=box_file.resolve().as_uri(),
        sha256=sha,
    )
    result = MadeBase(name=name, version=version, box_file=box_file, catalog=catalog, sha256=sha)
    ui.info(f"imported {name} {version}: {box_file} ({box_file.stat().st_size / 2**20:.0f} MiB)")
    return result


# --- the kind's face (vagabond.bases.kinds) --------------------------------------------------------


def import_key(box: Box) -> str:
    """What identifies an imported image's box: its content (the pinned checksum, else the checksum
    file and the image's name, else the image), the disk the box's largest machine asks for (the
    import grows the image to it before its first boot, and cloud-init's growpart fills it) and
    what the import boot's cloud-config does."""
    spec = box.spec.base
    if spec.checksum:
        identity: object = spec.checksum
    elif spec.checksums_url:
        identity = [spec.checksums_url, Path(spec.image).name]
    else:
        identity = spec.image
    disk = max(res.disk for _, _, res, _ in box.machine_specs())
    boot = hashlib.sha256(user_data().encode()).hexdigest()  # what the import boot does to the image
    return hashlib.sha256(json.dumps([guest.RECIPE_VERSION, identity, disk, boot]).encode()).hexdigest()[:12]


def imported_dir(box: Box) -> Path:
    return paths.cache_dir() / "boxes" / box.spec.base.box.replace("/", "-") / f"imported-{import_key(box)}"


def imported(box: Box, image: str | None = None) -> MadeBase:
    """The box's cloud image imported once, cached by what identifies its content (the pinned
    checksum, else the checksum file and the image); ``image`` is a local copy to use instead of
    the box file's URL, checked against the same checksum."""
    spec = box.spec.base
    out_dir = imported_dir(box)
    if hit := MadeBase.load(out_dir):
        return hit
    result = import_image(
        spec.box,
        image or spec.image,
        checksum=spec.checksum,
        checksums_url=spec.checksums_url,
        out=out_dir,
        disk_gib=max(res.disk for _, _, res, _ in box.machine_specs()),
    )
    result.save(out_dir)
    return result


def cache_key(box: Box) -> str:
    return f"vagabond-base-{files.safe_name(box.spec.base.box)}-imported-{import_key(box)}"


def cache_path(box: Box) -> Path:
    return imported_dir(box)


def make(box: Box, image: str | None = None) -> MadeBase:
    return imported(box, image)
