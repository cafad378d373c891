"""`vagabond run` without the CLI framework: it execs ssh ~50 ms after start instead of ~500 ms.

CI scripts call `vagabond run` many times; importing typer, pydantic and jinja2 for each call
would cost more than the command itself over the shared SSH connection. Anything this parser
does not recognise (--help, unknown options, a box that is not up) goes to the full CLI, which
prints the proper help or error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vagabond import paths
from vagabond.definition import project
from vagabond.errors import VagabondError
from vagabond.vm import remote
from vagabond.vm.workdir import Workdir, default_path

_VALUE_OPTIONS = {"--workdir": "workdir", "--machine": "machine", "-m": "machine"}


def parse(argv: list[str]) -> dict | None:
    """argv after 'run' -> {box, workdir, machine, command}, or None when unsure."""
    found: dict = {"box": None, "workdir": None, "machine": None, "command": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            found["command"] = argv[i + 1 :]
            break
        name, eq, value = arg.partition("=")
        if name in _VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                value = argv[i + 1]
                i += 1
            found[_VALUE_OPTIONS[name]] = value
        elif arg.startswith("-") or found["box"] is not None:
            return None
        else:
            found["box"] = arg
        i += 1
    if not found["box"] or not found["command"]:
        return None
    return found


def main(argv: list[str]) -> None:
    """Exec ssh for `vagabond run ...`, or return so the full CLI handles the call."""
    args = parse(argv)
    if args is None:
        return
    wd = Workdir.at(Path(args["workdir"]) if args["workdir"] else default_path(args["box"]))
    state = wd.read_state()
    machine = args["machine"] or state.get("primary")
    if not machine:
        return
    logs_dir = paths.logs_on_failure_dir()
    on_failure = None if logs_dir is None else (lambda: _collect_logs(args["box"], wd.path, logs_dir))
    try:
        ssh = remote.ssh_argv(wd, machine, args["command"], env=state.get("env"), box=args["box"])
        # Raises only before the command starts (no ssh, no namespace): the full CLI then says why.
        code = remote.exec_command(ssh, on_failure)
    except VagabondError:
        return
    raise SystemExit(code)


def _collect_logs(name: str, workdir: Path, out: Path) -> None:
    """Under CI a failing command also brings back the logs; only then is the rest of vagabond imported."""
    from vagabond.definition import boxfile  # the schema: only when a failed command asks for its logs
    from vagabond.vm import logs  # log collection: likewise

    try:
        box = boxfile.find_box(name, project.box_dirs())
        logs.collect_on_failure(box, Workdir.for_box(box, workdir), out)
    except Exception as exc:
        print(f"error: cannot collect logs: {exc}", file=sys.stderr)
