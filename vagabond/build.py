"""Dependency-box recipes: describe a .box for a catalog, repackage an installed box."""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from pathlib import Path

from vagabond import files, interrupts, process, timeouts, ui
from vagabond.bases import archive, diskimage, guest
from vagabond.catalog import versions
from vagabond.definition.schema import Box
from vagabond.errors import UsageError, VagabondError
from vagabond.host import libvirt
from vagabond.host.vagrant import Vagrant
from vagabond.vm import lifecycle, playbooks, remote, warm, warmarchive, warmimage
from vagabond.vm.workdir import Workdir

# Run in the guest as root before packaging: nothing that identifies this VM, no caches, no logs.
# The box leaves with Vagrant's insecure public key (see build), never a private key.
CLEAN_GUEST = r"""
set -u
cd /  # under SELinux, update-initramfs fails when it cannot return to a home directory
(command -v apt-get >/dev/null && apt-get clean) || true
(command -v dnf >/dev/null && dnf clean all) || (command -v yum >/dev/null && yum clean all) || true
rm -rf /var/lib/apt/lists/* /var/cache/dnf/* /var/cache/yum/*
# Cloud images: the next boot is a first boot again (instance data, logs), as after an import.
(command -v cloud-init >/dev/null && cloud-init clean --logs) || true
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
rm -rf /var/lib/dhcp/* /var/lib/dhclient/* /var/lib/NetworkManager/*.lease /run/systemd/netif/leases/*
# journald keeps its files open: stop it (and its sockets), then its files can go, machine-id directory and all.
if command -v journalctl >/dev/null; then
  systemctl stop systemd-journald.socket systemd-journald-dev-log.socket systemd-journald-audit.socket \
    systemd-journald.service >/dev/null 2>&1 || true
  rm -rf /var/log/journal/*
fi
# The initramfs needs only this VM's own drivers (virtio), as RHEL's dracut builds it by default
# (hostonly); Debian's "most" carries every storage driver, compressed past what xz can shrink.
# A box vagabond made lists its drivers already (and keeps zstd, which unpacks faster at each boot).
if [ -f /etc/initramfs-tools/conf.d/vagabond.conf ]; then
  :
elif [ -f /etc/initramfs-tools/initramfs.conf ] && command -v update-initramfs >/dev/null; then
  sed -i 's/^MODULES=.*/MODULES=dep/; s/^COMPRESS=.*/COMPRESS=xz/' /etc/initramfs-tools/initramfs.conf
  update-initramfs -u -k all >/dev/null
elif command -v dracut >/dev/null; then
  dracut --force --hostonly --regenerate-all >/dev/null 2>&1 || true
fi
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /tmp/* /var/tmp/* /root/.ansible /home/*/.ansible /tmp/.ansible-*
rm -f /root/.bash_history /home/*/.bash_history
sync
fstrim -av || true
"""


# Run in each guest before `build --warm` saves it: what a warm image in a catalog need not carry,
# as the box leaves without it (package lists and caches, Ansible's temporary files, shell
# histories, logs). The guest's SSH host keys it keeps: a VM restored from it gets new ones with
# its new SSH key (the key script's rekey).
WARM_CLEAN = r"""
set -u
(command -v apt-get >/dev/null && apt-get clean) || true
(command -v dnf >/dev/null && dnf clean all) || (command -v yum >/dev/null && yum clean all) || true
rm -rf /var/lib/apt/lists/* /var/cache/dnf/* /var/cache/yum/*
rm -rf /root/.ansible /home/*/.ansible /tmp/.ansible-* /var/tmp/.ansible-*
rm -f /root/.bash_history /home/*/.bash_history
(journalctl --rotate && journalctl --vacuum-time=1s) >/dev/null 2>&1 || true
# journald's own files stay (it has them mapped): the rotation above archived and vacuumed them.
find /var/log -path /var/log/journal -prune -o -type f -exec truncate -s 0 {} + || true
"""


def flatten_and_compact(disk: Path, img: Path) -> None:
    """The halted guest's disk (an overlay on its base) -> one sparse qcow2 holding only live data.

    As root, the disk goes through a raw copy whose ext file systems get a fresh journal and have
    their free blocks discarded (diskimage.compact_filesystems); without root, only the guest's own
    fstrim has run. The qcow2 is left uncompressed: the box is compressed as a whole (xz)."""
    raw = img.with_suffix(".raw")
    try:
        with ui.step("qemu-img convert (flatten)"):
            process.check(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], timeout=timeouts.IMAGE)
        before = raw.stat().st_blocks * 512
        tools = [t for t in ("losetup", "partx", "blkid", "e2fsck", "tune2fs", "dumpe2fs") if not process.which(t)]
        if os.geteuid() != 0 or tools:
            ui.info("skipping the offline compaction of the disk: it needs root and " + ", ".join(tools or ["losetup"]))
            done = []
        else:
            with ui.step("compact file systems (fresh journal, discard free blocks)"):
                done = diskimage.compact_filesystems(raw)
        after = raw.stat().st_blocks * 512
        # XFS and other file systems (EL images) keep what the guest's fstrim discarded before the halt.
        how = (
            f"compacted {', '.join(done)}"
            if done
            else "no ext file system to compact; the guest's fstrim discarded free blocks"
        )
        ui.info(
            f"disk: {before / 2**20:.0f} MiB allocated after the guest's fstrim, {after / 2**20:.0f} MiB after "
            f"compaction ({(before - after) / 2**20:.0f} MiB less; {how})"
        )
        diskimage.convert_to_qcow2(raw, img, compress=False)
    finally:
        raw.unlink(missing_ok=True)


def describe(
    box_file: Path,
    *,
    name: str,
    version: str,
    description: str = "",
    base: dict | None = None,
    digest: str | None = None,
    warm: dict | None = None,
) -> dict:
    """Write BOX.box.json beside the box: what publish, and people, need to know about it (and
    the warm image build --warm wrote beside it, which publish takes along)."""
    info = {
        "name": name,
        "version": version,
        "provider": "libvirt",
        "architecture": "amd64",
        "sha256": files.sha256_file(box_file),
        "size": box_file.stat().st_size,
        "description": description,
        "base": base,
        "definition_digest": digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if warm is not None:
        info["warm"] = warm
    files.write_json(box_file.with_name(box_file.name + ".json"), info)
    return info


def repackage(name: str, version: str | None, out: Path) -> dict:
    """Re-export a box from Vagrant's box store (`vagrant box repackage`) with its description."""
    files.make_dirs(out)
    v = Vagrant(out, timeout=timeouts.BOX_ADD)
    versions = v.box_versions(name)
    if not versions:
        raise UsageError(f"no libvirt box named {name!r} in Vagrant's box store (see 'vagrant box list')")
    if version is None:
        version = max(versions, key=lambda s: tuple(int(p) if p.isdigit() else p for p in s.split(".")))
    elif version not in versions:
        raise UsageError(f"{name} has no version {version!r} installed (installed: {', '.join(versions)})")
    target = out / f"{name.replace('/', '-')}-{version}-libvirt.box"
    # vagrant writes package.box where it runs: in a directory of vagabond's own, then moved whole.
    with files.private_dir(out) as work:
        with ui.step(f"vagrant box repackage {name} libvirt {version}"):
            Vagrant(work, timeout=timeouts.BOX_ADD).box_repackage(name, version)
        files.move(work / "package.box", target)
    return describe(target, name=name, version=version, base={"box": name, "version": version}) | {"path": str(target)}


def default_name(box: Box) -> str:
    return box.spec.prebuilt.name if box.spec.prebuilt else f"vagabond/{box.name}"


# Run in the guest as root, last: sshd stops taking connections (this one goes on), and only then
# does Vagrant's published key go back; the guest powers off right after this command returns.
RESTORE_KEY_AND_POWER_OFF = f"""
set -u
systemctl stop ssh.socket ssh.service sshd.service >/dev/null 2>&1
for unit in ssh.socket ssh.service sshd.service; do
  if systemctl is-active --quiet "$unit"; then echo "$unit still runs: the key is not put back" >&2; exit 1; fi
done
printf '%s\\n' {shlex.quote(guest.INSECURE_PUBLIC_KEY)} > /home/vagrant/.ssh/authorized_keys
rm -f {guest.AUTHORIZED_KEY_STATE}
(sleep 1; systemctl poweroff) >/dev/null 2>&1 &
"""


def _wait_shut_off(domain: str, timeout: float) -> None:
    """Until libvirt says the guest powered itself off (Vagrant's halt would need the sshd just stopped)."""
    deadline = time.monotonic() + timeout
    while libvirt.domains(domain).get(domain) not in ("shut off", None):
        if time.monotonic() > deadline:
            raise VagabondError(f"{domain} did not power off within {timeout:g}s of the key going back")
        time.sleep(1)


def _warm_image(box: Box, wd: Workdir, path: Path, name: str) -> dict | None:
    """The provisioned build VM's warm image, exported to ``path`` beside the box (the VM runs on);
    how the box description names it (as ``name``, once the box is written), or None when the
    guest cannot take a new SSH key where it is restored (the image would carry the key that opens
    every VM made from it)."""
    with ui.step("clean the guest for its warm image"):
        for machine in box.machine_names():
            remote.check(wd, machine, ["sudo", "-n", "sh", "-c", WARM_CLEAN], timeout=timeouts.GUEST_CLEANUP)
    meta = warm.save(box, wd)
    try:
        if not warmimage.rekeys(meta):
            ui.warning(
                f"no warm image of {box.name} for its catalog: its guest has no guest agent that may run "
                "vagabond's key script, so a VM restored from it could not get a key of its own",
                title=f"vagabond build {box.name} --warm",
            )
            return None
        exported = warmarchive.export(box, wd, path)
        return {
            "file": name,
            "sha256": files.sha256_file(path),
            "size": exported["size"],
            "key": meta["key"],
            "key_digest": warmimage.key_digest(meta["key"]),
        }
    finally:
        warmimage.drop(wd)  # the build leaves its file, not a warm image here (destroy removes its disk layer)


def build(
    box: Box,
    wd: Workdir,
    opts: lifecycle.UpOptions,
    *,
    out: Path,
    version: str | None = None,
    warm_image: bool = False,
) -> dict:
    """Base box + playbooks -> a prebuilt dependency box: up, provision, verify, clean, halt,
    flatten the disk into a compressed qcow2, write the box and its description, destroy the VM.
    With warm_image, the provisioned VM's warm image is exported beside the box first."""
    version = versions.check_version(version or time.strftime("%Y%m%d.%H%M%S", time.gmtime()))
    if warm_image:  # refused before the long part: -e values may be secrets, which its memory would hold
        warmarchive.check_exportable(box, warmimage.extra_vars_digest(opts.extra_vars), no_secrets=False)
    name = default_name(box)
    digest = playbooks.definition_digest(box)
    target = out / f"{name.replace('/', '-')}-{version}-libvirt.box"
    img = out / f".{target.stem}.img"
    # A dependency box is always built from its base, never from itself (the caller's options stay theirs).
    lifecycle.up(box, wd, dataclasses.replace(opts, prebuilt=False))
    warm_file = target.with_name(f"{target.stem}.warm.tar")
    warm_partial = target.with_name(f".{warm_file.name}")  # its name once the box is written
    info = warm_info = None
    try:
        machine = box.primary()
        # The box says which definition it holds: site.yml skips the playbooks on it when it is this one.
        remote.check(
            wd,
            machine,
            [
                "sudo",
                "-n",
                "sh",
                "-c",
                f"mkdir -p {os.path.dirname(playbooks.DEFINITION_FILE)} && echo {digest} > {playbooks.DEFINITION_FILE}",
            ],
        )
        files.make_dirs(out)
        # Saved with the definition file in it: a VM restored from it is one made from this box.
        warm_info = _warm_image(box, wd, warm_partial, warm_file.name) if warm_image else None
        with ui.step("clean the guest for reuse"):
            remote.check(wd, machine, ["sudo", "-n", "sh", "-c", CLEAN_GUEST], timeout=timeouts.GUEST_CLEANUP)
        # The build VM took only its own key; the box goes out with Vagrant's insecure one again, so
        # plain `vagrant up` gets in (and vagabond up hands each VM of it a key of its own). Never
        # while sshd listens: anyone who reaches the VM's network would log in with that published
        # key until the halt. One command stops sshd, writes the key, and powers the guest off.
        domain = wd.domain(machine)
        with ui.step("put Vagrant's key back, sshd stopped, and power off"):
            remote.check(wd, machine, ["sudo", "-n", "sh", "-c", RESTORE_KEY_AND_POWER_OFF])
            _wait_shut_off(domain, timeouts.for_driver(timeouts.SHUTDOWN, wd.read_state().get("driver") or "qemu"))
        lifecycle.halt(box, wd)  # the other machines of a multi-machine box (this one is off: nothing to do)
        disks = libvirt.domain_volumes(domain)
        if not disks:
            raise VagabondError(f"domain {domain} has no disk to package")
        flatten_and_compact(Path(disks[0]), img)
        virtual = diskimage.image_info(img)["virtual-size"]
        with ui.step("write the box (tar, xz)"):
            archive.write_box(img, target, virtual_size_gib=max(1, -(-virtual // 2**30)), xz=True)
        img.unlink()
        if warm_info is not None:
            files.move(warm_partial, warm_file, mode=0o600)
        base = box.spec.base
        state = wd.read_state()
        info = describe(
            target,
            name=name,
            version=version,
            description=box.spec.description,
            base={"box": base.box_name, "version": state.get("base_version")},
            digest=digest,
            warm=warm_info,
        )
    finally:
        with interrupts.cleanup():  # an interrupted build leaves neither its VM nor a half-written image
            img.unlink(missing_ok=True)
            files.remove(warm_partial)  # the warm image of a box that was not written
            lifecycle.destroy(box, wd)
    ui.info(f"built {name} {version}: {target} ({info['size'] / 2**20:.0f} MiB)")
    if warm_info is not None:
        ui.info(f"and its warm image: {target.with_name(warm_info['file'])} ({warm_info['size'] / 2**20:.0f} MiB)")
    return info | {"path": str(target)}
