"""The playbooks a box runs and their digest, and the provisioning directory both routes run
(plain `vagrant provision` and `vagabond provision`).

The provisioning directory (vagabond-provision/, next to the Vagrantfile) holds site.yml, the one
playbook both routes run: it first asks the guest which definition it was built from (a prebuilt
box records its digest in /etc/vagabond/definition) and skips the rest when that is this one; then
the mode playbooks (copied there, so a committed Vagrantfile needs no vagabond installed), the
box's own playbooks (referenced relative to it), and the mode checks, which fail the run when a
mode is off.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vagabond import files, paths
from vagabond.definition.schema import Box
from vagabond.vm import ansiblecfg


@dataclass(frozen=True)
class PlaybookRun:
    path: Path
    vars: dict


@dataclass(frozen=True)
class ModeCheck:
    mode: str
    command: tuple[str, ...]  # run as root: through sudo over SSH, with become in Ansible
    expect: str
    title: str


def mode_playbooks(box: Box) -> list[PlaybookRun]:
    modes = box.spec.modes
    runs = []
    if modes.selinux is not None:
        runs.append(
            PlaybookRun(paths.shipped_playbooks_dir() / "modes" / "selinux.yml", {"selinux_state": modes.selinux})
        )
    if modes.fips:
        runs.append(PlaybookRun(paths.shipped_playbooks_dir() / "modes" / "fips.yml", {}))
    return runs


def mode_checks(box: Box) -> list[ModeCheck]:
    modes = box.spec.modes
    checks = []
    if modes.selinux is not None:
        checks.append(ModeCheck("selinux", ("getenforce",), modes.selinux.capitalize(), f"SELinux is {modes.selinux}"))
    if modes.fips:
        checks.append(ModeCheck("fips", ("cat", "/proc/sys/crypto/fips_enabled"), "1", "FIPS mode is on"))
        if box.spec.guest in ("redhat", "fedora"):  # the crypto policy is the RedHat family's
            checks.append(
                ModeCheck("crypto-policy", ("update-crypto-policies", "--show"), "FIPS", "the crypto policy is FIPS")
            )
    return checks


def all_playbooks(box: Box) -> list[PlaybookRun]:
    """Modes first (they may reboot the guest), then the box's dependency playbooks in order."""
    deps = [PlaybookRun(path, dict(p.vars)) for path, p in zip(box.playbook_paths(), box.spec.playbooks, strict=True)]
    return mode_playbooks(box) + deps


def provisions(box: Box) -> bool:
    """Whether site.yml does anything to this box: a mode, a playbook or a package to install."""
    return bool(all_playbooks(box) or box.spec.packages)


# Beside a playbook, what Ansible loads by convention (roles, vars, templates, its own plugins).
ANSIBLE_DIRS = (
    "roles",
    "group_vars",
    "host_vars",
    "vars",
    "tasks",
    "handlers",
    "templates",
    "files",
    "library",
    "module_utils",
    "filter_plugins",
    "lookup_plugins",
    "collections",
    "requirements.yml",
)


def playbook_inputs(playbook: Path, project_dir: Path) -> list[Path]:
    """Every file a playbook can load: its directory tree (roles, included tasks, templates, vars),
    hidden entries left out. A playbook at the project's top level gets only itself and Ansible's
    conventional neighbours, not the whole project (the code under test is not a dependency)."""
    home = playbook.parent
    if home.resolve() == project_dir.resolve():
        roots = [playbook] + [home / name for name in ANSIBLE_DIRS]
    else:
        roots = [home]
    found = set()
    for root in roots:
        candidates = [root] if root.is_file() else (root.rglob("*") if root.is_dir() else [])
        for path in candidates:
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(home).parts):
                found.add(path)
    return sorted(found)


# Box file fields that act only after provisioning (or only on the host): changing them keeps a
# prebuilt box current.
AFTER_PROVISIONING = {"verify", "description", "env", "forwarded_ports", "prebuilt"}


def definition_digest(box: Box) -> str:
    """sha256 over the box definition and everything that provisions it (each playbook with every
    file it can load), in order: a prebuilt box is current exactly when this matches the digest
    recorded when it was built, so a changed role, template or vars file makes it stale too, and so
    does a role the project's ansible.cfg reaches. What acts only after provisioning
    (AFTER_PROVISIONING) does not count."""
    digest = hashlib.sha256()
    # A field added since (packages) counts only when set: a definition that does not use it keeps its digest.
    unset = {name for name in ("packages",) if not getattr(box.spec, name)}
    spec = box.spec.model_dump(mode="json", exclude=AFTER_PROVISIONING | unset)
    # Nested, likewise: resources.cpu counts when set; where a made base is published (base.catalog)
    # changes nothing in the VM, so it never counts.
    if spec.get("resources", {}).get("cpu") is None:
        spec.get("resources", {}).pop("cpu", None)
    if isinstance(spec.get("base"), dict):
        spec["base"].pop("catalog", None)
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for extra in [*ansiblecfg.project_inputs(box), *ansiblecfg.requirements_files(box, box.playbook_paths())]:
        digest.update(
            b"\0"
            + str(
                extra.relative_to(box.project_dir.resolve())
                if extra.is_absolute() and extra.is_relative_to(box.project_dir.resolve())
                else extra.name
            ).encode()
            + b"\0"
            + extra.read_bytes()
        )
    for run in all_playbooks(box):
        digest.update(b"\0playbook\0" + run.path.name.encode() + b"\0" + json.dumps(run.vars, sort_keys=True).encode())
        for path in playbook_inputs(run.path, box.project_dir):
            digest.update(b"\0" + str(path.relative_to(run.path.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


PROVISION_DIR = "vagabond-provision"
DEFINITION_FILE = "/etc/vagabond/definition"  # in the guest: the digest of the definition a prebuilt box holds
GROUP = "vagabond"  # every machine of the box, in both routes' inventories
HOST_VARS = {"ansible_user": "vagrant"}


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def site_plays(box: Box, provision_dir: Path, digest: str) -> list[dict]:
    """site.yml: the one playbook both routes run (see the module's docstring)."""
    skip = "not vagabond_current"
    plays: list[dict] = [
        {
            "name": "vagabond: does this VM already hold this definition?",
            "hosts": "all",
            "gather_facts": False,
            "become": True,
            "vars": {"vagabond_definition": digest},
            "tasks": [
                {
                    "name": "Read the definition the box was built from",
                    "ansible.builtin.slurp": {"src": DEFINITION_FILE},
                    "register": "vagabond_built_from",
                    "failed_when": False,
                },
                {
                    "name": "Skip the playbooks when it holds this one (vagabond_provision=true runs them anyway)",
                    "ansible.builtin.set_fact": {
                        "vagabond_current": "{{ not (vagabond_provision | default(false) | bool) and "
                        "(vagabond_built_from.content | default('') | b64decode | trim) == vagabond_definition }}"
                    },
                },
            ],
        }
    ]
    common = dict(box.spec.vars)
    for run in mode_playbooks(box):
        plays.append({"import_playbook": f"modes/{run.path.name}", "vars": common | run.vars, "when": skip})
    if box.spec.packages:
        plays.append(packages_play(box.spec.packages, common, skip))
    for path, spec in zip(box.playbook_paths(), box.spec.playbooks, strict=True):
        play = {"import_playbook": _relative(path, provision_dir), "when": skip}
        plays.append(play | ({"vars": common | dict(spec.vars)} if common or spec.vars else {}))
    if mode_checks(box):
        plays.append({"import_playbook": "checks.yml"})
    return plays


def packages_play(packages: list[str], common: dict, when: str) -> dict:
    """The box's `packages:`, installed by the guest's own package manager: apt (after a fresh index,
    from vagabond_apt_sources when given, as the SELinux mode does), yum on EL 7, dnf on later EL
    and Fedora, Ansible's generic package module elsewhere. Only the package manager is gathered."""
    names = list(packages)
    apt = "ansible_pkg_mgr == 'apt'"
    return {
        "name": "vagabond: the box's packages",
        "hosts": "all",
        "become": True,
        "gather_facts": True,
        "gather_subset": ["!all", "!min", "pkg_mgr"],
        "vars": {"vagabond_apt_sources": []} | common,
        "tasks": [
            {
                "name": "Use the given apt sources",
                "when": [when, apt, "vagabond_apt_sources | length > 0"],
                "register": "vagabond_sources",
                "ansible.builtin.copy": {
                    "dest": "/etc/apt/sources.list",
                    "content": "{{ vagabond_apt_sources | join('\\n') }}\n",
                    "mode": "0644",
                },
            },
            {
                "name": "Install the box's packages (apt)",
                "when": [when, apt],
                "ansible.builtin.apt": {
                    "name": names,
                    "state": "present",
                    "update_cache": True,
                    "cache_valid_time": "{{ 0 if vagabond_sources is changed else 86400 }}",
                    "install_recommends": False,
                },
            },
            {
                "name": "Install the box's packages (yum)",
                "when": [when, "ansible_pkg_mgr == 'yum'"],
                "ansible.builtin.yum": {"name": names, "state": "present"},
            },
            {
                "name": "Install the box's packages (dnf)",
                "when": [when, "ansible_pkg_mgr in ['dnf', 'dnf5']"],
                "ansible.builtin.dnf": {"name": names, "state": "present"},
            },
            {
                "name": "Install the box's packages (the guest's package manager)",
                "when": [when, "ansible_pkg_mgr not in ['apt', 'yum', 'dnf', 'dnf5']"],
                "ansible.builtin.package": {"name": names, "state": "present"},
            },
        ],
    }


def check_plays(box: Box) -> list[dict]:
    """The mode checks as a play: the run fails when a mode is not what the box asks for."""
    tasks = []
    for check in mode_checks(box):
        var = f"vagabond_{check.mode}"
        tasks.append(
            {
                "name": check.title,
                "ansible.builtin.command": {"argv": list(check.command)},
                "register": var,
                "changed_when": False,
                "failed_when": f"{var}.stdout | trim != {json.dumps(check.expect)}",
            }
        )
    return [
        {"name": "vagabond: check the modes", "hosts": "all", "gather_facts": False, "become": True, "tasks": tasks}
    ]


def provisioning_files(box: Box, vagrantfile_dir: Path) -> dict[str, str]:
    """Every file of the provisioning directory, by its path relative to it."""
    target = vagrantfile_dir / PROVISION_DIR
    rendered = {f"modes/{run.path.name}": run.path.read_text(encoding="utf-8") for run in mode_playbooks(box)}
    # JSON is YAML: no quoting surprises whatever the values.
    rendered["site.yml"] = (
        "# Written by vagabond from the box file: re-render instead of editing.\n"
        + json.dumps(site_plays(box, target, definition_digest(box)), indent=2)
        + "\n"
    )
    if mode_checks(box):
        rendered["checks.yml"] = json.dumps(check_plays(box), indent=2) + "\n"
    requirements = ansiblecfg.requirements_files(box, box.playbook_paths())
    rendered["ansible.cfg"] = ansiblecfg.config_text(box, target, galaxy=bool(requirements))
    return rendered


def relative_requirements(box: Box, vagrantfile_dir: Path) -> str | None:
    """The box's first requirements file, relative to the Vagrantfile's directory (None when none)."""
    found = ansiblecfg.requirements_files(box, box.playbook_paths())
    return _relative(found[0], vagrantfile_dir) if found else None


def write_provisioning(box: Box, vagrantfile_dir: Path) -> list[str]:
    """Write the provisioning directory next to a Vagrantfile; returns what changed (nothing on a
    re-render of the same definition). Files of it that no longer belong are removed."""
    target = vagrantfile_dir / PROVISION_DIR
    wanted = provisioning_files(box, vagrantfile_dir)
    files.make_dirs(target, root=vagrantfile_dir)  # a link here would send every file elsewhere: refused
    changed = []
    for rel, text in wanted.items():
        path = target / rel
        files.make_dirs(path.parent, root=target)
        if files.write_if_changed(path, text):
            changed.append(f"{PROVISION_DIR}/{rel}")
    # A rendered file that no longer belongs goes (a mode turned off); only names vagabond renders,
    # never a file of someone else's that lies here.
    for rel in sorted(rendered_names() - set(wanted)):
        path = target / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
            changed.append(f"{PROVISION_DIR}/{rel} (removed)")
    return changed


def rendered_names() -> set[str]:
    """Every name a provisioning directory can hold that vagabond wrote (for any box)."""
    modes = {f"modes/{p.name}" for p in (paths.shipped_playbooks_dir() / "modes").glob("*.yml")}
    return {"site.yml", "checks.yml", "ansible.cfg", *modes}


def rendered_inputs(box: Box, vagrantfile_dir: Path) -> tuple[dict[str, str], list[str]]:
    """What a rendered Vagrantfile was made from, relative to its directory: each file's sha256, and
    the directories whose set of files must stay the same. Plain `vagrant up` compares them when it
    loads the Vagrantfile, and runs the playbooks in full when the definition changed since. Only
    files below the Vagrantfile's directory count (a shipped box file is not the project's, and a
    path out of the directory would not hold in another checkout)."""
    files = {_relative(box.path, vagrantfile_dir): box.path}
    roots: set[str] = set()
    for path in box.playbook_paths():
        for found in playbook_inputs(path, box.project_dir):
            files[_relative(found, vagrantfile_dir)] = found
        if path.parent.resolve() != box.project_dir.resolve():
            roots.add(_relative(path.parent, vagrantfile_dir))
    # The mode playbooks are checked where the Vagrantfile runs them: their copies.
    for run in mode_playbooks(box):
        files[f"{PROVISION_DIR}/modes/{run.path.name}"] = run.path
    sums = {
        rel: hashlib.sha256(path.read_bytes()).hexdigest()
        for rel, path in sorted(files.items())
        if not rel.startswith("../")
    }
    return sums, sorted(r for r in roots if not r.startswith("../") and r != "..")
