"""`vagabond doctor`: what this host has, what it lacks, how to fix it, and which driver it gets."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from vagabond import process, timeouts
from vagabond.definition.schema import Box
from vagabond.errors import CommandFailed, ToolMissing, VagabondError
from vagabond.host import detect, install, libvirt
from vagabond.host.vagrant import Vagrant

# Memory qemu itself needs besides the guest's RAM (MiB), and room for Vagrant/Ansible on the host.
HOST_OVERHEAD_MIB = 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True
    fix: str = ""
    path: str = ""  # the program this check found, where there is one
    version: str = ""


def check_tool(name: str, argv: list[str], fix: str, *, required: bool = True, pattern: str = r"[\d.]+") -> Check:
    if not process.which(argv[0]):
        return Check(name, False, f"{argv[0]} not found on PATH", required, fix)
    try:
        out = process.check(argv, timeout=timeouts.VAGRANT_QUERY).stdout
    except (CommandFailed, ToolMissing) as exc:
        return Check(name, False, str(exc), required, fix)
    m = re.search(pattern, out)
    return Check(name, True, f"{argv[0]} {m.group(0) if m else out.strip()[:60]}", required)


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    """The Python vagabond runs on: ansible-core 2.16's controller range (the package's metadata
    says the same, so pip refuses another)."""
    low, high = install.CONTROLLER_PYTHON
    wanted = f"{_version_text(low)} to {_version_text(high)}"
    text = _version_text(version)
    if low <= version[:2] <= high:
        return Check("python", True, f"Python {text} (vagabond runs on {wanted})", version=text)
    return Check(
        "python",
        False,
        f"Python {text}: vagabond runs on {wanted}, "
        "the Pythons ansible-core 2.16 (the last that manages CentOS 7) runs on",
        True,
        f"install vagabond with a Python {wanted}: e.g. uv tool install --python {_version_text(high)} ... "
        f"or pipx install --python python{_version_text(high)} ...",
        version=text,
    )


def check_timeouts() -> list[Check]:
    """An override of a timeout that is not a positive number of seconds is ignored: said here."""
    return [
        Check(name, False, f"{value!r} is not a number of seconds: the default holds", False, f"export {name}=SECONDS")
        for name, value in timeouts.MALFORMED.items()
    ]


def check_ansible() -> list[Check]:
    """The ansible-playbook vagabond runs (its own environment's first, see process.which), and the
    Mitogen it loads: each within the range vagabond supports, or a failed check that says why."""
    low, high = install.ANSIBLE_CORE
    wanted = f"ansible-core {_version_text(low)} to {_version_text(high)}"
    fix = f"pip install '{install.PACKAGE}' into a fresh virtual environment (it brings {wanted})"
    path = process.which("ansible-playbook")
    if not path:
        return [Check("ansible-playbook", False, "ansible-playbook not found", True, fix)]
    try:
        out = process.check([path, "--version"], timeout=timeouts.VAGRANT_QUERY).stdout
    except (CommandFailed, ToolMissing) as exc:
        return [Check("ansible-playbook", False, str(exc), True, fix, path=path)]
    m = re.search(r"\[core (\d+)\.(\d+)\.(\d+)[^\]]*\]", out)
    if not m:
        return [
            Check("ansible-playbook", False, f"{path} --version names no ansible-core release", True, fix, path=path)
        ]
    version = ".".join(m.groups())
    found = (int(m[1]), int(m[2]))
    checks = []
    if low <= found <= high:
        checks.append(Check("ansible-playbook", True, f"{path}: ansible-core {version}", path=path, version=version))
    else:
        why = (
            "2.17 and later cannot manage the Python 2.7 of CentOS 7"
            if found > high
            else "older releases lack what vagabond's playbooks use"
        )
        checks.append(
            Check(
                "ansible-playbook",
                False,
                f"{path} is ansible-core {version}; vagabond needs {wanted} ({why})",
                True,
                fix,
                path=path,
                version=version,
            )
        )
    if os.environ.get("VAGABOND_MITOGEN", "1") == "0":
        return checks + [Check("mitogen", True, "not used (VAGABOND_MITOGEN=0)", required=False)]
    try:
        mitogen = metadata.version("mitogen")
    except metadata.PackageNotFoundError:
        return checks + [
            Check(
                "mitogen",
                False,
                "not installed: provisioning uses Ansible's stock strategy, 4x slower under emulation",
                required=False,
                fix=fix,
            )
        ]
    parts = tuple(int(p) for p in re.findall(r"\d+", mitogen)[:3])
    if parts < install.MITOGEN_MIN:
        return checks + [
            Check(
                "mitogen",
                False,
                f"Mitogen {mitogen} is older than {_version_text(install.MITOGEN_MIN)}, "
                f"the first that drives ansible-core {_version_text(high)}",
                True,
                fix,
                version=mitogen,
            )
        ]
    return checks + [Check("mitogen", True, f"Mitogen {mitogen}", required=False, version=mitogen)]


def check_vagrant(advice: install.Advice) -> list[Check]:
    fix = advice.vagrant
    if not process.which("vagrant"):
        return [
            Check("vagrant", False, "vagrant not found on PATH", True, fix),
            Check("vagrant-libvirt", False, "cannot check plugins without vagrant", True, advice.plugin),
        ]
    v = Vagrant(timeout=timeouts.VAGRANT_QUERY)
    try:
        version = v.version()
    except VagabondError as exc:
        return [Check("vagrant", False, str(exc), True, fix)]
    checks = [Check("vagrant", True, f"Vagrant {version}")]
    try:
        plugins = {p.name: p for p in v.plugin_list()}
    except VagabondError as exc:
        return checks + [Check("vagrant-libvirt", False, str(exc), True, advice.plugin)]
    plugin = plugins.get("vagrant-libvirt")
    if plugin:
        checks.append(Check("vagrant-libvirt", True, f"plugin {plugin.version}{' (system)' if plugin.system else ''}"))
    else:
        checks.append(Check("vagrant-libvirt", False, "plugin not installed", True, advice.plugin))
    return checks


def check_libvirt(advice: install.Advice) -> list[Check]:
    uri = libvirt.uri()
    fix = "start the daemons: virtlogd -d && libvirtd -d (or systemctl start libvirtd)"
    if not process.which("virsh"):
        return [Check("libvirt", False, "virsh not found", True, advice.libvirt)]
    try:
        libvirt.check("uri", timeout=timeouts.PROBE)
    except CommandFailed as exc:
        why = " ".join(exc.stderr.split())[:200]
        return [Check("libvirt", False, f"cannot connect to {uri}: {why}", True, fix)]
    checks = [Check("libvirt", True, f"connected to {uri}")]
    pool = libvirt.run("pool-info", libvirt.POOL, timeout=timeouts.PROBE)
    state = re.search(r"State:\s+(\S+)", pool.stdout)
    if pool.ok and state and state.group(1) == "running":
        checks.append(Check("storage pool", True, "pool 'default' is running"))
    else:
        checks.append(
            Check(
                "storage pool",
                False,
                "pool 'default' is " + (state.group(1) if state else "not defined"),
                True,
                f"virsh pool-define-as default dir --target {libvirt.POOL_DIR} && virsh pool-build default "
                "&& virsh pool-start default && virsh pool-autostart default",
            )
        )
    caps = libvirt.run("domcapabilities", "--virttype", "kvm")
    listed = caps.ok and "<domain>kvm</domain>" in caps.stdout
    checks.append(
        Check(
            "libvirt kvm",
            True,
            "libvirt lists domain type kvm (not trusted alone: see driver)"
            if listed
            else "libvirt lists no usable kvm domain type",
            required=False,
        )
    )
    return checks


def check_resources(boxes: list[Box]) -> list[Check]:
    mem = detect.meminfo()
    need_mem = max((b.memory_mib() for b in boxes), default=0)
    need_disk = max((res.disk for b in boxes for _, _, res, _ in b.machine_specs()), default=0)
    total, swap = mem.get("MemTotal", 0), mem.get("SwapTotal", 0)
    checks = []
    enough = total + swap >= need_mem + HOST_OVERHEAD_MIB
    checks.append(
        Check(
            "memory",
            enough,
            f"RAM {total} MiB, swap {swap} MiB; the largest box needs {need_mem} MiB + {HOST_OVERHEAD_MIB} "
            "MiB for the host",
            required=False,
            fix="" if enough else "add swap: vagabond prepare --swap 4G, or lower resources.memory",
        )
    )
    where = libvirt.POOL_DIR if libvirt.POOL_DIR.exists() else Path("/")
    free_gib = shutil.disk_usage(where).free // 2**30
    # Images are sparse qcow2: a box rarely fills its virtual disk, but plan for half of it.
    disk_ok = free_gib >= need_disk // 2 + 2
    checks.append(
        Check(
            "disk",
            disk_ok,
            f"{free_gib} GiB free at {where}; the largest box disk is {need_disk} GiB (sparse)",
            required=False,
            fix="" if disk_ok else f"free space under {where}",
        )
    )
    return checks


def run_doctor(boxes: list[Box], decision: detect.Decision) -> list[Check]:
    advice = install.advice()
    checks = check_vagrant(advice)
    checks += check_libvirt(advice)
    checks.append(check_tool("qemu", ["qemu-system-x86_64", "--version"], advice.qemu))
    checks.append(check_tool("qemu-img", ["qemu-img", "--version"], advice.qemu_img))
    checks.append(check_python())
    checks += check_timeouts()
    checks += check_ansible()
    checks.append(check_tool("mmdebstrap", ["mmdebstrap", "--version"], advice.mmdebstrap, required=False))
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
