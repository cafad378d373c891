"""The EL boxes without HCP Vagrant: they come from the distributions' cloud images, and where no
image can be had the answer is quick, one line, and leaves nothing behind. Nothing here reaches an
outside host: the unreachable case runs in a network namespace of its own that has no route at all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import MISSING, REPO

pytestmark = pytest.mark.real

VAGABOND = [sys.executable, "-m", "vagabond"]
CENTOS7 = "https://cloud.centos.org/centos/7/images/CentOS-7-x86_64-GenericCloud-2211.qcow2"


@pytest.fixture
def isolated(tmp_path):
    """Cache, state and Vagrant home of the test's own, and a namespace with loopback only."""
    if os.geteuid() != 0:
        pytest.skip(f"{MISSING}: a network namespace needs root")
    name = f"vagabond-offline-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    env = dict(
        os.environ,
        VAGABOND_CACHE=str(tmp_path / "cache"),
        VAGABOND_STATE=str(tmp_path / "state"),
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGABOND_NETNS="",
        VAGABOND_DRIVER="qemu",
    )
    yield name, env
    subprocess.run(["ip", "netns", "delete", name])


@pytest.mark.parametrize("command", ["up", "import"])
def test_centos7_without_its_image_fails_in_seconds_naming_the_url_and_leaves_nothing(isolated, tmp_path, command):
    """`vagabond up BOX` and `vagabond import BOX` both go for the box file's image, and nothing else."""
    name, env = isolated
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", name, *VAGABOND, command, "centos7-selinux"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert f"cannot download {CENTOS7}: " in errors[0]
    assert took < 30, f"took {took:.0f}s"
    cache = tmp_path / "cache"
    assert not [p for p in cache.rglob("*") if p.is_file()], "nothing of the attempt may stay"
    assert not (tmp_path / ".vagabond" / "centos7-selinux" / "state.json").exists()


@pytest.mark.parametrize(
    ("box", "image", "sha256"),
    [
        (
            "centos7-selinux",
            "CentOS-7-x86_64-GenericCloud-2211.qcow2",
            "284aab2b23d91318f169ff464bce4d53404a15a0618ceb34562838c59af4adea",
        ),
        (
            "alma9-fips",
            "AlmaLinux-9-GenericCloud-9.5-20241120.x86_64.qcow2",
            "abddf01589d46c841f718cec239392924a03b34c4fe84929af5d543c50e37e37",
        ),
    ],
)
def test_a_local_copy_of_the_image_is_checked_against_the_pinned_checksum(isolated, tmp_path, box, image, sha256):
    """Offline (a namespace with no route): the pinned value needs no download to check a local copy."""
    name, env = isolated
    corrupt = tmp_path / image
    corrupt.write_bytes(b"QFI\xfb" + os.urandom(4096))  # looks like a qcow2, is not the image
    result = subprocess.run(
        ["ip", "netns", "exec", name, *VAGABOND, "up", box, "--image", str(corrupt)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert f"the pinned checksum says {sha256}" in errors[0]
    assert "refusing a changed or corrupt image" in errors[0]
    assert corrupt.exists(), "the user's own file is never removed"
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


@pytest.mark.parametrize("name", ["centos7-selinux", "alma9-fips"])
def test_the_el_boxes_render_and_validate(tmp_path, name):
    """They boot for the first time on GitHub's runners (the generated workflow has a job for each);
    here: they load, render and pass `vagrant validate`."""
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGABOND_NETNS="")
    subprocess.run(
        [*VAGABOND, "render", name, "-o", str(tmp_path / "vm")], cwd=REPO, env=env, check=True, capture_output=True
    )
    out = subprocess.run(
        ["vagrant", "validate"], cwd=tmp_path / "vm", env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
