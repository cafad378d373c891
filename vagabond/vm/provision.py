"""Running Ansible against a box's VM: the inventory from its SSH config, the environment (its
shared connection, Mitogen, the project's ansible.cfg), one ansible-playbook run of site.yml, its
recap read, and the checks that prove each mode from inside the VM."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vagabond import files, process, timeouts, ui
from vagabond.errors import ModeCheckFailed, UsageError
from vagabond.vm import ansiblecfg, remote
from vagabond.vm.playbooks import GROUP, HOST_VARS, PROVISION_DIR, ModeCheck, mode_checks, provisions
from vagabond.vm.workdir import Workdir


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
    wanted = {
        # Same SSH config and master connection as `vagabond run`. Ansible splits this with
        # shlex: the path is quoted, so a space, a quote or "-o" in it stays part of the path.
        "ANSIBLE_SSH_ARGS": f"-F {shlex.quote(str(wd.ssh_config))}",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(remote.control_dir()),
        # vagabond reads the recap and the changed tasks from the default callback's output.
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_FORCE_COLOR": "0",
        # (Pipelining, host keys, remote_tmp and the rest are in ansible.cfg: see vagabond.vm.ansiblecfg.)
        # Facts are gathered once per play and cached between runs (`vagabond provision`).
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "facts"),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "7200",
        "ANSIBLE_FORKS": "10",
        "ANSIBLE_NOCOLOR": "0" if ui.interactive() else "1",
    }
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
    return [
        Recap(m[0], int(m[1]), int(m[2]), int(m[3]), int(m[4]), tuple(tasks.get(m[0], ())))
        for m in RECAP.findall(output)
    ]


def extra_vars(values: Sequence[str], cwd: Path | None = None) -> tuple[str, ...]:
    """-e values as ansible-playbook takes them, each @FILE made absolute from where vagabond was
    started (ansible-playbook runs in the work directory, where a relative one names nothing) and
    refused before anything starts when it is not a regular file vagabond can read."""
    base = cwd or Path.cwd()
    resolved = []
    for value in values:
        if value.startswith("@"):
            path = base / os.path.expanduser(value[1:])
            if not path.is_file() or not os.access(path, os.R_OK):
                raise UsageError(
                    f"-e {value}: {path} is not a file vagabond can read",
                    hint="give a variables file that exists (YAML or JSON), or key=value",
                )
            value = f"@{path.resolve()}"
        resolved.append(value)
    return tuple(resolved)


def run_playbooks(
    wd: Workdir, extra_vars: Sequence[str] = (), *, timeout: float = timeouts.PLAYBOOK, force: bool = False
) -> list[Recap]:
    """The provisioning directory's site.yml (written with the Vagrantfile), as `vagrant provision`
    runs it, through the shared SSH connection and Mitogen. With force (or extra variables), the
    playbooks run even on a box built from this very definition."""
    if not provisions(wd.box):
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
        ansiblecfg.install_requirements(
            ansiblecfg.requirements_files(wd.box, wd.box.playbook_paths()), wd.path / PROVISION_DIR, env
        )
        hint = f"full output in {wd.logs / 'ansible.log'}"
        if env.get("ANSIBLE_STRATEGY") == "mitogen_linear":
            hint += (
                "; if Mitogen is the trouble, retry with Ansible's stock strategy: "
                f"VAGABOND_MITOGEN=0 vagabond provision {wd.box.name}"
            )
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
                    f"{check.mode} check failed on {machine}: '{' '.join(check.command)}' printed {got!r}, "
                    f"expected {check.expect!r}"
                )
    return results
