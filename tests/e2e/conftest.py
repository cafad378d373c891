"""End-to-end harness: libvirtd in a private network namespace, an offline apt mirror, real VMs.

Everything that talks to a VM (vagrant, ssh, ansible, vagabond itself) runs inside the namespace
made by scripts/sandbox.sh; the guests' 192.168.121.0/24 network never exists outside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SANDBOX = REPO / "scripts" / "sandbox.sh"
APT_REPO_SCRIPT = REPO / "scripts" / "local-apt-repo.sh"
NETNS = os.environ.get("VAGABOND_NETNS", "vagabond")
MIRROR_PORT = 8321
# The libvirt management network's host side, as the guests see it (vagrant-libvirt's default).
HOST_FROM_GUEST = "192.168.121.1"
SELINUX_PACKAGES = ["selinux-basics", "selinux-policy-default", "auditd"]


def cache_dir() -> Path:
    return Path(os.environ.get("VAGABOND_CACHE") or Path.home() / ".cache" / "vagabond")


@pytest.fixture(scope="session")
def sandbox():
    if os.geteuid() != 0:
        pytest.skip("REAL TOOL MISSING: the end-to-end tier needs root (network namespace, libvirtd)")
    for tool in ("ip", "vagrant", "virsh", "qemu-system-x86_64", "mmdebstrap"):
        if not shutil.which(tool):
            pytest.skip(f"REAL TOOL MISSING: {tool} (run scripts/install.sh)")
    subprocess.run([SANDBOX, "start"], check=True)
    return NETNS


@pytest.fixture(scope="session")
def apt_mirror(sandbox, tmp_path_factory):
    """A local apt repository with Debian's SELinux packages, served inside the namespace."""
    repo = cache_dir() / "apt-repo"
    subprocess.run([APT_REPO_SCRIPT, repo, "bookworm", *SELINUX_PACKAGES], check=True, timeout=1800)
    log = open(tmp_path_factory.mktemp("mirror") / "http.log", "w")
    server = subprocess.Popen(
        [SANDBOX, "exec", sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(MIRROR_PORT),
         "--directory", str(repo)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(1)
    assert server.poll() is None, "the mirror's HTTP server did not start"
    vars_file = tmp_path_factory.mktemp("vars") / "mirror.json"
    vars_file.write_text(json.dumps({"vagabond_apt_sources": [f"deb [trusted=yes] http://{HOST_FROM_GUEST}:{MIRROR_PORT}/ ./"]}))
    yield vars_file
    server.terminate()
    server.wait(timeout=10)


class Vagabond:
    """Runs the installed vagabond inside the namespace, from a project directory."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.exe = str(Path(sys.executable).with_name("vagabond"))

    def argv(self, *args: str) -> list[str]:
        return [str(SANDBOX), "exec", self.exe, *args]

    def __call__(self, *args: str, timeout: float = 3600, check: bool = True) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run(self.argv(*args), cwd=self.cwd, capture_output=True, text=True, timeout=timeout)
        print(f"$ vagabond {' '.join(args)}  ({time.monotonic() - started:.0f}s, exit {result.returncode})")
        print(result.stdout[-4000:], result.stderr[-6000:], sep="\n")
        if check and result.returncode != 0:
            raise AssertionError(f"vagabond {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="session")
def vagabond(sandbox, project):
    return Vagabond(project)


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=True).stdout


def ours(prefix: str) -> dict[str, list[str]]:
    """What libvirt still holds that carries this prefix, plus vagrant-libvirt's network."""
    domains = [n for n in virsh("list", "--all", "--name").split() if n.startswith(prefix)]
    volumes = [line.split()[0] for line in virsh("vol-list", "default").splitlines()[2:] if line.split() and line.split()[0].startswith(prefix)]
    networks = [n for n in virsh("net-list", "--all", "--name").split() if n == "vagrant-libvirt"]
    return {"domains": domains, "volumes": volumes, "networks": networks}
