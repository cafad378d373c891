"""Host probes: can this host run ordinary guests under KVM? Each answer comes with its reason."""

from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from vagabond import files, paths, process, timeouts
from vagabond.errors import CommandFailed, ToolMissing, UsageError

Driver = Literal["kvm", "qemu"]
DRIVERS = ("kvm", "qemu")

BANNER = "Linux version"


@dataclass(frozen=True)
class SmokeBoot:
    """What booting a real kernel under -accel kvm showed."""

    accel: str
    banner: bool
    seconds: float
    kernel: str
    detail: str = ""


@dataclass(frozen=True)
class HostFacts:
    """Everything the driver decision looks at; gathered by probe_host(), injectable in tests."""

    kvm_device: Literal["missing", "denied", "ok", "error"]
    kvm_device_error: str = ""
    cpu_flags: frozenset[str] = frozenset()
    modules: frozenset[str] = frozenset()
    smoke: SmokeBoot | None = None


@dataclass(frozen=True)
class Decision:
    driver: Driver
    reason: str
    source: Literal["probe", "override"] = "probe"
    facts: dict = field(default_factory=dict)


HW_MODULES = {"kvm_intel", "kvm_amd"}


def decide_driver(facts: HostFacts, override: str | None = None, override_from: str = "") -> Decision:
    """kvm only when the device works, the CPU has vmx/svm, a hardware KVM module is loaded and a
    smoke boot (when one was possible) reached the kernel banner; qemu otherwise, saying why."""
    summary = _summary(facts)
    if override:
        if override not in DRIVERS:
            raise UsageError(f"driver must be 'kvm' or 'qemu', not {override!r} (from {override_from})")
        return Decision(
            override, f"set by {override_from} (the probe found: {summary})", "override", _facts_dict(facts)
        )

    problems: list[str] = []
    if facts.kvm_device == "missing":
        problems.append("/dev/kvm does not exist (no KVM in this kernel, or virtualization is off in firmware)")
    elif facts.kvm_device == "denied":
        problems.append(
            "/dev/kvm exists but cannot be opened (permission denied: add the user to group 'kvm' "
            "or, on CI runners, run 'vagabond prepare' to install the udev rule)"
        )
    elif facts.kvm_device == "error":
        problems.append(f"/dev/kvm cannot be used: {facts.kvm_device_error}")
    pvm = "kvm_pvm" in facts.modules and not (facts.modules & HW_MODULES)
    if pvm:
        problems.append(
            "/dev/kvm belongs to kvm_pvm, a paravirtual KVM that runs only specially built guests "
            "(no kvm_intel or kvm_amd loaded)"
        )
    if not (facts.cpu_flags & {"vmx", "svm"}):
        problems.append("the CPU has no vmx/svm flag in /proc/cpuinfo (no hardware virtualization exposed)")
    if facts.smoke is not None and not facts.smoke.banner:
        problems.append(
            f"a real kernel booted with -accel kvm printed no '{BANNER}' within {facts.smoke.seconds:.0f}s"
            + (f" ({facts.smoke.detail})" if facts.smoke.detail else "")
        )
    if problems:
        return Decision("qemu", "software emulation: " + "; ".join(problems), "probe", _facts_dict(facts))
    module = ", ".join(sorted(facts.modules & HW_MODULES)) or "kvm"
    flag = "vmx" if "vmx" in facts.cpu_flags else "svm"
    reason = f"hardware virtualization works: /dev/kvm opens, CPU flag {flag}, module {module}"
    if facts.smoke is not None:
        reason += f", and a real kernel booted under KVM printed its banner in {facts.smoke.seconds:.1f}s"
    else:
        reason += " (no kernel at hand for a smoke boot; set VAGABOND_PROBE_KERNEL to confirm)"
    return Decision("kvm", reason, "probe", _facts_dict(facts))


def _summary(facts: HostFacts) -> str:
    parts = [f"/dev/kvm {facts.kvm_device}"]
    parts.append("vmx/svm present" if facts.cpu_flags & {"vmx", "svm"} else "no vmx/svm")
    mods = sorted(m for m in facts.modules if m.startswith("kvm"))
    parts.append("modules " + (", ".join(mods) if mods else "none"))
    if facts.smoke is not None:
        parts.append("kvm smoke boot " + ("reached the banner" if facts.smoke.banner else "hung"))
    return "; ".join(parts)


def _facts_dict(facts: HostFacts) -> dict:
    d = asdict(facts)
    d["cpu_flags"] = sorted(f for f in facts.cpu_flags if f in ("vmx", "svm", "hypervisor"))
    d["modules"] = sorted(facts.modules)
    return d


# --- gathering facts from the real host ----------------------------------------------------------


def probe_kvm_device(path: str = "/dev/kvm") -> tuple[str, str]:
    if not os.path.exists(path):
        return "missing", ""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "denied", exc.strerror or ""
        return "error", exc.strerror or str(exc)
    os.close(fd)
    return "ok", ""


def read_cpu_flags(cpuinfo: str) -> frozenset[str]:
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def loaded_modules(
    sys_module: Path = Path("/sys/module"), proc_modules: Path = Path("/proc/modules")
) -> frozenset[str]:
    """Loaded kvm modules. /proc/modules is missing in some sandboxes; /sys/module always lists them."""
    names: set[str] = set()
    try:
        names.update(line.split()[0] for line in proc_modules.read_text().splitlines() if line.strip())
    except OSError:
        pass
    try:
        names.update(p.name for p in sys_module.iterdir() if p.name.startswith("kvm"))
    except OSError:
        pass
    return frozenset(n for n in names if n.startswith("kvm"))


def smoke_boot(kernel: Path, accel: str = "kvm", timeout: float = timeouts.SMOKE_BOOT) -> SmokeBoot:
    """Boot ``kernel`` with no disk and watch the serial console for the kernel's banner.

    Tiny hand-made guests (a hlt in real or long mode) pass under kvm_pvm; a real kernel does not,
    so this is the definitive test. qemu exits by itself: the kernel panics without a root fs and
    -no-reboot turns the reboot into an exit; otherwise the timeout ends it.
    """
    qemu = process.which("qemu-system-x86_64")
    if not qemu:
        raise ToolMissing("qemu-system-x86_64 is not installed", hint="apt-get install qemu-system-x86")
    argv = [
        qemu,
        "-accel",
        accel,
        "-m",
        "256",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 earlyprintk=serial",
    ]
    started = time.monotonic()
    seen = {"banner": False, "at": 0.0}

    def watch(line: str) -> None:
        if BANNER in line and not seen["banner"]:
            seen["banner"] = True
            seen["at"] = time.monotonic() - started

    try:
        result = process.run(argv, timeout=timeout, stream=watch)
        detail = "" if seen["banner"] else _last_words(result.stderr or result.stdout)
    except CommandFailed as exc:  # the timeout: the usual outcome when KVM hangs
        detail = _last_words(exc.stdout) and f"last console output: {_last_words(exc.stdout)}"
    elapsed = seen["at"] if seen["banner"] else time.monotonic() - started
    return SmokeBoot(accel=accel, banner=seen["banner"], seconds=elapsed, kernel=str(kernel), detail=detail)


def _last_words(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def find_probe_kernel() -> Path | None:
    """A kernel to smoke-boot: $VAGABOND_PROBE_KERNEL, one cached by 'vagabond base build', or /boot's."""
    env = os.environ.get("VAGABOND_PROBE_KERNEL")
    if env:
        return Path(env)
    candidates = sorted((paths.cache_dir() / "kernels").glob("vmlinuz*"))
    candidates += sorted(Path("/boot").glob("vmlinuz*"), reverse=True)
    for path in candidates:
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None


def _cache_key(kernel: Path) -> str:
    boot_id = Path("/proc/sys/kernel/random/boot_id")
    try:
        boot = boot_id.read_text().strip()
    except OSError:
        boot = "unknown"
    st = kernel.stat()
    return f"{boot}:{kernel.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def cached_smoke_boot(kernel: Path, *, refresh: bool = False) -> SmokeBoot:
    """Smoke-boot once per host boot and kernel; later calls read the verdict from the cache."""
    cache = paths.cache_dir() / "driver-probe.json"
    key = _cache_key(kernel)
    if not refresh:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return SmokeBoot(**data["smoke"])
        except (OSError, ValueError, TypeError, KeyError):
            pass
    smoke = smoke_boot(kernel)
    files.write_json(cache, {"key": key, "smoke": asdict(smoke)})
    return smoke


def probe_host(*, smoke: Literal["auto", "always", "never"] = "auto", refresh: bool = False) -> HostFacts:
    """Gather the cheap signals; smoke-boot a real kernel when they all say yes (or when asked)."""
    device, error = probe_kvm_device()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    facts = HostFacts(
        kvm_device=device,  # type: ignore[arg-type]
        kvm_device_error=error,
        cpu_flags=read_cpu_flags(cpuinfo),
        modules=loaded_modules(),
    )
    cheap_yes = decide_driver(facts).driver == "kvm"
    want = smoke == "always" or (smoke == "auto" and cheap_yes)
    if want and device == "ok":
        kernel = find_probe_kernel()
        if kernel is not None:
            facts = HostFacts(**{**facts.__dict__, "smoke": cached_smoke_boot(kernel, refresh=refresh)})
    return facts


def driver_override(option: str | None) -> tuple[str | None, str]:
    if option:
        return option, "--driver"
    env = os.environ.get("VAGABOND_DRIVER")
    if env:
        return env, "VAGABOND_DRIVER"
    return None, ""


def probe_and_decide(option: str | None = None, *, smoke: Literal["auto", "always", "never"] = "auto") -> Decision:
    override, source = driver_override(option)
    if override:
        # Still gather the cheap facts so the reason says what the override went against.
        return decide_driver(probe_host(smoke="never"), override, source)
    return decide_driver(probe_host(smoke=smoke))


# --- other host facts for doctor ---------------------------------------------------------------


def meminfo(text: str | None = None) -> dict[str, int]:
    """/proc/meminfo (or its text) -> MiB per field; empty when it cannot be read."""
    if text is None:
        try:
            text = Path("/proc/meminfo").read_text()
        except OSError:
            return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) // 1024
    return out
