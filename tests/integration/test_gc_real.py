"""`vagabond gc` against the real libvirt: objects leaked on purpose, next to objects that are not
vagabond's or still have an owner. Nothing here boots; the registry and box store are private."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import NETNS, require_tool
from tests.helpers import network_users, virsh

pytestmark = pytest.mark.real

POOL_DIR = "/var/lib/libvirt/images"
ALIVE, DEAD, REUSED, STRANGER = (
    "vagabond-gcalive-11111111-",
    "vagabond-gcdead-22222222-",
    "vagabond-gcreused-33333333-",
    "vagabond-gcstranger-44444444-",
)
OUR_BOX_IMAGE = "vagabond-gctest-VAGRANTSLASH-gone_vagrant_box_image_1.0.0_box.img"
KEPT_BOX_IMAGE = "vagabond-gctest-VAGRANTSLASH-kept_vagrant_box_image_2.0.0_box.img"
THEIR_BOX_IMAGE = "someone-VAGRANTSLASH-else_vagrant_box_image_1.0.0_box.img"
# Another user's base box of a third-party name that a vagabond run also used (and earlier versions
# recorded by box name): only volumes a vagabond run uploaded are ever its own.
OTHER_USERS_IMAGE = "generic-VAGRANTSLASH-debian12_vagrant_box_image_4.3.12_box.img"
NETWORK = "vagabond-gc-test"


def define_domain(name: str, disk: str) -> None:
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file='{POOL_DIR}/{disk}'/><target dev='vda' bus='virtio'/>"
        "</disk></devices></domain>"
    )
    subprocess.run(
        ["virsh", "-c", "qemu:///system", "define", "/dev/stdin"], input=xml, text=True, check=True, capture_output=True
    )


@pytest.fixture
def leaked(tmp_path):
    require_tool("virsh")
    if subprocess.run(["virsh", "-c", "qemu:///system", "uri"], capture_output=True).returncode != 0:
        pytest.skip("REAL TOOL MISSING: libvirtd is not running (scripts/sandbox.sh start)")
    env = dict(os.environ, VAGABOND_STATE=str(tmp_path / "state"), VAGRANT_HOME=str(tmp_path / "vagrant.d"))
    alive, reused = tmp_path / "alive", tmp_path / "reused"
    for wd, prefix in ((alive, ALIVE), (reused, "vagabond-gcreused-99999999-")):
        wd.mkdir()
        (wd / "state.json").write_text(json.dumps({"prefix": prefix}))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ledger.json").write_text(
        json.dumps(
            {
                "workdirs": {ALIVE: str(alive), DEAD: str(tmp_path / "deleted"), REUSED: str(reused)},
                "volumes": [OUR_BOX_IMAGE, KEPT_BOX_IMAGE],
                "boxes": ["generic/debian12"],  # how earlier versions recorded it: not proof of ownership
                "networks": [NETWORK],
            }
        )
    )
    # vagabond-gctest/kept 2.0.0 is still in the (private) box store; gone 1.0.0 is not.
    store = tmp_path / "vagrant.d" / "boxes" / "vagabond-gctest-VAGRANTSLASH-kept" / "2.0.0" / "libvirt"
    store.mkdir(parents=True)
    (store / "metadata.json").write_text('{"provider": "libvirt"}')
    volumes = [f"{p}default.img" for p in (ALIVE, DEAD, REUSED, STRANGER)] + [
        f"{DEAD}default-disk2.img",
        OUR_BOX_IMAGE,
        KEPT_BOX_IMAGE,
        THEIR_BOX_IMAGE,
        OTHER_USERS_IMAGE,
    ]
    for vol in volumes:
        virsh("vol-create-as", "default", vol, "1M", "--format", "qcow2")
    for prefix in (ALIVE, DEAD, STRANGER):
        define_domain(f"{prefix}default", f"{prefix}default.img")
    subprocess.run(
        ["virsh", "-c", "qemu:///system", "net-define", "/dev/stdin"],
        input=f"<network><name>{NETWORK}</name></network>",
        text=True,
        check=True,
        capture_output=True,
    )
    yield env
    for prefix in (ALIVE, DEAD, STRANGER):
        virsh("undefine", f"{prefix}default", check=False)
    for vol in volumes:
        virsh("vol-delete", "--pool", "default", vol, check=False)
    virsh("net-undefine", NETWORK, check=False)


def gc(env, *args: str) -> dict:
    # On the host, as a user runs it: gc talks to libvirtd (its socket), never to a guest.
    out = subprocess.run(
        [sys.executable, "-m", "vagabond", "gc", "--json", *args],
        env=dict(env, VAGABOND_NETNS=NETNS),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_gc_removes_only_what_vagabond_leaked(leaked):
    expected = {
        ("domain", f"{DEAD}default"),
        ("volume", f"{DEAD}default.img"),
        ("volume", f"{DEAD}default-disk2.img"),
        ("volume", f"{REUSED}default.img"),
        ("box image", OUR_BOX_IMAGE),
        ("network", NETWORK),
    }
    dry = gc(leaked, "--dry-run")
    assert {(o["kind"], o["name"]) for o in dry["orphans"]} == expected
    assert all(not o["removed"] for o in dry["orphans"])
    assert f"{DEAD}default" in virsh("list", "--all", "--name"), "--dry-run removed something"

    done = gc(leaked)
    assert {(o["kind"], o["name"]) for o in done["orphans"]} == expected
    assert all(o["removed"] for o in done["orphans"]), done
    domains = virsh("list", "--all", "--name").split()
    volumes = virsh("vol-list", "default").split()
    assert f"{DEAD}default" not in domains and f"{ALIVE}default" in domains and f"{STRANGER}default" in domains
    for gone in (f"{DEAD}default.img", f"{DEAD}default-disk2.img", f"{REUSED}default.img", OUR_BOX_IMAGE):
        assert gone not in volumes
    for kept in (f"{ALIVE}default.img", f"{STRANGER}default.img", KEPT_BOX_IMAGE, THEIR_BOX_IMAGE, OTHER_USERS_IMAGE):
        assert kept in volumes
    assert NETWORK not in virsh("net-list", "--all", "--name").split()
    registry = json.loads(open(leaked["VAGABOND_STATE"] + "/ledger.json").read())
    assert set(registry["workdirs"]) == {ALIVE}, "the registry must forget what no longer exists"
    assert registry["volumes"] == [KEPT_BOX_IMAGE] and "boxes" not in registry
    assert gc(leaked)["orphans"] == [], "a second gc finds nothing"


MGMT = "vagrant-libvirt"


@pytest.fixture
def management_network(tmp_path):
    """vagrant-libvirt's network as another tool left it (defined by this test when it was not
    there); removed again only if this test made it."""
    require_tool("virsh")
    if subprocess.run(["virsh", "-c", "qemu:///system", "uri"], capture_output=True).returncode != 0:
        pytest.skip("REAL TOOL MISSING: libvirtd is not running (scripts/sandbox.sh start)")
    made = MGMT not in virsh("net-list", "--all", "--name").split()
    users = network_users(MGMT)
    assert not users, f"domains left on this host by something else hold {MGMT}: {users}"
    if made:
        subprocess.run(
            ["virsh", "-c", "qemu:///system", "net-define", "/dev/stdin"],
            input=f"<network><name>{MGMT}</name></network>",
            text=True,
            check=True,
            capture_output=True,
        )
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "never.yaml").write_text("description: never up\nbase: {box: example/never}\n")
    env = dict(
        os.environ,
        VAGABOND_STATE=str(tmp_path / "state"),
        VAGRANT_HOME=str(tmp_path / "vagrant.d"),
        VAGABOND_NETNS=NETNS,
    )
    yield env, made
    if made:
        virsh("net-undefine", MGMT, check=False)


def destroy(env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vagabond", "destroy", "never"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_destroy_leaves_a_network_vagabond_never_made(management_network, tmp_path):
    """A box that was never up, an empty registry: vagrant-libvirt's network is not vagabond's to remove."""
    env, _ = management_network
    result = destroy(env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nothing was left" in result.stderr
    assert MGMT in virsh("net-list", "--all", "--name").split()


def test_destroy_ends_when_the_turn_is_held_for_good_and_removes_the_network_once_free(management_network, tmp_path):
    """Anyone who can open the turn lock can hold it forever: destroy (a cleanup, deaf to signals)
    still ends, leaving the network and saying why; with the turn free, the recorded network goes."""
    env, made = management_network
    if not made:
        pytest.skip("vagrant-libvirt's network belongs to a VM of this host: this test removes only one it defined")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ledger.json").write_text(json.dumps({"workdirs": {}, "networks": [MGMT]}))
    lock = "/run/vagabond/libvirt.lock"
    os.makedirs("/run/vagabond", exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys,time\n"
            f"fd=os.open({lock!r}, os.O_RDONLY|os.O_CREAT, 0o644); fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        result = destroy(dict(env, VAGABOND_TIMEOUT_TURN="2"), tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"left network {MGMT} in place: pid {holder.pid} (python" in result.stderr
        assert MGMT in virsh("net-list", "--all", "--name").split()
    finally:
        holder.kill()
        holder.wait()
    result = destroy(env, tmp_path)
    assert result.returncode == 0 and f"network {MGMT}" in result.stderr, result.stderr
    assert MGMT not in virsh("net-list", "--all", "--name").split()
    assert json.loads((tmp_path / "state" / "ledger.json").read_text())["networks"] == []
