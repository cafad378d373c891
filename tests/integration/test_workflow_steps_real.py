"""The generated workflow's and the action's own steps, in order, in a twin of GitHub's hosted
runner: a fresh root file system with each trait of the ubuntu-24.04 and ubuntu-26.04 images that
can break vagabond, each with its source. Every step runs for real, as `runner`: the install, the
plugin, prepare, the base box built with mmdebstrap, the VM brought up (software emulation, in the
twin's own network namespace) and provisioned, the tests in it, the README's example command, and
the cleanup action's destroy.

The twin (module `twin`), from actions/runner-images at 749514466 (2026-08-21) unless said:
- a Debian 13 root that says it is Ubuntu (/etc/os-release: ubuntu-24.04's noble, or ubuntu-26.04's
  resolute): its python3 is 3.13, outside 3.10-3.12 as ubuntu-26.04's 3.14 is
  (images/ubuntu/Ubuntu2604-Readme.md: "Python 3.14.4");
- no Debian archive keyring: Ubuntu's images have ubuntu-keyring only (the images' package lists
  name no debian-archive-keyring; mmdebstrap does not depend on it), so mmdebstrap of a Debian
  suite trusts nothing unless the steps install it;
- ubuntu-26.04: sudo is sudo-rs (Ubuntu 25.10 made it the default; Debian 13 packages the same
  sudo-rs), which has no -E and resets the environment;
- a real newer ansible-core from PyPI, installed the way pipx does it, in /opt/pipx/venvs/ansible-core
  with its commands linked into /opt/pipx_bin (scripts/build/install-pipx-packages.sh:
  `pipx install ansible-core`; install-python.sh: PIPX_BIN_DIR=/opt/pipx_bin, PIPX_HOME=/opt/pipx);
- /etc/environment's PATH with /opt/pipx_bin ahead of /usr/bin, as the job sees it
  (actions/runner-images#11414: PATH=/snap/bin:/home/runner/.local/bin:/opt/pipx_bin:...);
- a `runner` user, uid 1001, groups adm, users, docker (a 2026 capture of `id` on a hosted runner),
  with passwordless sudo under Ubuntu's env_reset and secure_path, which lacks /opt/pipx_bin
  (docs: "passwordless sudo"; cloudbase/garm#113 for the secure_path line);
- /dev/kvm as root:kvm 0660, the runner not in kvm (actions/runner-images#8542);
- Docker's iptables chains with the FORWARD policy DROP (moby/moby#39439);
- udev: the loop devices' and their partitions' nodes appear in /dev as the kernel makes them
  (tests/udev_standin.py; the twin's /dev is a tmpfs);
- an init that reaps orphans (tests/twin_init.py), and a root that is a mount point;
- systemd's start of libvirtd when its package is installed (a loop in ENTER), with PID 1's
  limits: prepare finds it answering, as on a runner.
Nothing here reaches the internet but Debian's mirror, through a pipe to the host
(tests/forward.py). The steps run in a private network, mount and PID namespace, chrooted, as
`runner` with the groups its session started with. What they would download has a local stand-in
that behaves the same:
- HashiCorp's apt repository: Debian's vagrant, its Release file signed with a key made for the
  test, whose fingerprint the steps check; for ubuntu-26.04 a `resolute` suite without the pinned
  version (as HashiCorp's new suites start), so the steps must take noble's;
- Debian's mirror (deb.debian.org, which the base build's mmdebstrap reaches, from the host side
  as in the main job): the real one, through a byte pipe from the twin's 127.0.0.1:80 to a Unix
  socket the test serves from the host's network namespace (a package registry);
- the VM's own mirror (a hosted runner's guest reaches Debian's): a local apt repository with the
  packages the box's `packages:` asks for, served to the guest in the twin's namespace;
- `vagrant plugin install`: Debian's vagrant-libvirt package, through a `vagrant` wrapper that
  records each gem and version asked for (rubygems.org is out of reach);
- Debian's and Ubuntu's archive: exactly the packages mmdebstrap resolved for the names the steps
  install (a misspelt package fails that resolution);
- PyPI: this checkout's wheel and its dependencies, and GitHub: a bare clone of this checkout's
  HEAD that git reaches under https://github.com/example/vagabond.git (url.insteadOf);
- actions/setup-python: a Python 3.11 copied in (the one these tests run on), its path the step's
  output, as setup-python gives it (with update-environment: false, it changes no PATH);
- the action's checkout for `uses: example/vagabond@SHA`: `git archive` of that commit.
Steps still not run here, and why (the NOT_RUN sets below):
- the import of a distribution's cloud image: it downloads from the distribution's site, which this
  host cannot reach (the e2e tier imports a stand-in image; test_el_boxes_real checks the pins);
- `vagrant plugin install`: rubygems.org is out of reach; the stand-in records the gems and
  versions asked for and installs Debian's build of the same plugin;
- the nightly job's prebuilt box build: the e2e tier builds and publishes one, and the base build
  and up it starts from run in the default workflow's test here.
Each of these traits failed vagabond's steps before its fix: the runner's ansible-core won, a local
clone's workflow installed vagabond-vm==0.1.0 from PyPI, sudo dropped the boxes directory, the
plugin install broke, the image's python3 stopped the job, mmdebstrap found no Debian key.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests import forward, helpers, workflow_project
from tests.conftest import REPO, require_tool
from vagabond import files, paths
from vagabond.host import install

pytestmark = pytest.mark.real

SUITE = "trixie"
# What the steps take for granted on a GitHub runner image (and what the twin's set-up needs).
RUNNER_IMAGE = [
    "sudo",
    "curl",
    "ca-certificates",
    "gnupg",
    "python3",
    "python3-venv",
    "git",
    "procps",
    "iproute2",
    "dbus",
    "iptables",
    "sudo-rs",  # ubuntu-26.04's sudo (the twin of that image links it in as sudo)
]
# What each image says it is, and what differs (the module's docstring).
IMAGES = {
    "ubuntu-24.04": {"version": "24.04", "codename": "noble", "name": "Noble Numbat", "sudo_rs": False},
    "ubuntu-26.04": {"version": "26.04", "codename": "resolute", "name": "Resolute Raccoon", "sudo_rs": True},
}
# Steps no twin runs (the module's docstring says why).
NOT_RUN = {
    "Import the base box (the distribution's cloud image, checked against its sha256)",
    "Build the prebuilt dependency box (as root, for the loop devices of the offline compaction)",
}
BASE_BUILD = "Build the base box (as root, for loop devices)"
# The project's own box, in a boxes directory of its own (--boxes-dir): sudo must not lose it.
BOX = "project-debian12"
BOXES_DIR = "ci/boxes"
GUEST_PACKAGES = ["make"]  # what the README's example runs, from the box's `packages:`
GUEST_MIRROR_PORT = 8321
README_STEP = "The README's example command"
WARM_STEP = "The next run's up, from the exported warm image"
TEST_COLD_STEP = 'The action\'s up step as test: "true" runs it, the first run'
TEST_WARM_STEP = 'The action\'s up step as test: "true" runs it, the next run'
SHA_RE = re.compile(r"[0-9a-f]{40}")
REMOTE = "https://github.com/example/vagabond.git"
KVM_GID = 992
RUNNER_PATH = (
    "/snap/bin:/home/runner/.local/bin:/opt/pipx_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:"
    "/usr/games:/usr/local/games"
)
UBUNTU_SUDOERS = """\
# As Ubuntu's /etc/sudoers has it (cloudbase/garm#113 shows the hosted image's secure_path):
Defaults env_reset
Defaults secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin"
runner ALL=(ALL) NOPASSWD:ALL
"""


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{argv[:4]}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def apt_repository(debs: list[Path], root: Path, dist: str | None) -> None:
    """A flat repository (dist None) or a dists/DIST/main one, with Packages and Release files."""
    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    entries = []
    for deb in debs:
        shutil.copy2(deb, pool / deb.name)
        control = sh(["dpkg-deb", "-f", str(deb)]).stdout.strip()
        data = (pool / deb.name).read_bytes()
        entries.append(
            f"{control}\nFilename: pool/{deb.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    index = root if dist is None else root / "dists" / dist
    listing = index / ("" if dist is None else "main/binary-amd64")
    listing.mkdir(parents=True, exist_ok=True)
    packages = "\n".join(entries).encode()
    (listing / "Packages").write_bytes(packages)
    (listing / "Packages.gz").write_bytes(gzip.compress(packages))
    prefix = "" if dist is None else "main/binary-amd64/"
    files = "".join(
        f" {hashlib.sha256(b).hexdigest()} {len(b)} {prefix}{name}\n"
        for name, b in (("Packages", packages), ("Packages.gz", gzip.compress(packages)))
    )
    fields = {
        "Origin": "stand-in",
        "Label": "stand-in",
        "Date": "Fri, 27 Nov 2026 00:00:00 UTC",
        "Architectures": "amd64",
    }
    if dist is not None:
        fields |= {"Suite": dist, "Codename": dist, "Components": "main"}
    release = "".join(f"{k}: {v}\n" for k, v in fields.items()) + "SHA256:\n" + files
    (index / "Release").write_text(release)


@pytest.fixture(scope="module")
def packages_and_rootfs(tmp_path_factory):
    """The runner root file system (a tar) and the .debs the steps may install, from Debian's
    archive in the root network namespace (a package registry), before anything goes offline."""
    require_tool("mmdebstrap", "unshare", "chroot", "dpkg-deb", "gpg", "git")
    step_packages = sorted({*install.APT_HOST, *install.APT_VAGRANT, *install.APT_PLUGIN_BUILD})
    key = hashlib.sha256(json.dumps([SUITE, RUNNER_IMAGE, step_packages]).encode()).hexdigest()[:12]
    debs = paths.cache_dir() / "test-runner" / f"debs-{key}"
    rootfs = tmp_path_factory.mktemp("runner") / "root.tar"
    hooks = []
    if not debs.is_dir():
        partial = debs.with_name(debs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        hooks = [
            # (--reinstall: what the runner root already has, debian-archive-keyring among them, too.)
            '--customize-hook=chroot "$1" apt-get install --download-only --reinstall -y -q --no-install-recommends '
            f"{' '.join(step_packages)}",
            f"--customize-hook=sync-out /var/cache/apt/archives {partial}",
        ]
    sh(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            f"--include={','.join(RUNNER_IMAGE)}",
            *hooks,
            SUITE,
            str(rootfs),
        ],
        timeout=1800,
    )
    if hooks:
        partial.rename(debs)
    return sorted(debs.glob("*.deb")), rootfs


# Debian's mirrors mmdebstrap reaches for a Debian suite (the suite, its updates, its security
# updates), and the loopback address each one has in the twin.
DEBIAN_MIRRORS = {"deb.debian.org": "127.0.0.1", "security.debian.org": "127.0.0.2"}


@pytest.fixture(scope="module")
def debian_mirror_pipe(tmp_path_factory):
    """The host's ends of the twin's ways to Debian's mirrors (package registries): for each, a Unix
    socket whose connections go to that host's port 80 from the root network namespace, and nowhere else."""
    pipes = []
    for host, address in DEBIAN_MIRRORS.items():
        path = tmp_path_factory.mktemp("pipe") / f"{host}.sock"
        forward.unix_to_tcp(str(path), host, 80)
        pipes.append((host, address, path))
    return pipes


@pytest.fixture(scope="module")
def guest_mirror():
    """A local apt repository with what the box's `packages:` needs, from Debian's mirror (cached)."""
    repo = paths.cache_dir() / "test-runner" / "guest-apt-repo"
    sh([REPO / "scripts" / "local-apt-repo.sh", repo, "bookworm", *GUEST_PACKAGES], timeout=1800)
    return repo


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """The stand-in for PyPI: this checkout's wheel and its dependencies, the build backend a git
    install needs; and, apart, the newest ansible-core for the twin's Python 3.13 (the runner's own)."""
    out = tmp_path_factory.mktemp("wheels")
    sh([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(paths.data_dir())], timeout=600)
    (wheel,) = out.glob("vagabond_vm-*.whl")
    sh(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            str(out),
            str(wheel),
            "hatchling>=1.18",
        ],
        timeout=900,
    )
    pipx = tmp_path_factory.mktemp("pipx-wheels")
    sh(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            str(pipx),
            "--only-binary=:all:",
            "--python-version",
            "3.13",
            "--implementation",
            "cp",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "ansible-core",
        ],
        timeout=900,
    )
    return out, wheel.name, pipx


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """This checkout's HEAD as GitHub would serve it: a bare repository, and the commit."""
    bare = tmp_path_factory.mktemp("github") / "vagabond.git"
    sh(["git", "clone", "--quiet", "--bare", "--no-local", str(REPO), str(bare)])
    sha = sh(["git", "-C", str(bare), "rev-parse", "HEAD"]).stdout.strip()
    return bare, sha


@pytest.fixture(scope="module")
def vagabond_from_github(origin, wheels, tmp_path_factory):
    """A vagabond installed the way a user installs it from its repository: pip install
    git+https://github.com/...@SHA (pip records that in direct_url.json), in a venv of its own."""
    bare, sha = origin
    wheel_dir, _, _ = wheels
    venv = tmp_path_factory.mktemp("user-venv")
    gitconfig = venv / "gitconfig"
    gitconfig.write_text(f'[url "file://{bare}"]\n\tinsteadOf = {REMOTE}\n')
    sh([sys.executable, "-m", "venv", str(venv)])
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(gitconfig), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel_dir))
    sh(
        [
            venv / "bin" / "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"vagabond-vm @ git+{REMOTE}@{sha}",
        ],
        env=env,
        timeout=900,
    )
    return venv / "bin" / "vagabond", sha


SHIM = """#!/bin/sh
# Stand-in for `vagrant plugin install NAME --plugin-version V` (rubygems.org is out of reach):
# records what was asked; vagrant-libvirt itself comes from Debian's package.
if [ "$1 $2" = "plugin install" ]; then
  [ "$4" = --plugin-version ] && [ -n "$5" ] || { echo "stand-in: --plugin-version VERSION expected" >&2; exit 2; }
  echo "$3 $5 strict=${VAGRANT_DISABLE_STRICT_DEPENDENCY_ENFORCEMENT:-}" >> /var/tmp/plugins-asked
  [ "$3" = vagrant-libvirt ] || exit 0
  exec sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends vagrant-libvirt
fi
if [ "$1 $2" = "plugin uninstall" ]; then exit 0; fi
exec /usr/bin/vagrant "$@"
"""

# As root in the twin, once, before the job: the image's own layers (docker's firewall, the
# pipx-installed ansible-core) on top of the packages.
IMAGE_SETUP = r"""set -eu
python3 -m venv /opt/pipx/venvs/ansible-core
/opt/pipx/venvs/ansible-core/bin/pip install --quiet --no-index --find-links /srv/pipx-wheels ansible-core
mkdir -p /opt/pipx_bin
for t in ansible ansible-playbook ansible-galaxy ansible-config ansible-inventory; do
  ln -s /opt/pipx/venvs/ansible-core/bin/$t /opt/pipx_bin/$t
done
chmod -R 777 /opt  # configure-system.sh: "chmod -R 777 /opt"
"""

# Inside fresh namespaces: loopback only, private mounts, daemons die with the namespace.
ENTER = """set -e
ip link set lo up
# A runner's uplink: the default route goes out through eth0 (its far end leads nowhere here).
ip link add eth0 type veth peer name eth0-far
ip link set eth0 up
ip route add default dev eth0
# Stand-ins that serve over the network (a registry): in this namespace, from the host's binaries.
eval "$SERVICES"
mount --make-rprivate /
# The root a mount point of its own, as a container's is (libvirt makes qemu's mounts private to it).
mount --bind "$ROOT" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount -t sysfs -o ro sysfs "$ROOT/sys"
mount -t tmpfs -o mode=755 tmpfs "$ROOT/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read name major minor <<EOF
$n
EOF
  mknod -m 666 "$ROOT/dev/$name" c "$major" "$minor"
done
# /dev/kvm as a hosted runner has it before a udev rule opens it.
mknod -m 660 "$ROOT/dev/kvm" c 10 232
chown 0:$KVM_GID "$ROOT/dev/kvm"
# The VMs' tap devices, and udev's loop and partition nodes (tests/udev_standin.py).
mkdir "$ROOT/dev/net"
mknod -m 666 "$ROOT/dev/net/tun" c 10 200
"$HOST_PYTHON" "$UDEV_STANDIN" "$ROOT" &
# Debian's mirrors: each one a loopback address in the twin (/etc/hosts), piped to the host's side.
for pipe in $DEBIAN_PIPES; do
  "$HOST_PYTHON" "$FORWARD" tcp-to-unix "${pipe%%=*}" 80 "${pipe#*=}" &
done
hostname runner-host
ln -s /proc/self/fd "$ROOT/dev/fd"  # bash's process substitution reads /dev/fd/N
for n in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${n%%:*}" "$ROOT/dev/${n#*:}"; done
mkdir "$ROOT/dev/pts" "$ROOT/dev/shm"
mount -t devpts -o newinstance,ptmxmode=666 devpts "$ROOT/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"  # Ansible's multiprocessing needs it
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs tmpfs "$ROOT/run"
mount -t tmpfs tmpfs "$ROOT/tmp"
# systemd's part: on a runner, installing libvirt-daemon-system starts libvirtd from PID 1, with
# PID 1's limits. Here the same happens once dpkg has configured the package; never as a child of
# a step (sudo lowers the hard core limit of what it runs to 0, libvirt 11 raises qemu's to
# unlimited, and this host's kernel lets no one raise a hard limit).
(
  until awk '/^Package: libvirt-daemon-system$/{p=1} p&&/^Status:/{print; exit}' "$ROOT/var/lib/dpkg/status" \
      | grep -q "install ok installed"; do sleep 0.5; done
  # The one setting the twin changes: libvirt builds each qemu a private /dev by copying nodes from
  # a devtmpfs; the twin's /dev is a tmpfs of its own, so qemu keeps the twin's /dev instead.
  echo 'namespaces = []' >> "$ROOT/etc/libvirt/qemu.conf"
  chroot "$ROOT" /usr/sbin/virtlogd -d && chroot "$ROOT" /usr/sbin/libvirtd -d
) &
# Docker's firewall as dockerd leaves it: FORWARD dropped, its chains in front.
exec "$HOST_PYTHON" "$TWIN_INIT" chroot "$ROOT" sh -ec '
  iptables -N DOCKER; iptables -N DOCKER-USER; iptables -N DOCKER-ISOLATION-STAGE-1
  iptables -P FORWARD DROP
  iptables -A FORWARD -j DOCKER-USER; iptables -A FORWARD -j DOCKER-ISOLATION-STAGE-1; iptables -A DOCKER-USER -j RETURN
  mkdir -p /run/dbus; dbus-uuidgen --ensure=/etc/machine-id; dbus-daemon --system --fork
  exec python3 /var/tmp/driver.py'
"""

# Runs inside the chroot, as root: each step as `runner` with the job's starting groups, with
# GITHUB_ENV, GITHUB_PATH and GITHUB_OUTPUT applied between steps as the runner does, and the
# steps' outputs substituted where a later step's env names them.
DRIVER = r"""
import json, os, pwd, re, subprocess, sys
plan = json.load(open("/var/tmp/plan.json"))
user = pwd.getpwnam("runner")
groups = os.getgrouplist("runner", user.pw_gid)  # fixed now, as the runner's session is
env = dict(plan["env"])
for line in open("/etc/environment"):  # the job's PATH, as the runner service reads it
    key, _, value = line.strip().partition("=")
    if key == "PATH":
        path = value.strip('"')
outputs, results = {}, []
summary = "/home/runner/work/_temp/_runner_file_commands/step_summary"

def as_runner():
    os.setgroups(groups); os.setgid(user.pw_gid); os.setuid(user.pw_uid)

def resolve(text):
    pattern = r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}"
    return re.sub(pattern, lambda m: outputs.get(m[1], {}).get(m[2], ""), text)

for i, step in enumerate(plan["steps"]):
    if step.get("stand_in") == "setup-python":
        outputs[step["id"]] = {"python-path": plan["setup_python"]}
    if step.get("stand_in"):
        results.append({"name": step["name"], "rc": 0, "stdout": "", "stderr": "", "outputs": ""})
        continue
    commands = "/home/runner/work/_temp/_runner_file_commands"
    files = {k: f"{commands}/{k.lower()}_{i}" for k in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT")}
    for f in [*files.values(), summary]:
        open(f, "a").close(); os.chown(f, user.pw_uid, user.pw_gid)
    step_env = {**env, **{k: resolve(v) for k, v in step["env"].items()}, **plan["overrides"], **files,
                "GITHUB_STEP_SUMMARY": summary, "PATH": path}
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=step_env,
                       cwd=plan["workspace"], preexec_fn=as_runner, capture_output=True, text=True)
    # The workflow commands (::notice ...) whole, wherever they are; of the rest, the end.
    notes = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("::")]
    results.append({"name": step["name"], "rc": r.returncode, "stdout": r.stdout[-6000:], "stderr": r.stderr[-8000:],
                    "commands": notes,
                    "outputs": open(files["GITHUB_OUTPUT"]).read()})
    if r.returncode:
        break
    if step.get("id"):
        outputs[step["id"]] = dict(l.partition("=")[::2] for l in open(files["GITHUB_OUTPUT"]).read().splitlines())
    for line in open(files["GITHUB_ENV"]).read().splitlines():
        k, _, v = line.partition("="); env[k] = v
    for line in open(files["GITHUB_PATH"]).read().splitlines():
        path = f"{line}:{path}"
checks = {}
if all(r["rc"] == 0 for r in results):
    for name, argv in plan["checks"].items():
        r = subprocess.run(argv, env={**env, "PATH": path}, preexec_fn=None if name.startswith("root:") else as_runner,
                           capture_output=True, text=True, cwd=plan["workspace"])
        checks[name] = {"rc": r.returncode, "stdout": r.stdout[-8000:], "stderr": r.stderr[-3000:]}
checks["summary"] = {"stdout": open(summary).read() if os.path.exists(summary) else ""}
json.dump({"steps": results, "checks": checks, "groups": groups, "path": path}, open("/var/tmp/results.json", "w"))
"""


def _stand_in_python(root: Path) -> str:
    """actions/setup-python's stand-in: the Python these tests run on (3.11, in range), copied in;
    its path is what the step outputs."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    exe = Path(os.path.realpath(sys._base_executable))
    if base == Path("/usr"):  # Debian's: the interpreter, its standard library, the wheels its ensurepip installs
        shutil.copy2(exe, root / "usr/bin" / version)
        shutil.copytree(base / "lib" / version, root / "usr/lib" / version, symlinks=True, dirs_exist_ok=True)
        (root / "usr/share/python-wheels").mkdir(parents=True, exist_ok=True)
        for wheel in Path("/usr/share/python-wheels").glob("*.whl"):
            if not (root / "usr/share/python-wheels" / wheel.name).exists():
                shutil.copy2(wheel, root / "usr/share/python-wheels" / wheel.name)
        return f"/usr/bin/{version}"
    target = root / base.relative_to("/")  # a self-contained build (pyenv): the whole prefix, at its path
    shutil.copytree(base, target, symlinks=True)
    for parent in target.relative_to(root).parents:
        (root / parent).chmod((root / parent).stat().st_mode | 0o011)
    return str(exe)


def _be_ubuntu(root: Path, image: dict) -> None:
    """What the root says it is, and the Debian keyring an Ubuntu image does not have: the package
    purged as dpkg would (its files, its record, and apt's dependency on it, which Ubuntu's apt has
    on ubuntu-keyring instead)."""
    release = (
        f'PRETTY_NAME="Ubuntu {image["version"]} LTS"\nNAME="Ubuntu"\nVERSION_ID="{image["version"]}"\n'
        f'VERSION="{image["version"]} LTS ({image["name"]})"\nVERSION_CODENAME={image["codename"]}\nID=ubuntu\n'
        f"ID_LIKE=debian\nUBUNTU_CODENAME={image['codename']}\n"
    )
    (root / "etc/os-release").unlink()
    (root / "usr/lib/os-release").write_text(release)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    info = root / "var/lib/dpkg/info"
    for listed in info.glob("debian-archive-keyring.*"):
        if listed.suffix == ".list":
            for line in listed.read_text().splitlines():
                target = root / line.lstrip("/")
                if target.is_file() or target.is_symlink():
                    target.unlink()
        listed.unlink()
    status = (root / "var/lib/dpkg/status").read_text().split("\n\n")
    kept = [stanza for stanza in status if not stanza.startswith("Package: debian-archive-keyring\n")]
    assert len(kept) == len(status) - 1, "the runner root has debian-archive-keyring to take away"
    text = "\n\n".join(kept)
    text = re.sub(r"(?m)^(Depends: .*?), debian-archive-keyring\b", r"\1", text)
    (root / "var/lib/dpkg/status").write_text(text)
    assert not list((root / "usr/share/keyrings").glob("debian-archive-*")), "no Debian key left"
    if image["sudo_rs"]:
        (root / "usr/bin/sudo").unlink()
        (root / "usr/bin/sudo").symlink_to("sudo-rs")


@pytest.fixture
def twin(request, packages_and_rootfs, wheels, origin, debian_mirror_pipe, guest_mirror, tmp_path):
    """A fresh runner root with the stand-ins in place and the image's traits (the module's docstring);
    ubuntu-24.04's unless the test asks for another image."""
    image_name = getattr(request, "param", "ubuntu-24.04")
    image = IMAGES[image_name]
    debs, rootfs_tar = packages_and_rootfs
    wheel_dir, wheel, pipx_wheels = wheels
    bare, sha = origin
    root = tmp_path / "root"
    root.mkdir()
    sh(["tar", "-xf", str(rootfs_tar), "-C", str(root)])
    srv = root / "srv"

    # HashiCorp's repository, stood in for: Debian's vagrant, signed by a key of the test's own.
    vagrant_deb = next(d for d in debs if d.name.startswith("vagrant_"))
    apt_repository([vagrant_deb], srv / "hashicorp", "noble")
    if image["codename"] != "noble":  # a newer Ubuntu's suite: newer releases only, not the pinned one
        apt_repository([], srv / "hashicorp", image["codename"])
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    sh([*gpg, "--quick-gen-key", "stand-in for HashiCorp <apt@example.invalid>", "ed25519", "sign", "never"])
    colons = sh([*gpg, "--with-colons", "--list-keys"]).stdout
    fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    (srv / "hashicorp" / "gpg").write_text(sh([*gpg, "--armor", "--export", fingerprint]).stdout)
    for release in (srv / "hashicorp" / "dists").glob("*/Release"):
        sh([*gpg, "--yes", "--clearsign", "--output", str(release.with_name("InRelease")), str(release)])
    apt_repository([d for d in debs if d != vagrant_deb], srv / "debian", None)
    for listing in [root / "etc/apt/sources.list", *(root / "etc/apt/sources.list.d").glob("*")]:
        listing.unlink(missing_ok=True)
    (root / "etc/apt/sources.list").write_text("deb [trusted=yes] file:/srv/debian ./\n")
    shutil.copytree(wheel_dir, srv / "wheels")
    shutil.copytree(pipx_wheels, srv / "pipx-wheels")
    shutil.copytree(bare, srv / "git" / "vagabond.git")
    sh(["chmod", "-R", "a+rX", str(srv)])

    # The image: the runner user as GitHub makes it, its sudo, PATH and the pipx ansible-core.
    sh(["chroot", str(root), "groupadd", "--system", "--gid", str(KVM_GID), "kvm"])
    sh(["chroot", str(root), "groupadd", "--system", "docker"])
    sh(
        [
            "chroot",
            str(root),
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--uid",
            "1001",
            "--groups",
            "adm,users,docker",
            "runner",
        ]
    )
    (root / "etc/sudoers.d/runner").write_text(UBUNTU_SUDOERS)
    (root / "etc/sudoers.d/runner").chmod(0o440)
    (root / "etc/environment").write_text(f'PATH="{RUNNER_PATH}"\nPIPX_BIN_DIR=/opt/pipx_bin\nPIPX_HOME=/opt/pipx\n')
    (root / "var/tmp/image-setup.sh").write_text(IMAGE_SETUP)
    sh(["unshare", "--net", "chroot", str(root), "sh", "/var/tmp/image-setup.sh"], timeout=600)
    setup_python = _stand_in_python(root)
    _be_ubuntu(root, image)
    # Debian's mirrors, through the pipes (ENTER): mmdebstrap's defaults for a Debian suite.
    mirrors = "".join(f"{address} {host}\n" for host, address in DEBIAN_MIRRORS.items())
    (root / "etc/hosts").write_text("127.0.0.1 localhost runner-host\n" + mirrors)
    (root / "etc/hostname").write_text("runner-host\n")
    # GitHub, stood in for: git fetches github.com/example/vagabond from the bare clone.
    # (It is root's, as GitHub's repository is not the runner's: git is told it may read it.)
    (root / "home/runner/.gitconfig").write_text(
        f'[url "file:///srv/git/vagabond.git"]\n\tinsteadOf = {REMOTE}\n[safe]\n\tdirectory = /srv/git/vagabond.git\n'
    )
    workspace = root / "home/runner/work/project/project"
    workflow_project.make(workspace)
    (workspace / BOXES_DIR).mkdir(parents=True)
    shipped = (REPO / "boxes" / "debian12.yaml").read_text()
    # The guest's mirror (a hosted runner's guest reaches Debian's own), as vagabond_apt_sources.
    mirror = [f"deb [trusted=yes] http://192.168.121.1:{GUEST_MIRROR_PORT}/ ./"]
    (workspace / BOXES_DIR / f"{BOX}.yaml").write_text(
        # (src is relative to the box file's project, ci/: the repository is one up.)
        shipped + "synced_folders:\n  - {src: .., dest: /src, exclude: [.git]}\n"
        f"packages: {json.dumps(GUEST_PACKAGES)}\n"
        f"vars: {json.dumps({'vagabond_apt_sources': mirror})}\n"
        f"prebuilt: {{name: example/{BOX}, catalog: 'https://boxes.example.org/{BOX}/metadata.json'}}\n"
    )
    # What the project's tests are: `make test`, which the README's example runs in the VM.
    (workspace / "Makefile").write_text('test:\n\t@echo "the project\'s tests ran on $$(uname -r) in $$(pwd)"\n')
    (root / "home/runner/work/_temp/_runner_file_commands").mkdir(parents=True)
    # The action's checkouts, as the runner fetches them for `uses:`: that commit of the repository.
    action = root / "home/runner/work/_actions/example/vagabond" / sha
    action.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(bare), "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(action)], input=archive, check=True)
    (root / "usr/local/bin/vagrant").write_text(SHIM)
    (root / "usr/local/bin/vagrant").chmod(0o755)
    sh(["chroot", str(root), "chown", "-R", "runner:runner", "/home/runner"])
    env = {
        "HOME": "/home/runner",
        "USER": "runner",
        "LANG": "C.UTF-8",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "RUNNER_TEMP": "/home/runner/work/_temp",
        "RUNNER_ENVIRONMENT": "github-hosted",
        "RUNNER_OS": "Linux",
        "GITHUB_WORKSPACE": "/home/runner/work/project/project",
        # PyPI, stood in for by the wheel directory.
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": "/srv/wheels",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        # A job that turned Vagrant's strict dependency enforcement off (as the fog-json workarounds did).
        "VAGRANT_DISABLE_STRICT_DEPENDENCY_ENFORCEMENT": "1",
    }
    # The stand-ins' coordinates: what a user would change if HashiCorp moved.
    overrides = {
        "VAGRANT_APT_URL": "file:///srv/hashicorp",
        "VAGRANT_APT_FINGERPRINT": fingerprint,
        "VAGRANT_VERSION": sh(["dpkg-deb", "-f", str(vagrant_deb), "Version"]).stdout.strip(),
    }
    yield {
        "image": image_name,
        "debian_pipes": debian_mirror_pipe,
        "guest_mirror": guest_mirror,
        "root": root,
        "workspace": workspace,
        "env": env,
        "overrides": overrides,
        "wheel": wheel,
        "sha": sha,
        "setup_python": setup_python,
    }
    subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"], capture_output=True)


CHECKS = {
    "plugins": ["vagrant", "plugin", "list"],
    "libvirt": ["virsh", "--connect", "qemu:///system", "pool-info", "default"],
    "doctor": ["vagabond", "doctor", "--json"],
    "groups": ["id", "-nG", "runner"],
    "runner's ansible": ["ansible-playbook", "--version"],
    "root:firewall": ["iptables", "-S", "DOCKER-USER"],
    "root:kvm": ["stat", "-c", "%U:%G %a", "/dev/kvm"],
}


def expand(value, scope: dict) -> str:
    """A `${{ ... }}` expression of the kinds these files use, from what is known before the job
    runs (inputs, matrix, env, the action's path); a step's outputs stay for the driver."""

    def one(m: re.Match) -> str:
        expr = m[1].strip()
        if expr.startswith("steps."):
            return m[0]
        kind, _, name = expr.partition(".")
        if kind in scope and name in scope[kind]:
            return str(scope[kind][name])
        raise AssertionError(f"the twin cannot evaluate ${{{{ {expr} }}}}")

    return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))


def plan_steps(steps: list[dict], scope: dict, actions: Path, skip: frozenset[str] = frozenset()) -> list[dict]:
    """The job's steps as the twin runs them: run steps with their env expanded, setup-python's
    stand-in, and an action used by reference expanded into its own composite steps; NOT_RUN's
    steps and those in skip left out."""
    planned = []
    for step in steps:
        uses = step.get("uses", "")
        if uses.startswith("actions/setup-python@"):
            planned.append({"stand_in": "setup-python", "id": step["id"], "name": step["name"]})
        elif uses.startswith("actions/download-artifact@"):
            planned.append({"stand_in": "artifact", "name": step["name"]})  # the test put it in place
        elif uses.startswith("example/vagabond"):
            ref, _, sha = uses.partition("@")
            path = actions / "example/vagabond" / sha / ref.removeprefix("example/vagabond").strip("/")
            action = YAML(typ="safe").load((path / "action.yml").read_text())
            given = {k: expand(v, scope) for k, v in step.get("with", {}).items()}
            inputs = {name: given.get(name, spec.get("default", "")) for name, spec in action["inputs"].items()}
            inner = scope | {
                "inputs": inputs,
                "github": scope["github"] | {"action_path": f"/home/runner/work/_actions/example/vagabond/{sha}"},
            }
            planned += plan_steps(action["runs"]["steps"], inner, actions, skip)
        elif "run" in step and step.get("name") not in NOT_RUN | skip:
            assert "${{" not in step["run"], f"{step.get('name')}: expressions reach a shell only through env"
            planned.append(
                {
                    "name": step.get("name", step["run"][:40]),
                    "id": step.get("id"),
                    "run": step["run"],
                    "env": {k: expand(v, scope) for k, v in step.get("env", {}).items()},
                }
            )
    return planned


def run_job(ctx: dict, steps: list[dict], env: dict, services: str = "", checks: dict | None = None) -> dict:
    """The steps in order, in fresh namespaces, as `runner`; then the checks (a test job's, CHECKS,
    unless given). services: shell commands that start, in the job's network namespace, what its
    steps reach over the network."""
    root = ctx["root"]
    plan = {
        "env": ctx["env"] | env,
        "overrides": ctx["overrides"],
        "workspace": "/home/runner/work/project/project",
        "steps": steps,
        "checks": CHECKS if checks is None else checks,
        "setup_python": ctx["setup_python"],
    }
    (root / "var/tmp/plan.json").write_text(json.dumps(plan))
    (root / "var/tmp/driver.py").write_text(textwrap.dedent(DRIVER))
    run = subprocess.run(
        ["unshare", "--net", "--mount", "--pid", "--uts", "--fork", "--kill-child", "bash", "-c", ENTER],
        env={
            **os.environ,
            "ROOT": str(root),
            "KVM_GID": str(KVM_GID),
            "SERVICES": services,
            "UDEV_STANDIN": str(REPO / "tests" / "udev_standin.py"),
            "FORWARD": str(REPO / "tests" / "forward.py"),
            "DEBIAN_PIPES": " ".join(f"{address}={sock}" for _, address, sock in ctx["debian_pipes"]),
            "TWIN_INIT": str(REPO / "tests" / "twin_init.py"),
            "HOST_PYTHON": sys.executable,  # the stand-ins run on the host's Python, in the twin's namespaces
        },
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((root / "var/tmp/results.json").read_text())
    for step in results["steps"]:
        assert step["rc"] == 0, f"step {step['name']!r} failed:\n{step['stdout']}\n{step['stderr']}"
    assert [s["name"] for s in results["steps"]] == [s["name"] for s in steps]
    return results


def assert_ready(ctx: dict, results: dict) -> None:
    """After the install steps, on a runner whose own ansible-core is newer and first on PATH:
    Vagrant from the "HashiCorp" repository, the plugin resolved under strict enforcement, the runner user
    reaching libvirt without sudo and without the new groups in its session, Docker's firewall
    opened for libvirt's guests, a no-KVM warning, and doctor green with vagabond's own ansible-core 2.16."""
    root = ctx["root"]
    policy = sh(["chroot", str(root), "apt-cache", "policy", "vagrant"]).stdout
    assert "file:/srv/hashicorp noble/main" in policy and f"*** {ctx['overrides']['VAGRANT_VERSION']}" in policy
    asked = (root / "var/tmp/plugins-asked").read_text().splitlines()
    # Strict dependency enforcement, even though the job's environment turned it off (install.PLUGIN_PINS).
    assert asked == [f"vagrant-libvirt {install.VAGRANT_LIBVIRT_VERSION} strict="]
    checks = results["checks"]
    assert "vagrant-libvirt" in checks["plugins"]["stdout"], checks["plugins"]
    assert checks["libvirt"]["rc"] == 0 and "running" in checks["libvirt"]["stdout"], checks["libvirt"]
    assert "libvirt" in checks["groups"]["stdout"].split(), "later sessions get the group"
    # The trait is there and real: the runner's own ansible-core, first on its PATH.
    theirs = re.search(r"\[core (\d+)\.(\d+)\.\d+\]", checks["runner's ansible"]["stdout"])
    assert theirs and (int(theirs[1]), int(theirs[2])) > install.ANSIBLE_CORE[1], checks["runner's ansible"]
    assert results["path"].index("/home/runner/work/_temp/vagabond-bin") < results["path"].index("/opt/pipx_bin")
    doctor = {c["name"]: c for c in json.loads(checks["doctor"]["stdout"])["checks"]}
    for name in (
        "vagrant",
        "vagrant-libvirt",
        "libvirt",
        "storage pool",
        "qemu",
        "qemu-img",
        "ansible-playbook",
        "mitogen",
    ):
        assert doctor[name]["ok"], doctor[name]
    assert doctor["ansible-playbook"]["path"] == "/home/runner/work/_temp/vagabond/bin/ansible-playbook"
    assert doctor["ansible-playbook"]["version"].startswith("2.16."), doctor["ansible-playbook"]
    assert "-A DOCKER-USER -s 192.168.121.0/24 -i virbr+" in checks["root:firewall"]["stdout"], checks["root:firewall"]
    prepare = next(s for s in results["steps"] if s["name"].startswith("Prepare the host"))
    assert "::warning title=vagabond prepare%3A no KVM::VMs run under software emulation" in prepare["stderr"], prepare[
        "stderr"
    ]
    assert "No KVM on this runner" in checks["summary"]["stdout"], "the job's summary names the cost"
    owners = {p.stat().st_uid for p in ctx["workspace"].rglob("*")}
    assert owners == {(root / "home/runner").stat().st_uid}, "files in the workspace owned by someone else"


def job_scope(doc: dict, job: dict, given: dict | None = None) -> tuple[dict, dict]:
    """The expressions' scope (the matrix row of BOX, what the test gives) and the job's env."""
    include = job.get("strategy", {}).get("matrix", {}).get("include", [])
    matrix = next((m for m in include if m["box"] == BOX), {"box": BOX})
    # (The one `job.` expression these files use: the cleanup's upload-logs, false for a green job.)
    scope = {
        "matrix": matrix,
        "env": {},
        "github": {},
        "vars": {},
        "secrets": {},
        "job": {"status != 'success'": "false"},
    }
    for kind, values in (given or {}).items():
        scope[kind].update(values)
    env = {}
    for key, value in {**doc["env"], **job.get("env", {})}.items():
        env[key] = expand(value, scope)
        scope["env"][key] = env[key]
    return scope, env


def generated_workflow(vagabond: str, ctx: dict, *args: str) -> dict:
    """`vagabond ci github ARGS` in the twin's workspace, the project's boxes in ci/boxes."""
    out = subprocess.run(
        [vagabond, "--boxes-dir", BOXES_DIR, "ci", "github", *args],
        cwd=ctx["workspace"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "VAGABOND_BOXES"},
    )
    return YAML(typ="safe").load(out.stdout)


def readme_example() -> tuple[str, str]:
    """The command the README's GitHub Actions example runs in the VM, and the box it names."""
    m = re.search(r"^\s*- run: (vagabond run (\S+) -- .+)$", (REPO / "README.md").read_text(), re.M)
    assert m, "README.md's example has a `- run: vagabond run BOX -- ...` step"
    return m[1], m[2]


@pytest.mark.parametrize("twin", list(IMAGES), indirect=True)
def test_the_default_workflow_on_the_runner_twin(twin, vagabond_from_github):
    """`vagabond ci github --warm-cache` as a new user runs it (a vagabond installed from its
    repository, the project's boxes in ci/boxes), then every step of the test job, which uses vagabond's own action
    at the same commit, on the twin of each image: the base box built from Debian's packages on a
    root without Debian's keyring, the VM up and provisioned (the box's `packages:` installed), the
    project's tests run in it, the README's example command (its box swapped for the project's:
    EL guests cannot boot here), and the cleanup action's destroy."""
    vagabond, sha = vagabond_from_github
    ctx = twin
    doc = generated_workflow(vagabond, ctx, "--warm-cache")  # as a project turns it on
    assert doc["env"]["VAGABOND_SPEC"] == f"vagabond-vm @ git+{REMOTE}@{sha}", "a source that exists"
    assert doc["env"]["VAGABOND_BOXES"] == BOXES_DIR
    job = doc["jobs"]["test"]
    assert f"example/vagabond@{sha}" in [s.get("uses") for s in job["steps"]], "the action at the same commit"
    action = next(s for s in job["steps"] if s.get("uses") == f"example/vagabond@{sha}")
    assert action["with"]["warm-cache"] == "true"
    command, readme_box = readme_example()
    cleanup = next(i for i, s in enumerate(job["steps"]) if s.get("uses", "").startswith("example/vagabond/cleanup"))
    job["steps"].insert(cleanup, {"name": README_STEP, "run": command.replace(f" {readme_box} ", f" {BOX} ", 1)})
    # The next run, as far as this runner can play it: no VM and no warm image here, the file the
    # action exported in the cache's place; its up (the action's own options) takes it in and
    # restores, and the README's example runs in the restored VM.
    next_run = (
        f"vagabond destroy {BOX} && vagabond save {BOX} --drop && "
        f'vagabond up {BOX} --logs-on-failure vagabond-logs --warm-from "$RUNNER_TEMP/vagabond-warm/{BOX}/warm.tar"'
    )
    job["steps"].insert(cleanup, {"name": WARM_STEP, "run": next_run})
    # A push to the default branch: the run that saves warm images.
    pushed = {"github": {"event_name": "push", "ref_name": "main", "event.repository.default_branch": "main"}}
    scope, env = job_scope(doc, job, pushed)
    steps = plan_steps(job["steps"], scope, ctx["root"] / "home/runner/work/_actions")
    # And the action's own up step as `test: "true"` runs it, twice: a first run (no VM, no cached
    # image) whose green sequence exports its VM, then the next run's sequence, which restores it.
    up_step = next(s for s in steps if s.get("name") == "Bring the VM up (or test in it)")
    first = next(i for i, s in enumerate(steps) if s.get("name") == README_STEP) + 1
    sequence = [
        {
            "name": "No VM and no warm image (the sequence's first run)",
            "id": None,
            "env": {},
            "run": f"vagabond destroy {BOX} && vagabond save {BOX} --drop && "
            f'rm "$RUNNER_TEMP/vagabond-warm/{BOX}/warm.tar"',
        },
        up_step | {"name": TEST_COLD_STEP, "id": "test-cold", "env": up_step["env"] | {"TEST": "true"}},
        # The next run is on a fresh runner: the export's local warm image is not there.
        {
            "name": "A fresh runner's cache: the exported file only",
            "id": None,
            "env": {},
            "run": f"vagabond save {BOX} --drop",
        },
        up_step | {"name": TEST_WARM_STEP, "id": "test-warm", "env": up_step["env"] | {"TEST": "true"}},
    ]
    steps[first:first] = sequence
    names = [s["name"] for s in steps]
    for name in ("Install libvirt, qemu, Vagrant and vagabond", BASE_BUILD, "Bring the VM up (or test in it)"):
        assert name in names
    assert names.index("Run the tests in the VM") < names.index(README_STEP) < names.index("Destroy the VM")
    mirror = ctx["guest_mirror"]
    services = f"{sys.executable} -m http.server --bind 0.0.0.0 {GUEST_MIRROR_PORT} --directory {mirror} &>/dev/null &"
    checks = CHECKS | {"root:domains": ["virsh", "--connect", "qemu:///system", "list", "--all", "--name"]}
    results = run_job(ctx, steps, env, services, checks=checks)
    assert_ready(ctx, results)
    by_name = {s["name"]: s for s in results["steps"]}
    install = by_name["Install libvirt, qemu, Vagrant and vagabond"]
    if ctx["image"] == "ubuntu-26.04":  # its suite lacks the pinned Vagrant: noble's, and it says so
        notice = (
            f"::notice title=vagabond::HashiCorp's resolute suite has no vagrant {ctx['overrides']['VAGRANT_VERSION']}"
        )
        assert any(c.startswith(notice) for c in install["commands"]), install["commands"]
        assert "/srv/hashicorp noble main" in (ctx["root"] / "etc/apt/sources.list.d/hashicorp.list").read_text()
        assert (ctx["root"] / "usr/bin/sudo").readlink() == Path("sudo-rs"), "the steps ran under sudo-rs"
    boxes = by_name["Which base box, which prebuilt box"]
    assert "kind=mmdebstrap\nsynced=1\n" in boxes["outputs"], boxes["outputs"]
    assert re.search(r"^base=vagabond-base-vagabond-debian12-[0-9a-f]{12}$", boxes["outputs"], re.M), boxes["outputs"]
    assert "base-path=/home/runner/.cache/vagabond/boxes/vagabond-debian12/" in boxes["outputs"]
    built = by_name[BASE_BUILD]
    assert "base box vagabond/debian12 " in built["stderr"], built["stderr"][-2000:]
    made = list((ctx["root"] / "home/runner/.cache/vagabond/boxes/vagabond-debian12").glob("*/vagabond-debian12.box"))
    assert len(made) == 1 and made[0].stat().st_uid == 1001, "the base box, the runner's own"
    up = by_name["Bring the VM up (or test in it)"]
    assert "Install the box's packages (apt)" in up["stdout"] + up["stderr"], up["stderr"][-3000:]
    exported = by_name["Export the warm image for the next run"]
    assert (
        f"exported the warm image of {BOX} to /home/runner/work/_temp/vagabond-warm/{BOX}/warm.tar"
        in exported["stderr"]
    ), exported["stderr"][-3000:]
    assert f"no warm image at /home/runner/work/_temp/vagabond-warm/{BOX}/warm.tar yet: booting cold" in up["stderr"]
    taken = by_name[WARM_STEP]["stderr"]
    assert "take in the warm image" in taken and f"restore {BOX} from its warm image" in taken, taken[-3000:]
    assert "vagrant up" not in taken, "restored, not booted"
    for name in ("Run the tests in the VM", README_STEP):
        ran = by_name[name]["stdout"]
        assert re.search(r"the project's tests ran on \S+-cloud-amd64 in /src", ran), f"{name}: {ran[-2000:]}"
    cold = by_name[TEST_COLD_STEP]
    assert f"exported the warm image of {BOX}" in cold["stderr"], cold["stderr"][-3000:]
    assert "exported=true" in cold["outputs"] and re.search(r"^warm-key=[0-9a-f]{32}$", cold["outputs"], re.M)
    again = by_name[TEST_WARM_STEP]
    assert "take in the warm image" in again["stderr"], again["stderr"][-3000:]
    assert f"restore {BOX} from its warm image" in again["stderr"]
    assert "nothing to export" in again["stderr"] and "exported=true" not in again["outputs"]
    assert results["checks"]["root:domains"]["stdout"].split() == [], "the cleanup destroyed the VM"


def test_the_nightly_jobs_install_from_the_repository_on_the_runner_twin(twin, vagabond_from_github):
    """The nightly job's own steps (no action): vagabond pip-installed from the git URL the
    workflow names, on setup-python's Python, the project's box found under sudo."""
    vagabond, sha = vagabond_from_github
    ctx = twin
    doc = generated_workflow(vagabond, ctx)
    job = doc["jobs"]["prebuilt"]
    scope, env = job_scope(doc, job)
    # (Its base build is the default workflow's, which the test above runs: not twice.)
    steps = plan_steps(job["steps"], scope, ctx["root"] / "home/runner/work/_actions", frozenset({BASE_BUILD}))
    results = run_job(ctx, steps, env)
    assert_ready(ctx, results)
    (record,) = (ctx["root"] / "home/runner/work/_temp/vagabond/lib").glob(
        "python3.*/site-packages/vagabond_vm-*.dist-info/direct_url.json"
    )
    installed = json.loads(record.read_text())
    assert installed["url"] == REMOTE and installed["vcs_info"]["commit_id"] == sha


def test_the_publish_job_pushes_to_the_registry_stand_in_with_the_jobs_token(twin, vagabond_from_github, tmp_path):
    """The nightly publish job's steps with no catalog variable set: the box goes to this repository's
    packages on GitHub's registry, stood in for by the distribution registry serving ghcr.io over
    TLS (a CA of the test's own, which the twin trusts) that takes only the job's own token."""
    from cryptography.hazmat.primitives import serialization

    require_tool("docker-registry", "htpasswd")
    vagabond, _ = vagabond_from_github
    ctx, root = twin, twin["root"]
    token = "ghs_the_publish_jobs_own_token"
    key, cert = helpers.self_signed("ghcr.io", dns_name="ghcr.io", ca=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    served = tmp_path / "ghcr"
    served.mkdir()
    (served / "cert.pem").write_bytes(pem)
    (served / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with (root / "etc/ssl/certs/ca-certificates.crt").open("ab") as bundle:
        bundle.write(pem)
    with (root / "etc/hosts").open("a") as hosts:
        hosts.write("127.0.0.1 ghcr.io\n")
    sh(["htpasswd", "-Bbc", str(served / "htpasswd"), "someone", token])
    (served / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {served / 'storage'}}}}}\n"
        f"http: {{addr: '127.0.0.1:443', tls: {{certificate: {served / 'cert.pem'}, key: {served / 'key.pem'}}}}}\n"
        f"auth: {{htpasswd: {{realm: ghcr, path: {served / 'htpasswd'}}}}}\n"
    )
    # The artifact the prebuilt job handed over: a (tiny) box and its description.
    dist = ctx["workspace"] / "dist"
    dist.mkdir()
    box = helpers.tiny_box(tmp_path, disk=b"a prebuilt box")
    shutil.copyfile(box, dist / f"vagabond-{BOX}.box")  # the test's own set-up: the runner user's workspace
    (dist / f"vagabond-{BOX}.box.json").write_text(
        json.dumps({"name": f"example/{BOX}", "version": "20261201.2200", "sha256": files.sha256_file(box)})
    )
    sh(["chown", "-R", "1001:1001", str(dist)])

    doc = generated_workflow(vagabond, ctx)
    job = doc["jobs"]["publish"]
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    unset_vars = ("VAGABOND_CATALOG", "VAGABOND_CATALOG_URL", "VAGABOND_REGISTRY_USERNAME", "AWS_ENDPOINT_URL")
    given = {
        "github": {"token": token},
        "vars": dict.fromkeys(unset_vars, "") | {"AWS_DEFAULT_REGION || 'us-east-1'": "us-east-1"},
        "secrets": dict.fromkeys(("VAGABOND_REGISTRY_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ""),
    }
    scope, env = job_scope(doc, job, given)
    env |= {"GITHUB_REPOSITORY": "Example/Project", "GITHUB_ACTOR": "someone"}
    services = f"docker-registry serve {served / 'config.yml'} 2>{served / 'log'} & sleep 2"
    steps = plan_steps(job["steps"], scope, root / "home/runner/work/_actions")
    results = run_job(ctx, steps, env, services, checks={})
    publish = next(s for s in results["steps"] if s["name"] == "Publish it")
    assert f"oci://ghcr.io/example/project/{BOX}" in publish["stdout"] + publish["stderr"]
    tag = served / f"storage/docker/registry/v2/repositories/example/project/{BOX}/_manifests/tags/20261201.2200"
    assert (tag / "current/link").is_file(), "the registry holds the version's tag"
    assert token not in json.dumps(results), "the token never reaches the job's output"
