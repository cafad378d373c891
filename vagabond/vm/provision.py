"""Ansible: the playbooks a box runs and their digest, the provisioning directory both routes run
(plain `vagrant provision` and `vagabond provision`), inventory from the SSH config, one
ansible-playbook run, and the checks that prove a mode.

The provisioning directory (vagabond-provision/, next to the Vagrantfile) holds site.yml, the one
playbook both routes run: it first asks the guest which definition it was built from (a prebuilt
box records its digest in /etc/vagabond/definition) and skips the rest when that is this one; then
the mode playbooks (copied there, so a committed Vagrantfile needs no vagabond installed), the
box's own playbooks (referenced relative to it), and the mode checks, which fail the run when a
mode is off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vagabond import files, paths, process, timeouts, ui
from vagabond.vm import ansiblecfg, remote
from vagabond.spec.schema import Box
from vagabond.errors import ModeCheckFailed
from vagabond.vm.workdir import Workdir


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
        runs.append(PlaybookRun(paths.shipped_playbooks_dir() / "modes" / "selinux.yml", {"selinux_state": modes.selinux}))
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
            checks.append(ModeCheck("crypto-policy", ("update-crypto-policies", "--show"), "FIPS",
                                    "the crypto policy is FIPS"))  # fmt: skip
    return checks


def all_playbooks(box: Box) -> list[PlaybookRun]:
    """Modes first (they may reboot the guest), then the box's dependency playbooks in order."""
    deps = [PlaybookRun(path, dict(p.vars)) for path, p in zip(box.playbook_paths(), box.spec.playbooks)]
    return mode_playbooks(box) + deps


# Beside a playbook, what Ansible loads by convention (roles, vars, templates, its own plugins).
ANSIBLE_DIRS = ("roles", "group_vars", "host_vars", "vars", "tasks", "handlers", "templates", "files", "library",
                "module_utils", "filter_plugins", "lookup_plugins", "collections", "requirements.yml")  # fmt: skip


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
    digest.update(json.dumps(box.spec.model_dump(mode="json", exclude=AFTER_PROVISIONING), sort_keys=True).encode())
    for extra in [*ansiblecfg.project_inputs(box), *ansiblecfg.requirements_files(box, box.playbook_paths())]:
        digest.update(b"\0" + str(extra.relative_to(box.project_dir.resolve()) if extra.is_absolute() and
                                    extra.is_relative_to(box.project_dir.resolve()) else extra.name).encode()
                      + b"\0" + extra.read_bytes())  # fmt: skip
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
    plays: list[dict] = [{
        "name": "vagabond: does this VM already hold this definition?",
        "hosts": "all", "gather_facts": False, "become": True,
        "vars": {"vagabond_definition": digest},
        "tasks": [
            {"name": "Read the definition the box was built from", "ansible.builtin.slurp": {"src": DEFINITION_FILE},
             "register": "vagabond_built_from", "failed_when": False},
            {"name": "Skip the playbooks when it holds this one (vagabond_provision=true runs them anyway)",
             "ansible.builtin.set_fact": {"vagabond_current": "{{ not (vagabond_provision | default(false) | bool) and "
                                          "(vagabond_built_from.content | default('') | b64decode | trim) == vagabond_definition }}"}},
        ],
    }]  # fmt: skip
    common = dict(box.spec.vars)
    for run in mode_playbooks(box):
        plays.append({"import_playbook": f"modes/{run.path.name}", "vars": common | run.vars, "when": skip})
    for path, spec in zip(box.playbook_paths(), box.spec.playbooks):
        play = {"import_playbook": _relative(path, provision_dir), "when": skip}
        plays.append(play | ({"vars": common | dict(spec.vars)} if common or spec.vars else {}))
    if mode_checks(box):
        plays.append({"import_playbook": "checks.yml"})
    return plays


def check_plays(box: Box) -> list[dict]:
    """The mode checks as a play: the run fails when a mode is not what the box asks for."""
    tasks = []
    for check in mode_checks(box):
        var = f"vagabond_{check.mode}"
        tasks.append({"name": check.title, "ansible.builtin.command": {"argv": list(check.command)}, "register": var,
                      "changed_when": False, "failed_when": f"{var}.stdout | trim != {json.dumps(check.expect)}"})  # fmt: skip
    return [{"name": "vagabond: check the modes", "hosts": "all", "gather_facts": False, "become": True, "tasks": tasks}]


def provisioning_files(box: Box, vagrantfile_dir: Path) -> dict[str, str]:
    """Every file of the provisioning directory, by its path relative to it."""
    target = vagrantfile_dir / PROVISION_DIR
    rendered = {f"modes/{run.path.name}": run.path.read_text(encoding="utf-8") for run in mode_playbooks(box)}
    # JSON is YAML: no quoting surprises whatever the values.
    rendered["site.yml"] = "# Written by vagabond from the box file: re-render instead of editing.\n" + json.dumps(
        site_plays(box, target, definition_digest(box)), indent=2) + "\n"
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
    sums = {rel: hashlib.sha256(path.read_bytes()).hexdigest() for rel, path in sorted(files.items())
            if not rel.startswith("../")}  # fmt: skip
    return sums, sorted(r for r in roots if not r.startswith("../") and r != "..")


def write_inventory(wd: Workdir) -> Path:
    """The hosts, the group and the host vars that Vagrant's own ansible provisioner gives them."""
    hosts = remote.hosts(wd)
    host_vars = " ".join(f"{k}={v}" for k, v in HOST_VARS.items())
    # The host name is the ssh_config alias: ssh resolves address, port, user and key from -F.
    lines = [f"{host} {host_vars}" for host in hosts] + ["", f"[{GROUP}]", *hosts]
    wd.claim(wd.inventory.name, wd.ansible_home.name)  # the inventory, and Ansible's home (facts, temp)
    return files.write_text(wd.inventory, "\n".join(lines) + "\n")


def mitogen_strategies() -> Path | None:
    """Mitogen's strategy plugins, unless VAGABOND_MITOGEN=0.

    Mitogen keeps one Python interpreter per host for the whole run instead of starting one per
    task: under software emulation, where each Python start costs seconds, an 8-task playbook
    takes a quarter of the time (bench/lifecycle.py).
    """
    if os.environ.get("VAGABOND_MITOGEN", "1") == "0":
        return None
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "plugins" / "strategy"
    return path if path.is_dir() else None


def ansible_env(wd: Workdir) -> dict[str, str]:
    state = wd.ansible_home
    # The provisioning directory's ansible.cfg, the one plain `vagrant provision` uses too; one in
    # the user's cwd or home cannot change these settings.
    config = wd.path / PROVISION_DIR / "ansible.cfg"
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": str(config), "ANSIBLE_HOME": str(state), "ANSIBLE_LOCAL_TEMP": str(state / "tmp")})
    if process.in_virtual_env():
        # What Ansible starts by name (ansible-galaxy, ansible-connection) is vagabond's own copy,
        # not one a host put ahead on PATH (GitHub's runner image: /opt/pipx_bin).
        env["PATH"] = os.pathsep.join([process.own_bin_dir(), env.get("PATH", os.defpath)])
    wanted = dict(
        {
            # Same SSH config and master connection as `vagabond run`. Ansible splits this with
            # shlex: the path is quoted, so a space, a quote or "-o" in it stays part of the path.
            "ANSIBLE_SSH_ARGS": f"-F {shlex.quote(str(wd.ssh_config))}",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(remote.control_dir()),
            # vagabond reads the recap and the changed tasks from the default callback's output.
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
            "ANSIBLE_FORCE_COLOR": "0",
            # (Pipelining, host keys, remote_tmp and the rest are in ansible.cfg: see vagabond.ansiblecfg.)
            # Facts are gathered once per play and cached between runs (`vagabond provision`).
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "facts"),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "7200",
            "ANSIBLE_FORKS": "10",
            "ANSIBLE_NOCOLOR": "0" if ui.interactive() else "1",
        }
    )
    strategies = mitogen_strategies()
    if strategies is not None:
        theirs = ansiblecfg.project_setting(wd.box, "defaults", "strategy_plugins")  # kept, after Mitogen's
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(strategies) + (os.pathsep + theirs if theirs else "")
        wanted["ANSIBLE_STRATEGY"] = "mitogen_linear"
    chosen, notes = ansiblecfg.environment(wd.box, wanted)
    for note in notes:
        ui.info(note)
    return env | chosen


RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \**\s*$")
CHANGED = re.compile(r"^changed: \[([^\]]+)\]")


@dataclass(frozen=True)
class Recap:
    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int
    changed_tasks: tuple[str, ...] = ()  # the names of the tasks that reported a change on this host


def changed_tasks(output: str) -> dict[str, list[str]]:
    """Per host, the tasks that reported `changed` in ansible-playbook's output (default or Mitogen
    strategy: both print through the default callback), in order, each once."""
    found: dict[str, list[str]] = {}
    task = ""
    for line in ANSI.sub("", output).splitlines():
        if header := TASK_HEADER.match(line):
            task = header[1]
        elif (changed := CHANGED.match(line)) and task:
            host = changed[1].split(" -> ")[0]
            if task not in found.setdefault(host, []):
                found[host].append(task)
    return found


def parse_recap(output: str) -> list[Recap]:
    output = ANSI.sub("", output)
    tasks = changed_tasks(output)
    return [Recap(m[0], int(m[1]), int(m[2]), int(m[3]), int(m[4]), tuple(tasks.get(m[0], ()))) for m in RECAP.findall(output)]


def run_playbooks(wd: Workdir, extra_vars: Sequence[str] = (), *, timeout: float = timeouts.PLAYBOOK,
                  force: bool = False) -> list[Recap]:  # fmt: skip
    """The provisioning directory's site.yml (written with the Vagrantfile), as `vagrant provision`
    runs it, through the shared SSH connection and Mitogen. With force (or extra variables), the
    playbooks run even on a box built from this very definition."""
    if not all_playbooks(wd.box):
        ui.info("no playbooks to run")
        return []
    site = wd.path / PROVISION_DIR / "site.yml"
    inventory = write_inventory(wd)
    argv = [process.which("ansible-playbook") or "ansible-playbook", "-i", str(inventory), str(site)]
    for value in extra_vars:
        argv += ["--extra-vars", value]
    if extra_vars or force:  # the variables must apply, even on a box built from this very definition
        argv += ["--extra-vars", "vagabond_provision=true"]
    with wd.log_file("ansible") as log:
        def sink(line: str) -> None:
            log.write(line)
            log.flush()  # the log is what a person reads while a long task runs
            if line.strip():
                ui.info(f"ansible: {line.rstrip()}")

        env = ansible_env(wd)
        ansiblecfg.install_requirements(ansiblecfg.requirements_files(wd.box, wd.box.playbook_paths()),
                                        wd.path / PROVISION_DIR, env)  # fmt: skip
        hint = f"full output in {wd.logs / 'ansible.log'}"
        if env.get("ANSIBLE_STRATEGY") == "mitogen_linear":
            hint += f"; if Mitogen is the trouble, retry with Ansible's stock strategy: VAGABOND_MITOGEN=0 vagabond provision {wd.box.name}"
        result = process.check(argv, cwd=wd.path, env=env, timeout=timeout, stream=sink, vm_network=True, hint=hint)
    return parse_recap(result.stdout)


def run_checks(wd: Workdir, machines: Sequence[str]) -> list[tuple[str, ModeCheck, str]]:
    """Prove each mode from inside each machine; raise ModeCheckFailed naming the first that is off."""
    results = []
    for machine in machines:
        for check in mode_checks(wd.box):
            # Through sudo: its secure_path has the sbin directories whatever the box's login PATH is.
            got = remote.check(wd, machine, ["sudo", "-n", *check.command]).stdout.strip()
            results.append((machine, check, got))
            if got != check.expect:
                raise ModeCheckFailed(
                    f"{check.mode} check failed on {machine}: '{' '.join(check.command)}' printed {got!r}, expected {check.expect!r}"
                )
    return results
