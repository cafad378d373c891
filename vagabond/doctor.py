"""`vagabond doctor`: what this host has, what it lacks, how to fix it, and which driver it gets."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from vagabond import detect, process
from vagabond.boxes import Box
from vagabond.errors import CommandFailed, ToolMissing, VagabondError
from vagabond.vm import Vagrant

# Memory qemu itself needs besides the guest's RAM (MiB), and room for Vagrant/Ansible on the host.
HOST_OVERHEAD_MIB = 1024
LIBVIRT_IMAGES = Path("/var/lib/libvirt/images")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True
    fix: str = ""


def libvirt_uri() -> str:
    return os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


def check_tool(name: str, argv: list[str], fix: str, *, required: bool = True, pattern: str = r"[\d.]+") -> Check:
    if not process.which(argv[0]):
        return Check(name, False, f"{argv[0]} not found on PATH", required, fix)
    try:
        out = process.run(argv, timeout=60).stdout
    except (CommandFailed, ToolMissing) as exc:
        return Check(name, False, str(exc), required, fix)
    m = re.search(pattern, out)
    return Check(name, True, f"{argv[0]} {m.group(0) if m else out.strip()[:60]}", required)


def check_vagrant() -> list[Check]:
    fix = "apt-get install vagrant vagrant-libvirt (or run scripts/install.sh)"
    if not process.which("vagrant"):
        return [
            Check("vagrant", False, "vagrant not found on PATH", True, fix),
            Check("vagrant-libvirt", False, "cannot check plugins without vagrant", True, fix),
        ]
    v = Vagrant(timeout=120)
    try:
        version = v.version()
    except VagabondError as exc:
        return [Check("vagrant", False, str(exc), True, fix)]
    checks = [Check("vagrant", True, f"Vagrant {version}")]
    try:
        plugins = {p.name: p for p in v.plugin_list()}
    except VagabondError as exc:
        return checks + [Check("vagrant-libvirt", False, str(exc), True, fix)]
    plugin = plugins.get("vagrant-libvirt")
    if plugin:
        checks.append(Check("vagrant-libvirt", True, f"plugin {plugin.version}{' (system)' if plugin.system else ''}"))
    else:
        checks.append(
            Check("vagrant-libvirt", False, "plugin not installed", True,
                  "apt-get install vagrant-libvirt, or: vagrant plugin install vagrant-libvirt")
        )  # fmt: skip
    return checks


def check_libvirt() -> list[Check]:
    uri = libvirt_uri()
    fix = "start the daemons: virtlogd -d && libvirtd -d (or systemctl start libvirtd)"
    if not process.which("virsh"):
        return [Check("libvirt", False, "virsh not found", True, "apt-get install libvirt-daemon-system libvirt-clients")]
    try:
        process.run(["virsh", "-c", uri, "uri"], timeout=30)
    except CommandFailed as exc:
        why = " ".join(exc.stderr.split())[:200]
        return [Check("libvirt", False, f"cannot connect to {uri}: {why}", True, fix)]
    checks = [Check("libvirt", True, f"connected to {uri}")]
    pool = process.run(["virsh", "-c", uri, "pool-info", "default"], timeout=30, check=False)
    state = re.search(r"State:\s+(\S+)", pool.stdout)
    if pool.ok and state and state.group(1) == "running":
        checks.append(Check("storage pool", True, "pool 'default' is running"))
    else:
        checks.append(
            Check("storage pool", False, "pool 'default' is " + (state.group(1) if state else "not defined"), True,
                  f"virsh pool-define-as default dir --target {LIBVIRT_IMAGES} && virsh pool-build default "
                  "&& virsh pool-start default && virsh pool-autostart default")
        )  # fmt: skip
    caps = process.run(["virsh", "-c", uri, "domcapabilities", "--virttype", "kvm"], timeout=60, check=False)
    listed = caps.ok and "<domain>kvm</domain>" in caps.stdout
    checks.append(
        Check("libvirt kvm", True,
              "libvirt lists domain type kvm (not trusted alone: see driver)" if listed
              else "libvirt lists no usable kvm domain type", required=False)
    )  # fmt: skip
    return checks


def check_resources(boxes: list[Box]) -> list[Check]:
    try:
        mem = detect.meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        mem = {}
    need_mem = max((m.memory for b in boxes for m in _machine_resources(b)), default=0)
    need_disk = max((b.spec.resources.disk for b in boxes), default=0)
    total, swap = mem.get("MemTotal", 0), mem.get("SwapTotal", 0)
    checks = []
    enough = total + swap >= need_mem + HOST_OVERHEAD_MIB
    checks.append(
        Check("memory", enough,
              f"RAM {total} MiB, swap {swap} MiB; the largest box needs {need_mem} MiB + {HOST_OVERHEAD_MIB} MiB for the host",
              required=False, fix="" if enough else "add swap: vagabond prepare --swap 4G, or lower resources.memory")
    )  # fmt: skip
    where = LIBVIRT_IMAGES if LIBVIRT_IMAGES.exists() else Path("/")
    free_gib = shutil.disk_usage(where).free // 2**30
    # Images are sparse qcow2: a box rarely fills its virtual disk, but plan for half of it.
    disk_ok = free_gib >= need_disk // 2 + 2
    checks.append(
        Check("disk", disk_ok, f"{free_gib} GiB free at {where}; the largest box disk is {need_disk} GiB (sparse)",
              required=False, fix="" if disk_ok else f"free space under {where}")
    )  # fmt: skip
    return checks


def _machine_resources(box: Box):
    res = box.spec.resources
    if not box.spec.machines:
        return [res]
    return [res.model_copy(update={k: v for k, v in m.resources.model_dump().items() if v}) for m in box.spec.machines]


def run_doctor(boxes: list[Box], decision: detect.Decision) -> list[Check]:
    checks = check_vagrant()
    checks += check_libvirt()
    checks.append(check_tool("qemu", ["qemu-system-x86_64", "--version"], "apt-get install qemu-system-x86"))
    checks.append(check_tool("qemu-img", ["qemu-img", "--version"], "apt-get install qemu-utils"))
    checks.append(check_tool("ansible-playbook", ["ansible-playbook", "--version"],
                             "pip install vagabond (ansible-core comes with it)", pattern=r"core [\d.]+"))  # fmt: skip
    checks.append(check_tool("mmdebstrap", ["mmdebstrap", "--version"],
                             "apt-get install mmdebstrap (only needed to build Debian base boxes)", required=False))  # fmt: skip
    checks += check_resources(boxes)
    checks.append(Check("driver", True, f"{decision.driver}: {decision.reason}", required=False))
    return checks


def report(checks: list[Check], decision: detect.Decision) -> dict:
    return {
        "ok": all(c.ok for c in checks if c.required),
        "driver": decision.driver,
        "driver_reason": decision.reason,
        "driver_source": decision.source,
        "checks": [asdict(c) for c in checks],
    }
