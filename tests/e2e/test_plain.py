"""The Vagrantfile vagabond renders, run by plain Vagrant with no vagabond installed: the same VM.

A developer commits `vagabond render BOX -o .` and runs `vagrant up` in another checkout: the box,
the playbooks, the variables and the mode checks are the ones `vagabond up` uses. Vagrant runs in
the VMs' network namespace, where these tests also serve the box catalog."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import NETNS, REPO
from tests.e2e.conftest import CATALOG_PORT, HOST_FROM_GUEST, MIRROR_PORT, pool_volumes
from tests.e2e.test_lifecycle import VERSION
from tests.helpers import virsh
from vagabond.vm import workdir

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def plain_path(tmp_path_factory) -> str:
    """PATH with Ansible (which Vagrant's provisioner runs) and the system, and no vagabond."""
    bin_dir = tmp_path_factory.mktemp("plain-bin")
    for name in ("ansible", "ansible-playbook"):
        (bin_dir / name).symlink_to(Path(sys.executable).with_name(name))
    assert not (bin_dir / "vagabond").exists()
    return f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"


def vagrant(
    directory: Path, plain_path: str, *args: str, timeout: float = 3600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Plain Vagrant, in the namespace where the guests' network lives, as a person would run it."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGABOND_", "CI", "GITHUB_"))}
    env |= {"PATH": plain_path, "VAGRANT_DEFAULT_PROVIDER": "libvirt", "VAGRANT_CHECKPOINT_DISABLE": "1"} | extra
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", NETNS, "vagrant", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"$ vagrant {' '.join(args)}  ({time.monotonic() - started:.0f}s, exit {result.returncode})")
    print(result.stdout[-5000:], result.stderr[-3000:], sep="\n")
    return result


def unrender(project: Path) -> None:
    (project / "Vagrantfile").unlink(missing_ok=True)
    shutil.rmtree(project / "vagabond-provision", ignore_errors=True)


def domain_disks(checkout: Path, box: str) -> list[str]:
    """The file names of the volumes the checkout's running domain boots from: its disk and the
    backing chain under it (the box image it was made from)."""
    prefix = workdir.domain_prefix(box, checkout)
    (domain,) = [d for d in virsh("list", "--name").split() if d.startswith(prefix)]
    (disk,) = [line.split()[1] for line in virsh("domblklist", domain).splitlines()[2:] if line.split()[:1] == ["vda"]]
    chain = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", disk], capture_output=True, text=True, check=True
    ).stdout
    return [os.path.basename(layer["filename"]) for layer in json.loads(chain)]


@contextlib.contextmanager
def removing_the_box_images_vagrant_uploads() -> Iterator[None]:
    """Plain `vagrant up` uploads the box's image into libvirt's pool, and `vagrant destroy` keeps
    it (vagrant-libvirt's way: the next VM of that box reuses it). vagabond never recorded it, so
    its gc rightly leaves it: the test removes what it made happen, some 400 MB a run."""
    before = pool_volumes()
    try:
        yield
    finally:
        for volume in sorted(pool_volumes() - before):
            if "_vagrant_box_image_" in volume:
                virsh("vol-delete", "--pool", "default", volume)


def render_and_copy(vagabond, box: str, tmp_path: Path) -> Path:
    """Render into the project, then take the project to another path (another checkout)."""
    vagabond("render", box, "-o", str(vagabond.cwd))
    other = tmp_path / "another-checkout"
    shutil.copytree(vagabond.cwd, other, ignore=shutil.ignore_patterns(".vagabond", "vagabond-logs", "twin"))
    return other


def test_plain_vagrant_up_provisions_the_same_vm_and_provision_changes_nothing(
    vagabond, apt_mirror, plain_path, tmp_path
):
    """A mode's playbook, its reboot and its check, run by Vagrant's own Ansible provisioner. The
    mode is FIPS: the SELinux one's relabelling costs six minutes here and is vagabond's own run
    of the same playbooks (test_lifecycle); plain Vagrant's check of SELinux on a VM that has it
    is the prebuilt box's test below."""
    # The box as a project would commit it: its Ansible variables (here: the local mirror) in the box file.
    mirror = [f"deb [trusted=yes] http://{HOST_FROM_GUEST}:{MIRROR_PORT}/ ./"]
    (vagabond.cwd / "boxes" / "plain-fips.yaml").write_text(
        (vagabond.cwd / "boxes" / "debian12.yaml").read_text().replace("description: ", "description: plain ")
        + "modes: {fips: true}\n"
        + f"vars: {json.dumps({'vagabond_apt_sources': mirror})}\n"
    )
    try:
        checkout = render_and_copy(vagabond, "plain-fips", tmp_path)
        assert not any(
            str(vagabond.cwd) in p.read_text(errors="replace")
            for p in checkout.rglob("*")
            if p.is_file() and p.name in ("Vagrantfile", "site.yml")
        ), "a path of the render host"
        with removing_the_box_images_vagrant_uploads():
            try:
                up = vagrant(checkout, plain_path, "up")
                assert up.returncode == 0
                assert "vagabond: libvirt driver qemu: " in up.stderr, "the file decides the driver on this host"
                assert "TASK [Put fips=1 on the kernel command line (Debian)]" in up.stdout
                assert "TASK [FIPS mode is on]" in up.stdout
                said = vagrant(checkout, plain_path, "ssh", "-c", "cat /proc/sys/crypto/fips_enabled /proc/cmdline")
                assert said.stdout.split()[0] == "1" and "fips=1" in said.stdout, "the kernel runs in FIPS mode"
                again = vagrant(checkout, plain_path, "provision")
                assert again.returncode == 0 and "changed=0" in again.stdout and "failed=0" in again.stdout
            finally:
                vagrant(checkout, plain_path, "destroy", "--force")
    finally:
        (vagabond.cwd / "boxes" / "plain-fips.yaml").unlink()
        unrender(vagabond.cwd)


@pytest.fixture
def catalog_in_netns(catalog_server):
    """The same catalog, also on 127.0.0.1 inside the namespace: plain `vagrant up` downloads there."""
    root, http = catalog_server
    with helpers.nginx(root, CATALOG_PORT, netns=NETNS):
        yield http


def test_plain_vagrant_up_from_the_prebuilt_box_skips_what_the_box_holds(
    vagabond, catalog_in_netns, plain_path, tmp_path
):
    """The catalog holds the debian12-selinux box that test_lifecycle built from this very definition."""
    checkout = render_and_copy(vagabond, "debian12-selinux", tmp_path)
    with removing_the_box_images_vagrant_uploads():
        try:
            up = vagrant(checkout, plain_path, "up")
            assert up.returncode == 0
            image = f"vagabond-VAGRANTSLASH-debian12-selinux_vagrant_box_image_{VERSION}_box.img"
            assert image in domain_disks(checkout, "debian12-selinux"), "plain vagrant up did not boot the prebuilt box"
            # site.yml lists the imported playbooks' tasks, each skipped: the box holds their work.
            assert re.search(r"TASK \[Activate SELinux \(Debian\)\] \**\nskipping: \[default\]", up.stdout), (
                "the playbooks ran"
            )
            assert re.search(r"default\s*: ok=\d+\s+changed=0 ", up.stdout), (
                "a prebuilt box of this definition changes nothing"
            )
            assert "TASK [SELinux is enforcing]" in up.stdout and "failed=0" in up.stdout
            assert vagrant(checkout, plain_path, "ssh", "-c", "sudo getenforce").stdout.strip() == "Enforcing"
        finally:
            vagrant(checkout, plain_path, "destroy", "--force")
            unrender(vagabond.cwd)
    prefix = workdir.domain_prefix("debian12-selinux", checkout)
    assert not [d for d in virsh("list", "--all", "--name").split() if d.startswith(prefix)], (
        "vagrant destroy left a domain"
    )


def test_plain_vagrant_up_where_vagabond_never_ran_downloads_the_made_base_from_its_catalog(
    vagabond, catalog_server, catalog_in_netns, plain_path, tmp_path
):
    """A fresh Vagrant home, no vagabond on PATH: the base box vagabond made is published to a
    catalog, the box file names it, and plain `vagrant up` of the rendered files downloads it,
    boots and provisions it. The base is debian13's, built here with mmdebstrap: its boot in the
    tier is this one."""
    root, http = catalog_server
    dist = tmp_path / "dist"
    vagabond("base", "build", "debian13", "--no-add", "-o", str(dist), timeout=3600)
    (box_file,) = dist.glob("*.box")
    version = json.loads(Path(f"{box_file}.json").read_text())["version"]
    catalog = root / "base-debian13"
    vagabond("publish", str(box_file), "--catalog", str(catalog), "--base-url", f"{http}/base-debian13")
    metadata = f"{http}/base-debian13/metadata.json"
    playbook = vagabond.cwd / "playbooks" / "anywhere.yml"
    playbook.parent.mkdir(exist_ok=True)
    playbook.write_text(
        "- hosts: all\n  become: true\n  tasks:\n"
        "    - copy: {dest: /etc/provisioned-by-plain-vagrant, content: \"yes\\n\", mode: '0644'}\n"
    )
    (vagabond.cwd / "boxes" / "anywhere.yaml").write_text(
        (REPO / "boxes" / "debian13.yaml")
        .read_text()
        .replace("description: ", "description: anywhere ")
        .replace("base:\n", f"base:\n  catalog: {metadata}\n", 1)
        + "playbooks: [playbooks/anywhere.yml]\n"
    )
    home = tmp_path / "vagrant.d"  # a machine where vagabond never ran: nothing in Vagrant's store
    plain_home = {"VAGRANT_HOME": str(home)}
    try:
        rendered = vagabond("render", "anywhere", "-o", str(vagabond.cwd))
        assert "needs `vagabond up" not in rendered.stderr, "a box with a catalog needs no vagabond"
        checkout = render_and_copy(vagabond, "anywhere", tmp_path)
        with removing_the_box_images_vagrant_uploads():
            try:
                up = vagrant(checkout, plain_path, "up", env=plain_home)
                assert up.returncode == 0
                assert f"Loading metadata for box '{metadata}'" in up.stdout
                assert f"Adding box 'vagabond/debian13' (v{version}) for provider: libvirt" in up.stdout
                assert "PLAY RECAP" in up.stdout and "failed=0" in up.stdout
                guest = "cat /etc/debian_version /etc/provisioned-by-plain-vagrant"
                said = vagrant(checkout, plain_path, "ssh", "-c", guest, env=plain_home).stdout.split()
                assert said[0].startswith("13.") and said[1:] == ["yes"], "Debian 13, booted and provisioned"
            finally:
                vagrant(checkout, plain_path, "destroy", "--force", env=plain_home)
    finally:
        (vagabond.cwd / "boxes" / "anywhere.yaml").unlink()
        playbook.unlink()
        unrender(vagabond.cwd)
