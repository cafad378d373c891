"""A warm image as one file that travels: `vagabond save --export FILE` writes it, `vagabond up
--warm-from FILE` brings it into a work directory at the same path on another host of the same
kind (a CI job's cache, restored on the next runner), or on this one after its warm image went.

The archive is an uncompressed tar of: ``manifest.json`` first (the warm image's description, and
each file's size and sha256), per machine its disk as one standalone qcow2 (the frozen layer and
everything under it, flattened and compressed) and its memory image (gzip), and the VM's SSH key.

Everything in it is hostile until checked, because a cache can be written by another job: the
description must be one of this work directory's and match what `up` would make (else up boots
cold and says why), every file must be a regular member of the size and digest the manifest
says, the disk a qcow2 that stands alone (no backing file, no external data file), and the domain
the memory image defines nothing but what vagabond's Vagrantfile gives a VM: its own disk, its
networks, a serial log of its own, no host device, no other program (vagabond.vm.warmchecks). Only
vagabond's own state for the VM is written, built from the box and the key, not from the archive.
A warm image provisioned with -e values is never exported: they may be secrets, and its memory
holds what the playbooks were given.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tarfile
import zlib
from pathlib import Path
from xml.etree import ElementTree

from vagabond import files, process, timeouts, ui
from vagabond.catalog.read import Published
from vagabond.definition.schema import Box
from vagabond.errors import CommandFailed, Interrupted, UsageError, VagabondError, WarmError
from vagabond.host import ledger, libvirt
from vagabond.vm import warmchecks, warmimage
from vagabond.vm.warmimage import META, image_dir, machines, plain
from vagabond.vm.workdir import Workdir

FORMAT = 2
MANIFEST = "manifest.json"
MANIFEST_MAX = 1 << 20
DISK_MAX = 1 << 40  # a disk's virtual size, and its file
MEMORY_SLACK = 256 << 20  # a memory image beyond the VM's memory: its header and device state
CHUNK = 4 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")
MEMORY_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}\.\d{14}\.save")  # machine.stamp.save
LAYER_NAME = re.compile(r"vagabond-warm-[a-z0-9-]+\.qcow2")
KEY_MAX = 16384

# What a restored VM keeps of vagabond's state, by name; each from the box or the key, not the archive.
VAGRANT_KEPT = ("box_meta", "action_provision")


class Mismatch(Exception):
    """The archive is a good warm image, of another VM than this up would make (the reason)."""


# --- export -------------------------------------------------------------------------------------


def check_exportable(box: Box, extra_vars_sha256: object, no_secrets: bool) -> None:
    """A VM provisioned with -e values travels only when the user says they are no secret."""
    if extra_vars_sha256 not in (None, warmimage.extra_vars_digest(())) and not no_secrets:
        raise UsageError(
            f"the VM of {box.name!r} was provisioned with -e values, which its memory and disk may hold: "
            "its warm image is not exported",
            hint="put values that are no secret in the box definition's vars, or say so with --no-secrets",
        )


def export(box: Box, wd: Workdir, target: Path, *, no_secrets: bool = False) -> dict:
    """This work directory's warm image as one file at ``target`` (replaced whole, or left as it
    was); what was written, for --json."""
    meta = warmimage.load(wd)
    if meta is None:
        raise UsageError(f"box {box.name!r} has no warm image here", hint=f"vagabond save {box.name}")
    gone = warmimage.missing_parts(wd, meta)
    if gone:
        raise WarmError(f"the warm image of {box.name!r} cannot be exported: {gone}", hint=f"vagabond save {box.name}")
    check_exportable(box, meta["key"]["provisioning"].get("extra_vars"), no_secrets)
    target = Path(target).absolute()
    files.refuse_link(target)
    ms = machines(meta)
    with files.private_dir(target.parent, prefix=".vagabond-export-") as work:
        sums: dict[str, dict] = {}
        with ui.step(f"export the warm image of {box.name}"):
            for m in ms:
                disk = work / plain(m.frozen[0])
                # The frozen layer's bytes (libvirtd reads the pool's files), then that layer and
                # whatever stands under it as one standalone compressed qcow2.
                layer = work / "layer.qcow2"
                libvirt.download_volume(plain(m.frozen[0]), layer)
                process.check(
                    [
                        "qemu-img",
                        "convert",
                        "-q",
                        "-c",
                        "-O",
                        "qcow2",
                        "-o",
                        "compression_type=zstd",
                        str(layer),
                        str(disk),
                    ],
                    timeout=timeouts.IMAGE,
                )
                files.remove(layer)
                sums[disk.name] = _digest(disk)
                memory = work / (plain(m.memory_image) + ".gz")
                with files.open_regular_read(image_dir(wd) / plain(m.memory_image)) as src:
                    with (
                        files.atomic(memory, mode=0o600) as out,
                        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as dst,
                    ):
                        while block := src.read(CHUNK):
                            dst.write(block)
                sums[memory.name] = _digest(memory)
            for name in (wd.ssh_key.name, wd.ssh_key.name + ".pub"):
                # A VM that can take a new key gets one where it is restored: no key travels then.
                if not warmimage.rekeys(meta) and (image_dir(wd) / name).is_file():
                    files.copy_regular(image_dir(wd) / name, work / name, mode=0o600)
                    sums[name] = _digest(work / name)
            if wd.ssh_key.name in sums:
                ui.warning(
                    f"{box.name}'s VM cannot take a new SSH key where it is restored (no guest agent that "
                    f"may run vagabond's key script): {target.name} carries its private key, which opens "
                    "every VM restored from it"
                )
            travelling = dict(meta)
            travelling["machines"] = [m.__dict__ | {"frozen": [m.frozen[0]]} for m in ms]
            manifest = {"format": FORMAT, "meta": travelling, "files": sums}
            files.write_bytes(work / MANIFEST, json.dumps(manifest, sort_keys=True).encode(), mode=0o600)
            made = work / "archive.tar"
            with (
                files.atomic(made, mode=0o600) as out,
                tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name in [MANIFEST, *sums]:
                    info = tar.gettarinfo(str(work / name), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o600
                    with files.open_regular_read(work / name) as fh:
                        tar.addfile(info, fh)
            files.move(made, target, mode=0o600)
    size = target.stat().st_size
    ui.info(f"exported the warm image of {box.name} to {target} ({size / 2**20:.0f} MiB)")
    return {"path": str(target), "size": size, "files": sorted(sums)}


def _digest(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": files.sha256_file(path)}


# --- import -------------------------------------------------------------------------------------


def import_(box: Box, wd: Workdir, archive: Path, wanted: dict, *, source: Published | None = None) -> dict:
    """The archive's warm image in place of this work directory's, when it matches ``wanted``
    (warmimage.key_for of this up); its description. Mismatch when it is of another VM; WarmError
    when it is not a warm image vagabond can trust (nothing of it is kept either way). ``source``:
    the prebuilt box whose catalog listed it, which the VM is then said to be made from."""
    archive = Path(archive)
    try:
        return _import(box, wd, archive, wanted, source)
    except (tarfile.TarError, ValueError, EOFError, zlib.error) as exc:  # a file cut short, or not JSON
        raise WarmError(f"{archive} is not a whole warm image archive: {exc}") from None


def take_in(box: Box, wd: Workdir, archive: Path, wanted: dict, *, step: str, named: str, source=None) -> bool:
    """import_ for `up`: True when taken in; otherwise False and one line that says why, which
    names the image as ``named`` (another VM's: said; one that cannot be trusted: a warning)."""
    try:
        with ui.step(step):
            import_(box, wd, archive, wanted, source=source)
    except Mismatch as why:
        ui.info(f"booting cold, not from {named}: {why}")
        return False
    except Interrupted:
        raise  # a cancelled run ends, it does not boot cold
    except (VagabondError, OSError) as exc:
        message = exc.message if isinstance(exc, VagabondError) else f"{archive}: {exc.strerror or exc}"
        ui.warning(f"not using {named}: {message}", title=f"vagabond up {box.name}")
        return False
    return True


def _import(box: Box, wd: Workdir, archive: Path, wanted: dict, source: Published | None) -> dict:
    files.make_dirs(image_dir(wd).parent, mode=0o700)  # as save makes it: private to its user
    with files.open_regular_read(archive) as fh, files.private_dir(image_dir(wd).parent, ".vagabond-import-") as work:
        size = os.fstat(fh.fileno()).st_size
        try:
            tar = tarfile.open(fileobj=fh, mode="r|")
        except tarfile.TarError as exc:
            raise WarmError(f"{archive} is not a warm image archive: {exc}") from None
        with tar:
            members = iter(tar)
            first = _next(members, archive)
            if first is None or first.name != MANIFEST or not first.isreg() or first.size > MANIFEST_MAX:
                raise WarmError(f"{archive} is not a warm image archive: it does not start with its {MANIFEST}")
            manifest = files.loads(tar.extractfile(first).read(), f"{archive}:{MANIFEST}")
            meta, expected = _checked_manifest(box, wd, manifest, archive)
            if sum(e["size"] for e in expected.values()) > size:
                raise WarmError(f"{archive} is smaller than the files its manifest names")
            why = warmimage.difference(meta["key"], wanted)
            if why:
                raise Mismatch(why)
            networks = _networks(meta)
            caps = _caps(meta)
            while (member := _next(members, archive)) is not None:
                _take(tar, member, expected, caps, work, archive)
            missing = sorted(n for n, e in expected.items() if not e.get("taken"))
            if missing:
                raise WarmError(f"{archive} lacks {', '.join(missing)}, which its manifest names")
        for m in machines(meta):
            _check_disk(work / m.frozen[0], archive)
            _check_memory_image(work / m.memory_image, wd, m, meta, archive)
        return _install(box, wd, meta, work, networks, source)


def _next(members, archive: Path):
    try:
        return next(members, None)
    except tarfile.TarError as exc:
        raise WarmError(f"{archive} is not a whole warm image archive: {exc}") from None


def _checked_manifest(box: Box, wd: Workdir, manifest: object, archive: Path) -> tuple[dict, dict]:
    """The warm image's description (this work directory's, as save writes it, one standalone
    disk layer per machine) and the files it needs, by member name."""
    bad = f"{archive} is not a warm image vagabond can use"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WarmError(f"{bad}: its manifest is not of format {FORMAT}")
    meta, sums = manifest.get("meta"), manifest.get("files")
    if not warmimage._valid(meta):
        raise WarmError(f"{bad}: its description is malformed")
    names = [n for m in machines(meta) for n in (m.memory_image, *m.frozen)]
    for name in names:
        plain(name)  # a name out of its directory is hostile, not another VM's
    if len(set(names)) != len(names) or not all(
        MEMORY_NAME.fullmatch(m.memory_image) and all(LAYER_NAME.fullmatch(n) for n in m.frozen) for m in machines(meta)
    ):
        raise WarmError(f"{bad}: its files' names are not those save gives")
    if not warmimage._ours(wd, meta):
        raise Mismatch(warmimage.KEY_NAMES["domains"] + " differs")
    if sorted(m.name for m in machines(meta)) != sorted(box.machine_names()):
        raise Mismatch("the box's machines differ")
    if not isinstance(sums, dict):
        raise WarmError(f"{bad}: its manifest lists no files")
    wanted = {}
    for m in machines(meta):
        if len(m.frozen) != 1:
            raise WarmError(f"{bad}: machine {m.name} has {len(m.frozen)} disk layers, not one standalone disk")
        wanted[m.frozen[0]] = "disk"
        wanted[m.memory_image + ".gz"] = "memory"
    for name in (wd.ssh_key.name, wd.ssh_key.name + ".pub"):
        if name in sums:
            wanted[name] = "key"
    if wd.ssh_key.name not in wanted and not warmimage.rekeys(meta):
        raise WarmError(f"{bad}: it holds no SSH key, and its VM has no guest agent to take a new one")
    if any(kind == "key" for kind in wanted.values()) and warmimage.rekeys(meta):
        raise WarmError(f"{bad}: it holds an SSH key, which a VM that takes a new one never travels with")
    if set(sums) != set(wanted):
        raise WarmError(f"{bad}: its manifest lists {sorted(sums)}, not {sorted(wanted)}")
    expected = {}
    for name, kind in wanted.items():
        entry = sums[name]
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("size"), int)
            or isinstance(entry.get("size"), bool)
            or not 0 < entry["size"] <= DISK_MAX
            or not isinstance(entry.get("sha256"), str)
            or not SHA256.fullmatch(entry["sha256"])
        ):
            raise WarmError(f"{bad}: its manifest's entry for {name} is malformed")
        if kind == "key" and entry["size"] > KEY_MAX:
            raise WarmError(f"{bad}: its {name} is larger than a key")
        expected[plain(name)] = {"kind": kind, "size": entry["size"], "sha256": entry["sha256"]}
    return meta, expected


def _caps(meta: dict) -> dict[str, int]:
    """How large each memory image may be once unpacked: its VM's memory and some."""
    memory = meta["key"].get("memory", {})
    return {
        m.memory_image + ".gz": int(memory.get(m.name, 0)) * 2**20 + MEMORY_SLACK
        for m in machines(meta)
        if isinstance(memory.get(m.name), int)
    }


def _take(tar: tarfile.TarFile, member: tarfile.TarInfo, expected: dict, caps: dict, work: Path, archive: Path):
    """One member written into the private directory, as the manifest says it is (its size and
    sha256; a memory image unpacked within its cap); anything else refuses the archive."""
    entry = expected.get(member.name)
    plain_file = member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None
    if entry is None or entry.get("taken") or not plain_file or member.size != entry["size"]:
        raise WarmError(f"{archive} holds {member.name!r}, which is not a file its manifest names (or not as named)")
    source = tar.extractfile(member)
    digest = hashlib.sha256()
    if entry["kind"] == "memory":
        cap = caps.get(member.name, 0)
        target = work / member.name.removesuffix(".gz")
        written = 0

        class Hashing:
            def read(self, n=-1):
                block = source.read(n)
                digest.update(block)
                return block

        with files.atomic(target, mode=0o600) as out:
            try:
                with gzip.GzipFile(fileobj=Hashing(), mode="rb") as unpacked:
                    while block := unpacked.read(CHUNK):
                        written += len(block)
                        if written > cap:
                            raise WarmError(f"{archive}: {member.name} unpacks to more than its VM's memory")
                        out.write(block)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise WarmError(f"{archive}: {member.name} is not a whole gzip file: {exc}") from None
    else:
        with files.atomic(work / member.name, mode=0o600) as out:
            while block := source.read(CHUNK):
                digest.update(block)
                out.write(block)
    if digest.hexdigest() != entry["sha256"]:
        raise WarmError(f"{archive}: {member.name} is not the file its manifest names (sha256 differs)")
    entry["taken"] = True


def _check_disk(disk: Path, archive: Path) -> None:
    """A qcow2 that stands alone: no backing file and no external data file for QEMU to open."""
    info = process.check(
        # Limited as OpenStack limits it for an image from elsewhere: 1 GiB of memory, 30 s of CPU.
        ["prlimit", "--as=1073741824", "--cpu=30", "qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(disk)],
        timeout=timeouts.TOOL,
    ).stdout
    data = files.loads(info, f"qemu-img info {disk.name}")
    specific = (data.get("format-specific") or {}).get("data") or {} if isinstance(data, dict) else {}
    if (
        not isinstance(data, dict)
        or data.get("format") != "qcow2"
        or "backing-filename" in data
        or "full-backing-filename" in data
        or "data-file" in specific
        or not isinstance(data.get("virtual-size"), int)
        or data["virtual-size"] > DISK_MAX
    ):
        raise WarmError(f"{archive}: {disk.name} is not a standalone qcow2 disk")


def _check_memory_image(image: Path, wd: Workdir, m: warmimage.Machine, meta: dict, archive: Path) -> None:
    """The domain the memory image defines is one vagabond would make for this machine; the disk
    chain it recorded goes (libvirt finds the chain from the disk: the overlay over this layer)."""
    try:
        xml = libvirt.saved_domain_xml(image)
    except CommandFailed as exc:  # libvirt says what it could not read
        raise WarmError(f"{archive}: the memory image of {m.name} is not one libvirt reads: {exc}") from None
    where = f"{archive}: the memory image of {m.name}"
    cleaned = warmchecks.domain(
        xml,
        domain=wd.domain(m.name),
        uuid=m.uuid,
        memory_mib=meta["key"]["memory"][m.name],
        disk=m.disk,
        networks={libvirt.MGMT_NETWORK},
        serial_log=str(libvirt.serial_log(wd.domain(m.name))),
        emulators=libvirt.emulators(),
        where=where,
    )
    macs = [e.get("address") for e in ElementTree.fromstring(cleaned).iter("mac")]
    if macs != [i["mac"] for i in m.interfaces]:
        raise WarmError(f"{where} has the network cards {macs}, not those its description names")
    libvirt.define_saved_image(image, cleaned)


def _install(box: Box, wd: Workdir, meta: dict, work: Path, networks: dict[str, str], source: Published | None) -> dict:
    """The checked files in place: the disk layer in the pool (recorded first), the memory image
    and key in the cache, and a description whose every value vagabond chose or checked."""
    key = meta["key"]
    installed = {
        "key": key,
        "saved_at": meta["saved_at"],
        "box": box.name,
        "machines": meta["machines"],
        "vagrant": {
            m: {n: t for n, t in saved.items() if n in VAGRANT_KEPT and len(t) < 4096}
            for m, saved in meta.get("vagrant", {}).items()
            if m in box.machine_names()
        },
        "networks": networks,
        "state": {
            "sync_project": key["provisioning"]["sync"],
            "box": box.name,
            "driver": key["driver"],
            "driver_reason": "as the warm image was made",
            "prefix": wd.prefix,
            "machines": box.machine_names(),
            "primary": box.primary(),
            "env": box.spec.env,
            "extra_vars_sha256": key["provisioning"]["extra_vars"],
            "prebuilt": source.__dict__ if source else warmchecks.prebuilt(meta.get("state", {}).get("prebuilt")),
            "provisioned": True,
            "playbooks_ran": True,
            "ssh_key": True,
        },
        "ssh": warmchecks.ssh_config(meta.get("ssh", ""), wd.ssh_key, libvirt.MGMT_SUBNET),
        "workdir": str(wd.path),
        "imported": True,
    }
    target = image_dir(wd)
    warmimage.drop(wd)
    files.make_dirs(target.parent, mode=0o700)
    files.make_dirs(target, mode=0o700)
    layers = [m.frozen[0] for m in machines(meta)]
    taken = [n for n in layers if libvirt.volume_exists(n) or (libvirt.POOL_DIR / n).is_symlink()]
    if taken:
        raise WarmError(f"{libvirt.POOL_DIR} already holds {', '.join(taken)}", hint="vagabond gc")
    ledger.add_warm(layers)
    try:
        for m in machines(meta):
            libvirt.upload_volume(m.frozen[0], work / m.frozen[0])
            files.move(work / m.memory_image, target / m.memory_image, mode=0o600)
        for name in (wd.ssh_key.name, wd.ssh_key.name + ".pub"):
            if (work / name).is_file():
                files.move(work / name, target / name, mode=0o600)
        files.write_json(target / META, installed, mode=0o600, sort_keys=True)
    except BaseException:
        for n in layers:
            libvirt.delete_volume(n)
        ledger.forget(warm=layers)
        files.remove(target)
        raise
    return installed


def _networks(meta: dict) -> dict[str, str]:
    """The networks the VM's interfaces are on, as this host defines them: vagabond's management
    network, from vagabond's own definition (the archive's is not used), and no other (a VM taken
    in must not join a network of someone else's)."""
    names = {i["network"] for m in machines(meta) for i in m.interfaces}
    others = sorted(n for n in names if n != libvirt.MGMT_NETWORK)
    if others:
        raise Mismatch(f"its network {warmimage._shown(', '.join(others))} is not vagabond's management network")
    return {libvirt.MGMT_NETWORK: libvirt.MGMT_NETWORK_XML} if names else {}
