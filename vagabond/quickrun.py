"""`vagabond run` without the CLI framework: it execs ssh ~50 ms after start instead of ~500 ms.

CI scripts call `vagabond run` many times; importing typer, pydantic and jinja2 for each call
would cost more than the command itself over the shared SSH connection. Anything this parser
does not recognise (--help, unknown options, a box that is not up) goes to the full CLI, which
prints the proper help or error.
"""

from __future__ import annotations

import json
from pathlib import Path

from vagabond import process, remote
from vagabond.errors import VagabondError

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
    workdir = (Path(args["workdir"]) if args["workdir"] else Path(".vagabond") / args["box"]).absolute()
    try:
        state = json.loads((workdir / "state.json").read_text())
        machine = args["machine"] or state["primary"]
        ssh = remote.build_ssh_argv(workdir / "ssh_config", args["box"], machine, args["command"], env=state.get("env"))
    except (OSError, ValueError, KeyError, VagabondError):
        return
    process.exec_replace(ssh)
