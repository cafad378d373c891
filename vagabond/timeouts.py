"""Every timeout vagabond waits for, by name, in seconds.

A timeout is there to end a command that hangs, not to rush a slow one, so each is generous for
what it waits on. Waits on a guest are scaled under software emulation (``for_driver``), the way
tmt multiplies its timeouts when KVM is not there.
"""

from __future__ import annotations

import os

# Each timeout by name: its default in seconds and what it waits for (the environment reference's text).
DOCUMENTED: dict[str, tuple[float, str]] = {}
# Overrides that are not a positive number of seconds: ignored (the default holds), and doctor names them.
MALFORMED: dict[str, str] = {}


def _setting(default: float, name: str, waits_for: str) -> float:
    """A timeout with its documented default, which $VAGABOND_TIMEOUT_<NAME> (seconds) overrides:
    a slow host raises exactly the wait it needs (as tmt's configure_constant)."""
    DOCUMENTED[name] = (default, waits_for)
    value = os.environ.get(f"VAGABOND_TIMEOUT_{name}", "")
    if not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if not 0 < seconds < float("inf"):
        MALFORMED[f"VAGABOND_TIMEOUT_{name}"] = value[:40]
        return default
    return seconds


# A guest under software emulation boots and runs this many times slower (measured here: a Debian
# boot takes 4-5x as long under TCG as under KVM).
NON_KVM_COEF = 4
# The waits on a guest that for_driver scales (a test holds every call to it to this list).
SCALED = ("BOOT", "FIRST_BOOT", "SHUTDOWN")

# --- host programs ---
PROBE = _setting(30, "PROBE", "a quick question: virsh uri, iptables -C, ssh -O exit")
TOOL = _setting(60, "TOOL", "a short host tool: blkid, losetup, partx, mount, udevadm, `--version`")
VIRSH = _setting(120, "VIRSH", "one virsh call (libvirtd answers slowly while it starts a domain)")
SAVE = _setting(600, "SAVE", "virsh save / restore of a VM's memory image (GiBs under software emulation)")
CHROOT = _setting(300, "CHROOT", "one command in a base box's root: systemctl, grub-install, update-grub")
FILESYSTEM = _setting(300, "FILESYSTEM", "mkfs, tune2fs, dumpe2fs on a disk image")
FSCK = _setting(1800, "FSCK", "e2fsck of a whole file system")
UNPACK = _setting(600, "UNPACK", "a root file system tar into a disk image")
IMAGE = _setting(3600, "IMAGE", "qemu-img convert of a whole disk")
COMPRESS = _setting(7200, "COMPRESS", "xz of a box (a 256 MiB dictionary over GiBs)")
MMDEBSTRAP = _setting(3600, "MMDEBSTRAP", "downloads and unpacks a distribution")
SWAP = _setting(600, "SWAP", "swapon, swapoff, mkswap, fallocate")
SWAP_WRITE = _setting(3600, "SWAP_WRITE", "a swap file written with dd where fallocate cannot make one")
SERVICE = _setting(120, "SERVICE", "systemctl start of a daemon")
DEVICE_NODE = _setting(10, "DEVICE_NODE", "a partition's /dev node after partx")

# --- Vagrant ---
VAGRANT = _setting(600, "VAGRANT", "a vagrant command that changes a machine: halt, destroy")
VAGRANT_QUERY = _setting(300, "VAGRANT_QUERY", "ssh-config, validate, --version, plugin list (Ruby is slow to start)")
BOX_ADD = _setting(1800, "BOX_ADD", "vagrant box add / repackage of a local box")
BOX_DOWNLOAD = _setting(3600, "BOX_DOWNLOAD", "a prebuilt box from a catalog")
UP_SLACK = _setting(900, "UP_SLACK", "`vagrant up` beyond the guest's boot: box upload into the pool, domain creation")
# The longest wait for the host-wide turn (libvirt.CreationTurn) or a catalog's publish lock: anyone who
# can open those files can hold them, so the wait ends in an error naming the holder.
TURN = _setting(900, "TURN", "the host-wide turn to create a domain, or to remove a network")
PUBLISH_LOCK = _setting(1800, "PUBLISH_LOCK", "a directory catalog's publish lock")

# --- the guest ---
BOOT = _setting(300, "BOOT", "IP address and SSH after `vagrant up` starts the domain (Vagrant's boot_timeout)")
FIRST_BOOT = _setting(600, "FIRST_BOOT", "a cloud image's first boot, cloud-init included, until it powers off")
GUEST_COMMAND = _setting(120, "GUEST_COMMAND", "one command over SSH: a mode check, a log")
GUEST_CLEANUP = _setting(1800, "GUEST_CLEANUP", "the cleanup before packaging (initramfs, fstrim)")
SHUTDOWN = _setting(180, "SHUTDOWN", "a guest powering itself off")
PLAYBOOK = _setting(3600, "PLAYBOOK", "one ansible-playbook run, reboots included")
LEASE = _setting(60, "LEASE", "a restored guest's address from the network's DHCP server")
AGENT = _setting(30, "AGENT", "a restored guest's agent answering (its new SSH key goes through it)")
# A real kernel printing its banner under KVM: ~1 s under TCG, so a host where KVM cannot run
# ordinary guests (kvm_pvm, broken nesting) is found out by this (detect.smoke_boot).
SMOKE_BOOT = _setting(15.0, "SMOKE_BOOT", "a probe kernel printing its banner under KVM (driver detection)")

# --- the network ---
CONNECT = _setting(60, "CONNECT", "opening a download")
CATALOG = _setting(30, "CATALOG", "reading a catalog's metadata.json")
# A registry's answer as a whole, not per read: a server that drips a byte at a time never trips a
# per-read timeout. A document (a manifest, a tag list, a token); one blob (a box, hundreds of MiB).
REGISTRY_DOCUMENT = _setting(120, "REGISTRY_DOCUMENT", "one registry answer: a manifest, a tag list, a token")
REGISTRY_TRANSFER = _setting(3 * 3600, "REGISTRY_TRANSFER", "one blob up- or downloaded from a registry")


def for_driver(seconds: float, driver: str) -> float:
    """A wait on a guest, scaled when the guest runs under software emulation."""
    return seconds if driver == "kvm" else seconds * NON_KVM_COEF
