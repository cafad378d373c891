"""The driver decision from injected host facts: lying /dev/kvm, real KVM and everything between."""

from __future__ import annotations

import pytest

from vagabond import timeouts
from vagabond.errors import UsageError
from vagabond.host import detect
from vagabond.host.detect import HostFacts, SmokeBoot, decide_driver

INTEL = frozenset({"fpu", "vmx", "sse4_2"})
NO_VIRT = frozenset({"fpu", "sse4_2", "hypervisor"})
HUNG = SmokeBoot(accel="kvm", banner=False, seconds=15.0, kernel="/k", detail="last console output: Probing EDD")
BOOTED = SmokeBoot(accel="kvm", banner=True, seconds=0.4, kernel="/k")


def test_pvm_host_like_this_one_gets_qemu():
    facts = HostFacts("ok", cpu_flags=NO_VIRT, modules=frozenset({"kvm", "kvm_pvm"}))
    d = decide_driver(facts)
    assert d.driver == "qemu"
    assert "kvm_pvm" in d.reason and "no vmx/svm" in d.reason


def test_pvm_host_with_hung_smoke_boot_says_so():
    facts = HostFacts("ok", cpu_flags=NO_VIRT, modules=frozenset({"kvm", "kvm_pvm"}), smoke=HUNG)
    d = decide_driver(facts)
    assert d.driver == "qemu"
    assert "printed no 'Linux version' within 15s (last console output: Probing EDD)" in d.reason


def test_real_kvm_host_gets_kvm():
    facts = HostFacts("ok", cpu_flags=INTEL, modules=frozenset({"kvm", "kvm_intel"}), smoke=BOOTED)
    d = decide_driver(facts)
    assert d.driver == "kvm"
    assert d.reason.startswith("hardware virtualization works: /dev/kvm opens, CPU flag vmx, module kvm_intel")
    assert "printed its banner in 0.4s" in d.reason


def test_real_kvm_without_kernel_says_it_did_not_smoke_boot():
    facts = HostFacts("ok", cpu_flags=frozenset({"svm"}), modules=frozenset({"kvm", "kvm_amd"}))
    d = decide_driver(facts)
    assert d.driver == "kvm"
    assert "no kernel at hand for a smoke boot" in d.reason


def test_flags_present_but_guest_hangs_gets_qemu():
    # Broken nested virtualization: everything cheap says yes, the real kernel says no.
    facts = HostFacts("ok", cpu_flags=INTEL, modules=frozenset({"kvm", "kvm_intel"}), smoke=HUNG)
    assert decide_driver(facts).driver == "qemu"


def test_permission_denied_gets_qemu_with_fix():
    facts = HostFacts("denied", cpu_flags=INTEL, modules=frozenset({"kvm", "kvm_intel"}))
    d = decide_driver(facts)
    assert d.driver == "qemu"
    assert "permission denied" in d.reason and "vagabond prepare" in d.reason


def test_missing_device_gets_qemu():
    d = decide_driver(HostFacts("missing", cpu_flags=INTEL))
    assert d.driver == "qemu" and "/dev/kvm does not exist" in d.reason


def test_device_error_gets_qemu():
    d = decide_driver(
        HostFacts("error", kvm_device_error="No such device", cpu_flags=INTEL, modules=frozenset({"kvm_intel"}))
    )
    assert d.driver == "qemu" and "No such device" in d.reason


def test_override_wins_and_says_so():
    facts = HostFacts("ok", cpu_flags=NO_VIRT, modules=frozenset({"kvm_pvm"}))
    d = decide_driver(facts, "kvm", "--driver")
    assert (d.driver, d.source) == ("kvm", "override")
    assert d.reason.startswith("set by --driver (the probe found: /dev/kvm ok; no vmx/svm; modules kvm_pvm)")


def test_bad_override_is_a_usage_error():
    with pytest.raises(UsageError, match=r"^driver must be 'kvm' or 'qemu', not 'xen' \(from VAGABOND_DRIVER\)$"):
        decide_driver(HostFacts("ok"), "xen", "VAGABOND_DRIVER")


def test_env_override(monkeypatch):
    monkeypatch.setenv("VAGABOND_DRIVER", "kvm")
    assert detect.driver_override(None) == ("kvm", "VAGABOND_DRIVER")
    assert detect.driver_override("qemu") == ("qemu", "--driver")


def test_cpu_flags_parsing():
    text = "processor: 0\nflags\t\t: fpu vmx sse\nprocessor: 1\nflags : fpu vmx sse\n"
    assert detect.read_cpu_flags(text) == frozenset({"fpu", "vmx", "sse"})


def test_modules_from_sysfs_when_proc_modules_is_missing(tmp_path):
    for name in ("kvm", "kvm_pvm", "ext4"):
        (tmp_path / name).mkdir()
    assert detect.loaded_modules(tmp_path, tmp_path / "nope") == frozenset({"kvm", "kvm_pvm"})


def test_modules_from_proc_modules(tmp_path):
    proc = tmp_path / "modules"
    proc.write_text("kvm_intel 1 0 - Live 0x0\nkvm 2 1 kvm_intel, Live 0x0\n")
    assert detect.loaded_modules(tmp_path / "nosys", proc) == frozenset({"kvm", "kvm_intel"})


def test_device_probe(tmp_path):
    assert detect.probe_kvm_device(str(tmp_path / "none")) == ("missing", "")
    plain = tmp_path / "file"
    plain.write_text("")
    assert detect.probe_kvm_device(str(plain))[0] == "ok"


def test_meminfo():
    assert detect.meminfo("MemTotal: 2048000 kB\nSwapTotal: 0 kB\n") == {"MemTotal": 2000, "SwapTotal": 0}


def test_smoke_verdict_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    calls = []

    def fake(k, accel="kvm", timeout=timeouts.SMOKE_BOOT):
        calls.append(k)
        return HUNG

    monkeypatch.setattr(detect, "smoke_boot", fake)
    assert detect.cached_smoke_boot(kernel) == HUNG
    assert detect.cached_smoke_boot(kernel) == HUNG
    assert len(calls) == 1
    detect.cached_smoke_boot(kernel, refresh=True)
    assert len(calls) == 2
