"""The project's ansible.cfg honoured (rebased, vagabond's settings only where it is silent, a note
wherever the two disagree); requirements files found and kept across re-renders."""

from __future__ import annotations

import configparser

import pytest

from tests.conftest import write_box
from vagabond.definition import boxfile
from vagabond.errors import BoxDefinitionError
from vagabond.vm import ansiblecfg, playbooks
from vagabond.vm.workdir import Workdir

PROJECT_CFG = """[defaults]
roles_path = roles:/opt/roles
forks = 3
host_key_checking = True ; the project's own choice
[ssh_connection]
ssh_args = -o ControlMaster=no
pipelining = False
"""


def load(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.read_string(text)
    return parser


def make(project, cfg: str | None = PROJECT_CFG, requirements: str | None = None):
    if cfg is not None:
        (project / "ansible.cfg").write_text(cfg)
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    if requirements is not None:
        (project / "playbooks" / "requirements.yml").write_text(requirements)
    write_box(project, "b", "description: x\nbase: {box: a/b}\nplaybooks: [playbooks/deps.yml]\n")
    return boxfile.find_box("b", project / "boxes")


def test_without_a_project_cfg_vagabond_settings_only(project):
    box = make(project, cfg=None)
    cfg = load(ansiblecfg.config_text(box, project / ".vagabond" / "b" / "vagabond-provision", galaxy=False))
    assert cfg.get("ssh_connection", "pipelining") == "True" and cfg.get("defaults", "host_key_checking") == "False"
    assert cfg.get("defaults", "remote_tmp") == "/tmp/.ansible-${USER}/tmp"


def test_the_project_cfg_wins_and_its_paths_follow_it(project):
    box = make(project)
    provision_dir = project / ".vagabond" / "b" / "vagabond-provision"
    cfg = load(ansiblecfg.config_text(box, provision_dir, galaxy=False))
    assert cfg.get("defaults", "roles_path") == "../../../roles:/opt/roles"
    assert cfg.get("defaults", "forks") == "3" and cfg.get("ssh_connection", "pipelining") == "False"
    assert cfg.get("defaults", "host_key_checking") == "True"
    assert cfg.get("defaults", "retry_files_enabled") == "False", "what the project leaves unset, vagabond sets"
    env, notes = ansiblecfg.environment(
        box, {"ANSIBLE_FORKS": "10", "ANSIBLE_SSH_ARGS": "-F x", "ANSIBLE_GATHERING": "smart"}
    )
    assert env == {"ANSIBLE_SSH_ARGS": "-F x", "ANSIBLE_GATHERING": "smart"}
    assert "ansible.cfg: the project's forks = 3 wins over vagabond's 10" in notes
    assert any(
        n.startswith("ansible.cfg: vagabond's ssh_args wins over the project's (vagabond needs it") for n in notes
    )
    assert "ansible.cfg: the project's pipelining = False wins over vagabond's True" in notes


def test_galaxy_paths_come_first(project):
    box = make(project, requirements="roles:\n  - src: ./role.tar.gz\n    name: r\n")
    assert ansiblecfg.requirements_files(box, box.playbook_paths()) == [project / "playbooks" / "requirements.yml"]
    cfg = load(ansiblecfg.config_text(box, project / "x" / "vagabond-provision", galaxy=True))
    assert cfg.get("defaults", "roles_path") == "galaxy/roles:../../roles:/opt/roles"
    assert cfg.get("defaults", "collections_path").startswith("galaxy/collections:~/.ansible/collections")


def test_rendering_keeps_what_galaxy_installed_and_the_digest_follows_the_files(project):
    box = make(project, requirements="[]\n")
    wd = Workdir.for_box(box)
    playbooks.write_provisioning(box, wd.path)
    installed = wd.path / "vagabond-provision" / "galaxy" / "roles" / "r" / "tasks" / "main.yml"
    installed.parent.mkdir(parents=True)
    installed.write_text("[]\n")
    playbooks.write_provisioning(box, wd.path)
    assert installed.is_file(), "a re-render must not delete installed roles"
    before = playbooks.definition_digest(box)
    (project / "playbooks" / "requirements.yml").write_text("- src: ./other.tar.gz\n")
    (project / "ansible.cfg").write_text("[defaults]\nforks = 2\n")
    assert playbooks.definition_digest(box) != before


def test_a_broken_project_cfg_is_a_clear_error(project):
    box = make(project, cfg="not a section\n")
    with pytest.raises(BoxDefinitionError, match=r"ansible\.cfg: not an ansible\.cfg vagabond can read: "):
        ansiblecfg.config_text(box, project, galaxy=False)


def test_ansible_reads_keys_in_any_case_and_section(project):
    """Pipelining = False in [defaults] (Ansible reads it there too, keys in any case): vagabond adds
    no second pipelining that would override it, and the result parses as Ansible's strict parser does."""
    box = make(project, cfg="[defaults]\nPipelining = False\n")
    text = ansiblecfg.config_text(box, project / "x", galaxy=False)
    strict = configparser.ConfigParser(interpolation=None, strict=True)
    strict.read_string(text)
    assert strict.get("defaults", "pipelining") == "False" and not strict.has_option("ssh_connection", "pipelining")


def test_roles_the_project_cfg_reaches_are_part_of_the_definition(project):
    box = make(project, cfg="[defaults]\nroles_path = roles:/usr/share/ansible/roles\n")
    (project / "roles" / "web" / "tasks").mkdir(parents=True)
    (project / "roles" / "web" / "tasks" / "main.yml").write_text("[]\n")
    before = playbooks.definition_digest(box)
    (project / "roles" / "web" / "tasks" / "main.yml").write_text("- debug: {msg: changed}\n")
    assert playbooks.definition_digest(box) != before, "a role reached through roles_path changed"


def test_what_acts_after_provisioning_keeps_the_prebuilt_box_current(project):
    write_box(project, "p", "description: x\nbase: {box: a/b}\n")
    before = playbooks.definition_digest(boxfile.find_box("p", project / "boxes"))
    write_box(
        project,
        "p",
        "description: y\nbase: {box: a/b}\nenv: {A: b}\nverify: ['true']\n"
        "forwarded_ports: [{guest: 80, host: 8080}]\nprebuilt: {name: o/p, catalog: 'http://x/m.json'}\n",
    )
    assert playbooks.definition_digest(boxfile.find_box("p", project / "boxes")) == before
    write_box(project, "p", "description: y\nbase: {box: a/c}\n")
    assert playbooks.definition_digest(boxfile.find_box("p", project / "boxes")) != before
