"""What is up: the one answer for a box with no VM here, a box's status, and `vagabond ps`, every
VM vagabond runs on this host."""

from __future__ import annotations

import time
from pathlib import Path

from vagabond.definition.schema import Box
from vagabond.errors import NotRunning
from vagabond.host import ledger, libvirt
from vagabond.vm import remote
from vagabond.vm.workdir import Workdir


def require_up(wd: Workdir) -> None:
    """The one answer for a box with no VM in this work directory (run, ssh, halt, status, provision)."""
    # Files first: `vagabond run` must not pay for a virsh call. (The Vagrantfile stays after a
    # destroy, as a rendered file a user may keep; the VM's state and ssh_config do not.)
    if not wd.ssh_config.is_file() and not wd.state_file.is_file() and not libvirt.domains(wd.prefix):
        raise NotRunning(
            f"box {wd.box.name!r} is not up here ({wd.path})", hint=f"run 'vagabond up {wd.box.name}' first"
        )


def running() -> list[dict]:
    """`vagabond ps`: every VM of a work directory vagabond recorded, one row per machine, with what
    libvirt says of its domain now; a work directory whose domains are all gone is left out."""
    recorded = ledger.read()["workdirs"]
    domains = libvirt.domains(tuple(recorded))  # the state of ours only: one virsh call per domain
    rows = []
    now = time.time()
    for prefix, path in sorted(recorded.items(), key=lambda item: item[1]):
        mine = {name: st for name, st in domains.items() if name.startswith(prefix)}
        if not mine:
            continue
        wd = Workdir.at(Path(path))
        state = wd.read_state() if state_matches(wd, prefix) else {}
        address = remote.addresses(wd) if state else {}
        for domain, domain_state in sorted(mine.items()):
            machine = domain.removeprefix(prefix)
            up_at = state.get("up_at")
            rows.append(
                {
                    "box": state.get("box") or "?",
                    "workdir": path,
                    "machine": machine,
                    "domain": domain,
                    "state": domain_state,
                    "driver": state.get("driver"),
                    "address": address.get(machine),
                    "up_at": up_at,
                    "age_seconds": round(now - up_at) if isinstance(up_at, (int, float)) else None,
                }
            )
    return rows


def state_matches(wd: Workdir, prefix: str) -> bool:
    """Does this work directory still describe the VM with these domains (not one made since)?"""
    return wd.read_state().get("prefix") == prefix


def status(box: Box, wd: Workdir) -> dict:
    """What Vagrant and libvirt say, without taking the lock (status must answer while up runs)."""
    if not wd.busy():
        require_up(wd)
    state = wd.read_state()
    domains = libvirt.domains(wd.prefix)
    result = {
        "box": box.name,
        "workdir": str(wd.path),
        "driver": state.get("driver"),
        "provisioned": bool(state.get("provisioned")),
        "machines": [],
    }
    for machine in box.machine_names():
        domain = wd.domain(machine)
        result["machines"].append({"name": machine, "domain": domain, "state": domains.get(domain, "not created")})
    return result
