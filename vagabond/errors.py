"""The one exception family vagabond raises; the CLI turns it into a message and an exit code."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


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

    exit_code = 2


class BoxDefinitionError(VagabondError):
    """A box file that does not match the schema; one line per problem, each with file:line."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class BoxNotFound(VagabondError):
    exit_code = 2


class RenderError(VagabondError):
    """A value that cannot be written safely into a Vagrantfile."""

    exit_code = 2


class ToolMissing(VagabondError):
    """An external program vagabond needs is not installed."""

    exit_code = 3


class NotRunning(VagabondError):
    """The box's VM is not up in this work directory (or its SSH configuration is gone)."""

    exit_code = 3


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


class PrepareError(VagabondError):
    """`vagabond prepare` could not make the host ready."""


class PublishError(VagabondError):
    """A box could not be published, or a catalog is not what vagabond expects."""


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


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
