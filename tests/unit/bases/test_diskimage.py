"""A raw disk attached as a loop device (diskimage.attached) at the process seam: a partition the
kernel still holds for the device from an earlier use goes first (partx --add would refuse it
for every later use), and the partitions go again at the end, asked again while one is busy."""

from __future__ import annotations

import pytest

from tests.fake_process import processes  # noqa: F401 (a fixture)
from vagabond.bases import diskimage


@pytest.fixture
def loop(processes, monkeypatch):  # noqa: F811
    monkeypatch.setattr(diskimage, "wait_for", lambda path: None)
    monkeypatch.setattr(diskimage.time, "sleep", lambda seconds: None)
    processes.answer("losetup", "--find", stdout="/dev/loop9\n")
    processes.answer("losetup", "--detach")
    processes.answer("partx", "--show", stdout="1\n")
    processes.answer("partx", "--add")
    processes.answer("partx", "--delete")
    kernel = {"parts": []}
    monkeypatch.setattr(diskimage, "kernel_partitions", lambda device: list(kernel["parts"]))
    return kernel


def partx(processes) -> list[str]:  # noqa: F811
    return [argv[1] for argv in processes.calls if argv[0] == "partx"]


def test_a_partition_an_earlier_use_left_goes_before_the_add(processes, loop, tmp_path):  # noqa: F811
    loop["parts"] = ["loop9p1"]  # left by a use whose delete failed: partx --add would say "error adding"
    with diskimage.attached(tmp_path / "disk.raw") as (device, parts):
        assert device == "/dev/loop9" and parts == ["/dev/loop9p1"]
    assert partx(processes) == ["--show", "--delete", "--add", "--delete"]


def test_without_one_the_add_comes_first(processes, loop, tmp_path):  # noqa: F811
    with diskimage.attached(tmp_path / "disk.raw"):
        pass
    assert partx(processes) == ["--show", "--add", "--delete"]


def test_a_busy_partition_is_asked_again_until_the_kernel_lets_it_go(processes, loop, tmp_path):  # noqa: F811
    processes.fail("partx", "--delete", stderr="partx: error deleting partition 1", times=2)
    with diskimage.attached(tmp_path / "disk.raw"):
        loop["parts"] = ["loop9p1"]
    assert partx(processes) == ["--show", "--add", "--delete", "--delete", "--delete"]
    assert processes.asked("losetup", "--detach")


def test_one_that_never_lets_go_is_a_warning_and_the_device_is_detached(processes, loop, tmp_path, capsys, monkeypatch):  # noqa: F811
    processes.fail("partx", "--delete", stderr="partx: error deleting partition 1")
    monkeypatch.setattr(diskimage.timeouts, "DEVICE_NODE", 0.05)
    monkeypatch.setattr(diskimage.time, "sleep", __import__("time").sleep)
    with diskimage.attached(tmp_path / "disk.raw"):
        loop["parts"] = ["loop9p1"]
    assert "could not remove the partitions of /dev/loop9" in capsys.readouterr().err
    assert processes.asked("losetup", "--detach")
