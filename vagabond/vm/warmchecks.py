"""What a warm image from elsewhere may hold (vagabond.vm.warmarchive takes one in), value by value:
the domain its memory image defines (libvirtd, as root, starts what it says: only what vagabond's
Vagrantfile gives a VM passes, any other host resource refuses the image), the SSH configuration
vagabond will use (Vagrant's keywords, the VM's own key), and the prebuilt box it names."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

from vagabond.errors import WarmError

ALLOWED_TOP = {
    "name",
    "uuid",
    "genid",
    "title",
    "description",
    "metadata",
    "memory",
    "currentMemory",
    "maxMemory",
    "vcpu",
    "vcpus",
    "iothreads",
    "cputune",
    "cpu",
    "os",
    "features",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "pm",
    "devices",
    "seclabel",
    "resource",
    "sysinfo",
    "memoryBacking",
}
ALLOWED_DEVICES = {
    "emulator",
    "disk",
    "controller",
    "interface",
    "serial",
    "console",
    "input",
    "graphics",
    "video",
    "rng",
    "memballoon",
    "channel",
    "sound",
    "audio",
    "watchdog",
    "panic",
}
HOST_FILES_IN_OS = {"kernel", "initrd", "dtb", "loader", "nvram", "cmdline", "acpi", "shim"}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
RANDOM = {"/dev/random", "/dev/urandom", "/dev/hwrng"}
CHANNEL_DIR = "/var/lib/libvirt/qemu/channel/"


def domain(
    xml: str, *, domain: str, disk: str, networks: set[str], serial_log: str, emulators: set[str], where: str
) -> str:
    """The saved domain's XML when it asks for nothing but what a VM of vagabond's gets (its name,
    its one disk, its networks, a serial log, a pty console, loopback graphics, host randomness,
    a guest agent channel, the host's own QEMU); without the disk's recorded backing chain. Any
    other host resource (a device, a file, a program, a socket, QEMU arguments) refuses it."""

    def refuse(what: str) -> WarmError:
        return WarmError(f"{where} asks for {what}, which a VM of vagabond's never has: not restored")

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise WarmError(f"{where} is not a domain's XML: {exc}") from None
    if root.tag != "domain" or root.get("type") not in ("qemu", "kvm"):
        raise refuse(f"a domain of type {root.get('type')!r}")
    for child in root:
        if child.tag not in ALLOWED_TOP:
            raise refuse(f"<{child.tag}>")
        for element in child.iter() if child.tag != "metadata" else ():
            if not isinstance(element.tag, str) or element.tag.startswith("{"):
                raise refuse(f"an element of another namespace ({element.tag}) outside its metadata")
    if (root.findtext("name") or "").strip() != domain:
        raise refuse(f"the name {root.findtext('name')!r} (this machine's domain is {domain})")
    for element in root.find("os") if root.find("os") is not None else []:
        if element.tag in HOST_FILES_IN_OS:
            raise refuse(f"a host file in <os> (<{element.tag}>)")
    for label in root.findall("seclabel"):
        if label.get("type") in ("none", "static") or label.get("relabel") == "no":
            raise refuse("no confinement of QEMU (a static label or none)")
    backing = root.find("memoryBacking/source")
    if backing is not None and backing.get("type") not in (None, "anonymous", "memfd"):
        raise refuse("memory backed by a host file")
    devices = root.find("devices")
    if devices is None:
        raise refuse("no devices")
    disks = []
    for device in list(devices):
        tag = device.tag
        if tag not in ALLOWED_DEVICES:
            raise refuse(f"the device <{tag}>")
        kind = device.get("type")
        if tag == "emulator":
            if (device.text or "").strip() not in emulators:
                raise refuse(f"the program {device.text!r} (not this host's QEMU)")
        elif tag == "disk":
            source = device.find("source")
            if device.get("device") == "cdrom" and source is None:
                continue
            if device.get("device") != "disk" or kind != "file" or source is None or source.get("file") != disk:
                raise refuse(f"a disk other than its own ({source.get('file') if source is not None else kind!r})")
            if device.find("source/dataStore") is not None or device.find("mirror") is not None:
                raise refuse("a disk with another file of its own")
            for chain in device.findall("backingStore"):
                device.remove(chain)
            disks.append(disk)
        elif tag == "interface":
            source = device.find("source")
            if kind != "network" or source is None or source.get("network") not in networks:
                raise refuse(f"a network interface other than on {sorted(networks)}")
            for other in ("script", "backend", "downscript", "ip", "route"):
                if device.find(other) is not None:
                    raise refuse(f"an interface with <{other}>")
        elif tag in ("serial", "console"):
            source = device.find("source")
            path = source.get("path") if source is not None else None
            if kind == "file" and path == serial_log:
                continue
            if kind != "pty" or (source is not None and path is not None and not path.startswith("/dev/pts/")):
                raise refuse(f"a {tag} of type {kind!r} ({path})")
            if device.find("log") is not None:
                raise refuse(f"a {tag} log file")
        elif tag == "channel":
            source = device.find("source")
            path = source.get("path") if source is not None else None
            if kind == "spicevmc":
                continue
            if kind != "unix" or path is None or not path.startswith(CHANNEL_DIR) or ".." in path:
                raise refuse(f"a channel of type {kind!r} ({path})")
        elif tag == "graphics":
            if kind not in ("vnc", "spice"):
                raise refuse(f"graphics of type {kind!r}")
            addresses = [device.get("listen")] + [x.get("address") for x in device.findall("listen")]
            if any(x.get("type") not in (None, "address", "none") for x in device.findall("listen")):
                raise refuse("graphics on a socket")
            if any(a is not None and a not in LOOPBACK for a in addresses):
                raise refuse("graphics listening beyond this host")
        elif tag == "rng":
            backend = device.find("backend")
            if backend is None or backend.get("model") != "random" or (backend.text or "").strip() not in RANDOM:
                raise refuse("randomness from anything but the host's random device")
        elif tag == "audio":
            if kind not in ("none", "spice"):
                raise refuse(f"audio of type {kind!r}")
        elif tag in ("sound", "video", "input", "controller", "memballoon", "watchdog", "panic"):
            if device.find("source") is not None or device.find("audio") is not None:
                raise refuse(f"<{tag}> with a host source")
    if disks != [disk]:
        raise refuse(f"{len(disks)} disks of its own, not one")
    return ElementTree.tostring(root, encoding="unicode")


PREBUILT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PREBUILT_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")


def prebuilt(value: object) -> dict | None:
    """The prebuilt box the VM was made from (the Vagrantfile names it again), when it is one a
    catalog could have given: a box name, a version, an http(s) or file URL; else none."""
    if not isinstance(value, dict) or set(value) != {"name", "version", "url"}:
        return None
    name, version, url = value["name"], value["version"], value["url"]
    if not all(isinstance(x, str) for x in (name, version, url)):
        return None
    if not PREBUILT_NAME.fullmatch(name) or not PREBUILT_VERSION.fullmatch(version):
        return None
    if not url.startswith(("https://", "http://", "file:///")) or len(url) > 2048 or not url.isprintable():
        return None
    return {"name": name, "version": version, "url": url}


SSH_KEYWORDS = {
    "host",
    "hostname",
    "user",
    "port",
    "userknownhostsfile",
    "stricthostkeychecking",
    "passwordauthentication",
    "identityfile",
    "identitiesonly",
    "loglevel",
    "pubkeyacceptedkeytypes",
    "pubkeyacceptedalgorithms",
    "hostkeyalgorithms",
    "forwardagent",
    "forwardx11",
}


def ssh_config(text: object, key: Path) -> str:
    """The SSH configuration as Vagrant writes it, and nothing that opens another file or runs a
    program: known keywords only, its identity this work directory's own key."""
    if not isinstance(text, str) or len(text) > 65536:
        raise WarmError("the warm image's SSH configuration is malformed")
    text = text.split("\nHost *\n")[0]  # Vagrant's part: vagabond writes its own after it again
    kept = []
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].lower()
        value = words[1].strip().strip('"') if len(words) > 1 else ""
        if keyword not in SSH_KEYWORDS:
            raise WarmError(f"the warm image's SSH configuration says {words[0]}, which Vagrant's never does")
        if keyword == "identityfile" and value != str(key):
            continue  # Vagrant's insecure key too: a restored VM takes its own only
        if keyword in ("forwardagent", "forwardx11") and value.lower() != "no":
            raise WarmError(f"the warm image's SSH configuration forwards {words[0][7:]}")
        if keyword == "userknownhostsfile" and value != "/dev/null":
            raise WarmError("the warm image's SSH configuration names a known-hosts file")
        kept.append(line)
    return "\n".join(kept) + "\n"
