"""The one exception family vagabond raises; the CLI turns it into a message and an exit code.

Each class has its own exit code (EXIT_CODES lists them for the README and --help). `vagabond run`
exits with the command's own status instead: with 6 when the VM is not up (as every command), and
with RUN_OWN_FAILURE when vagabond (or ssh) itself failed otherwise, as ssh reserves 255 for its own.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from vagabond.redaction import redact


class VagabondError(Exception):
    """A failure the user can act on. ``str(err)`` is the one-line message shown on stderr."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(VagabondError):
    """Bad input on the command line or in the environment."""

    exit_code = 2  # as click's own usage errors


class BoxDefinitionError(VagabondError):
    """A box file that does not match the schema; one line per problem, each with file:line."""

    exit_code = 3

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class BoxNotFound(VagabondError):
    """No box of that name (or no such boxes directory)."""

    exit_code = 4


class RenderError(VagabondError):
    """A value that cannot be written safely into a Vagrantfile."""

    exit_code = 3  # a box file's value, like BoxDefinitionError


class ToolMissing(VagabondError):
    """An external program vagabond needs is not installed."""

    exit_code = 5


class NotRunning(VagabondError):
    """The box's VM is not up in this work directory (or its SSH configuration is gone)."""

    exit_code = 6


class UnsafePath(VagabondError):
    """A path vagabond would write, delete or lock is a link, or not vagabond's: refused, untouched."""

    exit_code = 14


class Busy(VagabondError):
    """Another vagabond command holds the work directory's lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class Interrupted(VagabondError):
    """SIGINT, SIGTERM or SIGHUP: what the command created has been cleaned up."""

    exit_code = 130


class StepFailed(VagabondError):
    """A lifecycle step failed: the message names the step, then the cause; the exit code is the cause's."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"{step} failed: {cause}")
        self.exit_code = getattr(cause, "exit_code", 1)


class ModeCheckFailed(VagabondError):
    """The VM is up but a mode (SELinux, FIPS) is not what the box asks for."""

    exit_code = 7


class PrepareError(VagabondError):
    """`vagabond prepare` could not make the host ready."""

    exit_code = 9


class PublishError(VagabondError):
    """A box could not be published, or a catalog is not what vagabond expects."""

    exit_code = 8


class RegistryError(PublishError):
    """An OCI registry refused or failed a request; the message names the request, never a credential."""

    exit_code = 15


class WarmError(VagabondError):
    """A warm image could not be saved or restored (the message says which part failed)."""

    exit_code = 16


class NotIdempotent(VagabondError):
    """A second provisioning run changed something (the message names the tasks)."""

    exit_code = 11


class PhaseFailed(VagabondError):
    """`vagabond test`: a phase failed; the exit code says which (TEST_PHASE_CODES)."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


# `vagabond test`: the phase that failed first.
TEST_PHASE_CODES = {"up": 10, "idempotence": NotIdempotent.exit_code, "verify": 12, "destroy": 13}


def format_argv(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)


class CommandFailed(VagabondError):
    """An external command exited non-zero (or timed out); carries everything needed to diagnose it."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        *,
        timeout: float | None = None,
        stopped: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timeout = timeout
        if stopped is not None:
            what = f"was stopped: {stopped}"
        elif timeout is not None:
            what = f"timed out after {timeout:g}s"
        else:
            what = f"returned {returncode}"
        last = _last_line(stderr) or _last_line(stdout)
        message = f"Command '{format_argv(self.argv)}' {what}."
        if last:
            message += f" Last output: {last}"
        super().__init__(message, hint=hint)

    @classmethod
    def from_result(
        cls, result, *, hint: str | None = None, timeout: float | None = None, stopped: str | None = None
    ) -> CommandFailed:
        """The one way to build a failure (from process.Result or anything with argv, returncode,
        stdout and stderr): every secret is redacted from the command and its output here, so no
        call site can forget it."""
        return cls(
            [redact(str(a)) for a in result.argv],
            result.returncode,
            redact(result.stdout),
            redact(result.stderr),
            timeout=timeout,
            stopped=stopped,
            hint=hint,
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# vagabond run: the command's own exit status, except this one for a failure of vagabond or ssh.
RUN_OWN_FAILURE = 255


def exit_code_of(exc: VagabondError, command: str | None) -> int:
    """The exit code a failed command gives: its error's, except that `run`, whose other codes are
    the remote command's, keeps only "not up" (6, what a script checks before `vagabond up`) and
    says every other failure of its own with ssh's 255."""
    if command == "run" and not isinstance(exc, NotRunning):
        return RUN_OWN_FAILURE
    return exc.exit_code


# (code, meaning) for the README and `vagabond --help`; a test keeps it in step with the classes.
EXIT_CODES = [
    (0, "success"),
    (1, "a program vagabond ran failed (the message names it), or another failure"),
    (UsageError.exit_code, "bad usage: an option, an argument or an environment variable"),
    (BoxDefinitionError.exit_code, "a box file is invalid (file:line: field: problem)"),
    (BoxNotFound.exit_code, "no such box or boxes directory"),
    (ToolMissing.exit_code, "a program vagabond needs is not installed"),
    (NotRunning.exit_code, "the box's VM is not up here"),
    (ModeCheckFailed.exit_code, "the VM is up but a mode (SELinux, FIPS) is not what the box asks for"),
    (PublishError.exit_code, "publishing failed, or a catalog is not what vagabond expects"),
    (PrepareError.exit_code, "the host could not be prepared"),
    (TEST_PHASE_CODES["up"], "vagabond test: bringing the VM up failed"),
    (
        NotIdempotent.exit_code,
        "the second provisioning run changed something (vagabond test, provision --check-idempotence)",
    ),
    (TEST_PHASE_CODES["verify"], "vagabond test: a verify command failed"),
    (TEST_PHASE_CODES["destroy"], "vagabond test: destroying the VM failed (every other phase passed)"),
    (RegistryError.exit_code, "an OCI registry refused or failed a request (push, pull, sign-in)"),
    (WarmError.exit_code, "a warm image could not be saved or restored (vagabond save, reset)"),
    (UnsafePath.exit_code, "a path to write, delete or lock is a symbolic link or not vagabond's: nothing was touched"),
    (Busy.exit_code, "another vagabond command is working on this box (try again later)"),
    (Interrupted.exit_code, "interrupted (SIGINT, SIGTERM, SIGHUP); what the command created was removed"),
    (
        RUN_OWN_FAILURE,
        "vagabond run: vagabond or ssh failed, the VM being up (otherwise run exits with the command's status)",
    ),
]
