"""Long commands cancelled the way GitHub Actions cancels a job (SIGINT, SIGTERM 7.5 s later,
SIGKILL 2.5 s after that), in each phase that creates something: nothing of theirs stays behind
(VMs, loop devices, mounts, scratch directories, half-written files), and a rerun succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ours
from tests.e2e.generic_image import build_generic_image
from vagabond import files
from vagabond.bases import diskimage

pytestmark = [pytest.mark.real, pytest.mark.slow]


class Watched:
    """A vagabond command whose output is read as it comes, so the test can strike at a phase."""

    def __init__(self, vagabond, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            vagabond.argv(*args),
            cwd=vagabond.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=vagabond.env(env),
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            assert self.proc.poll() is None, f"ended before {marker!r}:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout}s:\n{self.output[-3000:]}"
            time.sleep(0.2)

    def cancel_like_github(self) -> float:
        """SIGINT; SIGTERM 7.5 s later; SIGKILL 2.5 s after that. Returns how long the command took
        to end; a SIGKILL means its cleanup did not fit in GitHub's window, and fails the test."""
        started = time.monotonic()
        for sig, grace in ((signal.SIGINT, 7.5), (signal.SIGTERM, 2.5)):
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running 10 s after SIGINT: GitHub would SIGKILL it\n{self.output[-3000:]}")
        self.reader.join(timeout=10)
        print(self.output[-3000:])
        return time.monotonic() - started


def loop_devices_of(path: Path) -> str:
    return subprocess.run(["losetup", "--associated", str(path)], capture_output=True, text=True).stdout.strip()


def mounts_below(path: Path) -> list[str]:
    return diskimage.mounts_under(path)


def test_base_build_cancelled_in_each_phase_leaves_nothing_and_then_builds(vagabond, tmp_path):
    # A base of its own (one more package), so that mmdebstrap really runs and the shared cache is untouched.
    (vagabond.cwd / "boxes" / "debian12-less.yaml").write_text(
        "description: Debian 12 with less\nbase: {kind: mmdebstrap, suite: bookworm, box: vagabond-test/debian12-less, "
        "packages: [less]}\nguest: debian\nresources: {memory: 512, cpus: 1, disk: 4}\n"
    )
    cache, scratch = tmp_path / "cache", tmp_path / "tmp"
    # TMPDIR of its own: what vagabond or mmdebstrap leaves in the temporary directory is seen
    # there, not mixed with what the other lane (tests/lanes.py) is doing in /tmp at that moment.
    scratch.mkdir()
    env = {"VAGABOND_CACHE": str(cache), "TMPDIR": str(scratch)}
    try:
        # In the middle of each: packages unpacking into a chroot, or the disk on a loop device, mounted.
        for phase, delay in (("mmdebstrap: I: extracting archives", 3.0), ("disk image (", 1.0)):
            run = Watched(vagabond, "base", "build", "debian12-less", "--no-add", env=env)
            run.wait_for(phase)
            time.sleep(delay)
            took = run.cancel_like_github()
            assert run.proc.returncode == 130, run.output[-2000:]
            assert "interrupted by SIGINT" in run.output
            assert mounts_below(cache) == [] and mounts_below(scratch) == [], "mounts left behind"
            leftovers = [
                p.name
                for p in cache.rglob("*")
                if p.name.startswith(("mmdebstrap-", "vagabond-base-", "tmp"))
                or p.name.endswith((".partial.tar", ".raw", ".tmp"))
            ]
            assert leftovers == [], leftovers
            assert not [
                line
                for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
                if str(cache) in line
            ], "loop devices left attached"
            print(f"{phase}: cleaned up in {took:.1f}s")
        done = vagabond("base", "build", "debian12-less", "--no-add", env=env, timeout=1800)
        assert Path(done.stdout.strip()).is_file()
    finally:
        (vagabond.cwd / "boxes" / "debian12-less.yaml").unlink()


def test_import_cancelled_during_the_first_boot_leaves_nothing_and_then_imports(vagabond, tmp_path):
    image = build_generic_image()
    out = tmp_path / "imported"
    args = (
        "import",
        "test/interrupted",
        "--image",
        str(image),
        "--checksum",
        f"sha256:{files.sha256_file(image)}",
        "--out",
        str(out),
        "--no-add",
    )
    run = Watched(vagabond, *args)
    run.wait_for("first boot with cloud-init")
    time.sleep(10)
    run.cancel_like_github()
    assert run.proc.returncode == 130
    assert subprocess.run(["pgrep", "-f", str(out)], capture_output=True).returncode == 1, "qemu still runs"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("vagabond-import-")) == []
    done = vagabond(*args, timeout=3600)
    assert Path(done.stdout.strip()).is_file()


def test_build_cancelled_while_compacting_leaves_no_vm_no_loop_device_no_file_and_then_builds(vagabond, tmp_path):
    out = tmp_path / "dist"
    workdir = tmp_path / "wd"
    args = ("build", "debian12", "--out", str(out), "--version", "1.0.0", "--workdir", str(workdir), "--json")
    run = Watched(vagabond, *args)
    run.wait_for("compact file systems (fresh journal, discard free blocks) ...", timeout=1800)
    time.sleep(2)
    prefix = json.loads((workdir / "state.json").read_text())["prefix"] if (workdir / "state.json").exists() else None
    run.cancel_like_github()
    assert run.proc.returncode == 130, run.output[-2000:]
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == [], "half-written files in --out"
    assert not [
        line
        for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
        if str(out) in line
    ], "loop devices left attached"
    if prefix:
        assert ours(prefix)["domains"] == [] and ours(prefix)["volumes"] == []
    info = json.loads(vagabond(*args, timeout=3600).stdout)
    assert Path(info["path"]).is_file() and info["version"] == "1.0.0"


def test_a_failing_base_build_keeps_the_cache_clean(vagabond, tmp_path):
    """A suite that does not exist: mmdebstrap fails at once, and nothing of the attempt stays."""
    (vagabond.cwd / "boxes" / "nosuite.yaml").write_text(
        "description: x\nbase: {kind: mmdebstrap, suite: no-such-suite, box: vagabond-test/nosuite}\n"
    )
    cache = tmp_path / "cache"
    try:
        result = vagabond("base", "build", "nosuite", "--no-add", env={"VAGABOND_CACHE": str(cache)}, check=False)
        assert result.returncode == 1 and "mmdebstrap" in result.stderr
        assert [p.name for p in cache.rglob("*") if p.is_file()] == []
    finally:
        (vagabond.cwd / "boxes" / "nosuite.yaml").unlink()
