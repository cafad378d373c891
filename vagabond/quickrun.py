"""`vagabond run` without the CLI framework: it execs ssh ~50 ms after start instead of ~500 ms.

CI scripts call `vagabond run` many times; importing typer, pydantic and jinja2 for each call
would cost more than the command itself over the shared SSH connection. Anything this parser
does not recognise (--help, unknown options, a box that is not up) goes to the full CLI, which
prints the proper help or error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vagabond import paths, process, project, remote
from vagabond.errors import VagabondError
from vagabond.workdir import default_path

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
    workdir = (Path(args["workdir"]) if args["workdir"] else default_path(args["box"])).absolute()
    try:
        state = json.loads((workdir / "state.json").read_text())
        machine = args["machine"] or state["primary"]
        ssh = remote.build_ssh_argv(workdir / "ssh_config", args["box"], machine, args["command"], env=state.get("env"))
    except (OSError, ValueError, KeyError, VagabondError):
        return
    logs_dir = paths.logs_on_failure_dir()
    try:
        if logs_dir is None:
            process.exec_replace(ssh, vm_network=True)
        # Under CI a failing command also brings back the logs; only then is the rest of vagabond imported.
        code = process.run(ssh, interactive=True, check=False, vm_network=True).returncode
    except VagabondError:
        return  # ssh or the VMs' namespace is missing: the full CLI says so, through its error funnel
    if code != 0:
        _collect_logs(args["box"], workdir, logs_dir)
    raise SystemExit(code)


def _collect_logs(name: str, workdir: Path, out: Path) -> None:
    from vagabond import boxes, lifecycle
    from vagabond.workdir import Workdir

    try:
        box = boxes.find_box(name, project.box_dirs())
    except VagabondError as exc:
        print(f"error: cannot collect logs: {exc}", file=sys.stderr)
        return
    lifecycle.collect_logs(box, Workdir.for_box(box, workdir), out)
