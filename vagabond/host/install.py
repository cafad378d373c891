"""How Vagrant, vagrant-libvirt, libvirt and qemu get onto a host: one owner for the routes, the
pinned versions and the package names that `vagabond doctor` advises and the generated GitHub
workflow runs.

Two routes:
- distribution: Debian 12 packages vagrant and vagrant-libvirt, Fedora too;
- hashicorp: Ubuntu 24.04 and later package no Vagrant (its license changed), so Vagrant comes
  from HashiCorp's apt repository, its signing key checked against a known fingerprint, and
  vagrant-libvirt is installed as a Vagrant plugin, built against the distribution's libvirt.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from vagabond import paths, process, timeouts
from vagabond.errors import UsageError

HASHICORP_APT_URL = "https://apt.releases.hashicorp.com"
# HashiCorp's apt signing key since 2026-09-10 (the one before: 798AEC654E5C15428C8E42EEAA16FCBCA621E701).
HASHICORP_FINGERPRINT = "D55C0D1AC78A8D8126CB631CFC9CA96ACA026560"
HASHICORP_KEYRING = "/usr/share/keyrings/hashicorp-archive-keyring.gpg"
VAGRANT_VERSION = "2.4.9-1"  # the apt version of HashiCorp's package
VAGRANT_LIBVIRT_VERSION = "0.12.2"
# How the plugin's gems are chosen: by Vagrant's strict dependency enforcement (its default), never
# with VAGRANT_DISABLE_STRICT_DEPENDENCY_ENFORCEMENT. With enforcement off, the resolver ignores the
# gems Vagrant's embedded Ruby has already loaded and takes the newest of each: fog-json 1.4.0
# (2026-07) wants json ~> 2.19 while Vagrant 2.4 has json 2.7.2 loaded, so every fresh install
# failed at activation with Gem::ConflictError. With enforcement on, the resolver takes those loaded
# gems as constraints and picks fog-json 1.2.0 by itself: moby/buildkit#6925 fixed that break by
# removing the variable, no pin (containerd pinned fog-json instead, 84112c78c, which fixes that one
# gem only). Strict enforcement covers the next gem that outgrows Vagrant's Ruby the same way;
# vagabond's weekly canary (.github/workflows/canary.yml) installs the plugin cold to see it first.
# PLUGIN_PINS stays as the emergency override (NAME=VERSION installed first, VAGRANT_PLUGIN_PINS in
# a workflow) for a break strict enforcement cannot resolve; it is empty by design.
PLUGIN_PINS: dict[str, str] = {}


def plugin_pins() -> str:
    """PLUGIN_PINS as the install step reads them: NAME=VERSION words."""
    return " ".join(f"{name}={version}" for name, version in PLUGIN_PINS.items())


# The ansible-core releases vagabond runs (pyproject.toml pins the same; a test keeps them in step):
# 2.17 dropped Python 2.7 and 3.6 on managed nodes, which CentOS 7 has.
ANSIBLE_CORE = ((2, 15), (2, 16))
# Mitogen's strategy (bench/lifecycle.py: 4x faster provisioning under emulation) from this release:
# the first to support ansible-core 2.16.
MITOGEN_MIN = (0, 3, 9)
# The Pythons ansible-core 2.16 runs its controller on (2.16 is the last that manages CentOS 7's
# Python 2.7, hence vagabond's pin): a runner whose python3 is newer needs actions/setup-python.
CONTROLLER_PYTHON = ((3, 10), (3, 12))

# libvirt, qemu and what vagabond itself calls, from Debian or Ubuntu.
APT_HOST = [
    "libvirt-daemon-system",
    "libvirt-clients",
    "qemu-system-x86",
    "qemu-utils",
    "dnsmasq-base",
    "iptables",
    "acl",
    "mmdebstrap",
    # Debian's archive key, which mmdebstrap needs for a Debian suite: Ubuntu does not install it
    # (GitHub's runners lack it), and Debian always has it.
    "debian-archive-keyring",
    "cloud-image-utils",
    "rsync",
    "openssh-client",
    "python3-venv",
]
APT_VAGRANT = ["vagrant", "vagrant-libvirt"]
# What `vagrant plugin install vagrant-libvirt` compiles against (vagrant-libvirt's install docs).
APT_PLUGIN_BUILD = ["gcc", "make", "pkg-config", "libvirt-dev", "libxml2-dev", "libxslt1-dev", "zlib1g-dev", "ruby-dev"]

PACKAGE = "vagabond-vm"  # the distribution name on PyPI; the command and the import package are vagabond


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            try:
                values[key.strip()] = "".join(shlex.split(value))
            except ValueError:
                continue
    return values


def family(release: dict[str, str]) -> str:
    """'debian', 'ubuntu', 'fedora' (and its relatives) or '' when vagabond has no route for it."""
    ids = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    for known in ("ubuntu", "debian", "fedora"):
        if known in ids:
            return known
    return ""


@dataclass(frozen=True)
class Advice:
    """One-line commands that install each part on this host's distribution."""

    vagrant: str
    plugin: str
    libvirt: str
    qemu: str
    qemu_img: str
    mmdebstrap: str


def hashicorp_vagrant_commands(codename: str = "$(. /etc/os-release && echo $VERSION_CODENAME)") -> str:
    """Trusting only the key with the known fingerprint, whatever else the key file holds."""
    # A private directory for the downloaded keyring: a fixed name in /tmp is anyone's to plant first.
    return (
        "k=$(mktemp -d) && "
        f'curl -fsSL {HASHICORP_APT_URL}/gpg | gpg --no-default-keyring --keyring "$k/hashicorp.gpg" --import'
        f' && gpg --no-default-keyring --keyring "$k/hashicorp.gpg" --export {HASHICORP_FINGERPRINT}'
        f" | sudo tee {HASHICORP_KEYRING} >/dev/null && test -s {HASHICORP_KEYRING}"
        f' && echo "deb [signed-by={HASHICORP_KEYRING}] {HASHICORP_APT_URL} {codename} main"'
        " | sudo tee /etc/apt/sources.list.d/hashicorp.list"
        f" && sudo apt-get update && sudo apt-get install vagrant={VAGRANT_VERSION}"
    )


def advice(release: dict[str, str] | None = None) -> Advice:
    release = os_release() if release is None else release
    fam = family(release)
    if fam == "ubuntu":
        return Advice(
            vagrant="Ubuntu packages no Vagrant; from HashiCorp's apt repository: " + hashicorp_vagrant_commands(),
            plugin=f"sudo apt-get install {' '.join(APT_PLUGIN_BUILD)} && vagrant plugin install vagrant-libvirt"
            f" --plugin-version {VAGRANT_LIBVIRT_VERSION}",
            libvirt="sudo apt-get install libvirt-daemon-system libvirt-clients dnsmasq-base",
            qemu="sudo apt-get install qemu-system-x86",
            qemu_img="sudo apt-get install qemu-utils",
            mmdebstrap="sudo apt-get install mmdebstrap (only needed to build Debian base boxes)",
        )
    if fam == "fedora":
        return Advice(
            vagrant="sudo dnf install vagrant vagrant-libvirt",
            plugin="sudo dnf install vagrant-libvirt",
            libvirt="sudo dnf install libvirt-daemon-kvm libvirt-client && sudo systemctl enable --now libvirtd",
            qemu="sudo dnf install qemu-kvm",
            qemu_img="sudo dnf install qemu-img",
            mmdebstrap="sudo dnf install mmdebstrap (only needed to build Debian base boxes)",
        )
    suffix = " (or run scripts/install.sh)" if source_checkout() else ""
    return Advice(  # Debian, and the best guess elsewhere
        vagrant="sudo apt-get install vagrant vagrant-libvirt" + suffix,
        plugin="sudo apt-get install vagrant-libvirt" + suffix,
        libvirt="sudo apt-get install libvirt-daemon-system libvirt-clients dnsmasq-base" + suffix,
        qemu="sudo apt-get install qemu-system-x86" + suffix,
        qemu_img="sudo apt-get install qemu-utils" + suffix,
        mmdebstrap="sudo apt-get install mmdebstrap (only needed to build Debian base boxes)",
    )


def source_checkout() -> Path | None:
    """The repository this vagabond runs from, when it is a source checkout (scripts/install.sh beside it)."""
    root = paths.data_dir()
    return root if (root / "scripts" / "install.sh").is_file() else None


# Written into the package by vagabond's release workflow (.github/workflows/release.yml) before it
# builds: the repository and commit a release was built from, so an installed release knows a
# source every runner can install the same vagabond from. A checkout has none.
RELEASE_ORIGIN = paths.package_dir() / "_origin.json"
GITHUB = re.compile(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?")
COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Origin:
    """Where a CI runner gets exactly this vagabond: what pip installs (a git URL pinned to a commit,
    or a wheel URL), and vagabond's action pinned to the same commit when the repository is on GitHub."""

    spec: str
    action: str = ""  # OWNER/REPO@COMMIT
    note: str = ""


def _from_git(url: str, commit: str, note: str = "") -> Origin:
    m = GITHUB.fullmatch(url)
    return Origin(f"{PACKAGE} @ git+{url}@{commit}", f"{m[1]}@{commit}" if m else "", note)


def origin() -> Origin:
    """Where this vagabond came from, as something a runner can install; UsageError when nothing
    says so. From how it was installed (PEP 610's direct_url.json: a git URL with its commit, or a
    wheel URL), from what the release build recorded (RELEASE_ORIGIN), or from a source checkout
    whose HEAD its https origin already has. Never a bare PyPI version: the name on PyPI proves
    nothing about what it serves."""
    direct = None
    try:
        direct = json.loads(metadata.distribution(PACKAGE).read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, ValueError, OSError):
        pass
    if isinstance(direct, dict):
        url = direct.get("url", "")
        vcs = direct.get("vcs_info")
        if (
            isinstance(vcs, dict)
            and vcs.get("vcs") == "git"
            and COMMIT.fullmatch(str(vcs.get("commit_id")))
            and https_remote(url) == url
        ):
            return _from_git(url, vcs["commit_id"])
        if "archive_info" in direct and url.startswith("https://"):
            return Origin(f"{PACKAGE} @ {url}")
    try:
        stamp = json.loads(RELEASE_ORIGIN.read_text())
    except (OSError, ValueError):
        stamp = None
    if (
        isinstance(stamp, dict)
        and https_remote(str(stamp.get("repository")))
        and COMMIT.fullmatch(str(stamp.get("commit")))
    ):
        return _from_git(https_remote(stamp["repository"]), stamp["commit"])
    checkout = source_checkout()
    if checkout is not None:
        git = ["git", "-C", str(checkout)]
        remote = process.run([*git, "remote", "get-url", "origin"], timeout=timeouts.PROBE)
        head = process.run([*git, "rev-parse", "HEAD"], timeout=timeouts.PROBE)
        url = https_remote(remote.stdout.strip()) if remote.ok else None
        if url is None:
            raise UsageError(
                f"cannot tell where a runner would install this vagabond from: {checkout} has no https (or "
                "GitHub ssh) origin",
                hint="pass --vagabond-spec (a git URL pinned to a commit, or a wheel URL), or --use-action "
                "OWNER/REPO@COMMIT",
            )
        # Only a commit the remote has: its remote-tracking branches (as of the last fetch) contain it.
        pushed = process.run(
            [*git, "branch", "--remotes", "--contains", "HEAD", "--format=%(refname)"], timeout=timeouts.PROBE
        )
        if not head.ok or not any(ref.startswith("refs/remotes/origin/") for ref in pushed.stdout.split()):
            raise UsageError(
                f"the commit {checkout} is at is not on its origin ({url}) as far as the last fetch knows: "
                "a runner could not install it",
                hint="push it (then git fetch), or pass --vagabond-spec or --use-action OWNER/REPO@COMMIT",
            )
        dirty = process.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], timeout=timeouts.PROBE
        ).stdout.strip()
        return _from_git(
            url, head.stdout.strip(), "the checkout has uncommitted changes the runner will not get" if dirty else ""
        )
    raise UsageError(
        "cannot tell where a runner would install this vagabond from (installed from an index, with no record "
        "of its source)",
        hint="pass --vagabond-spec (e.g. vagabond-vm==VERSION from your index, or a pinned git URL), or "
        "--use-action OWNER/REPO@COMMIT",
    )


def https_remote(url: str) -> str | None:
    """A git remote as the https URL pip fetches (git@github.com:o/r.git -> https://github.com/o/r.git)."""
    if m := re.fullmatch(r"(?:ssh://)?git@([\w.-]+)[:/]([\w.-]+/[\w.-]+?)(?:\.git)?/?", url):
        return f"https://{m[1]}/{m[2]}.git"
    if re.fullmatch(r"https://[\w.-]+/[\w./-]+", url):
        return url
    return None
