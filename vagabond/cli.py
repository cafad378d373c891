"""The `vagabond` command: options are parsed here and each command calls into the core modules."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

from vagabond import __version__, boxes, detect, doctor, paths, render, ui
from vagabond.errors import VagabondError

_state = {"debug": False, "boxes_dir": None}


class _Funnel(TyperGroup):
    """The one place a VagabondError becomes a message on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VagabondError as exc:
            if _state["debug"]:
                traceback.print_exc()
            ui.error(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            ui.error("interrupted")
            sys.exit(130)


app = typer.Typer(
    cls=_Funnel,
    name="vagabond",
    help=(
        "Test software in real VMs (SELinux enforcing, FIPS mode, kernel modules) with Vagrant + "
        "libvirt: the same Vagrantfile in CI and on a laptop.\n\n"
        "Boxes are YAML files in ./boxes (or --boxes-dir / $VAGABOND_BOXES); "
        "start with 'vagabond list' and 'vagabond doctor'."
    ),
    no_args_is_help=True,
    add_completion=False,
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
    debug: Annotated[bool, typer.Option("--debug", help="Show commands as they run and tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    _state["debug"] = debug
    _state["boxes_dir"] = boxes_dir
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")


def _boxes_dir() -> Path:
    return paths.boxes_dir(_state["boxes_dir"])[0]


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
def list_(as_json: JsonOption = False) -> None:
    """List the boxes: name, description and modes.

    Example: vagabond list --json | jq -r '.[].name'
    """
    directory = _boxes_dir()
    found = boxes.list_boxes(directory)
    rows = [
        {
            "name": b.name,
            "description": b.spec.description,
            "modes": {k: v for k, v in b.spec.modes.model_dump().items() if v not in (None, False)},
            "base": b.spec.base.box_name,
            "base_kind": b.spec.base.kind,
            "path": str(b.path),
        }
        for b in found
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        ui.info(f"no boxes in {directory}")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        modes = ", ".join(f"{k}={v if not isinstance(v, bool) else 'on'}" for k, v in r["modes"].items()) or "-"
        ui.out.print(f"{r['name']:<{width}}  {escape(r['description'])}  [dim]({escape(modes)})[/]", markup=True)


@app.command("render")
def render_(
    box: Annotated[str, typer.Argument(help="Box name (a file boxes/<name>.yaml).")],
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Write the Vagrantfile here (default: print to stdout).")
    ] = None,
    driver: DriverOption = None,
) -> None:
    """Render the box's Vagrantfile, usable with plain `vagrant up`.

    The libvirt driver is detected (kvm only when hardware virtualization really works) unless
    --driver or $VAGABOND_DRIVER says otherwise; the file also honours VAGABOND_DRIVER at `vagrant up` time.

    Example: vagabond render centos7-selinux -o vm/Vagrantfile && cd vm && vagrant up
    """
    definition = boxes.find_box(box, _boxes_dir())
    decision = detect.choose_driver(driver.value if driver else None)
    options = render.RenderOptions(driver=decision.driver, driver_reason=decision.reason)
    if output is None:
        sys.stdout.write(render.render(definition, options))
        return
    if output.is_dir():
        output = output / "Vagrantfile"
    render.write_vagrantfile(definition, options, output)
    ui.info(f"wrote {output} (driver {decision.driver}: {decision.reason})")


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
    directory = _boxes_dir()
    try:
        found = boxes.list_boxes(directory)
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


def run() -> None:
    app()
