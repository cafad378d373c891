"""Every timeout vagabond waits for, by name, in seconds.

A timeout is there to end a command that hangs, not to rush a slow one, so each is generous for
what it waits on. Waits on a guest are scaled under software emulation (``for_driver``), the way
tmt multiplies its timeouts when KVM is not there.
"""

from __future__ import annotations

import os


def _setting(default: float, name: str) -> float:
    """A timeout with its documented default, which $VAGABOND_TIMEOUT_<NAME> (seconds) overrides."""
    value = os.environ.get(f"VAGABOND_TIMEOUT_{name}", "")
    try:
        return float(value) if value.strip() else default
    except ValueError:
        return default  # a malformed override is ignored; the CLI's doctor names it (see OVERRIDES)


# A guest under software emulation boots and runs this many times slower (measured here: a Debian
# boot takes 4-5x as long under TCG as under KVM).
NON_KVM_COEF = 4

# --- host programs ---
PROBE = 30  # a quick question: virsh uri, iptables -C, ssh -O exit
TOOL = 60  # a short host tool: blkid, losetup, partx, mount, udevadm, `--version`
VIRSH = 120  # one virsh call (libvirtd answers slowly while it starts a domain)
SAVE = 600  # virsh save / restore of a VM's memory image (GiBs under software emulation)
CHROOT = 300  # one command in a base box's root: systemctl, grub-install, update-grub
FILESYSTEM = 300  # mkfs, tune2fs, dumpe2fs on a disk image
FSCK = 1800  # e2fsck of a whole file system
UNPACK = 600  # a root file system tar into a disk image
IMAGE = 3600  # qemu-img convert of a whole disk
COMPRESS = 7200  # xz of a box (a 256 MiB dictionary over GiBs)
MMDEBSTRAP = 3600  # downloads and unpacks a distribution
SWAP = 600  # swapon, swapoff, mkswap, fallocate
SWAP_WRITE = 3600  # a swap file written with dd where fallocate cannot make one
SERVICE = 120  # systemctl start of a daemon
DEVICE_NODE = 10  # a partition's /dev node after partx

# --- Vagrant ---
VAGRANT = 600  # a vagrant command that changes a machine: halt, destroy
VAGRANT_QUERY = 300  # ssh-config, validate, --version, plugin list (Ruby starts slowly under load)
BOX_ADD = 1800  # vagrant box add / repackage of a local box
BOX_DOWNLOAD = 3600  # a prebuilt box from a catalog
UP_SLACK = 900  # `vagrant up` beyond the guest's boot: box upload into the pool, domain creation
# The longest wait for the host-wide turn (libvirt.CreationTurn) or a catalog's publish lock: anyone who
# can open those files can hold them, so the wait ends in an error naming the holder.
TURN = _setting(900, "TURN")
PUBLISH_LOCK = _setting(1800, "PUBLISH_LOCK")

# --- the guest ---
BOOT = 300  # IP address and SSH after `vagrant up` starts the domain (Vagrant's boot_timeout)
FIRST_BOOT = 600  # a cloud image's first boot, cloud-init included, until it powers off
GUEST_COMMAND = 120  # one command over SSH: a mode check, a log
GUEST_CLEANUP = 1800  # the cleanup before packaging (initramfs, fstrim)
SHUTDOWN = 180  # a guest powering itself off
PLAYBOOK = 3600  # one ansible-playbook run, reboots included
# A real kernel printing its banner under KVM: ~1 s under TCG, so a host where KVM cannot run
# ordinary guests (kvm_pvm, broken nesting) is found out by this (detect.smoke_boot).
SMOKE_BOOT = 15.0

# --- the network ---
CONNECT = 60  # opening a download
CATALOG = 30  # reading a catalog's metadata.json
# A registry's answer as a whole, not per read: a server that drips a byte at a time never trips a
# per-read timeout. A document (a manifest, a tag list, a token); one blob (a box, hundreds of MiB).
REGISTRY_DOCUMENT = _setting(120, "REGISTRY_DOCUMENT")
REGISTRY_TRANSFER = _setting(3 * 3600, "REGISTRY_TRANSFER")


def for_driver(seconds: float, driver: str) -> float:
    """A wait on a guest, scaled when the guest runs under software emulation."""
    return seconds if driver == "kvm" else seconds * NON_KVM_COEF
