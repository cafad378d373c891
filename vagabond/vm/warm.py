"""Warm start: a provisioned VM saved once (`vagabond save`) and brought back in seconds, by `up`
after a destroy and by `reset` without one (vagabond.vm.warmimage keeps the image).

Each restore puts a fresh overlay over the frozen disk layer at the domain's disk path, so the
saved state is never written; then the resumed guest renews its address (where vagrant-libvirt
looks for it), and gets the host's time and fresh randomness. Vagrant's machine state comes back
with it, so `vagabond run`, plain `vagrant ssh`, halt and destroy work on it. The VM's own SSH key
comes back with it too; an image from elsewhere holds none, and the VM restored from it gets a new
one through its guest agent before its network comes back (vagabond.vm.resume).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from xml.etree import ElementTree

from vagabond import files, interrupts, timeouts, ui
from vagabond.definition.schema import Box
from vagabond.errors import NotRunning, UsageError, WarmError
from vagabond.host import ledger, libvirt
from vagabond.vm import remote, resume
from vagabond.vm.warmimage import (
    META,
    Machine,
    frozen_prefix,
    image_dir,
    key_of_vm,
    load,
    machines,
    missing_parts,
    plain,
)
from vagabond.vm.workdir import Workdir

# Vagrant's machine state that comes back with the VM (index_uuid names an entry of Vagrant's global
# index, which its destroy removed: Vagrant makes a new one as it would for a new machine).
VAGRANT_FILES = ("id", "creator_uid", "box_meta", "synced_folders", "action_provision", "vagrant_cwd")

# --- the domain's XML --------------------------------------------------------------------------------


def _disk_and_interfaces(xml: str) -> tuple[str, list[dict], bool]:
    """The domain's one file disk, its network interfaces, and whether it mounts a host directory
    (9p or virtiofs: QEMU cannot save such a VM)."""
    root = ElementTree.fromstring(xml)
    disks = [
        d.find("source").get("file")
        for d in root.iter("disk")
        if d.get("device") == "disk" and d.find("source") is not None and d.find("source").get("file")
    ]
    if len(disks) != 1:
        raise WarmError(f"a warm image takes a VM with one disk; this one has {len(disks)}")
    interfaces = []
    for nic in root.iter("interface"):
        mac, source = nic.find("mac"), nic.find("source")
        if mac is not None and source is not None and source.get("network"):
            interfaces.append({"mac": mac.get("address"), "network": source.get("network")})
    return disks[0], interfaces, root.find("devices/filesystem") is not None


def _new_overlay(disk: Path, frozen: Path) -> None:
    """A fresh qcow2 overlay over the frozen layer at the domain's disk path, in place of what was
    there (libvirtd makes it: the pool's directory is root's, and the VM may be a user's)."""
    if libvirt.volume_exists(disk.name):
        libvirt.check("vol-delete", "--pool", libvirt.POOL, disk.name)
    libvirt.create_overlay(disk.name, str(frozen))


# --- save ---------------------------------------------------------------------------------------


def save(box: Box, wd: Workdir) -> dict:
    """The running, provisioned VM's warm image (replacing an earlier one of this work directory);
    the VM runs on afterwards, over a fresh overlay."""
    with wd.lock("save"):
        state = wd.read_state()
        names = box.machine_names()
        domains = libvirt.domains(wd.prefix)
        for m in names:
            if domains.get(wd.domain(m)) != "running":
                raise NotRunning(
                    f"box {box.name!r} machine {m} is not running here", hint=f"run 'vagabond up {box.name}' first"
                )
        if not state.get("provisioned"):
            raise UsageError(
                f"box {box.name!r} is not provisioned: a warm image is of a provisioned VM",
                hint=f"run 'vagabond provision {box.name}' first",
            )
        key = key_of_vm(box, wd)
        target = image_dir(wd)
        files.make_dirs(target.parent, mode=0o700)
        files.make_dirs(target, mode=0o700)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        saved: list[Machine] = []
        with ui.step(f"save a warm image of {box.name}"):
            for m in names:
                domain = wd.domain(m)
                disk, interfaces, shares = _disk_and_interfaces(libvirt.domain_xml(domain))
                if shares:
                    raise WarmError(
                        f"{domain} mounts a host directory (9p or virtiofs), which QEMU cannot save",
                        hint="use rsync synced folders for a box you want warm images of",
                    )
                _quiesce(wd, m)
                remote.close_master(wd, m)
                saved.append(_save_machine(wd, m, domain, Path(disk), interfaces, stamp))
            vagrant = {m: _vagrant_files(wd, m) for m in names}
            networks = {i["network"]: libvirt.network_xml(i["network"]) for s in saved for i in s.interfaces}
            keep = {k: v for k, v in state.items() if k not in ("up_at", "timings", "warm")}
            meta = {
                "key": key,
                "saved_at": time.time(),
                "box": box.name,
                "machines": [s.__dict__ for s in saved],
                "vagrant": vagrant,
                "networks": networks,
                "state": keep,
                "ssh": wd.ssh_config.read_text() if wd.ssh_config.is_file() else "",
                "workdir": str(wd.path),
            }
            for name in (wd.ssh_key.name, wd.ssh_key.name + ".pub"):
                if (wd.path / name).is_file():  # a restore here comes back with it (export leaves it out)
                    files.copy_regular(wd.path / name, target / name, mode=0o600)
            previous = load(wd)
            files.write_json(target / META, meta, mode=0o600, sort_keys=True)
            _drop_unused(wd, previous, meta)
            resume.after_resume(wd, meta)
        wd.write_state(warm={"saved_at": meta["saved_at"]})
        return meta


# Memory the guest freed still holds what it held, and the save writes it out as it would a page in
# use. Pages a process faults in are handed out cleared, and the kernel does not write to a page it
# takes back: one process that touches the free memory but a margin (64 MiB, or 1/32 of the
# guest's memory if more: the kernel's reserves grow with it) leaves it zero, and QEMU's save
# records a zero page in a few bytes. It asks to be the OOM killer's first choice, and has 90 s
# (within the command's own time). A guest without python3 keeps its free memory as it is (a larger
# image, nothing else).
ZERO_FREE = """import mmap
with open("/proc/self/oom_score_adj", "w") as oom:
    oom.write("1000")
with open("/proc/meminfo") as meminfo:
    info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo if line.split()[1:2]}
size = (info["MemFree"] - max(64 * 2**20, info["MemTotal"] // 32)) // mmap.PAGESIZE * mmap.PAGESIZE
if size > 0:
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    memory[:: mmap.PAGESIZE] = bytes(size // mmap.PAGESIZE)
"""


def _quiesce(wd: Workdir, machine: str) -> None:
    """Make the image small and the disk whole: written out, unused blocks given back, caches
    dropped, free memory zeroed; then one fresh login (what the first command after a restore runs:
    sshd's login path, sudo, date, busctl) reads its files back in, so a restored guest does not
    wait on its disk."""
    quiesce = (
        "sync; fstrim -a >/dev/null 2>&1; sync; echo 3 > /proc/sys/vm/drop_caches; "
        "command -v python3 >/dev/null 2>&1 && timeout 90 python3 - || true"
    )
    remote.run(
        wd,
        machine,
        ["sudo", "-n", "sh", "-c", quiesce],
        stream=False,
        timeout=timeouts.GUEST_COMMAND,
        input=ZERO_FREE,
    )
    remote.close_master(wd, machine)
    warm_up = (
        "date >/dev/null; pidof systemd-networkd >/dev/null; command -v busctl >/dev/null 2>&1 && "
        "busctl --version >/dev/null; cat >/dev/null"
    )
    remote.run(
        wd, machine, ["sudo", "-n", "sh", "-c", warm_up], stream=False, timeout=timeouts.GUEST_COMMAND, input="x"
    )


def _save_machine(wd: Workdir, machine: str, domain: str, disk: Path, interfaces: list[dict], stamp: str) -> Machine:
    """virsh save, the disk frozen under a new name, a fresh overlay in its place, and the VM back.
    On any failure the VM runs on its own disk again and nothing of the attempt is left."""
    if disk.parent != libvirt.POOL_DIR or not disk.name.startswith(wd.prefix):
        raise WarmError(f"{domain}'s disk {disk} is not a volume of this work directory in {libvirt.POOL_DIR}")
    target = image_dir(wd)
    memory = f"{machine}.{stamp}.save"
    frozen = libvirt.POOL_DIR / f"{frozen_prefix(wd)}{machine}-{stamp}.qcow2"
    uuid = libvirt.domain_uuid(domain)
    public = wd.ssh_key.with_name(wd.ssh_key.name + ".pub")
    agent = public.is_file() and resume.can_rekey(domain, public.read_text().strip())
    ledger.add_warm([frozen.name])  # recorded before it exists: gc finds it whatever happens next
    with files.private_dir(target) as work:
        # The user's own file, which libvirtd (root) writes into: so the user can read and move it.
        files.write_bytes(work / memory, b"", mode=0o600)
        with interrupts.cleanup():  # libvirtd writes the image into this directory until it is done
            libvirt.save(domain, work / memory)
        frozen_made = False
        try:
            files.move(work / memory, target / memory, mode=0o600)
            libvirt.freeze_volume(disk.name, frozen.name)  # the disk as saved, standalone
            frozen_made = True
            _new_overlay(disk, frozen)
            layers = [frozen.name]
            libvirt.restore(target / memory)
        except BaseException:
            with interrupts.cleanup():
                if frozen_made and not libvirt.volume_exists(disk.name):
                    libvirt.create_overlay(disk.name, str(frozen))  # the disk as it was saved
                elif not frozen_made:
                    libvirt.delete_volume(frozen.name)
                    ledger.forget(warm=[frozen.name])
                image = target / memory if (target / memory).is_file() else work / memory
                if libvirt.run("domstate", domain).stdout.strip() == "shut off":
                    libvirt.run("restore", str(image))
                files.remove(target / memory)
            raise
    return Machine(machine, domain, uuid, memory, str(disk), layers, interfaces, agent)


def _vagrant_files(wd: Workdir, machine: str) -> dict[str, str]:
    here = wd.path / ".vagrant" / "machines" / machine / "libvirt"
    found = {}
    for name in VAGRANT_FILES:
        with contextlib.suppress(OSError):
            with files.open_regular_read(here / name) as fh:
                found[name] = fh.read(65536).decode()
    return found


def _drop_unused(wd: Workdir, previous: dict | None, current: dict) -> None:
    """The files of an earlier warm image that the new one does not use."""
    if previous is None:
        return
    used_layers = {layer for m in machines(current) for layer in m.frozen} | libvirt.volumes_in_use()
    used_images = {m.memory_image for m in machines(current)}
    gone = []
    for m in machines(previous):
        if m.memory_image not in used_images:
            files.remove(image_dir(wd) / plain(m.memory_image))
        for layer in m.frozen:
            if layer not in used_layers and libvirt.delete_volume(plain(layer)):
                gone.append(layer)
    if gone:
        ledger.forget(warm=gone)


# --- restore ------------------------------------------------------------------------------------


def restore(box: Box, wd: Workdir, meta: dict) -> None:
    """The saved VM back in this work directory, where no domain of it exists: networks, disk
    overlays, the domains (defined from the image, then restored), Vagrant's machine state, the
    VM's key, vagabond's state, then the guest's clock, randomness and address."""
    target = image_dir(wd)
    for network, xml in meta.get("networks", {}).items():
        with libvirt.CreationTurn():
            if libvirt.ensure_network(network, xml):
                ledger.add_networks([network])
    resume.ports_forward_at_once(meta)
    key = resume.new_key(wd, meta)
    restored: list[str] = []
    try:
        for m in machines(meta):
            image = target / plain(m.memory_image)
            _new_overlay(Path(m.disk), libvirt.POOL_DIR / plain(m.frozen[0]))
            libvirt.define(libvirt.saved_domain_xml(image))
            restored.append(m.domain)
            resume.restore_machine(wd, m, image, key)
    except BaseException:
        for domain in restored:
            libvirt.remove_domain(domain)
        for m in machines(meta):
            if m.domain not in restored:
                libvirt.delete_volume(Path(m.disk).name)
        raise
    _write_vagrant_state(wd, meta)
    wd.write_state(**meta.get("state", {}), warm={"saved_at": meta["saved_at"], "restored_at": time.time()})
    ledger.add_workdir(wd.prefix, wd.path)
    resume.after_resume(wd, meta)


def _write_vagrant_state(wd: Workdir, meta: dict) -> None:
    """Vagrant's machine state as `vagrant up` left it, so plain vagrant ssh, halt and destroy work."""
    wd.claim(".vagrant")
    for machine, saved in meta.get("vagrant", {}).items():
        if machine not in wd.box.machine_names():
            continue
        here = wd.path / ".vagrant" / "machines" / machine / "libvirt"
        files.make_dirs(here, root=wd.path)
        for name, text in saved.items():
            if name in VAGRANT_FILES and name not in ("id", "creator_uid") and isinstance(text, str):
                files.write_text(here / name, text)
        # Who made it and which domain it is: this user, and the domain as libvirt has it now.
        files.write_text(here / "creator_uid", str(os.geteuid()))
        files.write_text(here / "id", libvirt.domain_uuid(wd.domain(machine)))
        files.remove(here / "index_uuid")


# --- reset ------------------------------------------------------------------------------


def reset(box: Box, wd: Workdir) -> dict:
    """The VM back to its warm image, disk and memory, in the same domains (no new definition)."""
    with wd.lock("reset"):
        meta = load(wd)
        if meta is None:
            raise UsageError(
                f"box {box.name!r} has no warm image here", hint=f"save one with 'vagabond save {box.name}'"
            )
        gone = missing_parts(wd, meta)
        if gone:
            raise WarmError(f"the warm image of {box.name!r} cannot be used: {gone}", hint=f"vagabond save {box.name}")
        domains = libvirt.domains(wd.prefix)
        present = [m for m in machines(meta) if m.domain in domains]
        if not present:
            restore(box, wd, meta)  # no VM here (destroyed): the reset is a restore
            return meta
        for m in machines(meta):
            if m not in present or libvirt.domain_uuid(m.domain) != m.uuid:
                raise WarmError(
                    f"the VM of {box.name!r} here is not the one its warm image saved ({m.domain} was made since)",
                    hint=f"vagabond destroy {box.name} && vagabond up {box.name}, or vagabond save {box.name}",
                )
        with ui.step(f"reset {box.name} to its warm image"):
            resume.ports_forward_at_once(meta)
            for m in machines(meta):
                remote.close_master(wd, m.name)
            key = resume.new_key(wd, meta)
            try:
                for m in machines(meta):
                    libvirt.stop(m.domain)
                    _new_overlay(Path(m.disk), libvirt.POOL_DIR / plain(m.frozen[0]))
                    resume.restore_machine(wd, m, image_dir(wd) / plain(m.memory_image), key)
            except BaseException:
                # No machine runs on with a key the work directory lost; one that was to take a new
                # key goes whole (its SMBIOS string names the exporter's): up restores it again.
                with interrupts.cleanup():
                    for m in machines(meta):
                        if key is None:
                            libvirt.stop(m.domain)
                        else:
                            libvirt.remove_domain(m.domain)
                raise
            resume.after_resume(wd, meta)
        wd.write_state(warm={"saved_at": meta["saved_at"], "restored_at": time.time()})
        return meta
