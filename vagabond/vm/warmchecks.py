"""What a warm image from elsewhere may hold (vagabond.vm.warmarchive takes one in), value by value:
the domain its memory image defines (libvirtd, as root, starts what it says: only what vagabond's
Vagrantfile gives a VM passes, any other host resource refuses the image), the SSH configuration
vagabond will use (Vagrant's keywords, the VM's own key), and the prebuilt box it names."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from xml.etree import ElementTree

from vagabond.errors import WarmError
from vagabond.host import guestagent


def _shape(attributes: str = "", **children: tuple) -> tuple[frozenset[str], dict[str, tuple]]:
    """An element's allowed attributes (space-separated) and its allowed children, by tag."""
    return frozenset(attributes.split()), {tag.replace("_", "-"): shape for tag, shape in children.items()}


LEAF = _shape()
ALIAS = _shape("name")
ADDRESS = _shape("type domain bus slot function controller target unit port multifunction")
# Every element and attribute a domain of vagabond's Vagrantfile has in a memory image (libvirt 9 to
# 11), and nothing else: an attribute or element not listed refuses the image, so nothing that
# names a host file, device, socket or program gets through unseen. Values that reach the host are
# checked in domain() below.
DEVICES = {
    "emulator": LEAF,
    "disk": _shape(
        "type device",
        driver=_shape("name type discard cache io detect_zeroes"),
        source=_shape("file index"),
        target=_shape("dev bus removable tray"),
        readonly=LEAF,
        boot=_shape("order"),
        alias=ALIAS,
        address=ADDRESS,
    ),
    "controller": _shape(
        "type index model ports vectors",
        model=_shape("name"),
        target=_shape("chassisNr chassis port busNr index hotplug"),
        alias=ALIAS,
        address=ADDRESS,
    ),
    "interface": _shape(
        "type",
        mac=_shape("address"),
        source=_shape("network portid bridge"),
        model=_shape("type"),
        driver=_shape("name iommu ats packed queues"),
        target=_shape("dev"),
        link=_shape("state"),
        boot=_shape("order"),
        alias=ALIAS,
        address=ADDRESS,
    ),
    "serial": _shape(
        "type", source=_shape("path append"), target=_shape("type port", model=_shape("name")), alias=ALIAS
    ),
    "console": _shape("type tty", source=_shape("path append"), target=_shape("type port"), alias=ALIAS),
    "input": _shape("type bus", alias=ALIAS, address=ADDRESS),
    "memballoon": _shape("model autodeflate freePageReporting", stats=_shape("period"), alias=ALIAS, address=ADDRESS),
    "rng": _shape("model", backend=_shape("model"), rate=_shape("bytes period"), alias=ALIAS, address=ADDRESS),
    "audio": _shape("id type"),
    "channel": _shape(
        "type", source=_shape("mode path"), target=_shape("type name state"), alias=ALIAS, address=ADDRESS
    ),
}
TOP = {
    "name": LEAF,
    "uuid": LEAF,
    "title": LEAF,
    "description": LEAF,
    "memory": _shape("unit"),
    "currentMemory": _shape("unit"),
    "vcpu": _shape("placement current"),
    "resource": _shape(partition=LEAF),
    "sysinfo": _shape("type", oemStrings=_shape(entry=LEAF)),
    "os": _shape(
        type=_shape("arch machine"), boot=_shape("dev"), bootmenu=_shape("enable timeout"), smbios=_shape("mode")
    ),
    "features": _shape(acpi=LEAF, apic=_shape("eoi"), pae=LEAF, vmport=_shape("state"), pmu=_shape("state")),
    "cpu": _shape(
        "mode match check migratable",
        model=_shape("fallback"),
        vendor=LEAF,
        feature=_shape("policy name"),
        topology=_shape("sockets dies clusters cores threads"),
    ),
    "clock": _shape("offset", timer=_shape("name present tickpolicy track")),
    "on_poweroff": LEAF,
    "on_reboot": LEAF,
    "on_crash": LEAF,
    "pm": _shape(suspend_to_mem=_shape("enabled"), suspend_to_disk=_shape("enabled")),
}
UNITS = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 2**20, "G": 2**20}
RANDOM = {"/dev/random", "/dev/urandom"}


def _check_shape(element: ElementTree.Element, shape: tuple, path: str, refuse) -> None:
    attributes, children = shape
    for name in element.attrib:
        if name not in attributes:
            raise refuse(f"the attribute {name!r} on <{path}>")
    for child in element:
        if not isinstance(child.tag, str) or child.tag not in children:
            raise refuse(f"<{child.tag}> in <{path}>")
        _check_shape(child, children[child.tag], f"{path}/{child.tag}", refuse)


def domain(
    xml: str,
    *,
    domain: str,
    uuid: str,
    memory_mib: int,
    disk: str,
    networks: set[str],
    serial_log: str,
    emulators: set[str],
    where: str,
) -> str:
    """The saved domain's XML when it is one vagabond's Vagrantfile makes for this machine: its
    name, UUID and memory, its one qcow2 disk, its networks, its serial log or a pty, host
    randomness, the guest agent's channel, the host's own QEMU, nothing else (module table above).
    Returned without what libvirt chooses itself (the disk's recorded backing chain, the security
    labels, the tap device's name, the agent's socket), so the host's defaults apply. Anything else
    refuses it, named."""

    def refuse(what: str) -> WarmError:
        return WarmError(f"{where} asks for {what}, which a VM of vagabond's never has: not restored")

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise WarmError(f"{where} is not a domain's XML: {exc}") from None
    if root.tag != "domain" or root.get("type") not in ("qemu", "kvm") or set(root.attrib) - {"type", "id"}:
        raise refuse(f"a domain of type {root.get('type')!r} with {sorted(root.attrib)}")
    devices = root.find("devices")
    if devices is None:
        raise refuse("no devices")
    for removed in root.findall("seclabel"):  # the host's own confinement applies
        root.remove(removed)
    for element in root.findall("devices/disk"):  # libvirt reads the chain from the disk itself
        for removed in element.findall("backingStore"):
            element.remove(removed)
    for element in root.findall("devices/interface"):  # the host names the tap device itself
        for removed in element.findall("target"):
            element.remove(removed)
    for element in root.findall("devices/channel/source"):  # libvirtd makes the agent's socket itself
        element.attrib.pop("path", None)
    for child in root:
        if child.tag == "metadata" or child.tag == "devices":
            continue
        if not isinstance(child.tag, str) or child.tag not in TOP:
            raise refuse(f"<{child.tag}>")
        _check_shape(child, TOP[child.tag], child.tag, refuse)
    if set(devices.attrib):
        raise refuse("attributes on <devices>")
    for device in devices:
        if not isinstance(device.tag, str) or device.tag not in DEVICES:
            raise refuse(f"the device <{device.tag}>")
        _check_shape(device, DEVICES[device.tag], f"devices/{device.tag}", refuse)
    if root.findtext("name") != domain:
        raise refuse(f"the name {root.findtext('name')!r} (this machine's domain is {domain})")
    if root.findtext("uuid") != uuid:
        raise refuse(f"the UUID {root.findtext('uuid')!r}, not the one its description names")
    for tag in ("memory", "currentMemory"):
        element = root.find(tag)
        unit = element.get("unit", "KiB") if element is not None else "KiB"
        amount = element.text if element is not None else None
        if not amount or not amount.isdigit() or unit not in UNITS or int(amount) * UNITS[unit] != memory_mib * 1024:
            raise refuse(f"{amount} {unit} of <{tag}>, not the {memory_mib} MiB of its key")
    if root.find("sysinfo") is not None and root.find("sysinfo").get("type") != "smbios":
        raise refuse(f"<sysinfo type={root.find('sysinfo').get('type')!r}>")
    if any(s.get("mode") != "sysinfo" for s in root.findall("os/smbios")):
        raise refuse("the host's own SMBIOS tables")
    if (root.findtext("resource/partition") or "/machine").strip() != "/machine":
        raise refuse("a resource partition other than /machine")
    disks = []
    for device in devices:
        kind = device.get("type")
        if device.tag == "emulator" and (device.text or "").strip() not in emulators:
            raise refuse(f"the program {device.text!r} (not this host's QEMU)")
        if device.tag == "disk":
            source, driver = device.find("source"), device.find("driver")
            if device.get("device") == "cdrom" and source is None:
                continue
            if device.get("device") != "disk" or kind != "file" or source is None or source.get("file") != disk:
                raise refuse(f"a disk other than its own ({source.get('file') if source is not None else kind!r})")
            if driver is None or driver.get("name") != "qemu" or driver.get("type") != "qcow2":
                raise refuse("its disk read other than as qcow2")
            disks.append(disk)
        elif device.tag == "interface":
            source = device.find("source")
            if kind != "network" or source is None or source.get("network") not in networks:
                raise refuse(f"a network interface other than on {sorted(networks)}")
        elif device.tag in ("serial", "console"):
            path = device.find("source").get("path") if device.find("source") is not None else None
            if not (kind == "file" and path == serial_log) and not (
                kind == "pty" and (path is None or re.fullmatch(r"/dev/pts/\d+", path))
            ):
                raise refuse(f"a {device.tag} of type {kind!r} ({path})")
        elif device.tag == "rng":
            backend = device.find("backend")
            if backend is None or backend.get("model") != "random" or (backend.text or "").strip() not in RANDOM:
                raise refuse("randomness from anything but the host's random device")
        elif device.tag == "channel":
            source, target = device.find("source"), device.find("target")
            if (
                kind != "unix"
                or (source is not None and source.get("mode") != "bind")
                or target is None
                or target.get("type") != "virtio"
                or target.get("name") != guestagent.CHANNEL
            ):
                raise refuse(f"a channel other than the guest agent's ({kind!r})")
        elif device.tag == "audio" and kind != "none":
            raise refuse(f"audio of type {kind!r}")
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


def _on_network(value: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(network)
    except ValueError:
        return False


def ssh_config(text: object, key: Path, network: str) -> str:
    """The SSH configuration as Vagrant writes it, and nothing that opens another file, runs a
    program or goes elsewhere: known keywords only, its identity this work directory's own key,
    its host an address on the VM's network (``network``, a subnet)."""
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
        if keyword == "hostname" and not _on_network(value, network):
            raise WarmError(f"the warm image's SSH configuration goes to {value!r}, not an address on {network}")
        kept.append(line)
    return "\n".join(kept) + "\n"
