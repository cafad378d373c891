"""docs/getting-started/laptop.md as its reader runs it: a user who is not root, sudo for the
page's root steps and nothing else. The base was built through sudo by the tier's `laptop` fixture
(the page's first root step); here the rest, in the page's order: prepare --user, doctor, a
project, and a VM of the user's own that boots, answers and goes again.

The page's VM is debian12-selinux; here it is debian12, its base: the SELinux provisioning is
the lifecycle tests' (as root, test_lifecycle.py) and is the same for any user, while what this
test is about (libvirt, Vagrant, the shared base, the VM's files, all as the user) is not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import MISSING
from tests.e2e.conftest import LAPTOP_USER, MGMT_NETWORK, ours
from tests.helpers import network_users

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started" / "laptop.md"


def page_command(start: str) -> str:
    """The page's command line that starts so, without its comment: what the reader pastes."""
    for line in re.findall(r"^```sh\n(.*?)^```", PAGE.read_text(), re.M | re.S):
        for command in line.splitlines():
            if command.startswith(start):
                return command.split("  #", 1)[0].strip()
    raise AssertionError(f"{PAGE.name} has no command starting {start!r}")


def test_the_laptop_page_as_a_user_in_the_libvirt_group(laptop, vagabond):
    if laptop is None:
        pytest.skip(f"{MISSING}: sudo and runuser (run scripts/install.sh)")
    prepared = laptop(page_command('sudo "$(command -v vagabond)" prepare --user') + " --json", vms=False)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    changed = [action["step"] for action in json.loads(prepared.stdout) if action["changed"]]
    assert changed == ["user"], f"prepare changed more of this host than the user's access: {changed}"
    assert {"libvirt", "kvm"} <= set(laptop("id -nG", vms=False).stdout.split()), "in libvirt's and kvm's groups"

    doctor = laptop("vagabond doctor --json")
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 0 and report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert report["driver"] == json.loads(vagabond("doctor", "--json", check=False).stdout)["driver"], (
        "root's decision too"
    )

    project = laptop.home / "project"
    assert laptop(f"mkdir {project} && cd {project} && vagabond init debian12-selinux").returncode == 0
    up = laptop(f"cd {project} && vagabond up debian12")
    assert up.returncode == 0, up.stderr[-3000:]
    assert "debian12 is up" in up.stderr and "run commands with: vagabond run debian12 -- COMMAND" in up.stderr
    assert "is cached: /var/lib/vagabond/cache/" in " ".join(up.stderr.split()), "the base root built, shared"
    ran = laptop(f"cd {project} && vagabond run debian12 -- sh -c 'cat /etc/debian_version; id -un'")
    assert ran.returncode == 0 and ran.stdout.startswith("12.") and ran.stdout.split()[-1] == "vagrant"
    prefix = json.loads((project / ".vagabond" / "debian12" / "state.json").read_text())["prefix"]
    domain = f"{prefix}default"
    assert ours(prefix)["domains"] == [domain] and domain in network_users(MGMT_NETWORK)

    # Everything the user's runs made in their home is theirs (nothing root-owned to trip over later).
    others = laptop(f"find {laptop.home} ! -user {LAPTOP_USER} -print", vms=False)
    assert others.returncode == 0 and others.stdout == "", others.stdout[-2000:]

    gone = laptop(f"cd {project} && vagabond destroy debian12")
    assert gone.returncode == 0, gone.stderr[-2000:]
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
    assert laptop(f"cd {project} && vagabond status debian12").returncode == 6, "nothing is up any more"
