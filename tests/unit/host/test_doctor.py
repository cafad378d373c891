"""doctor's Ansible check: vagabond's own ansible-core wins over a host's, and one outside the range
vagabond supports is refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import stub_programs
from vagabond import process
from vagabond.host import doctor, install

# GitHub's ubuntu-24.04 image: ansible-core from pipx in /opt/pipx_bin, ahead of everything on PATH.
RUNNER_ANSIBLE = """#!/bin/sh
echo 'ansible-playbook [core 2.21.3]'
echo '  python version = 3.12.3'
"""


def test_own_environment_wins_over_a_newer_ansible_ahead_on_path(tmp_path):
    """The runner-image trait, end to end: vagabond linked alone onto PATH (as the action does), a
    newer ansible-playbook ahead of it; doctor reports vagabond's own 2.16, by its path."""
    pipx_bin = tmp_path / "opt" / "pipx_bin"
    pipx_bin.mkdir(parents=True)
    (pipx_bin / "ansible-playbook").write_text(RUNNER_ANSIBLE)
    (pipx_bin / "ansible-playbook").chmod(0o755)
    linked = tmp_path / "vagabond-bin"
    linked.mkdir()
    (linked / "vagabond").symlink_to(Path(sys.executable).parent / "vagabond")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAGABOND_")}
    env["PATH"] = f"{pipx_bin}:{linked}:/usr/sbin:/usr/bin:/sbin:/bin"
    result = subprocess.run(["vagabond", "doctor", "--json"], env=env, capture_output=True, text=True, timeout=300)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    ansible = checks["ansible-playbook"]
    assert ansible["ok"], ansible
    assert ansible["path"] == str(Path(sys.executable).parent / "ansible-playbook")
    assert ansible["version"].startswith("2.16."), ansible


def test_an_ansible_core_outside_the_range_is_refused_with_the_reason(tmp_path, monkeypatch):
    bin_dir = stub_programs(tmp_path, monkeypatch, **{"ansible-playbook": RUNNER_ANSIBLE})
    monkeypatch.setattr(process, "which", lambda name: str(bin_dir / name))
    (check, *_) = doctor.check_ansible()
    assert not check.ok and check.required
    assert check.detail == (
        f"{bin_dir}/ansible-playbook is ansible-core 2.21.3; vagabond needs ansible-core 2.15 to 2.16 "
        "(2.17 and later cannot manage the Python 2.7 of CentOS 7)"
    )
    assert check.version == "2.21.3"


def test_an_old_mitogen_is_refused(monkeypatch):
    monkeypatch.setattr(doctor.metadata, "version", lambda name: "0.3.3")
    checks = {c.name: c for c in doctor.check_ansible()}
    assert checks["ansible-playbook"].ok
    assert not checks["mitogen"].ok and checks["mitogen"].required
    assert checks["mitogen"].detail == "Mitogen 0.3.3 is older than 0.3.9, the first that drives ansible-core 2.16"


def test_the_supported_ranges_are_the_ones_pyproject_pins():
    """install.ANSIBLE_CORE and MITOGEN_MIN are what doctor enforces; pyproject.toml must install them."""
    import tomllib

    deps = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]["dependencies"]
    (low, high) = install.ANSIBLE_CORE
    assert f"ansible-core>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}" in deps
    assert f"mitogen>={'.'.join(map(str, install.MITOGEN_MIN))}" in deps


def test_which_prefers_the_own_environment_only_inside_one(tmp_path, monkeypatch):
    own = tmp_path / "venv" / "bin"
    own.mkdir(parents=True)
    ahead = tmp_path / "ahead"
    ahead.mkdir()
    for d in (own, ahead):
        (d / "tool").write_text("#!/bin/sh\n")
        (d / "tool").chmod(0o755)
    monkeypatch.setenv("PATH", str(ahead))
    monkeypatch.setattr(process, "own_bin_dir", lambda: str(own))
    monkeypatch.setattr(process, "in_virtual_env", lambda: True)
    assert process.which("tool") == str(own / "tool")
    monkeypatch.setattr(process, "in_virtual_env", lambda: False)  # a system Python: /usr/bin, PATH's order wins
    assert process.which("tool") == str(ahead / "tool")
    (ahead / "tool").unlink()
    assert process.which("tool") == str(own / "tool")
