"""libvirt objects by name, through virsh: what vagabond created, found even without Vagrant's state."""

from __future__ import annotations

import os
import re

from vagabond import process

POOL = "default"
MGMT_NETWORK = "vagrant-libvirt"


def uri() -> str:
    return os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


def virsh(*args: str, check: bool = True, timeout: float = 120) -> process.Result:
    return process.run(["virsh", "-c", uri(), *args], check=check, timeout=timeout)


def domains(prefix: str = "") -> dict[str, str]:
    """name -> state ('running', 'shut off', ...) for every domain whose name starts with prefix."""
    out = virsh("list", "--all", "--name").stdout.split()
    found = {}
    for name in out:
        if name.startswith(prefix):
            found[name] = virsh("domstate", name, check=False).stdout.strip() or "unknown"
    return found


def volumes(prefix: str = "", pool: str = POOL) -> list[str]:
    result = virsh("vol-list", pool, check=False)
    if not result.ok:
        return []
    names = []
    for line in result.stdout.splitlines()[2:]:
        parts = line.split()
        if parts and parts[0].startswith(prefix):
            names.append(parts[0])
    return names


def networks() -> list[str]:
    return virsh("net-list", "--all", "--name").stdout.split()


def domain_volumes(name: str) -> list[str]:
    """Source files of the domain's disks (to delete the volumes that belong to it)."""
    xml = virsh("dumpxml", name, check=False).stdout
    return re.findall(r"<source file='([^']+)'", xml)


def remove_domain(name: str) -> list[str]:
    """Stop and undefine a domain and delete its own disk volumes; returns what was removed."""
    removed = []
    files = domain_volumes(name)
    state = virsh("domstate", name, check=False).stdout.strip()
    if state in ("running", "paused", "in shutdown", "idle", "blocked"):
        virsh("destroy", name, check=False)
    if virsh("undefine", name, "--nvram", check=False).ok or virsh("undefine", name, check=False).ok:
        removed.append(f"domain {name}")
    for path in files:
        vol = os.path.basename(path)
        if vol.startswith(name) and virsh("vol-delete", "--pool", POOL, vol, check=False).ok:
            removed.append(f"volume {vol}")
    return removed


def network_in_use(network: str) -> bool:
    for name in virsh("list", "--all", "--name").stdout.split():
        if f"<source network='{network}'" in virsh("dumpxml", name, check=False).stdout:
            return True
    return False


def remove_network(network: str) -> bool:
    if network not in networks():
        return False
    virsh("net-destroy", network, check=False)
    return virsh("net-undefine", network, check=False).ok


def console_log(name: str) -> str:
    """libvirt's per-domain qemu log: the command line and qemu's own errors."""
    path = f"/var/log/libvirt/qemu/{name}.log"
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""
