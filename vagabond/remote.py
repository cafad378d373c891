"""Commands in the guest over SSH: one config from `vagrant ssh-config`, one persistent connection."""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from typing import TYPE_CHECKING

from vagabond import process
from vagabond.errors import CommandFailed, VagabondError

if TYPE_CHECKING:
    from vagabond.workdir import Workdir

# The master connection outlives each command so the next one skips the SSH handshake.
CONTROL_PERSIST = "10m"


class NotRunning(VagabondError):
    exit_code = 3


def control_dir() -> Path:
    """Unix socket paths are limited to 108 bytes: keep the sockets short, outside the work directory."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"vagabond-ssh-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    return base


def write_ssh_config(wd: "Workdir", vagrant_config: str) -> Path:
    """Vagrant's ssh-config plus connection sharing, written next to the Vagrantfile."""
    extra = (
        "\nHost *\n"
        "  ControlMaster auto\n"
        f"  ControlPath {control_dir()}/%C\n"
        f"  ControlPersist {CONTROL_PERSIST}\n"
        "  ServerAliveInterval 15\n"
        "  ServerAliveCountMax 8\n"
        "  ConnectTimeout 30\n"
    )
    tmp = wd.ssh_config.with_suffix(".tmp")
    tmp.write_text(vagrant_config.rstrip() + "\n" + extra)
    tmp.replace(wd.ssh_config)
    return wd.ssh_config


def hosts(wd: "Workdir") -> list[str]:
    return config_hosts(wd.ssh_config)


def config_hosts(ssh_config: Path) -> list[str]:
    try:
        lines = ssh_config.read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("Host ") and line.split()[1] != "*"]


def ssh_argv(wd: "Workdir", machine: str, command: Sequence[str] | None = None, *, tty: bool = False,
             env: Mapping[str, str] | None = None) -> list[str]:  # fmt: skip
    return build_ssh_argv(wd.ssh_config, wd.box.name, machine, command, tty=tty, env=env)


def build_ssh_argv(ssh_config: Path, box: str, machine: str, command: Sequence[str] | None = None, *,
                   tty: bool = False, env: Mapping[str, str] | None = None) -> list[str]:  # fmt: skip
    if machine not in config_hosts(ssh_config):
        raise NotRunning(f"no SSH configuration for {box!r} machine {machine!r}", hint=f"run 'vagabond up {box}' first")
    argv = ["ssh", "-F", str(ssh_config), "-q"]
    argv.append("-t" if tty else "-T")
    argv.append(machine)
    if command:
        # ssh hands the remote shell one string: quote each argument so the guest sees the same argv.
        words = list(command)
        if env:
            words = ["env", *(f"{k}={v}" for k, v in env.items()), "--", *words]
        argv += ["--", shlex.join(words)]
    return argv


def run(wd: "Workdir", machine: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
        stream: bool | process.LineSink = True, timeout: float | None = None) -> process.Result:  # fmt: skip
    """Run a command in the guest; the Result's returncode is the command's (255: SSH itself failed)."""
    return process.run(ssh_argv(wd, machine, command, env=env), stream=stream, check=False, timeout=timeout,
                       vm_network=True)  # fmt: skip


def check_output(wd: "Workdir", machine: str, command: Sequence[str], *, timeout: float = 120) -> str:
    result = run(wd, machine, command, stream=False, timeout=timeout)
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stdout, result.stderr)
    return result.stdout


def interactive(wd: "Workdir", machine: str, command: Sequence[str] | None = None) -> int:
    return process.run(ssh_argv(wd, machine, command, tty=True), interactive=True, check=False, vm_network=True).returncode


def close_master(wd: "Workdir", machine: str) -> None:
    if wd.ssh_config.is_file() and machine in hosts(wd):
        process.run(["ssh", "-F", str(wd.ssh_config), "-O", "exit", machine], check=False, timeout=30, vm_network=True)
