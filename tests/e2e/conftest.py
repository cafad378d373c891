"""End-to-end harness: libvirtd in a private network namespace, an offline apt mirror, real VMs.

libvirtd runs inside the namespace made by scripts/sandbox.sh, so the guests' 192.168.121.0/24
network never exists outside it. vagabond runs on the host, as a user runs it, and starts what
talks to VMs (vagrant up, ssh, ansible) in the namespace itself (VAGABOND_NETNS); what downloads
(mmdebstrap, box catalogs on 127.0.0.1) stays on the host's network.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import MISSING, NETNS, REPO
from tests.helpers import network_users, virsh

SANDBOX = REPO / "scripts" / "sandbox.sh"
APT_REPO_SCRIPT = REPO / "scripts" / "local-apt-repo.sh"
MIRROR_PORT = 8321
CATALOG_PORT = 8322
S3_PORT = 8323
# The libvirt management network's host side, as the guests see it (vagrant-libvirt's default).
HOST_FROM_GUEST = "192.168.121.1"
SELINUX_PACKAGES = ["selinux-basics", "selinux-policy-default", "auditd"]


def cache_dir() -> Path:
    return Path(os.environ.get("VAGABOND_CACHE") or Path.home() / ".cache" / "vagabond")


GUEST_NET = "192.168.121.0/24"
MGMT_NETWORK = "vagrant-libvirt"
NETWORKS_AT_START: set[str] = set()


@pytest.fixture(scope="session")
def sandbox():
    if os.geteuid() != 0:
        pytest.skip(f"{MISSING}: the end-to-end tier needs root (network namespace, libvirtd)")
    for tool in ("ip", "vagrant", "virsh", "qemu-system-x86_64", "mmdebstrap"):
        if not shutil.which(tool):
            pytest.skip(f"{MISSING}: {tool} (run scripts/install.sh)")
    subprocess.run([SANDBOX, "start"], check=True, env=dict(os.environ, VAGABOND_NETNS=NETNS))
    # A network that was there before the tests is not theirs to judge (a killed earlier run's, another job's).
    NETWORKS_AT_START.update(virsh("net-list", "--all", "--name").split())
    # A safety net for the tests' own sake: should a program that talks to a guest ever start
    # outside the namespace, it fails at once instead of sending the guests' traffic out of the host.
    guard = subprocess.run(["ip", "route", "add", "unreachable", GUEST_NET], capture_output=True).returncode == 0
    yield NETNS
    if guard:
        subprocess.run(["ip", "route", "del", "unreachable", GUEST_NET], capture_output=True)


def pool_volumes() -> set[str]:
    return {line.split()[0] for line in virsh("vol-list", "default").splitlines()[2:] if line.split()}


def all_networks() -> set[str]:
    return set(virsh("net-list", "--all", "--name").split())


def unrecorded(made: set[str], kind: str) -> list[str]:
    """What the tests made that vagabond's record does not hold: nothing would ever remove it
    (`vagabond gc`, which CI runs after the tier, removes exactly what the record lists)."""
    from vagabond.host import ledger

    record = ledger.read()
    return sorted(made - set(record[kind]) - (set(record["warm"]) if kind == "volumes" else set()))


@pytest.fixture(scope="package", autouse=True)
def nothing_outlives_the_tier(sandbox):
    """Every domain an end-to-end test made is gone when the tier ends, and every pool volume and
    network it made is gone too or in vagabond's record (which gc empties): a leaked VM would hold
    the management network and a host's memory, a leaked box image some 400 MB a run."""
    domains, volumes, networks = set(virsh("list", "--all", "--name").split()), pool_volumes(), all_networks()
    yield
    left = {
        "domains": sorted(set(virsh("list", "--all", "--name").split()) - domains),
        "volumes": unrecorded(pool_volumes() - volumes, "volumes"),
        "networks": [n for n in unrecorded(all_networks() - networks, "networks") if not network_users(n)],
    }
    assert not any(left.values()), f"the end-to-end tests left, unrecorded: {left}"


@pytest.fixture(scope="session")
def apt_mirror(sandbox, tmp_path_factory):
    """A local apt repository with Debian's SELinux packages, served inside the namespace."""
    repo = cache_dir() / "apt-repo"
    subprocess.run([APT_REPO_SCRIPT, repo, "bookworm", *SELINUX_PACKAGES], check=True, timeout=1800)
    log = open(tmp_path_factory.mktemp("mirror") / "http.log", "w")
    server = subprocess.Popen(
        [
            SANDBOX,
            "exec",
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "0.0.0.0",
            str(MIRROR_PORT),
            "--directory",
            str(repo),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    assert server.poll() is None, "the mirror's HTTP server did not start"
    vars_file = tmp_path_factory.mktemp("vars") / "mirror.json"
    vars_file.write_text(
        json.dumps({"vagabond_apt_sources": [f"deb [trusted=yes] http://{HOST_FROM_GUEST}:{MIRROR_PORT}/ ./"]})
    )
    yield vars_file
    server.terminate()
    server.wait(timeout=10)


class Vagabond:
    """Runs the installed vagabond on the host, from a project directory, as a user would."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.exe = str(Path(sys.executable).with_name("vagabond"))

    def argv(self, *args: str) -> list[str]:
        return [self.exe, *args]

    def __call__(
        self, *args: str, timeout: float = 3600, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run(
            self.argv(*args), cwd=self.cwd, capture_output=True, text=True, timeout=timeout, env=self.env(env)
        )
        print(f"$ vagabond {' '.join(args)}  ({time.monotonic() - started:.0f}s, exit {result.returncode})")
        print(result.stdout[-4000:], result.stderr[-6000:], sep="\n")
        if check and result.returncode != 0:
            raise AssertionError(f"vagabond {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(*args), cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env()
        )

    @staticmethod
    def env(extra: dict[str, str] | None = None) -> dict[str, str]:
        """The test's environment without the CI markers (a CI run of these tests must behave as a
        developer's), with the VMs' namespace, plus what the test asks for."""
        base = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")}
        return base | {"VAGABOND_NETNS": NETNS} | (extra or {})


@pytest.fixture(scope="session")
def catalog_server(sandbox, tmp_path_factory):
    """nginx serving a box catalog directory on the host's 127.0.0.1, where vagabond and
    `vagrant box add` read catalogs."""
    if not shutil.which("nginx"):
        pytest.skip(f"{MISSING}: nginx (run scripts/install.sh)")
    root = tmp_path_factory.mktemp("catalog")
    with helpers.nginx(root, CATALOG_PORT) as http:
        yield root, http


@pytest.fixture(scope="session")
def s3_server(sandbox):
    """moto's S3 server on the host's 127.0.0.1, with a bucket `boxes`; yields the environment a
    publisher needs (endpoint and throwaway credentials)."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip(f"{MISSING}: moto_server (pip install 'moto[server]')")
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(S3_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "AWS_ACCESS_KEY_ID": "e2e",
        "AWS_SECRET_ACCESS_KEY": "e2e-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    make_bucket = "import boto3\nboto3.client('s3').create_bucket(Bucket='boxes')"
    for _ in range(60):
        done = subprocess.run([sys.executable, "-c", make_bucket], env=dict(os.environ, **env), capture_output=True)
        if done.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"moto_server did not start: {done.stderr.decode()[-500:]}")
    yield env
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def registry_server(sandbox, tmp_path_factory):
    """Debian's docker-registry (the CNCF distribution registry) on the host's 127.0.0.1, anonymous:
    an OCI catalog as `vagabond publish` and `up` reach one on ghcr.io, minus the TLS."""
    if not shutil.which("docker-registry"):
        pytest.skip(f"{MISSING}: docker-registry (run scripts/install.sh)")
    with helpers.registry(tmp_path_factory.mktemp("registry"), helpers.free_port()) as (url, _):
        yield url


@pytest.fixture(scope="session")
def project(tmp_path_factory, catalog_server):
    """A project with its own boxes/: the shipped Debian boxes, debian12-selinux with a prebuilt catalog."""
    path = tmp_path_factory.mktemp("project")
    (path / "boxes").mkdir()
    for name in ("debian12", "debian12-selinux"):
        shutil.copy(REPO / "boxes" / f"{name}.yaml", path / "boxes")
    with open(path / "boxes" / "debian12-selinux.yaml", "a") as fh:
        fh.write(
            "prebuilt:\n  name: vagabond/debian12-selinux\n  catalog: "
            f"{catalog_server[1]}/debian12-selinux/metadata.json\n"
        )
    return path


@pytest.fixture(scope="session")
def vagabond(sandbox, project):
    return Vagabond(project)


def ours(prefix: str) -> dict[str, list[str]]:
    """What libvirt still holds that carries this prefix, plus vagrant-libvirt's network when the
    tests made it and no domain uses it any more (left behind)."""
    domains = [n for n in virsh("list", "--all", "--name").split() if n.startswith(prefix)]
    volumes = [
        line.split()[0]
        for line in virsh("vol-list", "default").splitlines()[2:]
        if line.split() and line.split()[0].startswith(prefix)
    ]
    networks = [
        n
        for n in virsh("net-list", "--all", "--name").split()
        if n == MGMT_NETWORK and n not in NETWORKS_AT_START and not network_users(n)
    ]
    return {"domains": domains, "volumes": volumes, "networks": networks}


LAPTOP_USER = "vagabond-laptop"


class Laptop:
    """A user of a laptop as docs/getting-started/laptop.md has them: their own account, vagabond
    on their PATH, sudo for the page's root steps. Commands run as that user in a login-like
    environment of their own (HOME, PATH, no variable of the test's); those that talk to VMs in
    the VMs' namespace, where this host keeps its libvirt network (a laptop has it on its own)."""

    def __init__(self, home: Path):
        self.home = home
        self.bin = Path(sys.executable).parent  # the venv's: vagabond, and the Ansible it runs

    def __call__(self, command: str, *, vms: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
        env = [
            f"HOME={self.home}",
            f"USER={LAPTOP_USER}",
            f"LOGNAME={LAPTOP_USER}",
            f"PATH={self.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG=C.UTF-8",
        ]
        inside = ["ip", "netns", "exec", NETNS] if vms else []
        argv = [*inside, "runuser", "-u", LAPTOP_USER, "--", "env", "-i", *env, "bash", "-c", command]
        started = time.monotonic()
        result = subprocess.run(argv, cwd=self.home, capture_output=True, text=True, timeout=timeout)
        print(f"{LAPTOP_USER}$ {command}  ({time.monotonic() - started:.0f}s, exit {result.returncode})")
        print(result.stdout[-3000:], result.stderr[-5000:], sep="\n")
        return result


MARK = "vagabond end-to-end laptop user"  # the account's comment: the tests' own, removable


def _remove_laptop_user(home: Path | None) -> None:
    """Everything of the user's: processes, account, home (their Vagrant store and ledger in it)."""
    subprocess.run(["pkill", "-KILL", "-u", LAPTOP_USER], capture_output=True)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-u", LAPTOP_USER], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"{LAPTOP_USER}'s processes outlived SIGKILL"
        time.sleep(0.2)
    subprocess.run(["userdel", "--force", "--remove", LAPTOP_USER], capture_output=True, check=True)
    if home is not None:
        assert not home.exists(), f"{home} outlived its user"


@pytest.fixture(scope="package", autouse=True)
def laptop(sandbox, nothing_outlives_the_tier):  # the leak check ends after the user's clean-up
    """The laptop user, made for the tier and removed after it, and the page's first root step
    run by them through sudo: `sudo vagabond base build debian12` puts the base in the shared cache
    (/var/lib/vagabond/cache), root-owned and read by every user. It is the tier's one build of that
    base: root's own runs find it there as the user's do, as on a laptop where it was built once.
    Without sudo this is None: root builds its own base, and the laptop test says what is missing."""
    from vagabond import paths
    from vagabond.host import prepare

    if not shutil.which("sudo") or not shutil.which("runuser"):
        yield None
        return
    exe = Path(sys.executable).with_name("vagabond")
    existing = subprocess.run(["getent", "passwd", LAPTOP_USER], capture_output=True, text=True).stdout
    if existing and MARK not in existing:
        pytest.fail(f"a user {LAPTOP_USER} exists and is not the tests' ({existing.strip()}): remove it or rename it")
    if existing:
        _remove_laptop_user(None)  # an earlier run's, killed before its clean-up
    cache_was_there = paths.SHARED_CACHE.exists()
    subprocess.run(
        ["useradd", *helpers.USER_IDS, "--create-home", "--shell", "/bin/bash", "--comment", MARK, LAPTOP_USER],
        check=True,
    )
    home = Path(os.path.expanduser(f"~{LAPTOP_USER}"))
    sudoers = Path("/etc/sudoers.d") / LAPTOP_USER
    sudoers.write_text(f"{LAPTOP_USER} ALL=(root) NOPASSWD: {exe}\n")
    sudoers.chmod(0o440)
    as_user = Laptop(home)
    try:
        assert as_user('test -x "$(command -v vagabond)"', vms=False).returncode == 0, f"{exe}: not theirs to run"
        built = as_user('sudo -n "$(command -v vagabond)" base build debian12', vms=False, timeout=3600)
        assert built.returncode == 0, built.stderr[-2000:]
        assert built.stdout.strip().startswith(f"{paths.SHARED_CACHE}/"), "through sudo: the shared cache"
        yield as_user
    finally:
        # What the user's runs left in libvirt (a test that failed half-way): their own vagabond
        # removes it, from their ledger, before the account and its home go.
        # Their box store goes first, so that gc also takes a box image their run uploaded (one root
        # uploaded earlier is root's: in root's ledger, not theirs).
        as_user(
            "cd ~/project 2>/dev/null && vagabond destroy debian12; rm -rf ~/.vagrant.d/boxes; vagabond gc",
            timeout=600,
        )
        sudoers.unlink(missing_ok=True)
        prepare.undo_user_access(LAPTOP_USER)  # the ACLs prepare --user gave them
        _remove_laptop_user(home)
        if not cache_was_there:
            shutil.rmtree(paths.SHARED_CACHE, ignore_errors=True)
            with contextlib.suppress(OSError):
                paths.SHARED_CACHE.parent.rmdir()
