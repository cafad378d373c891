"""The only module that starts external programs: argv lists in, Result or CommandFailed out.

As in hatch, the name says what happens on failure: ``run`` returns the Result whatever the exit
code, ``check`` raises CommandFailed (naming the command) when it is not 0. Both raise when the
command cannot finish at all: not found, timed out, stopped by a watchdog.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from vagabond import sandbox
from vagabond.errors import CommandFailed, ToolMissing, format_argv
from vagabond.redaction import redact

log = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL when a command's process group must go.
KILL_GRACE = 3.0
# Seconds to keep reading a finished command's pipes. A daemon it left behind can hold them open
# forever (ssh's ControlPersist master keeps stderr), so stop waiting after this.
DRAIN_AFTER_EXIT = 2.0


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int | None  # None: it did not finish (timed out, stopped)
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


LineSink = Callable[[str], None]


def own_bin_dir() -> str:
    """The running interpreter's bin directory: where pip put what came with vagabond
    (ansible-playbook, ansible-galaxy, ansible-config ...)."""
    return os.path.dirname(sys.executable)


def in_virtual_env() -> bool:
    return sys.prefix != sys.base_prefix


def which(name: str) -> str | None:
    """A program by name. Inside vagabond's own virtual environment (a venv, pipx), that
    environment's bin directory first: it holds only what was installed with vagabond, and a host
    may put another copy ahead on PATH (GitHub's runner image has a newer ansible-core in
    /opt/pipx_bin, which cannot manage CentOS 7's Python 2.7). PATH after that, and the bin
    directory last when vagabond runs from a system Python (its bin directory is /usr/bin, where
    PATH's order must win)."""
    own = own_bin_dir()
    if in_virtual_env() and (found := shutil.which(name, path=own)):
        return found
    return shutil.which(name) or shutil.which(name, path=own)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stream: bool | LineSink = False,
    input: str | None = None,
    interactive: bool = False,
    hint: str | None = None,
    watchdog: Callable[[], str | None] | None = None,
    vm_network: bool = False,
) -> Result:
    """Run ``argv`` (never through a shell) and return its Result, whatever its exit code.

    ``stream`` echoes output live as it arrives (True: to our stdout/stderr; a callable: each line
    to it) while keeping a copy for the error message. ``interactive`` hands the terminal to the
    child. On timeout or Ctrl-C the whole process group is killed. ``watchdog`` is asked once a
    second; a string it returns is a reason to stop the command now (killed like a timeout, and the
    reason is the error). ``vm_network`` starts a program that talks to VMs inside their network
    namespace, when the host keeps them in one (see vagabond.sandbox).
    """
    args = _argv(argv, vm_network)
    log.debug("run: %s (cwd=%s)", redact(format_argv(args)), cwd or ".")
    started = time.monotonic()
    proc = _start(args, cwd=cwd, env=env, interactive=interactive, piped_input=input is not None, hint=hint)
    output = _Output(proc, input, stream) if not interactive else None
    try:
        returncode, reason = _wait(proc, timeout, watchdog)
    except subprocess.TimeoutExpired:
        returncode, reason = None, None
    except BaseException:
        # KeyboardInterrupt / SystemExit from a signal handler: never leave the child running.
        _kill_group(proc)
        raise
    if returncode is None:
        _kill_group(proc)
    stdout, stderr = output.collected(DRAIN_AFTER_EXIT if returncode is not None else 2) if output else ("", "")
    result = Result(args, returncode, stdout, stderr, time.monotonic() - started)
    if returncode is None:
        raise CommandFailed.from_result(result, timeout=timeout, stopped=reason, hint=hint)
    log.debug("exit %s after %.1fs: %s", returncode, result.duration, redact(format_argv(args)))
    return result


def _start(args: list[str], *, cwd, env, interactive: bool, piped_input: bool, hint: str | None) -> subprocess.Popen:
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=None if interactive else (subprocess.PIPE if piped_input else subprocess.DEVNULL),
            stdout=None if interactive else subprocess.PIPE,
            stderr=None if interactive else subprocess.PIPE,
            # A session of its own, so a timeout or Ctrl-C can kill every child it spawned
            # (vagrant -> ruby -> ssh, ansible-playbook -> ssh). Interactive commands keep our
            # session so the terminal's job control still reaches them.
            start_new_session=not interactive,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise ToolMissing(
            f"'{args[0]}' was not found",
            hint=hint or "run 'vagabond doctor' to see what is missing and how to install it",
        ) from exc
    except PermissionError as exc:
        raise ToolMissing(f"'{args[0]}' is not executable: {exc.strerror}") from exc


class _Output:
    """A child's stdout and stderr, read as they come by a thread each (streamed where asked), a
    copy kept for the Result; its stdin fed from ``input`` by another."""

    def __init__(self, proc: subprocess.Popen, input: str | None, stream: bool | LineSink) -> None:
        if input is not None and proc.stdin is not None:
            _feed(proc.stdin, input)
        self.out: list[str] = []
        self.err: list[str] = []
        out_sink, err_sink = _sinks(stream)
        self.threads = [
            threading.Thread(target=_pump, args=(proc.stdout, self.out, out_sink), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, self.err, err_sink), daemon=True),
        ]
        for t in self.threads:
            t.start()

    def collected(self, wait: float) -> tuple[str, str]:
        for t in self.threads:
            t.join(timeout=wait)
        return "".join(self.out), "".join(self.err)


def check(argv: Sequence[str | os.PathLike[str]], *, hint: str | None = None, **kwargs) -> Result:
    """``run``, and CommandFailed when the command exits non-zero."""
    result = run(argv, hint=hint, **kwargs)
    if result.returncode != 0:
        raise CommandFailed.from_result(result, hint=hint)
    return result


def _argv(argv: Sequence[str | os.PathLike[str]], vm_network: bool) -> list[str]:
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    if os.sep not in args[0]:
        args[0] = which(args[0]) or args[0]
    if not vm_network:
        return args
    if not os.path.isfile(args[0]):  # `ip netns exec` would hide it behind its own error
        raise ToolMissing(
            f"'{args[0]}' was not found", hint="run 'vagabond doctor' to see what is missing and how to install it"
        )
    return sandbox.wrap(args)


def _wait(proc: subprocess.Popen, timeout: float | None, watchdog: Callable[[], str | None] | None):
    """(returncode, None) when the command ends; (None, reason) when the watchdog stops it;
    TimeoutExpired past ``timeout``."""
    if watchdog is None:
        return _exited(proc, timeout), None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return _exited(proc, 1.0), None
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() > deadline:
                raise
            reason = watchdog()
            if reason:
                return None, reason


def _exited(proc: subprocess.Popen, timeout: float | None) -> int:
    """``proc.wait(timeout)``, woken the moment the child ends: with a timeout, Popen's own wait
    sleeps between looks, up to 50 ms, which each short command (virsh, ip) paid once more than it
    ran. A pidfd (Linux 5.3) becomes readable when its process ends."""
    if timeout is None or proc.returncode is not None:  # reaped already: its pid may be another's
        return proc.wait()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # an older kernel, or a Python without it (macOS)
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while not poller.poll(min(max(0.0, deadline - time.monotonic()) * 1000, 2**31 - 1)):
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(pidfd)
    return proc.wait()


def _feed(pipe: IO[str], data: str) -> None:
    def writer() -> None:
        try:
            pipe.write(data)
        except BrokenPipeError:
            pass
        finally:
            try:
                pipe.close()
            except BrokenPipeError:
                pass

    threading.Thread(target=writer, daemon=True).start()


def _sinks(stream: bool | LineSink) -> tuple[LineSink | None, LineSink | None]:
    if stream is True:
        return (_writer(sys.stdout), _writer(sys.stderr))
    if callable(stream):
        return (stream, stream)
    return (None, None)


def _writer(fh: IO[str]) -> LineSink:
    def write(line: str) -> None:
        try:
            fh.write(redact(line))
            fh.flush()
        except (OSError, ValueError):
            pass  # our reader is gone; the command runs on and its output stays in Result

    return write


def _pump(pipe: IO[str] | None, buf: list[str], sink: LineSink | None) -> None:
    if pipe is None:
        return
    with pipe:
        for line in iter(pipe.readline, ""):
            buf.append(line)
            if sink is not None:
                sink(line)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    own = pgid == os.getpgid(0)
    try:
        if own:
            proc.terminate()
        else:
            os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        if own:
            proc.kill()
        else:
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def exec_replace(argv: Sequence[str | os.PathLike[str]], *, vm_network: bool = False) -> None:
    """Become ``argv`` (no child, no copy of its output): for `vagabond run`, whose exit code,
    output and signals must be the command's own, with no Python left in between."""
    args = _argv(argv, vm_network)
    exe = which(args[0]) if os.sep not in args[0] else args[0]
    if not exe:
        raise ToolMissing(f"'{args[0]}' was not found")
    log.debug("exec: %s", redact(format_argv(args)))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(exe, args)
