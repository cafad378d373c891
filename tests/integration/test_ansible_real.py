"""The real ansible-playbook, as vagabond starts it, against a stub `ssh` that records its argv: a
work directory whose path holds a space, a quote and "-o" reaches ssh as one path, never as options."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool, stub_programs
from vagabond import paths, process
from vagabond.definition import boxfile
from vagabond.vm import provision, remote
from vagabond.vm.workdir import Workdir

pytestmark = pytest.mark.real

STUB_SSH = """#!/bin/sh
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$SSH_ARGV"
echo "stub ssh: no guest here" >&2
exit 255
"""


@pytest.mark.parametrize("mitogen", ["0", "1"], ids=["stock", "mitogen"])
def test_a_hostile_work_directory_path_stays_one_argument(tmp_path, monkeypatch, mitogen):
    require_tool("ssh")
    ansible = Path(sys.executable).with_name("ansible-playbook")
    if not ansible.exists():
        pytest.skip("REAL TOOL MISSING: ansible-playbook (pip install -e .)")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    stub_programs(tmp_path, monkeypatch, ssh=STUB_SSH)
    argv_file = tmp_path / "argv"
    monkeypatch.setenv("SSH_ARGV", str(argv_file))
    monkeypatch.setenv("VAGABOND_MITOGEN", mitogen)

    hostile = tmp_path / "a b'c -o ProxyCommand=touch PWNED" / ".vagabond" / "debian12"
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    wd = Workdir.for_box(box, hostile)
    wd.path.mkdir(parents=True)
    remote.write_ssh_config(wd, "Host default\n  HostName 192.0.2.1\n  User vagrant\n")
    site = wd.path / "site.yml"
    site.write_text("- hosts: all\n  gather_facts: false\n  tasks: [{ansible.builtin.ping: {}}]\n")
    inventory = provision.write_inventory(wd)
    result = process.run([ansible, "-i", inventory, site], cwd=wd.path, env=provision.ansible_env(wd), timeout=300)
    assert result.returncode != 0, "the stub ssh reaches no guest"
    args = argv_file.read_text().splitlines()
    assert str(wd.ssh_config) in args, (args, result.stdout[-2000:])
    assert args[args.index(str(wd.ssh_config)) - 1] == "-F"
    assert "ProxyCommand=touch PWNED/.vagabond/debian12/ssh_config" not in [a.removeprefix("-o") for a in args]
    assert not list(tmp_path.rglob("PWNED")), "a path in the command line became an ssh option"
    assert shlex.split(provision.ansible_env(wd)["ANSIBLE_SSH_ARGS"]) == ["-F", str(wd.ssh_config)]
