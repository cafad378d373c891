"""The `vagabond` command: options are parsed here and each command calls into the core modules."""

from __future__ import annotations

import inspect
import json
import sys
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

from vagabond import __version__, build, errors, files, github, interrupts, paths, ui
from vagabond.boxes import cloudimage, kinds, made, mmdebstrap
from vagabond.ci import workflow
from vagabond.host import detect, doctor, install, prepare
from vagabond.spec import boxfile, project, schema
from vagabond.vm import gc, lifecycle, logs, prebuilt, remote, render, status, testrun
from vagabond.publish import transaction
from vagabond.errors import VagabondError
from vagabond.vm.workdir import Workdir

_state = {"debug": False, "boxes_dir": None}


class _Funnel(TyperGroup):
    """The one place a VagabondError becomes a message on stderr and an exit code."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, _hoist_debug(self, ctx, list(args)))

    def invoke(self, ctx):
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
            # `run` exits with the command's status; its own failures keep one code apart, as ssh's do.
            sys.exit(errors.RUN_OWN_FAILURE if ctx.invoked_subcommand == "run" else exc.exit_code)
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
            takes_value = {o for p in command.params if getattr(p, "param_type_name", "") == "option"
                           and not getattr(p, "is_flag", False) and not getattr(p, "count", False) for o in p.opts}  # fmt: skip
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
        Optional[Path], typer.Option("--boxes-dir", help="Directory of box files (default: $VAGABOND_BOXES, ./boxes, shipped boxes).")
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="VAGABOND_DEBUG",
                           help="Show commands as they run and tracebacks on errors (also after the subcommand, or VAGABOND_DEBUG=1).")
    ] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    _state["debug"] = debug
    _state["boxes_dir"] = boxes_dir
    ui.setup_logging(debug)


def _box_dirs() -> list[tuple[Path, str]]:
    return project.box_dirs(_state["boxes_dir"])


class DriverChoice(str, Enum):
    kvm = "kvm"
    qemu = "qemu"


DriverOption = Annotated[
    Optional[DriverChoice],
    typer.Option("--driver", help="Force the libvirt driver: kvm or qemu (default: detected; also $VAGABOND_DRIVER).",
                 case_sensitive=False),
]  # fmt: skip
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@app.command("list")
def list_(
    names: Annotated[Optional[list[str]], typer.Argument(help="Only these boxes (each must load).", metavar="[BOX]...")] = None,
    as_json: JsonOption = False,
    github_output: Annotated[
        bool, typer.Option("--github-output", help="One box: print kind= (its base's) and synced= (how many synced "
                                                   "folders it names) lines for $GITHUB_OUTPUT.")
    ] = False,
) -> None:
    """List the boxes: name, where it comes from, description and modes.

    The project's boxes (boxes/ at the project root, or --boxes-dir) come first and override a
    shipped box of the same name; the boxes shipped with vagabond are always there. A box file
    that does not load is listed with its error, and the others still are.

    With box names, only those (an unknown or broken one is an error, others' problems are not).

    Example: vagabond list --json | jq -r '.[].name'   (or: vagabond list centos7-selinux --json)
    """
    rows = []
    entries = boxfile.scan(_box_dirs())
    if names:
        known = {e.name: e for e in entries}
        missing = [n for n in names if n not in known]
        if missing:
            boxfile.find_box(missing[0], _box_dirs())  # the one "no box named ..." answer, with its hint
        entries = [known[n] for n in names]
    for entry in entries:
        row: dict = {"name": entry.name, "origin": entry.origin, "path": str(entry.path), "overrides": entry.overrides}
        if entry.box is None:
            row["error"] = list(entry.problems)
        else:
            spec = entry.box.spec
            row |= {"description": spec.description,
                    "modes": {k: v for k, v in spec.modes.model_dump().items() if v not in (None, False)},
                    "base": spec.base.box_name, "base_kind": spec.base.kind,
                    "synced_folders": [f.dest for f in spec.synced_folders]}  # fmt: skip
        rows.append(row)
    broken = [p for r in rows for p in r.get("error", [])]
    if github_output:
        if len(rows) != 1 or not names:
            raise errors.UsageError("--github-output describes one box: name it", hint="vagabond list BOX --github-output")
        if broken:
            raise errors.BoxDefinitionError(broken)
        (row,) = rows
        sys.stdout.write(github.outputs({"kind": row["base_kind"], "synced": len(row["synced_folders"])}))
        return
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=0)
        for r in rows:
            origin = r["origin"] + (f", overrides {r['overrides']}" if r["overrides"] else "")
            if "error" in r:
                ui.out.print(f"{r['name']:<{width}}  [red]BROKEN[/] [dim]({escape(origin)}; see the error below)[/]",
                             markup=True)  # fmt: skip
                continue
            modes = ", ".join(f"{k}={v if not isinstance(v, bool) else 'on'}" for k, v in r["modes"].items()) or "-"
            ui.out.print(f"{r['name']:<{width}}  {escape(r['description'])}  [dim]({escape(modes)}; {escape(origin)})[/]",
                         markup=True)  # fmt: skip
    if broken:  # every box is listed; the broken ones still make the exit code say so
        raise errors.BoxDefinitionError(broken)


@app.command("init")
def init_(
    names: Annotated[Optional[list[str]], typer.Argument(
        help="Shipped boxes to copy into the project (see 'vagabond list'); none: a commented starter box.",
        show_default=False)] = None,
) -> None:
    """Start a project here: box files in boxes/ and a starter playbook in playbooks/.

    Named boxes are copied from the ones shipped with vagabond, so the project can change them (a
    project box overrides the shipped box of the same name). Nothing is ever overwritten.

    Example: vagabond init debian12-selinux && vagabond up debian12-selinux
    """
    root = Path.cwd()
    written, kept = project.init(root, names or [])
    for path in written:
        ui.info(f"wrote {path.relative_to(root)}")
    for path in kept:
        ui.info(f"kept {path.relative_to(root)} (it exists already)")
    first = (names or [project.STARTER_BOX])[0]
    steps = [("vagabond doctor", "is this host ready for VMs?"), (f"vagabond up {first}", "boot, provision, check its modes"),
             (f"vagabond run {first} -- CMD", "run the tests in it"),
             ("vagabond ci github -o .github/workflows/vagabond.yml", "the same in CI")]  # fmt: skip
    width = max(len(cmd) for cmd, _ in steps)
    ui.out.print("next:\n" + "\n".join(f"  {cmd:<{width}}  # {why}" for cmd, why in steps), markup=False)


@app.command("render")
def render_(
    box: Annotated[str, typer.Argument(help="Box name (a file boxes/<name>.yaml).")],
    output: Annotated[
        Optional[Path],
        typer.Option("-o", "--out", "--output", metavar="DIR",
                     help="Directory to write the Vagrantfile and its vagabond-provision/ into (default: print the Vagrantfile)."),
    ] = None,
    driver: Annotated[
        Optional[DriverChoice],
        typer.Option("--driver", case_sensitive=False,
                     help="Pin the libvirt driver into the file (default: the file decides on the host it runs on)."),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="The base box even when the box file names a prebuilt one (full provisioning).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a Vagrantfile in DIR that vagabond did not render.")] = False,
) -> None:
    """Write the box's Vagrantfile for plain `vagrant up`: the same VM as `vagabond up`.

    With -o DIR: DIR/Vagrantfile and DIR/vagabond-provision/ (the one playbook that both
    `vagrant provision` and `vagabond provision` run, the mode playbooks it needs, the mode checks).
    Paths are relative to DIR, so the files can be committed and used in any checkout, with no
    vagabond installed. Rendering again is safe: it says what changed.

    Example: vagabond render centos7-selinux -o . && vagrant up && vagrant ssh -c getenforce
    """
    definition = boxfile.find_box(box, _box_dirs())
    options = render.RenderOptions(driver=driver.value if driver else None, fresh=fresh)
    if output is None:
        sys.stdout.write(render.render(definition, options, Path.cwd()))
        return
    if output.name == "Vagrantfile" and not output.is_dir():
        output = output.parent  # -o vm/Vagrantfile, as earlier versions took it
    changed = render.write(definition, options, output, force=force)
    if changed:
        ui.info(f"wrote {', '.join(changed)} in {output}")
    else:
        ui.info(f"{output}/Vagrantfile and {output}/vagabond-provision are up to date")


@app.command("doctor")
def doctor_(
    as_json: JsonOption = False,
    driver: DriverOption = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Smoke-boot a real kernel under KVM even when the cheap checks already said no.")
    ] = False,
) -> None:
    """Check this host: Vagrant, vagrant-libvirt, libvirt, qemu, Ansible, RAM/disk, and the driver decision.

    Exits non-zero when something required is missing; each problem comes with its fix.
    """
    try:
        found = boxfile.default_selection(_box_dirs())
    except VagabondError:
        found = []  # doctor still reports the host; `vagabond list` shows the box problems
    decision = detect.choose_driver(driver.value if driver else None, smoke="always" if deep else "auto")
    checks = doctor.run_doctor(found, decision)
    result = doctor.report(checks, decision)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for c in checks:
            word, color = ("ok", "green") if c.ok else (("MISSING", "red") if c.required else ("warn", "yellow"))
            ui.out.print(f"[{color}]{word:>7}[/] {c.name:<17} {escape(c.detail)}", markup=True)
            if not c.ok and c.fix:
                ui.out.print(f"{'':>7} {'':<17} [dim]fix:[/] {escape(c.fix)}", markup=True)
    if not result["ok"]:
        raise typer.Exit(1)


def _complete_box(incomplete: str) -> list[str]:
    """Shell completion: the names of the boxes this project sees (broken ones included)."""
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
    typer.Option("--logs-on-failure", metavar="DIR",
                 help="On failure, collect logs (as 'vagabond logs') into DIR. Default under CI ($CI, $GITHUB_ACTIONS): "
                      "./vagabond-logs; also $VAGABOND_LOGS_ON_FAILURE."),
]  # fmt: skip
ImageOption = Annotated[
    Optional[Path],
    typer.Option("--image", metavar="PATH",
                 help="A local copy of the box's cloud image (kind image), used instead of downloading it; "
                      "it is checked against the box's checksum all the same."),
]  # fmt: skip
ExtraVarsOption = Annotated[
    Optional[list[str]],
    typer.Option("--extra-vars", "-e", help="Passed to ansible-playbook as is: key=value, JSON or @file. Repeatable."),
]


def _box_and_workdir(name: str, workdir: Optional[Path]) -> tuple[schema.Box, Workdir]:
    box = boxfile.find_box(name, _box_dirs())
    return box, Workdir.for_box(box, workdir)


@app.command("up")
def up_(
    box: BoxArg,
    workdir: WorkdirOption = None,
    driver: DriverOption = None,
    extra_vars: ExtraVarsOption = None,
    keep_on_failure: Annotated[
        bool, typer.Option("--keep-on-failure", help="Leave the VM in place when a step fails, for debugging.")
    ] = False,
    no_provision: Annotated[bool, typer.Option("--no-provision", help="Boot only; skip playbooks.")] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore the prebuilt box: base box + full provisioning.")
    ] = False,
    boot_timeout: Annotated[
        Optional[int],
        typer.Option("--boot-timeout", min=1, help="Seconds to wait for the guest's IP and SSH (default 300, x4 under qemu)."),
    ] = None,
    logs_on_failure: LogsOnFailureOption = None,
    image: ImageOption = None,
    sync: Annotated[
        Optional[str],
        typer.Option("--sync", metavar="GUEST_PATH",
                     help="Also copy the project into the VM at GUEST_PATH (rsync; .git and .vagabond left out), "
                          "for a box without synced folders of its own."),
    ] = None,
) -> None:
    """Bring the box's VM up: render the Vagrantfile, boot it, provision with Ansible, verify its modes.

    Local base boxes are made first when missing: built from the distribution's packages (kind
    mmdebstrap), or imported from the distribution's cloud image (kind image), which is downloaded
    (resumed when interrupted), checked against its sha256 and cached. A failed or interrupted run
    removes what it created, so running it again starts clean.

    Example: vagabond up centos7-selinux && vagabond run centos7-selinux -- getenforce
    """
    definition, wd = _box_and_workdir(box, workdir)
    opts = lifecycle.UpOptions(driver=driver.value if driver else None, keep_on_failure=keep_on_failure,
                             extra_vars=extra_vars or (), provision=not no_provision, prebuilt=not fresh,
                             boot_timeout=boot_timeout, logs_dir=paths.logs_on_failure_dir(logs_on_failure),
                             image=str(image) if image else None, sync_project=sync)  # fmt: skip
    if sync is not None and not sync.startswith("/"):
        raise errors.UsageError(f"--sync {sync!r}: a guest path is absolute, e.g. /src")
    state = lifecycle.up(definition, wd, opts)
    total = sum(state.get("timings", {}).values())
    ui.info(f"{box} is up ({total:.0f}s); run commands with: vagabond run {box} -- COMMAND")


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_(
    box: BoxArg,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments, after --.")],
    workdir: WorkdirOption = None,
    machine: MachineOption = None,
    logs_on_failure: LogsOnFailureOption = None,
) -> None:
    """Run a command in the VM; its output streams and its exit code becomes vagabond's.

    Reuses one SSH connection (ControlMaster), so calls after the first cost milliseconds.
    The box's env: variables (as of the last up or provision) are set for the command.
    When the command fails and logs are wanted (--logs-on-failure, or under CI), they are collected.

    Example: vagabond run centos7-selinux -- make -C /src test
    """
    definition, wd = _box_and_workdir(box, workdir)
    status.require_up(wd)
    # env: as of the last up or provision.
    argv = remote.ssh_argv(wd, machine or definition.primary(), command, env=wd.read_state().get("env"))
    logs_dir = paths.logs_on_failure_dir(logs_on_failure)
    on_failure = None if logs_dir is None else (lambda: logs.collect_on_failure(definition, wd, logs_dir))
    raise typer.Exit(remote.exec_command(argv, on_failure))


@app.command("test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test_(
    box: BoxArg,
    command: Annotated[Optional[list[str]], typer.Argument(help="A verify command and its arguments, after --.")] = None,
    workdir: WorkdirOption = None,
    driver: DriverOption = None,
    extra_vars: ExtraVarsOption = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore the prebuilt box: base box + full provisioning.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the VM running at the end (destroy it yourself).")] = False,
    no_idempotence: Annotated[bool, typer.Option("--no-idempotence", help="Skip the second provisioning run.")] = False,
    junit: Annotated[
        Optional[Path], typer.Option("--junit", metavar="PATH", help="Write the phases as JUnit XML (one test case each).")
    ] = None,
    verify_timeout: Annotated[
        int, typer.Option("--verify-timeout", min=1, metavar="SECONDS", help="Longest a verify command may run.")
    ] = 3600,
    logs_on_failure: LogsOnFailureOption = None,
    image: ImageOption = None,
    sync: Annotated[
        Optional[str], typer.Option("--sync", metavar="GUEST_PATH", help="Also copy the project into the VM at GUEST_PATH.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The whole sequence: up, idempotence, verify, destroy; each phase timed, the first failure decides the exit code.

    up: boot the VM (the prebuilt box when current) and provision it, with its mode checks.

    idempotence: run every playbook again in full; any task that reports a change fails the phase, and is named.

    verify: the box file's verify: lines (each through sh -c) and the command after --, each its own result, in the primary machine.

    On failure, logs are collected (--logs-on-failure, or under CI). destroy: always, unless --keep.

    Exit codes: 10 up, 11 idempotence, 12 verify, 13 destroy failed.

    Example: vagabond test debian12-selinux --junit results/vagabond.xml -- getenforce
    """
    definition, wd = _box_and_workdir(box, workdir)
    if sync is not None and not sync.startswith("/"):
        raise errors.UsageError(f"--sync {sync!r}: a guest path is absolute, e.g. /src")
    opts = lifecycle.UpOptions(driver=driver.value if driver else None, extra_vars=extra_vars or (), prebuilt=not fresh,
                             logs_dir=paths.logs_on_failure_dir(logs_on_failure), image=str(image) if image else None,
                             sync_project=sync, keep_on_failure=keep)  # fmt: skip
    result = testrun.run(definition, wd, opts, command or [], keep=keep, idempotence=not no_idempotence,
                         verify_timeout=verify_timeout, junit=junit)  # fmt: skip
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for phase in result.phases:
            ui.out.print(f"{phase.status:>7}  {phase.seconds:7.1f}s  {phase.name}", markup=False, highlight=False)
    testrun.raise_for(result)


@app.command("logs")
def logs_(
    box: BoxArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into (a subdirectory per box).")] = Path("vagabond-logs"),
    workdir: WorkdirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Collect what a failed run leaves behind, for a person or a CI artifact.

    Host: serial console and qemu logs, the rendered Vagrantfile, vagrant's and Ansible's output,
    vagabond's state. Guest (when it answers): journal of the current boot, SELinux AVC denials,
    dmesg. What cannot be had is listed with the reason in summary.json; the rest still comes.

    Example: vagabond logs centos7-selinux --out artifacts/
    """
    definition, wd = _box_and_workdir(box, workdir)
    summary = logs.collect(definition, wd, out)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for item in summary["items"]:
        ui.out.print(f"{'ok' if item['ok'] else 'missing':>7}  {item['name']:<24} {item['detail'] or item['source']}", markup=False)
    ui.info(f"logs of {box} in {summary['out']}")


@app.command("ssh")
def ssh_(box: BoxArg, workdir: WorkdirOption = None, machine: MachineOption = None) -> None:
    """Open an interactive shell in the VM."""
    definition, wd = _box_and_workdir(box, workdir)
    status.require_up(wd)
    raise typer.Exit(remote.interactive(wd, machine or definition.primary()))


@app.command("provision")
def provision_(
    box: BoxArg,
    workdir: WorkdirOption = None,
    extra_vars: ExtraVarsOption = None,
    check_idempotence: Annotated[
        bool, typer.Option("--check-idempotence", help="Run every playbook in full and fail, naming them, if any task changes something.")
    ] = False,
) -> None:
    """Run the box's playbooks again and re-check its modes (a second run should change nothing).

    On a box built from this very definition (a prebuilt box), the playbooks are skipped unless
    -e is given or --check-idempotence asks for the full run.
    """
    definition, wd = _box_and_workdir(box, workdir)
    if check_idempotence:
        recaps = lifecycle.check_idempotence(definition, wd, extra_vars or ())
    else:
        recaps = lifecycle.reprovision(definition, wd, extra_vars or ())
    for r in recaps:
        ui.out.print(f"{r.host}: ok={r.ok} changed={r.changed} unreachable={r.unreachable} failed={r.failed}")


@app.command("halt")
def halt_(box: BoxArg, workdir: WorkdirOption = None) -> None:
    """Shut the VM down (vagabond up boots it again)."""
    definition, wd = _box_and_workdir(box, workdir)
    lifecycle.halt(definition, wd)


@app.command("destroy")
def destroy_(box: BoxArg, workdir: WorkdirOption = None) -> None:
    """Remove the VM: domains, their volumes and the work directory's state.

    Works even when the .vagrant directory is gone: libvirt objects are found by the names
    vagabond gave them (vagabond-<box>-<hash of the work directory>-<machine>).
    """
    definition, wd = _box_and_workdir(box, workdir)
    removed = lifecycle.destroy(definition, wd)
    ui.info(f"destroyed {box}: " + (", ".join(removed) if removed else "nothing was left"))


@app.command("status")
def status_(
    box: BoxArg,
    workdir: WorkdirOption = None,
    as_json: JsonOption = False,
    github_output: Annotated[
        bool, typer.Option("--github-output", help="Print workdir= and ssh-config= lines for $GITHUB_OUTPUT.")
    ] = False,
) -> None:
    """Show the VM's state per machine (from libvirt), its driver and whether it is provisioned."""
    definition, wd = _box_and_workdir(box, workdir)
    result = status.status(definition, wd)
    if github_output:
        sys.stdout.write(github.outputs({"workdir": wd.path, "ssh-config": wd.ssh_config}))
        return
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for m in result["machines"]:
        ui.out.print(f"{box}/{m['name']}: {m['state']} (domain {m['domain']}, driver {result['driver'] or '-'}, "
                     f"{'provisioned' if result['provisioned'] else 'not provisioned'})", markup=False)  # fmt: skip


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@app.command("ps")
def ps_(as_json: JsonOption = False) -> None:
    """List every VM vagabond runs on this host: box, work directory, machine, state, driver, address, age.

    From vagabond's record of its work directories and what libvirt says of their domains now, so
    VMs of every project show up, wherever they were started.

    Example: vagabond ps --json
    """
    rows = status.running()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        ui.info("no VMs of vagabond's on this host")
        return
    table = [("BOX", "MACHINE", "STATE", "DRIVER", "ADDRESS", "AGE", "WORKDIR")]
    table += [(r["box"], r["machine"], r["state"], r["driver"] or "-", r["address"] or "-", _age(r["age_seconds"]), r["workdir"])
              for r in rows]  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        ui.out.print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + row[-1], markup=False, highlight=False)


@app.command("build")
def build_(
    box: BoxArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the .box and its .box.json.")] = Path("dist"),
    version: Annotated[Optional[str], typer.Option("--version", help="Box version (default: UTC timestamp).")] = None,
    workdir: WorkdirOption = None,
    driver: DriverOption = None,
    extra_vars: ExtraVarsOption = None,
    logs_on_failure: LogsOnFailureOption = None,
    image: ImageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build the box's prebuilt dependency box: base box + playbooks, verified, cleaned, packaged.

    Steps: up from the base box, run the mode and dependency playbooks, check the modes, clean the
    guest (machine-id, SSH host keys, leases, logs, caches; free blocks trimmed), halt, flatten the
    disk into a compressed qcow2, write the .box and a .box.json (sha256, size, base box, and a
    digest of the box definition and playbooks that `vagabond up` compares), destroy the VM.

    Example (nightly): vagabond build centos7-selinux --out dist && vagabond publish dist/*.box --catalog s3://boxes/centos7
    """
    definition, wd = _box_and_workdir(box, workdir)
    opts = lifecycle.UpOptions(driver=driver.value if driver else None, extra_vars=extra_vars or (),
                             logs_dir=paths.logs_on_failure_dir(logs_on_failure), image=str(image) if image else None)  # fmt: skip
    info = build.build(definition, wd, opts, out=out, version=version)
    print(json.dumps(info, indent=2) if as_json else info["path"])


@app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="A box file whose base is a cloud image (e.g. centos7-selinux), or, with "
                                             "--image, the Vagrant box name to create (e.g. local/centos7).")],
    image: Annotated[Optional[str], typer.Option("--image", help="The cloud image (qcow2 with cloud-init): a path or URL.")] = None,
    checksum: Annotated[Optional[str], typer.Option("--checksum", help="sha256:HEX the image must have.")] = None,
    checksums_url: Annotated[
        Optional[str], typer.Option("--checksums-url", help="The distribution's checksum file that names the image's sha256.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Directory for the box (default: the cache).")] = None,
    add: Annotated[bool, typer.Option("--add/--no-add", help="Also add it to Vagrant's box store.")] = True,
    driver: DriverOption = None,
    disk: Annotated[
        Optional[int], typer.Option("--disk", min=1, metavar="GIB",
                                    help="Grow a smaller image to this many GiB first; cloud-init's growpart extends the root partition.")
    ] = None,
) -> None:
    """Turn a distribution's generic cloud image into a vagrant-libvirt box (CentOS, Alma, Rocky ...).

    A NoCloud seed (cloud-localds) creates the 'vagrant' user with Vagrant's insecure key and
    passwordless sudo; one boot without any network applies it; the guest then runs
    'cloud-init clean', drops its machine-id and SSH host keys, and powers off; the disk becomes the box.
    Box files can name such a base directly: base: {kind: image, image: URL, checksum: sha256:..., box: NAME};
    `vagabond import BOX` then imports it (cached, as `vagabond up BOX` does).

    Examples: vagabond import centos7-selinux; vagabond import local/rocky9 --image Rocky-9-GenericCloud.qcow2 --checksum sha256:...
    """
    if image is None:
        result = cloudimage.imported(_image_box(name, checksum=checksum, checksums_url=checksums_url, out=out, driver=driver, disk=disk))
    else:
        result = cloudimage.import_image(name, image, checksum=checksum, checksums_url=checksums_url, out=out,
                                         driver=driver.value if driver else None, disk_gib=disk)  # fmt: skip
    if add:
        made.add_to_store(result)
    print(result.box_file)


def _image_box(name: str, **with_image_only: object) -> schema.Box:
    """The box file `vagabond import NAME` (no --image) imports the base of."""
    given = [f"--{key.replace('_', '-')}" for key, value in with_image_only.items() if value is not None]
    if given:
        raise errors.UsageError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --image: a box file names its "
                                "image, checksum and disk itself")  # fmt: skip
    if "/" in name:
        raise errors.UsageError(f"{name!r} is a Vagrant box name: give the image to make it from with --image PATH|URL",
                         hint="or name a box file whose base is a cloud image: vagabond import centos7-selinux")  # fmt: skip
    definition = boxfile.find_box(name, _box_dirs())
    if definition.spec.base.kind != "image":
        raise errors.UsageError(f"box {name!r} has a base of kind {definition.spec.base.kind!r}, not a cloud image",
                         hint=f"vagabond import takes a box whose base is of kind image; 'vagabond base build {name}' makes this one")  # fmt: skip
    return definition


@app.command("repackage")
def repackage_(
    name: Annotated[str, typer.Argument(help="An installed box, e.g. vagabond/debian12 (see 'vagrant box list').")],
    version: Annotated[Optional[str], typer.Option("--version", help="Installed version (default: the newest).")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the .box and its .box.json.")] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Re-export an installed box with `vagrant box repackage`, plus a JSON description for publish.

    Note: this re-tars the box as Vagrant stores it; it never includes a VM's state.
    """
    info = build.repackage(name, version, out)
    print(json.dumps(info, indent=2) if as_json else info["path"])


@app.command("publish")
def publish_(
    box_file: Annotated[Path, typer.Argument(help="The .box file (its .box.json description is read when present).")],
    catalog: Annotated[str, typer.Option("--catalog", help="Where the catalog lives: DIR, file://DIR or s3://BUCKET/PREFIX.")],
    version: Annotated[Optional[str], typer.Option("--version", help="Version to publish (default: from the description).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Box name, e.g. myorg/centos7-deps (default: from the description).")] = None,
    keep: Annotated[Optional[int], typer.Option("--keep", help="Keep only the newest N versions (files and entries).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a version that is already published.")] = False,
    base_url: Annotated[
        Optional[str], typer.Option("--base-url", help="URL the catalog is served from (default: file:// or the S3 endpoint).")
    ] = None,
    s3_acl: Annotated[
        Optional[str], typer.Option("--s3-acl", help="Canned ACL for S3 objects, e.g. public-read (Vagrant downloads anonymously).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a box to a self-hosted Vagrant catalog (metadata.json that `vagrant box add URL` reads).

    The box is uploaded first and read back (size and sha256); only then does metadata.json change,
    in one atomic step. Published versions are immutable unless --force. S3 endpoint and
    credentials come from the usual AWS_* environment variables.

    Example: vagabond publish out/debian12-selinux.box --catalog /srv/boxes/debian12-selinux --base-url https://boxes.example.org/debian12-selinux
    """
    result = transaction.publish(box_file, catalog, name=name, version=version, keep=keep, force=force,
                              base_url=base_url, acl=s3_acl)  # fmt: skip
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(result["metadata_url"])


@app.command("gc")
def gc_(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove what vagabond left in libvirt that nothing owns any more.

    Domains and volumes of work directories that were deleted or now hold another VM, base-box
    image volumes of boxes no longer in Vagrant's box store (vagrant-libvirt leaves them in the
    pool), and networks a vagabond run created that no domain uses. Only objects vagabond recorded
    creating are considered; a work directory in use is skipped.

    Example: vagabond gc --dry-run && vagabond gc
    """
    orphans = gc.collect(dry_run=dry_run)
    if as_json:
        print(json.dumps({"dry_run": dry_run, "orphans": gc.as_dicts(orphans)}, indent=2))
        return
    for o in orphans:
        verb = "would remove" if dry_run else ("removed" if o.removed else "FAILED to remove")
        ui.out.print(f"{verb} {o.kind} {o.name}: {o.reason}", markup=False)
    if not orphans:
        ui.info("nothing to collect: every libvirt object vagabond created has an owner")
    if not dry_run and any(not o.removed for o in orphans):
        raise typer.Exit(1)


def _selected_boxes(option: Optional[list[str]]) -> list[schema.Box]:
    """--boxes a,b (or repeated): those boxes; none given: the project's boxes (the shipped ones
    in a project that has none)."""
    dirs = _box_dirs()
    names = [n.strip() for item in option or [] for n in item.split(",") if n.strip()]
    return [boxfile.find_box(n, dirs) for n in names] if names else boxfile.default_selection(dirs)


@app.command("prepare")
def prepare_(
    boxes_opt: Annotated[
        Optional[list[str]], typer.Option("--boxes", help="Boxes this host will run, comma-separated or repeated (default: all).")
    ] = None,
    swap: Annotated[
        Optional[str], typer.Option("--swap", metavar="SIZE", help="Swap file size, e.g. 4G (default: what the boxes need beyond RAM; 0 removes it).")
    ] = None,
    swap_file: Annotated[Path, typer.Option("--swap-file", help="Where the swap file lives.")] = Path("/var/lib/vagabond/swapfile"),
    user: Annotated[
        Optional[str],
        typer.Option("--user", help="Let this user run VMs without root (groups libvirt and kvm, and libvirt's socket now)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Prepare this host (a fresh CI runner) for VMs; safe to run again, it only acts when needed.

    Swap when RAM is short of what the boxes need (an OOM-killed VM ends the whole run); /dev/kvm
    opened with a udev rule when the hardware can run KVM but the device is closed (GitHub's x64
    runners), then the driver probe again; libvirtd and the storage pool 'default' started when no
    service manager did; Docker's DOCKER-USER chain opened for libvirt's bridges. Needs root.

    Example (CI): sudo vagabond prepare --boxes centos7-selinux
    """
    chosen = _selected_boxes(boxes_opt)
    actions = prepare.prepare(chosen, swap=swap, swap_file=swap_file, user=user)
    if as_json:
        print(json.dumps(prepare.as_dicts(actions), indent=2))
        return
    for a in actions:
        ui.out.print(f"{'changed' if a.changed else 'ok':>7}  {a.step:<9} {a.detail}", markup=False)


ci_app = typer.Typer(help="Continuous integration: generate the workflow that runs your boxes in CI.", no_args_is_help=True)
app.add_typer(ci_app, name="ci")


@ci_app.command("github")
def ci_github(
    boxes_opt: Annotated[
        Optional[list[str]], typer.Option("--boxes", help="Boxes to test, comma-separated or repeated (default: all).")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("-o", "--out", "--output", help="Write here, e.g. .github/workflows/vagabond.yml (default: stdout).")
    ] = None,
    test_command: Annotated[
        str, typer.Option("--test-command", help="Shell command that runs the tests, in the box's first synced folder.")
    ] = "make test",
    runs_on: Annotated[str, typer.Option("--runs-on", help="GitHub runner label (ubuntu-24.04, ubuntu-26.04, or a self-hosted one).")] = "ubuntu-24.04",
    vagabond_spec: Annotated[
        Optional[str], typer.Option("--vagabond-spec", help="What the runner pip-installs: a pinned git URL, a wheel URL, "
                                    "or vagabond-vm==VERSION (default: this vagabond, as it was installed).")
    ] = None,
    vagrant_from: Annotated[
        str, typer.Option("--vagrant-from", help="hashicorp (Ubuntu: HashiCorp's apt repository + the plugin) or "
                          "distribution (Debian runners: Debian's vagrant and vagrant-libvirt).")
    ] = "hashicorp",
    branch: Annotated[str, typer.Option("--branch", help="The branch whose pushes run the tests (pull requests always do).")] = "main",
    paths_ignore: Annotated[
        Optional[str], typer.Option("--paths-ignore", help="Comma-separated globs whose changes run nothing ('' for none; "
                                    f"default: {','.join(workflow.PATHS_IGNORE)}).")
    ] = None,
    cron: Annotated[str, typer.Option("--cron", help="When the nightly prebuilt-box job runs (UTC).")] = "17 3 * * *",
    keep: Annotated[int, typer.Option("--keep", min=1, help="Prebuilt versions kept in the catalog.")] = 5,
    environment: Annotated[
        str, typer.Option("--environment", help="GitHub environment holding the publish step's secrets.")
    ] = "vagabond-publish",
    aws_role: Annotated[
        Optional[str], typer.Option("--aws-role", help="IAM role ARN the publish step assumes by OIDC (no stored keys).")
    ] = None,
    s3_acl: Annotated[
        Optional[str], typer.Option("--s3-acl", help="Canned ACL for published S3 objects (buckets made since 2023 refuse ACLs).")
    ] = None,
    timeout: Annotated[int, typer.Option("--timeout", min=10, help="Job timeout in minutes.")] = 120,
    use_action: Annotated[
        Optional[str], typer.Option("--use-action", metavar="OWNER/REPO@REF",
                                    help="Test jobs use vagabond's action (uses: OWNER/REPO@REF) instead of inline steps "
                                         "(default: the action at this vagabond's commit, when its GitHub repository is known).")
    ] = None,
    inline: Annotated[
        bool, typer.Option("--inline", help="Inline install steps in the test jobs, even where vagabond's action could be used.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file that vagabond did not generate.")] = False,
) -> None:
    """Write a GitHub Actions workflow: a runner per box boots it, runs the tests, keeps logs on failure.

    Pull requests, pushes to --branch and tags: install Vagrant (HashiCorp's apt repository, key
    checked), vagrant-libvirt (a cached plugin), libvirt, qemu and this vagabond; 'sudo vagabond
    prepare' (KVM access, swap, libvirt, the runner user let in); restore cached boxes; 'vagabond up',
    the test command through 'vagabond run' as the runner user, logs uploaded on failure, 'vagabond
    destroy' always. Boxes with a prebuilt: section also get a nightly job, from the default branch
    only, that builds and publishes their dependency box to the catalog in the repository variable
    VAGABOND_CATALOG, with credentials from a GitHub environment.

    Example: vagabond ci github --boxes centos7-selinux,alma9-fips --test-command 'make check' -o .github/workflows/vagabond.yml
    """
    chosen = _selected_boxes(boxes_opt)
    settings = workflow.Settings(
        runs_on=runs_on, test_command=test_command, cron=cron, keep=keep, timeout=timeout, vagabond_spec=vagabond_spec or "",
        vagrant_from=vagrant_from, branch=branch, environment=environment, aws_role=aws_role or "", s3_acl=s3_acl or "",
        use_action=use_action or "", inline=inline,
    )  # fmt: skip
    if paths_ignore is not None:
        settings.paths_ignore = [p.strip() for p in paths_ignore.split(",") if p.strip()]
    if _state["boxes_dir"] is not None:
        workflow.check_line("--boxes-dir", str(_state["boxes_dir"]))
        root, given = project.project_root(), Path(_state["boxes_dir"]).resolve()
        if not given.is_relative_to(root):
            raise errors.UsageError(f"--boxes-dir {_state['boxes_dir']}: outside the repository ({root}), where the runner cannot see it")
        settings.boxes_dir = given.relative_to(root).as_posix()
    if inline and use_action:
        raise errors.UsageError("--inline and --use-action contradict each other", hint="give one of them")
    workflow.check_settings(settings, output)  # bad input is said before anything is looked up
    settings.command = workflow.command_line([b.name for b in chosen], settings, output)  # as typed: it regenerates this file
    if not vagabond_spec and not (use_action and not workflow.nightly_boxes(chosen)):
        source = install.origin()  # what the runner installs: a source that exists, or a one-line refusal
        settings.vagabond_spec = source.spec
        if not use_action and not inline and source.action:
            settings.use_action = source.action
        if source.note:
            ui.info(f"note: {source.note}")
    text = workflow.render(chosen, settings)
    if output is None:
        sys.stdout.write(text)
        return
    workflow.write(output, text, force=force)
    ui.info(f"wrote {output} ({len(chosen)} box{'es' if len(chosen) != 1 else ''})")


@ci_app.command("action")
def ci_action(
    out: Annotated[Path, typer.Option("-o", "--out", help="vagabond's repository (where action.yml goes).")] = Path("."),
    check: Annotated[bool, typer.Option("--check", help="Only say whether the files are current (exit 1 if not).")] = False,
) -> None:
    """Write vagabond's own GitHub Action (action.yml) and its cleanup companion (cleanup/action.yml).

    For maintainers of vagabond: the action runs the same install steps as 'vagabond ci github'
    writes, from one template; run this after changing them.
    """
    stale = []
    for rel, text in workflow.render_action().items():
        target = out / rel
        if target.is_file() and target.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            files.write_text(target, text)
    if check and stale:
        raise errors.UsageError(f"out of date: {', '.join(stale)}", hint="run 'vagabond ci action' in vagabond's repository")
    ui.info(("wrote " if stale else "up to date: ") + ", ".join(stale or workflow.ACTION_FILES))


@app.command("prebuilt")
def prebuilt_(
    box: BoxArg,
    as_json: JsonOption = False,
    github_output: Annotated[
        bool, typer.Option("--github-output", help="Print name=, version= and store= (the version's directory in Vagrant's "
                                                   "box store, to cache) lines for $GITHUB_OUTPUT.")
    ] = False,
) -> None:
    """Which prebuilt box 'up' would boot: the newest version in the box's catalog built from this
    exact definition and its playbooks, and why there is none otherwise (then 'up' uses the base box).

    Exits 0 either way; scripts read --json or --github-output (version is empty when there is none).

    Example: vagabond prebuilt debian12-selinux --json
    """
    result = prebuilt.current(boxfile.find_box(box, _box_dirs()))
    if github_output:
        sys.stdout.write(github.outputs({key: result[key] for key in ("name", "version", "store")}))
    elif as_json:
        print(json.dumps(result, indent=2))
    else:
        ui.out.print(result["reason"] if result["version"] else f"no prebuilt box: {result['reason']}", markup=False)


base_app = typer.Typer(help="Base boxes built locally from the distribution's packages (no box catalog needed).",
                        no_args_is_help=True)
app.add_typer(base_app, name="base")


@base_app.command("key")
def base_key(
    box: BoxArg,
    github_output: Annotated[
        bool, typer.Option("--github-output", help="Print base= (the key) and base-path= (the one directory to cache) lines for $GITHUB_OUTPUT.")
    ] = False,
) -> None:
    """Print the cache key of the box's base: it changes exactly when vagabond would build or
    import the base again (CI caches key on it); empty for a base Vagrant downloads itself.

    With --github-output, also the one directory that holds the made base (nothing else needs caching).

    Example: vagabond base key debian12-selinux
    """
    definition = boxfile.find_box(box, _box_dirs())
    if github_output:
        sys.stdout.write(github.outputs({"base": kinds.cache_key(definition), "base-path": kinds.cache_path(definition) or ""}))
        return
    print(kinds.cache_key(definition))


@base_app.command("build")
def base_build(
    box: Annotated[str, typer.Argument(help="A box whose base is of kind mmdebstrap (e.g. debian12).")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a cached build exists.")] = False,
    add: Annotated[bool, typer.Option("--add/--no-add", help="Also add it to Vagrant's box store.")] = True,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", metavar="DIR",
                                                help="Also copy the .box file into this directory (it stays cached).")] = None,
) -> None:
    """Build a Debian/Ubuntu base box with mmdebstrap (cached in ~/.cache/vagabond; needs root).

    The box has a 'vagrant' user with Vagrant's insecure key, passwordless sudo, DHCP on the first
    NIC, python3 for Ansible, and no machine-id or SSH host keys (each VM makes its own).
    """
    definition = boxfile.find_box(box, _box_dirs())
    built = mmdebstrap.build(definition, force=force)
    if add:
        made.add_to_store(built)
    print(made.copy_box(built, out) if out is not None else built.box_file)



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


for _info in [*app.registered_commands, *(c for g in app.registered_groups for c in g.typer_instance.registered_commands)]:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflow(_info.callback.__doc__)
