"""Commands about this host: doctor, prepare, gc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from vagabond import ui
from vagabond.cli.common import (
    DriverOption,
    JsonOption,
    _box_dirs,
    _selected_boxes,
    app,
)
from vagabond.errors import VagabondError


@app.command("doctor")
def doctor_(
    as_json: JsonOption = False,
    driver: DriverOption = None,
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Smoke-boot a real kernel under KVM even when the cheap checks already said no."),
    ] = False,
) -> None:
    """Check this host: Vagrant, vagrant-libvirt, libvirt, qemu, Ansible, RAM/disk, and the driver decision.

    Exits non-zero when something required is missing; each problem comes with its fix.
    """
    from vagabond.definition import boxfile
    from vagabond.host import detect, doctor

    try:
        found = boxfile.default_selection(_box_dirs())
    except VagabondError:
        found = []  # doctor still reports the host; `vagabond list` shows the box problems
    decision = detect.probe_and_decide(driver.value if driver else None, smoke="always" if deep else "auto")
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
    from vagabond.vm import gc

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


@app.command("prepare")
def prepare_(
    boxes_opt: Annotated[
        Optional[list[str]],
        typer.Option("--boxes", help="Boxes this host will run, comma-separated or repeated (default: all)."),
    ] = None,
    swap: Annotated[
        Optional[str],
        typer.Option(
            "--swap",
            metavar="SIZE",
            help="Swap file size, e.g. 4G (default: what the boxes need beyond RAM; 0 removes it).",
        ),
    ] = None,
    swap_file: Annotated[Path, typer.Option("--swap-file", help="Where the swap file lives.")] = Path(
        "/var/lib/vagabond/swapfile"
    ),
    user: Annotated[
        Optional[str],
        typer.Option(
            "--user", help="Let this user run VMs without root (groups libvirt and kvm, and libvirt's socket now)."
        ),
    ] = None,
    undo: Annotated[
        bool,
        typer.Option(
            "--undo",
            help="Remove what prepare added: its firewall rules, its udev rule, its swap file (and --user's ACLs).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Prepare this host (a fresh CI runner) for VMs; safe to run again, it only acts when needed.

    Swap when RAM is short of what the boxes need (an OOM-killed VM ends the whole run); /dev/kvm
    opened with a udev rule when the hardware can run KVM but the device is closed (GitHub's x64
    runners), then the driver probe again; libvirtd and the storage pool 'default' started when no
    service manager did; Docker's DOCKER-USER chain opened for the guests of vagabond's network,
    out through the default route, and their replies. Needs root. --undo takes all of it back.

    Example (CI): sudo vagabond prepare --boxes centos7-selinux
    """
    from vagabond.host import prepare

    if undo:
        actions = prepare.undo(swap_file=swap_file, user=user)
    else:
        actions = prepare.prepare(_selected_boxes(boxes_opt), swap=swap, swap_file=swap_file, user=user)
    if as_json:
        print(json.dumps(prepare.as_dicts(actions), indent=2))
        return
    for a in actions:
        ui.out.print(f"{'changed' if a.changed else 'ok':>7}  {a.step:<9} {a.detail}", markup=False)
