"""The network namespace VMs live in, when the host has one for them (scripts/sandbox.sh).

On a host without a service manager (containers, some CI machines) libvirtd runs inside a private
network namespace, so the guests' networks (192.168.121.0/24 ...) exist only there. vagabond
itself stays where the host's network is: downloads (mmdebstrap, cloud images, box catalogs) need
it. Only the programs that talk to VMs (vagrant up and friends, ssh, ansible-playbook, libvirtd)
are started inside the namespace; process.run asks this module how.

The namespace comes from $VAGABOND_NETNS (empty: none), else from the file that
`scripts/sandbox.sh start` writes; on a host with a service manager there is neither, and
everything runs where vagabond runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from vagabond.errors import UsageError

# Written by `scripts/sandbox.sh start`, removed by `stop`; /run is gone after a reboot, as is the namespace.
SETTING = Path("/run/vagabond/netns")
NETNS_DIR = Path("/run/netns")


def configured() -> str | None:
    """The namespace's name, or None when VMs share vagabond's own network."""
    if "VAGABOND_NETNS" in os.environ:
        name = os.environ["VAGABOND_NETNS"].strip()
    else:
        try:
            name = SETTING.read_text().strip()
        except OSError:
            return None
    return name or None


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def wrap(argv: list[str]) -> list[str]:
    """``argv`` as started inside the VMs' namespace (unchanged when there is none, or when this
    process already lives in it)."""
    name = configured()
    if name is None:
        return argv
    if "/" in name or name in (".", ".."):
        raise UsageError(f"VAGABOND_NETNS={name!r} is not a network namespace name")
    target = _inode(NETNS_DIR / name)
    if target is None:
        raise UsageError(
            f"the VMs' network namespace {name!r} does not exist",
            hint="start it with 'scripts/sandbox.sh start', or set VAGABOND_NETNS= to use this host's network",
        )
    if target == _inode(Path("/proc/self/ns/net")):
        return argv
    return ["ip", "netns", "exec", name, *argv]
