"""Commands about one box's VM: up, run, test, logs, ssh, provision, halt, destroy, status, ps."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from vagabond import errors, paths, ui
from vagabond.cli.common import (
    BoxArg,
    DriverOption,
    ExtraVarsOption,
    ImageOption,
    JsonOption,
    LogsOnFailureOption,
    MachineOption,
    WorkdirOption,
    _box_and_workdir,
    app,
)


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
        typer.Option(
            "--boot-timeout", min=1, help="Seconds to wait for the guest's IP and SSH (default 300, x4 under qemu)."
        ),
    ] = None,
    logs_on_failure: LogsOnFailureOption = None,
    image: ImageOption = None,
    sync: Annotated[
        Optional[str],
        typer.Option(
            "--sync",
            metavar="GUEST_PATH",
            help="Also copy the project into the VM at GUEST_PATH (rsync; .git and .vagabond left out), "
            "for a box without synced folders of its own.",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail (instead of warning) when Vagrant's published insecure key opens the VM."),
    ] = False,
    cold: Annotated[
        bool, typer.Option("--cold", help="Boot and provision even when a warm image (vagabond save) matches.")
    ] = False,
    warm_from: Annotated[
        Optional[Path],
        typer.Option(
            "--warm-from",
            metavar="FILE",
            help="A warm image `vagabond save --export` wrote (a CI cache): taken in and restored when it "
            "is of this VM; otherwise, or when FILE is not there, up boots cold and says why.",
        ),
    ] = None,
) -> None:
    """Bring the box's VM up: render the Vagrantfile, boot it, provision with Ansible, verify its modes.

    When `vagabond save` left a warm image of this box here and everything it depends on is the
    same (box definition, provisioning options, driver, QEMU, CPU model, memory), the VM is restored
    from it in seconds instead; otherwise one line says which of those differs. --warm-from takes
    in an exported one first (checked: a file from a cache is not trusted).

    Local base boxes are made first when missing: built from the distribution's packages (kind
    mmdebstrap), or imported from the distribution's cloud image (kind image), which is downloaded
    (resumed when interrupted), checked against its sha256 and cached. A failed or interrupted run
    removes what it created, so running it again starts clean.

    Example: vagabond up centos7-selinux && vagabond run centos7-selinux -- getenforce
    """
    from vagabond.vm import lifecycle, provision

    definition, wd = _box_and_workdir(box, workdir)
    opts = lifecycle.UpOptions(
        driver=driver.value if driver else None,
        keep_on_failure=keep_on_failure,
        extra_vars=provision.extra_vars(extra_vars or ()),
        provision=not no_provision,
        prebuilt=not fresh,
        boot_timeout=boot_timeout,
        logs_dir=paths.logs_on_failure_dir(logs_on_failure),
        image=str(image) if image else None,
        sync_project=sync,
        strict=strict,
        warm=not cold,
        warm_from=warm_from.absolute() if warm_from else None,
    )
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
    from vagabond.vm import logs, remote, status

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
    command: Annotated[
        Optional[list[str]], typer.Argument(help="A verify command and its arguments, after --.")
    ] = None,
    workdir: WorkdirOption = None,
    driver: DriverOption = None,
    extra_vars: ExtraVarsOption = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore the prebuilt box: base box + full provisioning.")
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the VM running at the end (destroy it yourself).")
    ] = False,
    no_idempotence: Annotated[bool, typer.Option("--no-idempotence", help="Skip the second provisioning run.")] = False,
    junit: Annotated[
        Optional[Path],
        typer.Option("--junit", metavar="PATH", help="Write the phases as JUnit XML (one test case each)."),
    ] = None,
    verify_timeout: Annotated[
        int, typer.Option("--verify-timeout", min=1, metavar="SECONDS", help="Longest a verify command may run.")
    ] = 3600,
    logs_on_failure: LogsOnFailureOption = None,
    image: ImageOption = None,
    sync: Annotated[
        Optional[str],
        typer.Option("--sync", metavar="GUEST_PATH", help="Also copy the project into the VM at GUEST_PATH."),
    ] = None,
    save: Annotated[
        bool,
        typer.Option("--save", help="After a green run, save the VM as the warm image the next run starts from."),
    ] = False,
    warm_from: Annotated[
        Optional[Path],
        typer.Option(
            "--warm-from",
            metavar="FILE",
            help="A warm image --export wrote (a CI cache): up takes it in and restores it when it is of this VM.",
        ),
    ] = None,
    export: Annotated[
        Optional[Path],
        typer.Option(
            "--export",
            metavar="FILE",
            help="After a green run that booted cold, save the VM and write its warm image to FILE (as "
            "`save --export`) for the next run's --warm-from. Never of a VM given -e values.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The whole sequence: up, idempotence, verify, destroy; each phase timed, the first failure decides the exit code.

    up: boot the VM (the prebuilt box when current) and provision it, with its mode checks; or, when
    a warm image saved here matches (--save made it), restore it in seconds.

    idempotence: run every playbook again in full; any task that reports a change fails the phase, and is named.

    verify: the box file's verify: lines (each through sh -c) and the command after --, each its own
    result, in the primary machine.

    On failure, logs are collected (--logs-on-failure, or under CI). destroy: always, unless --keep.

    Exit codes: 10 up, 11 idempotence, 12 verify, 13 destroy failed.

    Example: vagabond test debian12-selinux --junit results/vagabond.xml -- getenforce
    """
    from vagabond.vm import lifecycle, provision, testrun

    definition, wd = _box_and_workdir(box, workdir)
    if sync is not None and not sync.startswith("/"):
        raise errors.UsageError(f"--sync {sync!r}: a guest path is absolute, e.g. /src")
    opts = lifecycle.UpOptions(
        driver=driver.value if driver else None,
        extra_vars=provision.extra_vars(extra_vars or ()),
        prebuilt=not fresh,
        logs_dir=paths.logs_on_failure_dir(logs_on_failure),
        image=str(image) if image else None,
        sync_project=sync,
        keep_on_failure=keep,
        warm_from=warm_from.absolute() if warm_from else None,
    )
    result = testrun.run(
        definition,
        wd,
        opts,
        command or [],
        keep=keep,
        idempotence=not no_idempotence,
        verify_timeout=verify_timeout,
        junit=junit,
        save_warm=save,
        export=export.absolute() if export else None,
    )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for phase in result.phases:
            ui.out.print(f"{phase.status:>7}  {phase.seconds:7.1f}s  {phase.name}", markup=False, highlight=False)
    testrun.raise_for(result)


@app.command("logs")
def logs_(
    box: BoxArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into (a subdirectory per box).")] = Path(
        "vagabond-logs"
    ),
    workdir: WorkdirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Collect what a failed run leaves behind, for a person or a CI artifact.

    Host: serial console and qemu logs, the rendered Vagrantfile, vagrant's and Ansible's output,
    vagabond's state. Guest (when it answers): journal of the current boot, SELinux AVC denials,
    dmesg. What cannot be had is listed with the reason in summary.json; the rest still comes.

    Example: vagabond logs centos7-selinux --out artifacts/
    """
    from vagabond.vm import logs

    definition, wd = _box_and_workdir(box, workdir)
    summary = logs.collect(definition, wd, out)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for item in summary["items"]:
        ui.out.print(
            f"{'ok' if item['ok'] else 'missing':>7}  {item['name']:<24} {item['detail'] or item['source']}",
            markup=False,
        )
    ui.info(f"logs of {box} in {summary['out']}")


@app.command("ssh")
def ssh_(box: BoxArg, workdir: WorkdirOption = None, machine: MachineOption = None) -> None:
    """Open an interactive shell in the VM."""
    from vagabond.vm import remote, status

    definition, wd = _box_and_workdir(box, workdir)
    status.require_up(wd)
    raise typer.Exit(remote.interactive(wd, machine or definition.primary()))


@app.command("provision")
def provision_(
    box: BoxArg,
    workdir: WorkdirOption = None,
    extra_vars: ExtraVarsOption = None,
    check_idempotence: Annotated[
        bool,
        typer.Option(
            "--check-idempotence",
            help="Run every playbook in full and fail, naming them, if any task changes something.",
        ),
    ] = False,
) -> None:
    """Run the box's playbooks again and re-check its modes (a second run should change nothing).

    On a box built from this very definition (a prebuilt box), the playbooks are skipped unless
    -e is given or --check-idempotence asks for the full run.
    """
    from vagabond.vm import lifecycle, provision

    definition, wd = _box_and_workdir(box, workdir)
    if check_idempotence:
        recaps = lifecycle.check_idempotence(definition, wd, provision.extra_vars(extra_vars or ()))
    else:
        recaps = lifecycle.reprovision(definition, wd, provision.extra_vars(extra_vars or ()))
    for r in recaps:
        ui.out.print(
            f"{r.host}: ok={r.ok} changed={r.changed} unreachable={r.unreachable} failed={r.failed}", markup=False
        )


@app.command("halt")
def halt_(box: BoxArg, workdir: WorkdirOption = None) -> None:
    """Shut the VM down (vagabond up boots it again)."""
    from vagabond.vm import lifecycle

    definition, wd = _box_and_workdir(box, workdir)
    lifecycle.halt(definition, wd)


@app.command("destroy")
def destroy_(box: BoxArg, workdir: WorkdirOption = None) -> None:
    """Remove the VM: domains, their volumes and the work directory's state.

    Works even when the .vagrant directory is gone: libvirt objects are found by the names
    vagabond gave them (vagabond-<box>-<hash of the work directory>-<machine>).
    """
    from vagabond.vm import lifecycle

    definition, wd = _box_and_workdir(box, workdir)
    removed = lifecycle.destroy(definition, wd)
    ui.info(f"destroyed {box}: " + (", ".join(removed) if removed else "nothing was left"))


@app.command("save")
def save_(
    box: BoxArg,
    workdir: WorkdirOption = None,
    drop: Annotated[bool, typer.Option("--drop", help="Remove this box's warm image here instead.")] = False,
    export: Annotated[
        Optional[Path],
        typer.Option(
            "--export",
            metavar="FILE",
            help="Also write the warm image to FILE, one file that travels (a CI cache): `vagabond up "
            "--warm-from FILE` takes it in, in a work directory at the same path. Not for a VM provisioned "
            "with -e values (they may be secrets) unless --no-secrets says they are none.",
        ),
    ] = None,
    no_secrets: Annotated[
        bool,
        typer.Option("--no-secrets", help="With --export: the -e values the VM was provisioned with are no secret."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Save the running, provisioned VM as a warm image: `up` after a destroy, and `reset`, restore it in seconds.

    The guest's disk is synced and trimmed, its caches dropped and its free memory zeroed (the
    memory image then holds what the guest uses); then its memory is saved and its disk state
    frozen (kept in vagabond's cache and libvirt's pool, private to its user); the VM runs on over
    a fresh disk overlay. One warm image per box and work directory: a new save
    replaces the old one. `vagabond gc` removes the disk layers no warm image needs.

    Example: vagabond up debian12-selinux && vagabond save debian12-selinux
    """
    from vagabond.vm import warm, warmimage

    definition, wd = _box_and_workdir(box, workdir)
    if drop:
        with wd.lock("save --drop"):
            removed = warmimage.drop(wd)
        ui.info(f"warm image of {box}: " + (", ".join(removed) + " removed" if removed else "there was none"))
        return
    if export is not None:
        from vagabond.vm import warmarchive

        warmarchive.check_exportable(definition, wd.read_state().get("extra_vars_sha256"), no_secrets)
    meta = warm.save(definition, wd)
    exported = None
    if export is not None:
        exported = warmarchive.export(definition, wd, export, no_secrets=no_secrets)
    if as_json:
        print(json.dumps(warmimage.describe(meta) | ({"export": exported} if exported else {}), indent=2))
        return
    ui.info(f"saved a warm image of {box}: 'vagabond reset {box}' goes back to it, and 'vagabond up {box}' restores it")


@app.command("reset")
def reset_(box: BoxArg, workdir: WorkdirOption = None) -> None:
    """Put the VM back to its warm image, disk and memory, in seconds (restored when it was destroyed).

    Example: vagabond reset debian12-selinux && vagabond run debian12-selinux -- make check
    """
    from vagabond.vm import warm

    definition, wd = _box_and_workdir(box, workdir)
    started = time.monotonic()
    warm.reset(definition, wd)
    ui.info(f"{box} is back at its warm image ({time.monotonic() - started:.1f}s)")


@app.command("status")
def status_(
    box: BoxArg,
    workdir: WorkdirOption = None,
    as_json: JsonOption = False,
    github_output: Annotated[
        bool,
        typer.Option(
            "--github-output",
            help="Print workdir= and ssh-config= lines for $GITHUB_OUTPUT, warm-key= (the key a warm "
            "image of this provisioned VM has, for a cache's key; empty when it is not provisioned) and "
            "restored= (true when the VM came from a warm image).",
        ),
    ] = False,
) -> None:
    """Show the VM's state per machine (from libvirt), its driver and whether it is provisioned."""
    from vagabond import github
    from vagabond.vm import status, warmimage

    definition, wd = _box_and_workdir(box, workdir)
    result = status.status(definition, wd)
    if github_output:
        key = warmimage.key_digest(warmimage.key_of_vm(definition, wd)) if result["provisioned"] else ""
        restored = "true" if (wd.read_state().get("warm") or {}).get("restored_at") else "false"
        outputs = {"workdir": wd.path, "ssh-config": wd.ssh_config, "warm-key": key, "restored": restored}
        sys.stdout.write(github.outputs(outputs))
        return
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for m in result["machines"]:
        ui.out.print(
            f"{box}/{m['name']}: {m['state']} (domain {m['domain']}, driver {result['driver'] or '-'}, "
            f"{'provisioned' if result['provisioned'] else 'not provisioned'})",
            markup=False,
        )


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
    from vagabond.vm import status

    rows = status.running()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        ui.info("no VMs of vagabond's on this host")
        return
    table = [("BOX", "MACHINE", "STATE", "DRIVER", "ADDRESS", "AGE", "WORKDIR")]
    table += [
        (
            r["box"],
            r["machine"],
            r["state"],
            r["driver"] or "-",
            r["address"] or "-",
            _age(r["age_seconds"]),
            r["workdir"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        ui.out.print(
            "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + row[-1],
            markup=False,
            highlight=False,
        )
