"""Warm images as they are kept: what one is (the key that must match to restore it, and per
machine its memory image, its disk path and the frozen layers under it), where it lives, and
which of its files are still needed.

A warm image belongs to one work directory: the memory image holds the domain's name, UUID, MAC
addresses and the path of its disk, so it comes back as the very VM that was saved. It lives in
vagabond's cache (warm/<prefix>/, private to its user); its disk is a frozen qcow2 layer in
libvirt's pool (qemu must be able to read it where AppArmor confines it), recorded so that
`vagabond gc` keeps it while a warm image needs it and removes it after. Every name read back from
a description is checked to be this work directory's own before anything is opened or removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vagabond import files, paths
from vagabond.definition.schema import Box
from vagabond.errors import VagabondError, WarmError
from vagabond.host import ledger, libvirt
from vagabond.vm import playbooks, render
from vagabond.vm.workdir import Workdir

FORMAT = 2
META = "meta.json"
FROZEN_PREFIX = "vagabond-warm-"  # never a work directory's prefix, which `destroy` removes by name


def frozen_prefix(wd: Workdir) -> str:
    """The start of every frozen layer's name of this work directory's warm images."""
    return FROZEN_PREFIX + wd.prefix.removeprefix("vagabond-")


def image_dir(wd: Workdir) -> Path:
    return paths.cache_dir() / "warm" / wd.prefix.rstrip("-")


def _host_cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else "unknown"


def extra_vars_digest(extra_vars) -> str:
    """What -e asked for, as the key and the work directory's state keep it: a digest, never the
    values (a password given with -e stays out of files others can read). A variables file (@FILE)
    counts by its content too: changed since, it provisions another VM."""
    parts = []
    for value in extra_vars:
        parts.append(value)
        if value.startswith("@"):
            try:
                parts.append(files.sha256_file(Path(value[1:])))
            except OSError:
                parts.append("unreadable")
    return files.sha256_bytes(json.dumps(parts).encode())


def key_for(box: Box, wd: Workdir, driver: str, *, extra_vars_sha256: str, sync_project=None, provision=True) -> dict:
    """What must be the same for a memory image to come back as a working VM, by name. The CPU
    under kvm is the host's own (host-passthrough), so the host's model counts; under qemu the
    named model the Vagrantfile gives."""
    return {
        "format": FORMAT,
        "definition": playbooks.definition_digest(box),
        "provisioning": {"extra_vars": extra_vars_sha256, "sync": sync_project, "provision": bool(provision)},
        "driver": driver,
        "arch": platform.machine(),
        "qemu": libvirt.hypervisor_version(),
        "cpu": f"host-passthrough ({_host_cpu()})" if driver == "kvm" else render.cpu_model_for(box),
        "memory": {name: res.memory for name, _, res, _ in box.machine_specs()},
        "domains": [wd.domain(m) for m in box.machine_names()],
    }


def key_of_vm(box: Box, wd: Workdir) -> dict:
    """The key a warm image of the VM here has (saved now): as its work directory's state says it
    was made and provisioned."""
    state = wd.read_state()
    return key_for(
        box,
        wd,
        state.get("driver") or "qemu",
        extra_vars_sha256=state.get("extra_vars_sha256") or extra_vars_digest(()),
        sync_project=state.get("sync_project"),
        provision=True,
    )


def key_digest(key: dict) -> str:
    """A warm image's key in a name (a CI cache's key): equal digests, equal keys."""
    return files.sha256_bytes(json.dumps(key, sort_keys=True).encode())[:32]


KEY_NAMES = {
    "format": "the warm image format",
    "definition": "the box definition (its playbooks or settings changed)",
    "provisioning": "how it was provisioned (-e, --sync, --no-provision)",
    "driver": "the driver",
    "arch": "the host architecture",
    "qemu": "the QEMU version",
    "cpu": "the CPU model",
    "memory": "the memory size",
    "domains": "the work directory",
}


def _shown(value: object) -> str:
    """A value from a key said in a line: printable, short (a key from elsewhere may hold anything)."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= 80 else text[:77] + "..."


def difference(saved: dict, wanted: dict) -> str | None:
    """None when the keys match; else which part differs, said for a person."""
    for name, label in KEY_NAMES.items():
        if saved.get(name) != wanted.get(name):
            if name in ("definition", "provisioning", "domains", "memory"):
                return f"{label} differs"
            return f"{label} differs (saved {_shown(saved.get(name))}, now {_shown(wanted.get(name))})"
    return None


@dataclass
class Machine:
    name: str
    domain: str
    uuid: str  # the domain's, as saved: reset takes only that domain
    memory_image: str  # file name in the image directory
    disk: str  # the domain's disk path, where each restore puts a fresh overlay
    frozen: list[str]  # the warm layers under that overlay (top first), in the pool's directory
    interfaces: list[dict]  # {"mac":, "network":}
    agent: bool  # when saved, its guest agent took its key anew: a restore from elsewhere gives it a new one


def load(wd: Workdir) -> dict | None:
    """The work directory's warm image description, or None (none, or not one vagabond wrote)."""
    path = image_dir(wd) / META
    try:
        with files.open_regular_read(path) as fh:
            meta = files.loads(fh.read(), str(path))
    except (OSError, ValueError):
        return None
    return meta if _valid(meta) and _ours(wd, meta) else None


def _valid(meta: object) -> bool:
    """A description as save writes it: a key, and per machine its names, files and interfaces."""
    if not isinstance(meta, dict) or not isinstance(meta.get("key"), dict):
        return False
    if not isinstance(meta.get("machines"), list) or not meta["machines"]:
        return False
    for m in meta["machines"]:
        # "agent" came with format 2: an image from before has none (and up says its format differs).
        if not isinstance(m, dict) or set(m) | {"agent"} != set(Machine.__dataclass_fields__):
            return False
        if not all(isinstance(m[k], str) for k in ("name", "domain", "uuid", "memory_image", "disk")):
            return False
        if not isinstance(m.get("agent", False), bool):
            return False
        if not isinstance(m["frozen"], list) or not m["frozen"] or not all(isinstance(x, str) for x in m["frozen"]):
            return False
        if not isinstance(m["interfaces"], list) or not all(
            isinstance(i, dict) and isinstance(i.get("mac"), str) and isinstance(i.get("network"), str)
            for i in m["interfaces"]
        ):
            return False
    networks = meta.get("networks", {})
    named = {i["network"] for m in meta["machines"] for i in m["interfaces"]}
    if (
        not isinstance(networks, dict)
        or not set(networks) <= named
        or not all(isinstance(x, str) for x in networks.values())
    ):
        return False
    vagrant = meta.get("vagrant", {})
    if not isinstance(vagrant, dict) or not all(
        isinstance(v, dict) and all(isinstance(t, str) for t in v.values()) for v in vagrant.values()
    ):
        return False
    if not isinstance(meta.get("state", {}), dict) or not isinstance(meta.get("ssh", ""), str):
        return False
    if any(word in meta.get("ssh", "").lower() for word in ("proxycommand", "localcommand", "match ", "include ")):
        return False  # the SSH configuration as vagrant-libvirt writes it runs nothing on the host
    return isinstance(meta.get("saved_at"), (int, float))


def _ours(wd: Workdir, meta: dict) -> bool:
    """Every name in the description is one of this work directory's: its domains, its disk
    volumes in the pool, frozen layers of vagabond's, plain file names (no path out of the cache)."""
    for m in machines(meta):
        disk = Path(m.disk)
        if wd.box is not None and m.name not in wd.box.machine_names():
            return False
        if m.domain != wd.domain(m.name) or disk.parent != libvirt.POOL_DIR or not disk.name.startswith(wd.prefix):
            return False
        names = [m.memory_image, *m.frozen]
        if any("/" in n or n.startswith(".") or n != os.path.basename(n) for n in names):
            return False
        if not m.frozen or not all(n.startswith(frozen_prefix(wd)) for n in m.frozen):
            return False
    return True


def machines(meta: dict) -> list[Machine]:
    return [Machine(**({"agent": False} | m)) for m in meta["machines"]]


def rekeys(meta: dict) -> bool:
    """Whether the VM can take a new SSH key after a restore (every machine's guest agent can give
    it one): an exported image then carries no key, and the VM restored from it gets a new one."""
    return all(m.agent for m in machines(meta))


def missing_parts(wd: Workdir, meta: dict) -> str | None:
    """None when every file the image needs is there; else what is gone."""
    for m in machines(meta):
        if not (image_dir(wd) / plain(m.memory_image)).is_file():
            return f"its memory image {m.memory_image} is gone"
        for layer in m.frozen:
            if not (libvirt.POOL_DIR / plain(layer)).is_file():
                return f"its disk layer {layer} is gone from {libvirt.POOL_DIR}"
    return None


def plain(name: str) -> str:
    """A file name from a description on disk, never a path out of its directory."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise WarmError(f"the warm image description names {name!r}, which is not a plain file name")
    return name


def drop(wd: Workdir) -> list[str]:
    """Remove the work directory's warm image: its memory images and the disk layers no domain uses."""
    return _drop_directory(image_dir(wd), load(wd))


def drop_unneeded_layers(wd: Workdir) -> list[str]:
    """After `destroy`: this work directory's frozen disk layers that no domain and no warm image
    needs any more (a VM ran on its overlay while its warm image was dropped); only layers the
    record says a vagabond save made."""
    recorded = set(ledger.read()["warm"])
    candidates = [v for v in libvirt.volumes(frozen_prefix(wd)) if v in recorded]
    if not candidates:
        return []
    return _remove_layers(candidates, keep=libvirt.volumes_in_use() | layers_in_use())


def _remove_layers(names: list[str], *, keep: set[str]) -> list[str]:
    """The pool's frozen layers among ``names`` that are not in ``keep``, removed, the pool told
    and the record updated; what was removed, said for a person."""
    gone = [n for n in names if n.startswith(FROZEN_PREFIX) and n not in keep and libvirt.delete_volume(n)]
    if gone:
        ledger.forget(warm=gone)
    return [f"disk layer {n}" for n in gone]


def _drop_directory(directory: Path, meta: dict | None) -> list[str]:
    removed = []
    if meta is not None:
        layers = [plain(layer) for m in meta["machines"] for layer in m["frozen"]]
        removed += _remove_layers(layers, keep=libvirt.volumes_in_use())
    if files.remove(directory):
        removed.append(f"warm image {directory}")
    return removed


def _descriptions() -> list[tuple[Path, dict]]:
    """Every warm image in this cache, with its description (as far as it is one)."""
    root = paths.cache_dir() / "warm"
    found = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        path = entry / META
        try:
            with files.open_regular_read(path) as fh:
                meta = files.loads(fh.read(), str(path))
            if _valid(meta):
                found.append((entry, meta))
        except (OSError, ValueError, VagabondError):
            continue
    return found


def drop_orphaned() -> list[str]:
    """`vagabond gc`: the warm images whose work directory is gone (nothing can restore them)."""
    removed = []
    for directory, meta in _descriptions():
        workdir = meta.get("workdir")
        if isinstance(workdir, str) and workdir.startswith("/") and not Path(workdir).is_dir():
            removed += _drop_directory(directory, meta)
    return removed


def layers_in_use() -> set[str]:
    """Every pool volume a warm image in this cache needs: its frozen layers and what they stand on."""
    used: set[str] = set()
    for _, meta in _descriptions():
        for layer in [layer for m in meta["machines"] for layer in m["frozen"]]:
            if "/" not in layer:
                used.add(layer)
                with contextlib.suppress(ValueError, VagabondError):
                    used |= libvirt.volumes_in_chain(str(libvirt.POOL_DIR / layer))
    return used


def describe(meta: dict) -> dict[str, Any]:
    return {
        "saved_at": meta.get("saved_at"),
        "key": meta.get("key"),
        "machines": [{"name": m.name, "memory_image": m.memory_image, "disk_layers": m.frozen} for m in machines(meta)],
    }
