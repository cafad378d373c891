"""libvirt objects by name, through virsh: what vagabond created, found even without Vagrant's state.

The only module that runs virsh and knows where libvirt keeps a domain's logs. virsh talks to
libvirtd over its Unix socket, so it works the same from the host and from the VMs' namespace.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from vagabond import files, process, timeouts, ui
from vagabond.errors import Busy, CommandFailed, UnsafePath
from vagabond.host.vagrant import store_name

log = logging.getLogger(__name__)

POOL = "default"
POOL_DIR = Path("/var/lib/libvirt/images")  # where the pool lives when vagabond defines it
MGMT_NETWORK = "vagrant-libvirt"
MGMT_SUBNET = "192.168.121.0/24"  # vagrant-libvirt's management network (its default, which the Vagrantfile keeps)
# libvirt writes each domain's qemu log here; vagabond's Vagrantfile puts the serial console next to it.
LOG_DIR = Path("/var/log/libvirt/qemu")


# Host-wide, like the libvirt objects it guards: every user of this host's libvirt takes turns
# here. In a directory only root can write (/run is root's; scripts/sandbox.sh keeps its setting
# beside it), so no one can plant a link at its name; root creates it 0644 and others lock it
# through a read-only descriptor.
TURN_LOCK = Path("/run/vagabond/libvirt.lock")


def _turn_fd() -> int | None:
    """The turn's lock file, opened without following a link; None where this user can neither
    open nor create it (a non-root run before root made it): that run goes without a turn."""
    directory = TURN_LOCK.parent
    if os.geteuid() == 0:
        files.make_dirs(directory)
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise UnsafePath(
            f"refusing the turn lock in {directory}: it is not a directory only root can write",
            hint=f"remove {directory}; vagabond (as root) makes it again",
        )
    try:
        return files.open_lock(TURN_LOCK)
    except PermissionError:
        return None


class CreationTurn:
    """One vagabond at a time creates its domain (and, first, vagrant-libvirt's management network)
    or removes that network: two runs doing so at once race in vagrant-libvirt (both create the
    network, or one removes it while the other is about to use it). The turn is held from the start
    of `vagrant up` until its domain is waiting for an IP address, so boots still run side by side.
    The wait for it ends after timeouts.TURN with an error naming whoever holds it."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._mutex = threading.Lock()  # release() comes from the thread that reads vagrant's output

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        fd = _turn_fd()
        if fd is None:
            log.debug("no turn: %s cannot be opened by this user", TURN_LOCK)
            return
        try:
            files.wait_for_lock(fd, TURN_LOCK, timeouts.TURN, "creating a domain or removing a network", on_wait)
        except BaseException:
            os.close(fd)
            raise
        with self._mutex:
            self._fd = fd

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> CreationTurn:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def uri() -> str:
    return os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


def run(*args: str, timeout: float = timeouts.VIRSH) -> process.Result:
    """virsh ARGS; the Result whatever the exit code."""
    return process.run(["virsh", "-c", uri(), *args], timeout=timeout)


def check(
    *args: str, timeout: float = timeouts.VIRSH, hint: str | None = None, input: str | None = None
) -> process.Result:
    """virsh ARGS (``input`` on its stdin); CommandFailed when it fails."""
    return process.check(["virsh", "-c", uri(), *args], timeout=timeout, hint=hint, input=input)


def answers() -> bool:
    return run("uri", timeout=timeouts.PROBE).ok


def serial_log(domain: str) -> Path:
    return LOG_DIR / f"{domain}-serial.log"


def qemu_log(domain: str) -> Path:
    return LOG_DIR / f"{domain}.log"


def domains(prefix: str | tuple[str, ...] = "") -> dict[str, str]:
    """name -> state ('running', 'shut off', ...) for every domain whose name starts with prefix
    (or with one of several; an empty tuple matches nothing)."""
    found = {}
    for name in check("list", "--all", "--name").stdout.split():
        if name.startswith(prefix):
            found[name] = run("domstate", name).stdout.strip() or "unknown"
    return found


def volumes(prefix: str = "", pool: str = POOL) -> list[str]:
    result = run("vol-list", pool)
    if not result.ok:
        return []
    names = []
    for line in result.stdout.splitlines()[2:]:
        parts = line.split()
        if parts and parts[0].startswith(prefix):
            names.append(parts[0])
    return names


def delete_volume(name: str, pool: str = POOL) -> bool:
    return run("vol-delete", "--pool", pool, name).ok


def volume_exists(name: str, pool: str = POOL) -> bool:
    return run("vol-info", "--pool", pool, name).ok


def _volume_xml(name: str, capacity: int, fmt: str, backing: str | None = None) -> str:
    """A volume only its owner reads (libvirt's default lets every user read a pool's files)."""
    chain = f"<backingStore><path>{escape(backing)}</path><format type='qcow2'/></backingStore>" if backing else ""
    return (
        f"<volume type='file'><name>{escape(name)}</name><capacity unit='bytes'>{int(capacity)}</capacity>"
        f"<target><format type='{fmt}'/><permissions><mode>0600</mode></permissions></target>{chain}</volume>"
    )


def volume_capacity(name: str, pool: str = POOL) -> int:
    found = re.search(r"^Capacity:\s+(\d+)", check("vol-info", "--bytes", "--pool", pool, name).stdout, re.M)
    return int(found[1]) if found else 0  # 0: libvirt then says what is wrong with the volume


def freeze_volume(source: str, target: str, pool: str = POOL) -> None:
    """A standalone copy of a volume (its backing chain folded in), 0600: libvirtd writes it, so a
    user in the libvirt group can freeze a disk in a pool's directory that only root may write."""
    xml = _volume_xml(target, volume_capacity(source, pool), "qcow2")
    check("vol-create-from", pool, "/dev/stdin", "--inputpool", pool, source, input=xml, timeout=timeouts.IMAGE)


def create_overlay(name: str, backing: str, pool: str = POOL) -> None:
    """A new, empty qcow2 volume over ``backing`` (a volume's path), 0600, made by libvirtd."""
    xml = _volume_xml(name, volume_capacity(os.path.basename(backing), pool), "qcow2", backing)
    check("vol-create", pool, "/dev/stdin", input=xml, timeout=timeouts.TOOL)


def upload_volume(name: str, source: Path, pool: str = POOL) -> None:
    """A new volume holding exactly the bytes of ``source`` (a qcow2 image vagabond checked), 0600."""
    check("vol-create", pool, "/dev/stdin", input=_volume_xml(name, source.stat().st_size, "raw"))
    try:
        check("vol-upload", "--pool", pool, name, str(source), timeout=timeouts.IMAGE)
    except BaseException:
        delete_volume(name, pool)
        raise
    refresh_pool(pool)  # libvirt reads the image's format from its header


def download_volume(name: str, target: Path, pool: str = POOL) -> None:
    """A volume's bytes into a file of the caller's (libvirtd reads what only root may)."""
    check("vol-download", "--pool", pool, name, str(target), timeout=timeouts.IMAGE)


def networks() -> list[str]:
    return check("net-list", "--all", "--name").stdout.split()


def domain_xml(name: str) -> str:
    return run("dumpxml", name).stdout


def domain_uuid(name: str) -> str:
    return check("domuuid", name).stdout.strip()


def domain_volumes(name: str) -> list[str]:
    """Source files of the domain's disks (to delete the volumes that belong to it)."""
    return re.findall(r"<source file='([^']+)'", domain_xml(name))


# vagrant-libvirt names a box's image volume <name, '/' as -VAGRANTSLASH->_vagrant_box_image_<version>_box[_N].img
BOX_IMAGE = re.compile(r"^(?P<box>.+)_vagrant_box_image_(?P<version>.+?)_box(?:_\d+)?\.img$")


def box_images(box_name: str) -> list[str]:
    """The pool's image volumes of a box (every version), as vagrant-libvirt uploads them."""
    stem = store_name(box_name) + "_vagrant_box_image_"
    return [v for v in volumes(stem) if BOX_IMAGE.match(v)]


def volumes_in_use(names: list[str] | None = None) -> set[str]:
    """Every volume the disks of these domains (every domain) read from, backing chains included."""
    used: set[str] = set()
    for name in check("list", "--all", "--name").stdout.split() if names is None else names:
        for disk in domain_volumes(name):
            used |= volumes_in_chain(disk)
    return used


def volumes_in_chain(disk: str) -> set[str]:
    """The file names of a disk image and of every image below it."""
    used = {os.path.basename(disk)}
    info = process.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", disk], timeout=timeouts.TOOL)
    if info.ok:
        for layer in json.loads(info.stdout):
            for key in ("filename", "backing-filename", "full-backing-filename"):
                if layer.get(key):
                    used.add(os.path.basename(layer[key]))
    return used


def remove_domain(name: str) -> list[str]:
    """Stop and undefine a domain and delete its own disk volumes; returns what was removed."""
    removed = []
    files = domain_volumes(name)
    if run("domstate", name).stdout.strip() in ("running", "paused", "in shutdown", "idle", "blocked"):
        run("destroy", name)
    if run("undefine", name, "--nvram").ok or run("undefine", name).ok:
        removed.append(f"domain {name}")
    for path in files:
        vol = os.path.basename(path)
        if vol.startswith(name) and delete_volume(vol):
            removed.append(f"volume {vol}")
    return removed


def network_users(network: str, among: list[str] | None = None) -> list[str]:
    """The domains (of every domain, or of those named) with a NIC on this network."""
    names = check("list", "--all", "--name").stdout.split() if among is None else among
    return [name for name in names if f"<source network='{network}'" in domain_xml(name)]


def network_in_use(network: str, among: list[str] | None = None) -> bool:
    return bool(network_users(network, among))


def remove_network(network: str) -> bool:
    if network not in networks():
        return False
    run("net-destroy", network)
    return run("net-undefine", network).ok


def remove_network_if_unused(network: str) -> bool:
    """Remove the network when no domain uses it, in turn with every run that is creating a domain
    (which may be about to use it). When the turn does not come (someone holds it for good), the
    network stays, and the reason is said: a cleanup must end."""
    try:
        with CreationTurn():
            if network not in networks():
                return False
            users = network_users(network)
            if users:
                ui.info(f"left network {network} in place: {len(users)} domain(s) use it ({', '.join(users[:3])})")
                return False
            return remove_network(network)
    except Busy as exc:
        ui.warning(f"left network {network} in place: {exc}")
        return False


# --- saved memory images (warm start) --------------------------------------------------------------


def save(domain: str, target: Path) -> None:
    """Stop the domain into a memory image at ``target`` (libvirtd writes it; the domain stays defined)."""
    check("save", domain, str(target), timeout=timeouts.SAVE, hint="the VM keeps running; see libvirt's qemu log")


def restore(image: Path, *, paused: bool = False) -> None:
    """Start the domain a memory image holds, as it was when saved (its disks must be as they were)."""
    check("restore", str(image), *(["--paused"] if paused else []), timeout=timeouts.SAVE)


def saved_domain_xml(image: Path) -> str:
    return check("save-image-dumpxml", str(image)).stdout


def define_saved_image(image: Path, xml: str) -> None:
    """Change the domain a memory image defines (libvirt takes only XML of the same machine)."""
    check("save-image-define", str(image), "/dev/stdin", input=xml)


def emulators() -> set[str]:
    """The QEMU programs this host's libvirt runs guests with."""
    root = ElementTree.fromstring(check("capabilities").stdout)
    return {e.text.strip() for e in root.iter("emulator") if e.text}


def define(xml: str) -> None:
    """Define a domain from its XML (read from stdin: no file of ours for libvirtd to open)."""
    check("define", "/dev/stdin", input=xml)


def stop(domain: str) -> None:
    """Pull the plug on a running domain (its definition stays)."""
    if run("domstate", domain).stdout.strip() not in ("shut off", ""):
        run("destroy", domain)


def set_link(domain: str, mac: str, up: bool) -> None:
    check("domif-setlink", domain, mac, "up" if up else "down")


def leases(network: str) -> list[tuple[str, str]]:
    """The network's IPv4 leases as its DHCP server lists them: (MAC address in lower case, address);
    a MAC address may hold more than one (one per client ID)."""
    found = []
    for line in run("net-dhcp-leases", network).stdout.splitlines():
        if match := re.search(r"\b([0-9a-fA-F:]{17})\s+ipv4\s+(\d+\.\d+\.\d+\.\d+)/\d+", line):
            found.append((match.group(1).lower(), match.group(2)))
    return found


def _bridge(network: str) -> str | None:
    match = re.search(r"<bridge name='([^']+)'", run("net-dumpxml", network).stdout)
    return match.group(1) if match else None


def announce(network: str, address: str, mac: str) -> None:
    """Tell the host where a resumed guest is (its neighbour entry on the network's bridge), so the
    first connection does not wait for an ARP answer: an entry that went stale while the guest was
    saved costs seconds of "No route to host". Best effort: the kernel learns it anyway."""
    if bridge := _bridge(network):
        process.run(
            ["ip", "neigh", "replace", address, "lladdr", mac, "dev", bridge, "nud", "reachable"],
            timeout=timeouts.PROBE,
            vm_network=True,
        )


def forward_at_once(network: str) -> None:
    """A new port of the network's bridge forwards at once: with spanning tree on (vagrant-libvirt
    makes its network so, and the kernel holds the forward delay at 2 s at least), a restored
    guest's new port listens 2 s and learns 2 s before a packet passes, which a cold boot hides and a
    restore does not. A NAT network of VMs has no loop for spanning tree to break. Only for a network
    vagabond made (the caller's to decide); best effort: the guest is reached 4 s later otherwise."""
    if os.geteuid() != 0:
        log.debug("bridge of %s left as it is: changing it needs root (the restored guest waits 4 s)", network)
        return
    if bridge := _bridge(network):
        result = process.run(
            ["ip", "link", "set", "dev", bridge, "type", "bridge", "stp_state", "0"],
            timeout=timeouts.PROBE,
            vm_network=True,
        )
        if not result.ok:
            log.debug("bridge %s keeps spanning tree: %s", bridge, result.stderr.strip()[-200:])


def network_xml(network: str) -> str:
    return check("net-dumpxml", "--inactive", network).stdout


def ensure_network(network: str, xml: str) -> bool:
    """The network defined (from ``xml`` when missing) and started; True when this call defined it."""
    made = False
    if network not in networks():
        check("net-define", "/dev/stdin", input=xml)
        made = True
    if network not in check("net-list", "--name").stdout.split():
        check("net-start", network)
    return made


# vagrant-libvirt's management network as vagrant-libvirt defines it with the defaults the
# Vagrantfile keeps (its private_network.xml.erb: NAT, 192.168.121.1/24, DHCP over the whole range,
# IPv6 on guests), and two changes that make each boot faster and nothing else different: dnsmasq
# offers a new lease without pinging the address first (it waits 3 s for an answer that never
# comes: nothing but DHCP clients live on this network), and the bridge has no spanning tree (a new
# port forwards at once, not after 4 s: a NAT bridge of VMs has no loop to break). vagrant-libvirt
# finds it by name and address, and uses it as it would its own.
MGMT_NETWORK_XML = f"""<network ipv6='yes' xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>{MGMT_NETWORK}</name>
  <bridge stp='off' delay='0'/>
  <forward mode='nat'/>
  <ip address='192.168.121.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.121.1' end='192.168.121.254'/>
    </dhcp>
  </ip>
  <dnsmasq:options>
    <dnsmasq:option value='no-ping'/>
  </dnsmasq:options>
</network>
"""


def make_management_network() -> bool:
    """Define and start the management network when there is none yet (in the creation turn: no
    other vagabond creates it meanwhile); True when this call made it. One that exists, whoever
    made it, is used as it is."""
    if MGMT_NETWORK in networks():
        return False
    try:
        return ensure_network(MGMT_NETWORK, MGMT_NETWORK_XML)
    except CommandFailed:
        if MGMT_NETWORK in networks():  # a run without the turn (or vagrant-libvirt) made it meanwhile
            return False
        raise


def refresh_pool(pool: str = POOL) -> None:
    """Make libvirt see the volumes a program wrote into the pool's directory itself."""
    run("pool-refresh", pool)


def hypervisor_version() -> str:
    """The QEMU libvirt runs ("QEMU 7.2.0"): a memory image restores only into the one that saved it."""
    for line in check("version").stdout.splitlines():
        if line.startswith("Running hypervisor:"):
            return line.split(":", 1)[1].strip()
    return "unknown"
