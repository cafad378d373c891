"""Ansible the way a project already has it: its ansible.cfg and its requirements.yml.

The provisioning directory's ansible.cfg (the one both routes use: plain `vagrant provision` and
`vagabond provision`) is the project's own ansible.cfg, its relative paths rebased, plus the
settings vagabond needs that the project does not set. Where the project sets one of them, the
project's value wins and vagabond says so, except for the two it cannot do without (its shared SSH
connection), where vagabond's wins and says so too.

A requirements.yml (roles and collections, in Ansible Galaxy's format) at the top of the project,
in roles/ or collections/, or next to a playbook, is installed with ansible-galaxy into the
provisioning directory (galaxy/roles, galaxy/collections) before the playbooks run; the merged
ansible.cfg puts those directories first on the roles and collections paths.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import os
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from vagabond import files, process, timeouts, ui
from vagabond.definition.schema import Box
from vagabond.errors import BoxDefinitionError

# (section, key, value, the other sections Ansible also reads the key from): what vagabond wants.
SETTINGS = [
    ("defaults", "host_key_checking", "False", ("ssh_connection",)),  # throwaway VMs, new host keys each boot
    ("defaults", "retry_files_enabled", "False", ()),
    ("defaults", "interpreter_python", "auto_silent", ()),
    ("defaults", "deprecation_warnings", "False", ()),
    # Module files go to a world-writable place, so become (vagrant -> root) needs no chmod dance.
    ("defaults", "remote_tmp", "/tmp/.ansible-${USER}/tmp", ()),
    # One SSH round trip per task instead of three: modules go over stdin.
    ("ssh_connection", "pipelining", "True", ("defaults", "connection")),
]
# Set through the environment by `vagabond provision` only (its fact cache, its output), unless
# the project's ansible.cfg says otherwise.
ENV_ONLY = {
    "ANSIBLE_GATHERING": ("defaults", "gathering"),
    "ANSIBLE_CACHE_PLUGIN": ("defaults", "fact_caching"),
    "ANSIBLE_CACHE_PLUGIN_CONNECTION": ("defaults", "fact_caching_connection"),
    "ANSIBLE_CACHE_PLUGIN_TIMEOUT": ("defaults", "fact_caching_timeout"),
    "ANSIBLE_FORKS": ("defaults", "forks"),
    "ANSIBLE_NOCOLOR": ("defaults", "nocolor"),
    "ANSIBLE_STRATEGY": ("defaults", "strategy"),
}
# vagabond cannot work without these: its value wins over the project's.
REQUIRED = {
    "ANSIBLE_SSH_ARGS": ("ssh_connection", "ssh_args"),
    "ANSIBLE_SSH_CONTROL_PATH_DIR": ("ssh_connection", "control_path_dir"),
    # vagabond reads the recap and the changed tasks from this callback's plain output.
    "ANSIBLE_STDOUT_CALLBACK": ("defaults", "stdout_callback"),
    "ANSIBLE_FORCE_COLOR": ("defaults", "force_color"),
}
GALAXY = "galaxy"  # below the provisioning directory: roles/ and collections/
REQUIREMENTS = "requirements.yml"
# Settings whose values are paths (a list of them, ':'-separated): relative ones are rebased.
PATH_KEYS = {
    "roles_path",
    "collections_path",
    "collections_paths",
    "library",
    "module_utils",
    "inventory",
    "log_path",
    "vault_password_file",
    "action_plugins",
    "callback_plugins",
    "connection_plugins",
    "filter_plugins",
    "lookup_plugins",
    "strategy_plugins",
    "test_plugins",
    "vars_plugins",
    "inventory_plugins",
    "cache_plugins",
    "become_plugins",
    "cliconf_plugins",
    "httpapi_plugins",
    "netconf_plugins",
    "terminal_plugins",
    "doc_fragment_plugins",
    "playbook_dir",
    "private_key_file",
}


def project_config_path(box: Box) -> Path | None:
    path = box.project_dir / "ansible.cfg"
    return path if path.is_file() else None


def read_project_config(box: Box) -> configparser.ConfigParser | None:
    path = project_config_path(box)
    if path is None:
        return None
    # As Ansible reads it: keys in lower case, values raw, ';' comments after a value.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",), strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise BoxDefinitionError(
            [f"{path}: not an ansible.cfg vagabond can read: {' '.join(str(exc).split())[:200]}"]
        ) from None
    return parser


def _rebase(value: str, project_dir: Path, provision_dir: Path) -> str:
    parts = []
    for entry in value.split(os.pathsep):
        if entry and not entry.startswith(("/", "~", "$")):
            entry = os.path.relpath((project_dir / entry).resolve(), provision_dir.resolve())
        parts.append(entry)
    return os.pathsep.join(parts)


def config_text(box: Box, provision_dir: Path, galaxy: bool) -> str:
    """The provisioning directory's ansible.cfg: the project's, rebased, plus vagabond's settings the
    project leaves unset; with galaxy, the installed roles and collections first on their paths."""
    project = read_project_config(box)
    merged = configparser.ConfigParser(interpolation=None)
    if project is not None:
        for section in project.sections():
            merged.add_section(section)
            for key, value in project.items(section, raw=True):
                merged.set(section, key, _rebase(value, box.project_dir, provision_dir) if key in PATH_KEYS else value)
    for section, key, value, aliases in SETTINGS:
        if not any(merged.has_option(where, key) for where in (section, *aliases)):
            if not merged.has_section(section):
                merged.add_section(section)
            merged.set(section, key, value)
    if galaxy:
        if not merged.has_section("defaults"):
            merged.add_section("defaults")
        # Ansible's defaults, kept after the installed ones when the project names no paths of its own.
        roles = merged.get(
            "defaults", "roles_path", fallback="~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles"
        )
        collections = merged.get("defaults", "collections_path", fallback=None) or merged.get(
            "defaults", "collections_paths", fallback="~/.ansible/collections:/usr/share/ansible/collections"
        )
        merged.set("defaults", "roles_path", f"{GALAXY}/roles{os.pathsep}{roles}")
        merged.set("defaults", "collections_path", f"{GALAXY}/collections{os.pathsep}{collections}")
        merged.remove_option("defaults", "collections_paths")
    out = io.StringIO()
    merged.write(out)
    source = f" from {project_config_path(box).name} of the project," if project is not None else ""
    return (
        f"# Written by vagabond{source} with the settings both plain `vagrant provision` and\n"
        "# `vagabond provision` need: re-render instead of editing.\n" + out.getvalue()
    )


def environment(box: Box, wanted: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Of the environment vagabond would set, what it sets, and a note for each project setting that
    wins (or loses, for what vagabond cannot do without)."""
    project = read_project_config(box)
    if project is None:
        return dict(wanted), []
    env, notes = {}, []
    for var, value in wanted.items():
        if var in REQUIRED and project.has_option(*REQUIRED[var]):
            section, key = REQUIRED[var]
            notes.append(
                f"ansible.cfg: vagabond's {key} wins over the project's (vagabond needs it: its shared SSH "
                "connection, and the plain output it reads the recap from)"
            )
        elif var in ENV_ONLY and project.has_option(*ENV_ONLY[var]):
            section, key = ENV_ONLY[var]
            notes.append(
                f"ansible.cfg: the project's {key} = {project.get(section, key, raw=True)} wins over vagabond's {value}"
            )
            continue
        env[var] = value
    for section, key, value, aliases in SETTINGS:
        for where in (section, *aliases):
            if project.has_option(where, key) and project.get(where, key, raw=True) != value:
                notes.append(
                    f"ansible.cfg: the project's {key} = {project.get(where, key, raw=True)} wins over "
                    f"vagabond's {value}"
                )
    return env, notes


def project_setting(box: Box, section: str, key: str) -> str | None:
    """A path-valued setting of the project's ansible.cfg, its relative entries made absolute."""
    project = read_project_config(box)
    if project is None or not project.has_option(section, key):
        return None
    return os.pathsep.join(
        str(box.project_dir / e) if e and not e.startswith(("/", "~", "$")) else e
        for e in project.get(section, key, raw=True).split(os.pathsep)
    )


def project_inputs(box: Box) -> list[Path]:
    """Every file of the project that its ansible.cfg brings into a run: the file itself, and what
    its path settings name inside the project (roles_path, collections_path, library ...)."""
    path = project_config_path(box)
    if path is None:
        return []
    project = read_project_config(box)
    found = [path]
    root = box.project_dir.resolve()
    for section in project.sections():
        for key, value in project.items(section, raw=True):
            if key not in PATH_KEYS:
                continue
            for entry in value.split(os.pathsep):
                if not entry or entry.startswith(("~", "$")):
                    continue
                target = (box.project_dir / entry).resolve()
                if not target.is_relative_to(root) or target == root:
                    continue  # outside the project (a system path): not the definition's
                if target.is_file():
                    found.append(target)
                elif target.is_dir():
                    found += sorted(p for p in target.rglob("*") if p.is_file())
    return found


def requirements_files(box: Box, playbooks: list[Path]) -> list[Path]:
    """requirements.yml at the project's top, in its roles/ and collections/, and next to each playbook."""
    places = [
        box.project_dir,
        box.project_dir / "roles",
        box.project_dir / "collections",
        *(p.parent for p in playbooks),
    ]
    found: list[Path] = []
    for place in places:
        path = place / REQUIREMENTS
        if path.is_file() and path.resolve() not in [f.resolve() for f in found]:
            found.append(path)
    return found


def _kinds(path: Path) -> tuple[bool, bool]:
    """(roles, collections): which kinds a requirements file lists."""
    try:
        doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError, OSError) as exc:
        raise BoxDefinitionError([f"{path}: not a requirements file: {' '.join(str(exc).split())[:200]}"]) from None
    if doc is None:
        return False, False
    if isinstance(doc, list):
        return bool(doc), False
    if isinstance(doc, dict):
        return bool(doc.get("roles")), bool(doc.get("collections"))
    raise BoxDefinitionError(
        [f"{path}: a requirements file is a list of roles or a mapping with roles: and collections:"]
    )


def install_requirements(requirements: list[Path], provision_dir: Path, env: dict[str, str]) -> list[str]:
    """Install what the requirements files list into the provisioning directory, once per content
    (a stamp of their sha256); returns what was installed."""
    if not requirements:
        return []
    galaxy = provision_dir / GALAXY
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in requirements)).hexdigest()
    stamp = galaxy / ".installed"
    if stamp.is_file() and stamp.read_text() == digest:
        return []
    exe = process.which("ansible-galaxy") or "ansible-galaxy"
    done = []
    for path in requirements:
        roles, collections = _kinds(path)
        with ui.step(f"ansible-galaxy: {path.name} from {path.parent}"):
            for kind, wanted, where in (
                ("role", roles, ["--roles-path", str(galaxy / "roles")]),
                ("collection", collections, ["-p", str(galaxy / "collections")]),
            ):
                if not wanted:
                    continue
                process.check(
                    [exe, kind, "install", "-r", str(path), *where, "--force"],
                    cwd=path.parent,
                    env=env,
                    timeout=timeouts.TOOL * 10,
                    hint=f"check {path}",
                )
                done.append(f"{kind}s of {path}")
    files.write_text(stamp, digest)
    return done
