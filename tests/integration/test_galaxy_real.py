"""A project's requirements.yml, installed by the real ansible-galaxy from local tarballs (offline),
and its ansible.cfg honoured: the real ansible-playbook, with the provisioning directory's merged
ansible.cfg, finds the installed role and collection and the project's own setting."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import write_box
from vagabond.definition import boxfile
from vagabond.vm import ansiblecfg, playbooks
from vagabond.vm.workdir import Workdir

pytestmark = pytest.mark.real

BIN = Path(sys.executable).parent


def test_requirements_installed_offline_and_found_by_the_playbook(project, tmp_path):
    if not (BIN / "ansible-galaxy").exists():
        pytest.skip("REAL TOOL MISSING: ansible-galaxy (pip install -e .)")
    # A role as a tarball, and a collection built by ansible-galaxy itself.
    role = tmp_path / "src" / "greeter"
    (role / "tasks").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "meta" / "main.yml").write_text(
        "galaxy_info: {author: t, description: t, license: MIT, min_ansible_version: '2.14'}\n"
    )
    (role / "tasks" / "main.yml").write_text(
        "- ansible.builtin.copy: {dest: '{{ out }}/role', content: 'from the role'}\n"
    )
    with tarfile.open(project / "greeter.tar.gz", "w:gz") as tar:
        tar.add(role, arcname="greeter")
    coll = tmp_path / "src" / "coll"
    (coll / "plugins" / "filter").mkdir(parents=True)
    (coll / "galaxy.yml").write_text("namespace: acme\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [t]\n")
    (coll / "README.md").write_text("t\n")
    (coll / "plugins" / "filter" / "shout.py").write_text(
        "class FilterModule:\n    def filters(self):\n        return {'shout': lambda s: s.upper() + '!'}\n"
    )
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", str(coll), "--output-path", str(project)],
        check=True,
        capture_output=True,
    )
    (project / "playbooks" / "requirements.yml").write_text(
        "roles:\n  - src: ../greeter.tar.gz\n    name: greeter\n"
        "collections:\n  - name: ../acme-tools-1.0.0.tar.gz\n    type: file\n"
    )
    (project / "playbooks" / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  roles: [greeter]\n  tasks:\n"
        "    - ansible.builtin.copy: {dest: '{{ out }}/filter', content: \"{{ 'hi' | acme.tools.shout }}\"}\n"
        "    - ansible.builtin.copy: "
        "{dest: '{{ out }}/forks', content: '{{ ansible_forks | default(lookup(\"config\", \"DEFAULT_FORKS\")) }}'}\n"
    )
    (project / "ansible.cfg").write_text("[defaults]\nforks = 3\n")
    write_box(project, "b", "description: x\nbase: {box: a/b}\nplaybooks: [playbooks/site.yml]\n")
    box = boxfile.find_box("b", project / "boxes")
    wd = Workdir.for_box(box)
    playbooks.write_provisioning(box, wd.path)
    provision_dir = wd.path / "vagabond-provision"
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(provision_dir / "ansible.cfg"),
        ANSIBLE_HOME=str(tmp_path / "home"),
        PATH=f"{BIN}:{os.environ['PATH']}",
    )
    files = ansiblecfg.requirements_files(box, box.playbook_paths())
    installed = ansiblecfg.install_requirements(files, provision_dir, env)
    assert installed == [f"roles of {files[0]}", f"collections of {files[0]}"]
    assert ansiblecfg.install_requirements(files, provision_dir, env) == [], "the same requirements install once"
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [
            BIN / "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"out={out}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(project / "playbooks" / "site.yml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=wd.path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert (out / "role").read_text() == "from the role"
    assert (out / "filter").read_text() == "HI!"
    assert (out / "forks").read_text() == "3", "the project's ansible.cfg setting must reach the run"
