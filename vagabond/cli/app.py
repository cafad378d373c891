"""The `vagabond` command: the app with every group of commands registered, and their help
reflowed for the terminal. Options are parsed in the group modules; each command calls into the
sub-packages below, and the funnel (cli.common) turns a failure into one line and an exit code."""

from __future__ import annotations

from vagabond.cli import box_commands, ci_commands, host_commands, project_commands, vm_commands  # noqa: F401 - importing a group registers its commands
from vagabond.cli.common import _reflow, app

__all__ = ["app"]

for _info in [
    *app.registered_commands,
    *(c for g in app.registered_groups for c in g.typer_instance.registered_commands),
]:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflow(_info.callback.__doc__)
