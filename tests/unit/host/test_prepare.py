"""prepare's decisions at the process seam: sizes, what the boxes need, the /dev/kvm udev fix, a
daemon that died."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import write_box
from vagabond import github, process
from vagabond.definition import boxfile
from vagabond.errors import UsageError
from vagabond.host import detect, prepare


@pytest.mark.parametrize(("text", "mib"), [("4G", 4096), ("512M", 512), ("2048", 2048), ("1GiB", 1024), ("0", 0)])
def test_parse_size(text, mib):
    assert prepare.parse_size(text) == mib


def test_bad_size_is_a_usage_error():
    with pytest.raises(UsageError, match=r"swap size '4 potatoes' is not a size \(use e.g. 4G or 512M"):
        prepare.parse_size("4 potatoes")


def test_needed_memory_counts_every_machine_of_the_biggest_box(project):
    write_box(project, "one", "description: x\nbase: {box: a/b}\nresources: {memory: 2048}\n")
    write_box(
        project,
        "two",
        "description: x\nbase: {box: a/b}\nresources: {memory: 1024}\n"
        "machines: [{name: a}, {name: b, resources: {memory: 4096}}]\n",
    )
    found = boxfile.list_boxes(project / "boxes")
    assert prepare.needed_mib(found) == 1024 + 4096 + prepare.HOST_HEADROOM_MIB


def test_active_swaps_parsing(tmp_path):
    (tmp_path / "swaps").write_text(
        "Filename\tType\tSize\tUsed\tPriority\n/var/lib/vagabond/swapfile  file  1048572  0  -2\n"
    )
    assert prepare.active_swaps(tmp_path / "swaps") == {"/var/lib/vagabond/swapfile": 1023}


def _facts(device="denied", flags=("vmx",), modules=("kvm", "kvm_intel")):
    return detect.HostFacts(kvm_device=device, cpu_flags=frozenset(flags), modules=frozenset(modules))


def test_kvm_closed_on_capable_hardware_gets_the_udev_rule(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(prepare, "UDEV_RULE", tmp_path / "99-vagabond-kvm.rules")
    monkeypatch.setattr(detect, "probe_host", lambda **kw: _facts("ok" if calls else "denied"))
    device = tmp_path / "kvm"
    device.touch(mode=0o660)  # root:kvm 0660, as GitHub's runners have it
    device.chmod(0o660)
    monkeypatch.setattr(process, "run", lambda argv, **kw: calls.append(argv) or process.Result(argv, 0, "", "", 0.0))
    action = prepare.ensure_kvm_access(device)
    assert action.changed and "driver now kvm" in action.detail
    assert (
        tmp_path / "99-vagabond-kvm.rules"
    ).read_text() == 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\n'
    assert calls[:2] == [["udevadm", "control", "--reload-rules"], ["udevadm", "trigger", "--name-match=kvm"]]


def test_kvm_on_hardware_without_virtualization_is_left_alone(monkeypatch, tmp_path):
    monkeypatch.setattr(prepare, "UDEV_RULE", tmp_path / "rule")
    monkeypatch.setattr(detect, "probe_host", lambda **kw: _facts("ok", flags=(), modules=("kvm", "kvm_pvm")))
    monkeypatch.setattr(
        detect, "probe_and_decide", lambda *a, **kw: detect.decide_driver(_facts("ok", flags=(), modules=("kvm_pvm",)))
    )
    action = prepare.ensure_kvm_access()
    assert (
        not action.changed
        and action.detail.startswith("KVM cannot work on this host")
        and not (tmp_path / "rule").exists()
    )


def test_a_capable_cpu_gets_its_kvm_module_loaded(monkeypatch, tmp_path):
    """GitHub's x64 runners show vmx or svm; when the module is not loaded yet, prepare loads it."""
    calls = []
    monkeypatch.setattr(prepare, "UDEV_RULE", tmp_path / "rule")
    monkeypatch.setattr(prepare.shutil, "which", lambda name: f"/sbin/{name}")
    loaded = lambda: any(a[:1] == ["modprobe"] for a in calls)  # noqa: E731
    monkeypatch.setattr(
        detect,
        "probe_host",
        lambda **kw: _facts("ok", flags=("svm",), modules=("kvm", "kvm_amd") if loaded() else ("kvm",)),
    )
    monkeypatch.setattr(detect, "probe_and_decide", lambda *a, **kw: detect.Decision("kvm", "works"))
    monkeypatch.setattr(process, "run", lambda argv, **kw: calls.append(argv) or process.Result(argv, 0, "", "", 0.0))
    device = tmp_path / "kvm"
    device.touch()
    device.chmod(0o666)
    action = prepare.ensure_kvm_access(device)
    assert calls[0] == ["modprobe", "kvm_amd"]
    assert action.changed and action.detail.startswith("loaded kvm_amd; ") and action.detail.endswith("driver kvm")


def test_no_kvm_under_github_actions_is_a_warning_and_a_summary_line(monkeypatch, tmp_path, capsys):
    """A silent 5-10x: the job's page and its summary say what emulation costs."""

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setattr(github, "summary_lines", [])
    monkeypatch.setattr(detect, "probe_host", lambda **kw: _facts("missing", flags=(), modules=()))
    action = prepare.ensure_kvm_access(tmp_path / "kvm")
    assert not action.changed
    err = capsys.readouterr().err
    assert (
        "::warning title=vagabond prepare%3A no KVM::VMs run under software emulation (qemu driver), 5-10x slower "
        "than under KVM: no /dev/kvm"
    ) in err
    assert github.summary_lines == [
        "⚠️ No KVM on this runner: VMs run under software emulation (qemu driver), 5-10x slower "
        "than under KVM. no /dev/kvm: VMs run under software emulation (qemu driver)"
    ]


def test_a_daemon_that_died_and_was_not_reaped_is_not_running(processes):
    """pgrep lists a zombie; prepare must start the daemon then (it found a dead libvirtd alive)."""
    dead = subprocess.Popen(["true"])  # exits at once; not waited for: a zombie until reaped
    living = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(100):
            state = (prepare.PROC / str(dead.pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break
            time.sleep(0.02)
        assert state == "Z"
        processes.answer("pgrep", "-x", "libvirtd", stdout=f"{dead.pid}\n")
        assert prepare._alive("libvirtd") is False
        processes.answer("pgrep", "-x", "libvirtd", stdout=f"{dead.pid}\n{living.pid}\n")
        assert prepare._alive("libvirtd") is True
        processes.answer("pgrep", "-x", "virtlogd", returncode=1)
        assert prepare._alive("virtlogd") is False
    finally:
        living.kill()
        living.wait()
        dead.wait()
