"""Detection on the real host: the cheap signals, a real kernel's smoke boot, and doctor's verdict."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool
from vagabond import process
from vagabond.host import detect

pytestmark = pytest.mark.real

PVM_HOST = Path("/sys/module/kvm_pvm").exists() and not (
    Path("/sys/module/kvm_intel").exists() or Path("/sys/module/kvm_amd").exists()
)


@pytest.fixture(scope="module")
def kernel() -> Path:
    found = detect.find_probe_kernel()
    if found is None:
        pytest.skip("REAL TOOL MISSING: no kernel to smoke-boot (scripts/install.sh caches one)")
    return found


def test_real_facts_are_consistent():
    """What the probe reads is what /dev/kvm, /proc/cpuinfo and /sys/module say, on any host, and
    the decision follows from it: kvm only with the device, vmx/svm and a hardware module."""
    facts = detect.probe_host(smoke="never")
    decision = detect.decide_driver(facts)
    cpu = Path("/proc/cpuinfo").read_text()
    assert ("vmx" in facts.cpu_flags) == (" vmx" in cpu) and ("svm" in facts.cpu_flags) == (" svm" in cpu)
    loaded = {m for m in ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm") if Path(f"/sys/module/{m}").exists()}
    assert loaded <= set(facts.modules)
    if not Path("/dev/kvm").exists():
        assert facts.kvm_device == "missing"
    assert decision.driver in ("kvm", "qemu") and decision.reason
    if decision.driver == "kvm":
        assert facts.kvm_device == "ok" and facts.cpu_flags & {"vmx", "svm"} and facts.modules & detect.HW_MODULES
    if PVM_HOST:
        assert decision.driver == "qemu"
        assert "kvm_pvm" in decision.reason


def test_smoke_boot_separates_kvm_from_tcg_on_this_host(kernel):
    require_tool("qemu-system-x86_64")
    tcg = detect.smoke_boot(kernel, accel="tcg")
    assert tcg.banner, f"the kernel does not boot even under emulation: {tcg}"
    if not Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm on this host")
    kvm = detect.smoke_boot(kernel, accel="kvm")
    if PVM_HOST:
        assert not kvm.banner, "kvm_pvm ran an ordinary kernel: the smoke boot no longer tells"
    facts = detect.probe_host(smoke="never")
    decision = detect.decide_driver(detect.HostFacts(**{**facts.__dict__, "smoke": kvm}))
    assert decision.driver == ("kvm" if kvm.banner and not PVM_HOST else "qemu")


def test_doctor_json_on_this_host(kernel, tmp_path):
    env = dict(os.environ, VAGABOND_CACHE=str(tmp_path), VAGABOND_PROBE_KERNEL=str(kernel))
    env.pop("VAGABOND_DRIVER", None)
    result = process.run([sys.executable, "-m", "vagabond", "doctor", "--json", "--deep"], env=env, timeout=300)
    report = json.loads(result.stdout)
    assert report["driver"] in ("kvm", "qemu") and report["driver_reason"]
    assert result.returncode == (0 if report["ok"] else 1)
    if PVM_HOST:
        assert report["driver"] == "qemu"
        assert "kvm_pvm" in report["driver_reason"] and "Linux version" in report["driver_reason"]
    # The verdict is cached per host boot: the second run does not boot again.
    assert json.loads((tmp_path / "driver-probe.json").read_text())["smoke"]["accel"] == "kvm"
