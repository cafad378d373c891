"""Commands in the guest over SSH: one config from `vagrant ssh-config`, one persistent connection.

ssh talks to the guest, so it starts in the VMs' network namespace when there is one. As in
process: ``run`` returns the Result (255: ssh itself failed), ``check`` raises CommandFailed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from vagabond import files, process, timeouts
from vagabond.errors import CommandFailed, NotRunning, UsageError
from vagabond.vm.workdir import Workdir

# The master connection outlives each command so the next one skips the SSH handshake.
CONTROL_PERSIST = "10m"


def control_dir() -> Path:
    """Where the shared connections' sockets live: short (Unix socket paths are limited to 108
    bytes), so outside the work directory, and private. In a shared /tmp another user could make
    the directory first and serve a control socket of their own: a directory vagabond did not make
    for this user (owner, mode, a link instead of a directory) is refused, never used."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"vagabond-ssh-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UsageError(
            f"{base} is not a private directory of this user (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}); "
            "someone else may have made it to intercept SSH connections",
            hint="remove it, or set XDG_RUNTIME_DIR to a private directory",
        )
    return base


# A guest that goes away without closing its connections (a reboot under software emulation) is
# noticed within two minutes, so a waiting ssh (Ansible's reboot) never hangs on a dead one.
KEEPALIVE = {"ServerAliveInterval": "15", "ServerAliveCountMax": "8"}


def write_ssh_config(wd: Workdir, vagrant_config: str) -> Path:
    """Vagrant's ssh-config plus connection sharing, written next to the Vagrantfile."""
    extra = (
        "\nHost *\n"
        "  ControlMaster auto\n"
        f'  ControlPath "{control_dir()}/%C"\n'
        f"  ControlPersist {CONTROL_PERSIST}\n"
        + "".join(f"  {key} {value}\n" for key, value in KEEPALIVE.items())
        + "  ConnectTimeout 30\n"
    )
    wd.claim(wd.ssh_config.name)
    return files.write_text(wd.ssh_config, vagrant_config.rstrip() + "\n" + extra)


def make_key(wd: Workdir) -> Path:
    """A new key pair for this VM (ed25519, no passphrase, mode 0600), replacing an earlier one."""
    public = wd.ssh_key.with_name(wd.ssh_key.name + ".pub")
    wd.claim(wd.ssh_key.name, public.name)
    # ssh-keygen opens both files following links: it writes into a directory of vagabond's own
    # (0700), and files.move renames each into place, refusing a link planted there.
    with files.private_dir(wd.ssh_key.parent) as work:
        made = work / "key"
        process.check(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vagabond", "-f", str(made)], timeout=timeouts.TOOL
        )
        files.move(made.with_name("key.pub"), public, mode=0o644)
        files.move(made, wd.ssh_key, mode=0o600)
    return wd.ssh_key


def hosts(wd: Workdir) -> list[str]:
    try:
        lines = wd.ssh_config.read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("Host ") and line.split()[1] != "*"]


def addresses(wd: Workdir) -> dict[str, str]:
    """Each machine's address, as its SSH configuration has it (empty when there is none)."""
    found, host = {}, None
    try:
        lines = wd.ssh_config.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        words = line.split()
        if len(words) == 2 and words[0] == "Host":
            host = words[1]
        elif len(words) == 2 and words[0] == "HostName" and host:
            found[host] = words[1]
    return found


def ssh_argv(
    wd: Workdir,
    machine: str,
    command: Sequence[str] | None = None,
    *,
    tty: bool = False,
    env: Mapping[str, str] | None = None,
    box: str | None = None,
) -> list[str]:
    if wd.box is not None and machine not in wd.box.machine_names():
        raise UsageError(
            f"box {wd.box.name!r} has no machine {machine!r}", hint=f"its machines: {', '.join(wd.box.machine_names())}"
        )
    if machine not in hosts(wd):
        name = box or (wd.box.name if wd.box is not None else wd.path.name)
        raise NotRunning(
            f"no SSH configuration for {name!r} machine {machine!r}", hint=f"run 'vagabond up {name}' first"
        )
    argv = ["ssh", "-F", str(wd.ssh_config), "-q"]
    argv.append("-t" if tty else "-T")
    argv.append(machine)
    if command:
        # ssh hands the remote shell one string: quote each argument so the guest sees the same argv.
        words = list(command)
        if env:
            words = ["env", *(f"{k}={v}" for k, v in env.items()), "--", *words]
        argv += ["--", shlex.join(words)]
    return argv


def run(
    wd: Workdir,
    machine: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stream: bool | process.LineSink = True,
    timeout: float | None = None,
    input: str | None = None,
) -> process.Result:
    """Run a command in the guest; the Result's returncode is the command's (255: SSH itself failed)."""
    return process.run(
        ssh_argv(wd, machine, command, env=env), stream=stream, timeout=timeout, input=input, vm_network=True
    )


def check(
    wd: Workdir,
    machine: str,
    command: Sequence[str],
    *,
    timeout: float = timeouts.GUEST_COMMAND,
    stream: bool | process.LineSink = False,
) -> process.Result:
    """Run a command in the guest; CommandFailed (naming the ssh command) when it fails."""
    result = run(wd, machine, command, stream=stream, timeout=timeout)
    if result.returncode != 0:
        raise CommandFailed.from_result(result)
    return result


def interactive(wd: Workdir, machine: str, command: Sequence[str] | None = None) -> int:
    return process.run(ssh_argv(wd, machine, command, tty=True), interactive=True, vm_network=True).returncode


def exec_command(argv: list[str], on_failure: Callable[[], None] | None) -> int:
    """`vagabond run`: become ssh, so output, signals and exit code are the command's own with no
    Python left in between; only when something must happen after a failure (collecting logs),
    run it as a child instead and return its exit code."""
    if on_failure is None:
        process.exec_replace(argv, vm_network=True)
    code = process.run(argv, interactive=True, vm_network=True).returncode
    if code != 0:
        on_failure()
    return code


def close_master(wd: Workdir, machine: str) -> None:
    if wd.ssh_config.is_file() and machine in hosts(wd):
        process.run(["ssh", "-F", str(wd.ssh_config), "-O", "exit", machine], timeout=timeouts.PROBE, vm_network=True)


def insecure_keys() -> list[Path]:
    """Vagrant's published insecure private keys, as Vagrant copies them into its home (2.3's one
    key, 2.4's two): the keys anyone can have."""
    home = Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
    found = [home / "insecure_private_key", *sorted((home / "insecure_private_keys").glob("vagrant.key.*"))]
    return [k for k in found if k.is_file() and not k.name.endswith(".pub")]


def insecure_key_opens(wd: Workdir, machine: str) -> bool | None:
    """Whether Vagrant's published key logs in to the machine (None: no key, or no address, to try).
    Only that key is offered (no ssh_config, no agent), with a short timeout."""
    address = addresses(wd).get(machine)
    keys = insecure_keys()
    if not address or not keys:
        return None
    argv = ["ssh", "-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes"]
    argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=15"]
    argv += ["-o", "LogLevel=ERROR", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]
    for key in keys:
        argv += ["-i", str(key)]
    result = process.run([*argv, f"vagrant@{address}", "true"], timeout=timeouts.GUEST_COMMAND, vm_network=True)
    return result.returncode == 0
