"""The typer app and what every command shares: the one error funnel, the global options
(--boxes-dir, --debug, --version), the option types, the box and work directory a command means."""

from __future__ import annotations

import inspect
import sys
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from typer.core import TyperGroup

from vagabond import __version__, errors
from vagabond.errors import VagabondError

if TYPE_CHECKING:
    from vagabond.definition import schema
    from vagabond.vm.workdir import Workdir

# What the commands need (the box-file schema, Vagrant, libvirt, jinja2) is imported by the
# command that runs, never here or at the top of a group module: `vagabond --help` and shell
# completion import typer and this package's light modules only (tests/unit/cli/test_common.py keeps it so).

_state = {"debug": False, "boxes_dir": None}


class _Funnel(TyperGroup):
    """The one place a VagabondError becomes a message on stderr and an exit code."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, _hoist_debug(self, ctx, list(args)))

    def invoke(self, ctx):
        from vagabond import github, interrupts, ui

        started = time.monotonic()
        command = " ".join(_command_words(sys.argv[1:]))
        ok, detail = False, ""
        try:
            with interrupts.handled():  # SIGTERM and SIGHUP as Ctrl-C: every command cleans up
                result = super().invoke(ctx)
            ok = True
            return result
        except VagabondError as exc:
            if _state["debug"]:
                traceback.print_exc()
            detail = str(exc)
            ui.error(detail, title=f"vagabond {command}")
            sys.exit(errors.exit_code_of(exc, ctx.invoked_subcommand))
        except OSError as exc:  # a file or program the host refused: one line, the path and why
            if _state["debug"]:
                traceback.print_exc()
            where = f"{exc.filename}: " if exc.filename else ""
            detail = f"{where}{exc.strerror or exc}"
            ui.error(f"{detail} (run with --debug for where it happened)", title=f"vagabond {command}")
            sys.exit(1)
        except KeyboardInterrupt:
            detail = "interrupted"
            ui.error(detail, title=f"vagabond {command}")
            sys.exit(130)
        except typer.Exit as exc:  # a command that sets its own exit code (doctor, run, gc)
            ok = getattr(exc, "exit_code", 0) == 0
            raise
        finally:
            if command:
                github.write_step_summary(command, ok, time.monotonic() - started, detail)


def _hoist_debug(group, ctx, args: list[str]) -> list[str]:
    """--debug is global, but users type it after the subcommand too: move it in front. Never an
    option's value (-e --debug), nothing after "--", and for run and test nothing after the box
    (the rest is the command for the VM)."""
    cut = args.index("--") if "--" in args else len(args)
    i = 0
    while i < cut and args[i].startswith("-"):  # vagabond's own options, before the subcommand
        i += 2 if args[i] == "--boxes-dir" else 1
    command, takes_value, positionals, found = group, set(), 0, []
    while i < cut:
        token = args[i]
        if hasattr(command, "get_command") and not token.startswith("-"):
            command = command.get_command(ctx, token)
            if command is None:
                break
            takes_value = {
                o
                for p in command.params
                if getattr(p, "param_type_name", "") == "option"
                and not getattr(p, "is_flag", False)
                and not getattr(p, "count", False)
                for o in p.opts
            }
        elif token == "--debug":
            found.append(i)
        elif token in takes_value:
            i += 1  # its value, whatever it looks like
        elif not token.startswith("-"):
            positionals += 1
            if positionals > 1 and (command.context_settings or {}).get("allow_extra_args"):
                break  # run BOX CMD ...: CMD and its arguments are the guest's
        i += 1
    if not found:
        return args
    return ["--debug"] + [a for j, a in enumerate(args) if j not in found]


def _command_words(args: list[str]) -> list[str]:
    """The subcommand and its box, for titles: never option values (they may be paths or URLs)."""
    words: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--boxes-dir":  # the one global option with a value
            next(rest, None)
        elif arg.startswith("-"):
            if words:
                break
        else:
            words.append(arg)
    return words[:3]


app = typer.Typer(
    cls=_Funnel,
    name="vagabond",
    help=(
        "Test software in real VMs (SELinux enforcing, FIPS mode, kernel modules) with Vagrant + "
        "libvirt: the same Vagrantfile in CI and on a laptop.\n\n"
        "Boxes are YAML files in the project's boxes/ (or --boxes-dir / $VAGABOND_BOXES), beside the "
        "boxes shipped with vagabond; start with 'vagabond init', 'vagabond list' and 'vagabond doctor'."
    ),
    epilog="Exit codes:\n\n" + "\n\n".join(f"{code:>3}  {meaning}" for code, meaning in errors.EXIT_CODES),
    no_args_is_help=True,
    add_completion=True,
    # A token can sit in a local variable; never print locals in a traceback.
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"vagabond {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    boxes_dir: Annotated[
        Optional[Path],
        typer.Option("--boxes-dir", help="Directory of box files (default: $VAGABOND_BOXES, ./boxes, shipped boxes)."),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="VAGABOND_DEBUG",
            help="Show commands as they run and tracebacks on errors (also after the subcommand, or VAGABOND_DEBUG=1).",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    from vagabond import ui

    _state["debug"] = debug
    _state["boxes_dir"] = boxes_dir
    ui.setup_logging(debug)


def _box_dirs() -> list[tuple[Path, str]]:
    from vagabond.definition import project

    return project.box_dirs(_state["boxes_dir"])


class DriverChoice(str, Enum):
    kvm = "kvm"
    qemu = "qemu"


DriverOption = Annotated[
    Optional[DriverChoice],
    typer.Option(
        "--driver",
        help="Force the libvirt driver: kvm or qemu (default: detected; also $VAGABOND_DRIVER).",
        case_sensitive=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def _complete_box(incomplete: str) -> list[str]:
    """Shell completion: the names of the boxes this project sees (broken ones included)."""
    from vagabond.definition import boxfile

    try:
        return sorted({e.name for e in boxfile.scan(_box_dirs()) if e.name.startswith(incomplete)})
    except VagabondError:
        return []


BoxArg = Annotated[str, typer.Argument(help="Box name (a file boxes/<name>.yaml).", autocompletion=_complete_box)]
WorkdirOption = Annotated[
    Optional[Path], typer.Option("--workdir", help="Work directory for this box (default: .vagabond/<box>).")
]
MachineOption = Annotated[
    Optional[str], typer.Option("--machine", "-m", help="Machine of a multi-machine box (default: the primary).")
]
LogsOnFailureOption = Annotated[
    Optional[Path],
    typer.Option(
        "--logs-on-failure",
        metavar="DIR",
        help="On failure, collect logs (as 'vagabond logs') into DIR. Default under CI ($CI, $GITHUB_ACTIONS): "
        "./vagabond-logs; also $VAGABOND_LOGS_ON_FAILURE.",
    ),
]
ImageOption = Annotated[
    Optional[Path],
    typer.Option(
        "--image",
        metavar="PATH",
        help="A local copy of the box's cloud image (kind image), used instead of downloading it; "
        "it is checked against the box's checksum all the same.",
    ),
]
ExtraVarsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--extra-vars",
        "-e",
        help="Passed to ansible-playbook: key=value, JSON or @FILE (found from where you run vagabond). Repeatable.",
    ),
]


def _box_and_workdir(name: str, workdir: Optional[Path]) -> tuple[schema.Box, Workdir]:
    from vagabond.definition import boxfile
    from vagabond.vm.workdir import Workdir

    box = boxfile.find_box(name, _box_dirs())
    return box, Workdir.for_box(box, workdir)


def _selected_boxes(option: Optional[list[str]]) -> list[schema.Box]:
    """--boxes a,b (or repeated): those boxes; none given: the project's boxes (the shipped ones
    in a project that has none)."""
    from vagabond.definition import boxfile

    dirs = _box_dirs()
    names = [n.strip() for item in option or [] for n in item.split(",") if n.strip()]
    return [boxfile.find_box(n, dirs) for n in names] if names else boxfile.default_selection(dirs)


def _reflow(doc: str) -> str:
    """A docstring with each paragraph on one line, for rich to wrap at the terminal's width (typer
    keeps the source's line breaks, which break the text twice in a narrow terminal); lines that
    start a list item or are indented keep their break."""
    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.split("\n"):
            if lines and not line.startswith((" ", "- ", "* ")):
                lines[-1] += " " + line
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)
