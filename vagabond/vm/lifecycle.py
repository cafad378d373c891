"""The VM lifecycle recipes: up as a sequence of named steps (choose the box, prepare the base,
render, vagrant up, SSH, provision, verify), reprovision and the idempotence check, halt, destroy."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vagabond import github, interrupts, timeouts, ui
from vagabond.bases import kinds
from vagabond.catalog.read import Published
from vagabond.definition.schema import Box
from vagabond.errors import Interrupted, NotIdempotent, StepFailed, VagabondError
from vagabond.host import detect, ledger, libvirt
from vagabond.host.detect import Decision
from vagabond.vm import (
    boot,
    logs,
    playbooks,
    prebuilt,
    provision,
    remote,
    render,
    warm,
    warmarchive,
    warmcatalog,
    warmimage,
)
from vagabond.vm.ownership import MadeByUp, remove_vm
from vagabond.vm.status import require_up
from vagabond.vm.workdir import Workdir


@dataclass
class UpOptions:
    driver: str | None = None
    keep_on_failure: bool = False
    extra_vars: Sequence[str] = ()
    provision: bool = True
    prebuilt: bool = True  # use the box's prebuilt dependency box when its catalog has a current one
    boot_timeout: int | None = None
    logs_dir: Path | None = None  # collect `vagabond logs` here when up fails, before cleaning up
    image: str | None = None  # a local copy of a kind-image base's cloud image
    sync_project: str | None = None  # also sync the project to this guest path (a box without synced folders, in CI)
    strict: bool = False  # a VM that Vagrant's published key opens is a failure, not a warning
    warm: bool = True  # restore the work directory's warm image when it matches
    warm_from: Path | None = None  # an exported warm image (a CI cache) to take in when it matches


@dataclass
class UpRun:
    """What one `up` carries from step to step."""

    box: Box
    wd: Workdir
    opts: UpOptions
    decision: Decision
    made: MadeByUp | None  # None: the VM was there already, and this run may not remove it
    source: Published | None = None  # the prebuilt box it boots; None: the base box
    base_version: str | None = None
    early: boot.EarlySshConfig | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def new(self) -> bool:
        return self.made is not None


def render_workdir(
    wd: Workdir, source: Published | None = None, boot_timeout: int | None = None, sync_project: str | None = None
) -> None:
    """The Vagrantfile and provisioning directory `vagrant up` and `vagabond provision` use here:
    the box vagabond chose (the prebuilt one it downloaded), else the base box, never a catalog
    vagabond found unusable."""
    options = render.RenderOptions(
        source=source, boot_timeout=boot_timeout, sync_project=sync_project, fresh=source is None
    )
    wd.claim(playbooks.PROVISION_DIR)
    render.write(wd.box, options, wd.path, force=True)  # the work directory's Vagrantfile is vagabond's own


def already_provisioned(recorded: bool, was_new: bool, prebuilt: bool, extra_vars: Sequence[str]) -> bool:
    """Whether `up` may skip the playbooks: the VM it keeps was provisioned, or it boots a prebuilt
    box, which holds what the playbooks install, unless extra vars ask for something else."""
    return (recorded and not was_new) or (prebuilt and not extra_vars)


# --- the steps of up, in order; each takes the run and leaves what the next needs in it ----------


def choose_box(run: UpRun) -> None:
    """A new VM boots the current prebuilt box when there is one (downloaded now, so a failed
    download falls back to the base box); a VM that is there keeps the box it was made from."""
    if run.new:
        run.source = prebuilt.fetch_current(run.box, allowed=run.opts.prebuilt)
    else:
        previous = run.wd.read_state().get("prebuilt")
        run.source = Published(**previous) if isinstance(previous, dict) else None


def prepare_base(run: UpRun) -> None:
    """The base box in Vagrant's store: built, imported or downloaded as its kind says."""
    run.base_version = run.box.spec.base.version
    if run.source is None:
        run.base_version = kinds.ensure_base(run.box, run.opts.image) or run.base_version


def render_files(run: UpRun) -> None:
    """The Vagrantfile and its provisioning directory, and the work directory's state; a new VM
    gets its own SSH key (the box's insecure one then opens nothing)."""
    box, wd, opts = run.box, run.wd, run.opts
    render_workdir(wd, run.source, opts.boot_timeout, opts.sync_project)
    provisioned = already_provisioned(
        bool(wd.read_state().get("provisioned")), run.new, run.source is not None, opts.extra_vars
    )
    if run.source is not None and opts.extra_vars and opts.provision:
        ui.info("extra vars given (-e): the playbooks run on the prebuilt box too, so that they apply")
    wd.write_state(
        sync_project=opts.sync_project,
        box=box.name,
        driver=run.decision.driver,
        driver_reason=run.decision.reason,
        prefix=wd.prefix,
        machines=box.machine_names(),
        primary=box.primary(),
        env=box.spec.env,
        extra_vars_sha256=warmimage.extra_vars_digest(opts.extra_vars),
        base_version=run.base_version,
        prebuilt=run.source.__dict__ if run.source else None,
        provisioned=provisioned,
    )
    ledger.add_workdir(wd.prefix, wd.path)  # `vagabond gc` finds what this directory leaves
    if run.new:
        remote.make_key(wd)
        wd.write_state(ssh_key=True)


def boot_vm(run: UpRun) -> None:
    if run.made is not None:
        run.made.before_boot(run.source.name if run.source else run.box.spec.base.box_name)
    boot_timeout = run.opts.boot_timeout or timeouts.for_driver(timeouts.BOOT, run.decision.driver)
    run.early = boot.vagrant_up(run.wd, run.decision.driver, boot_timeout, [run.made.see] if run.made else [])


def ssh_config(run: UpRun) -> None:
    boot.write_ssh_config(run.wd, run.early)


def provision_vm(run: UpRun) -> None:
    if not run.opts.provision or run.wd.read_state().get("provisioned"):
        return
    with ui.step("provision (ansible-playbook)"):
        recaps = provision.run_playbooks(run.wd, run.opts.extra_vars)
    # They ran in full: a base box holds no definition, and -e on a prebuilt one forces them.
    run.wd.write_state(provisioned=True, playbooks_ran=True, recap=[r.__dict__ for r in recaps])


def verify_modes(run: UpRun) -> None:
    for machine, check, got in provision.run_checks(run.wd, run.box.machine_names()):
        ui.info(f"{check.mode} on {machine}: {got}")


def check_keys(run: UpRun) -> None:
    """One probe with Vagrant's published insecure key: a VM it opens is open to every local user
    who reaches its network (a catalog box of kind vagrant, or a guest whose key unit failed)."""
    for machine in run.box.machine_names():
        if remote.insecure_key_opens(run.wd, machine):
            message = (
                f"{run.box.name} ({machine}) lets Vagrant's published insecure key in: anyone who reaches "
                "its network can log in (a box made by vagabond takes only the VM's own key)"
            )
            if run.opts.strict:
                raise VagabondError(message, hint="use a base vagabond builds or imports, or drop --strict")
            ui.warning(message, title=f"vagabond up {run.box.name}: insecure key accepted")


def warm_image(run: UpRun) -> dict | None:
    """The work directory's warm image when it can stand in for this up; otherwise None, and one
    line that says why it does not (nothing is said when there is none)."""
    opts = run.opts

    @functools.cache
    def wanted() -> dict:  # asks libvirt for its QEMU: only when there is an image to compare
        return warmimage.key_for(
            run.box,
            run.wd,
            run.decision.driver,
            extra_vars_sha256=warmimage.extra_vars_digest(opts.extra_vars),
            sync_project=opts.sync_project,
            provision=opts.provision,
        )

    def why_not(meta: dict) -> str | None:  # None: the image stands in for this up
        return warmimage.difference(meta["key"], wanted()) or warmimage.missing_parts(run.wd, meta)

    def stands_in() -> bool:
        here = warmimage.load(run.wd)
        return here is not None and not why_not(here)

    # A warm image here that matches wins: nothing to take in. Then an exported one (a CI cache),
    # then the catalog's.
    if opts.warm and opts.prebuilt and not stands_in():
        if opts.warm_from is not None:
            take_in(run, opts.warm_from, wanted())
        if not stands_in():
            warmcatalog.take_in(run.box, run.wd, wanted())
    meta = warmimage.load(run.wd)
    if meta is None:
        return None
    why = None
    if not opts.warm:
        why = "--cold"
    elif not opts.prebuilt:
        why = "--fresh asks for the base box"
    else:
        why = why_not(meta)
    if why:
        ui.info(f"booting cold, not from the warm image saved here: {why}")
        return None
    return meta


def take_in(run: UpRun, archive: Path, wanted: dict) -> None:
    """An exported warm image in place of the work directory's own, when it is one of this VM;
    otherwise one line that says why not (a file that is not there is a first run: said too)."""
    if not archive.exists():
        ui.info(f"no warm image at {archive} yet: booting cold")
        return
    warmarchive.take_in(
        run.box, run.wd, archive, wanted, step=f"take in the warm image {archive}", named=f"the warm image in {archive}"
    )


def restore_warm(run: UpRun, meta: dict) -> bool:
    """The warm image restored; False (said in one line, nothing left of the attempt) when it fails."""
    try:
        with ui.step(f"restore {run.box.name} from its warm image"):
            warm.restore(run.box, run.wd, meta)
            # The work directory as a cold up leaves it: plain `vagrant ssh` and `provision` need these.
            state = run.wd.read_state()
            previous = state.get("prebuilt")
            render_workdir(
                run.wd,
                Published(**previous) if isinstance(previous, dict) else None,
                run.opts.boot_timeout,
                state.get("sync_project"),
            )
            if render.copies_folders(run.box, state.get("sync_project")):
                # The copies the VM holds are as old as its warm image: the project as it is now.
                sink, fh = boot.log_sink(run.wd, "vagrant")
                with fh:
                    run.wd.vagrant(stream=sink).rsync()
    except Interrupted:
        raise  # _failed removes what the attempt made
    except VagabondError as exc:
        with interrupts.cleanup():
            remove_vm(run.wd)  # a domain that came back but does not answer goes, with its overlay
            run.wd.remove_state()
        ui.info(f"the warm image did not restore ({exc.message}); booting cold")
        return False
    github.summary_line(f"{run.box.name}: restored from its warm image")
    return True


STEPS: list[tuple[str, Callable[[UpRun], None]]] = [
    ("choose the box", choose_box),
    ("prepare base box", prepare_base),
    ("render Vagrantfile", render_files),
    ("vagrant up", boot_vm),
    ("ssh config", ssh_config),
    ("provision", provision_vm),
    ("verify modes", verify_modes),
    ("check keys", check_keys),
]
# After a restore: the VM is the provisioned one that was saved (its keys were checked when it came up).
WARM_STEPS = [("verify modes", verify_modes)]


def up(box: Box, wd: Workdir, opts: UpOptions) -> dict:
    """Render, boot, provision and verify. Any failure names its step; a failed or interrupted run
    removes what it created (unless keep_on_failure), so the next run starts clean."""
    with wd.lock("up"):
        decision = detect.probe_and_decide(opts.driver)
        ui.info(f"driver {decision.driver}: {decision.reason}")
        # In a job's step summary: whether this runner had KVM (the step table says how long ready took).
        github.summary_line(f"{box.name}: driver **{decision.driver}** ({decision.reason})")
        # Only a run that creates the domain may remove it again on failure.
        run = UpRun(box, wd, opts, decision, MadeByUp.before() if not libvirt.domains(wd.prefix) else None)
        step = STEPS[0][0]
        steps = STEPS
        try:
            meta = warm_image(run) if run.new else None
            if meta is not None:
                step = "restore warm image"
                with _timed(run.timings, step):
                    steps = WARM_STEPS if restore_warm(run, meta) else STEPS
            for step, action in steps:
                with _timed(run.timings, step):
                    action(run)
        except (VagabondError, KeyboardInterrupt) as exc:
            _failed(run, step, exc)
        if run.made is not None:
            run.made.record()
        return wd.write_state(up_at=time.time(), timings=run.timings)


def _failed(run: UpRun, step: str, exc: BaseException) -> None:
    """Keep the console and the logs, remove what this run made (unless kept), and say which step failed."""
    run.wd.save_console(run.box.machine_names())
    if run.opts.logs_dir is not None and not isinstance(exc, (Interrupted, KeyboardInterrupt)):
        logs.collect_on_failure(run.box, run.wd, run.opts.logs_dir)
    if run.made is not None and not run.opts.keep_on_failure:
        with interrupts.cleanup():
            ui.info(f"{step} failed: removing what this run created (keep it with --keep-on-failure)")
            run.made.undo(run.wd)
    if isinstance(exc, Interrupted):
        raise Interrupted(f"{exc.message} during step '{step}'") from None
    if isinstance(exc, StepFailed):
        raise exc
    raise StepFailed(step, exc) from None


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - started, 1)


# --- the VM afterwards -----------------------------------------------------------------------------


def destroy(box: Box, wd: Workdir) -> list[str]:
    """Remove the domains, their volumes and the work directory's state, with or without .vagrant."""
    with wd.lock("destroy"), interrupts.cleanup():
        removed: list[str] = []
        before = libvirt.domains(wd.prefix)
        if (wd.path / ".vagrant").exists() and wd.vagrantfile.is_file():
            try:
                wd.vagrant().destroy()
            except VagabondError as exc:
                ui.info(f"vagrant destroy failed ({exc}); removing the libvirt objects directly")
            gone = set(before) - set(libvirt.domains(wd.prefix))
            removed += [f"domain {name} (vagrant destroy)" for name in sorted(gone)]
        removed += remove_vm(wd)
        removed += warmimage.drop_unneeded_layers(wd)
        # The management network only with the record that a vagabond run made it: another tool's stays.
        net = libvirt.MGMT_NETWORK
        if net in ledger.read()["networks"]:
            if libvirt.remove_network_if_unused(net):
                removed.append(f"network {net}")
            if net not in libvirt.networks():  # gone with it, or vagrant destroy took it with the last domain
                ledger.forget(networks=[net])
        wd.remove_state()
        return removed


def halt(box: Box, wd: Workdir) -> None:
    with wd.lock("halt"):
        require_up(wd)
        for machine in box.machine_names():
            remote.close_master(wd, machine)
        sink, fh = boot.log_sink(wd, "vagrant")
        with fh:
            wd.vagrant(stream=sink).halt()


def reprovision(box: Box, wd: Workdir, extra_vars: Sequence[str] = (), *, force: bool = False) -> list[provision.Recap]:
    with wd.lock("provision"):
        require_up(wd)
        if not wd.ssh_config.is_file():
            boot.refresh_ssh_config(wd)
        state = wd.read_state()
        previous = state.get("prebuilt")
        render_workdir(
            wd,
            Published(**previous) if isinstance(previous, dict) else None,  # the playbooks as they are now
            sync_project=state.get("sync_project"),
        )
        recaps = provision.run_playbooks(wd, extra_vars, force=force)
        # On a prebuilt box of this definition, site.yml skips the playbooks unless forced.
        ran = force or bool(extra_vars) or not state.get("prebuilt") or bool(state.get("playbooks_ran"))
        wd.write_state(
            provisioned=True,
            playbooks_ran=ran,
            env=box.spec.env,
            recap=[r.__dict__ for r in recaps],
            extra_vars_sha256=warmimage.extra_vars_digest(extra_vars),  # provisioned so now: a warm image's key
        )
        provision.run_checks(wd, box.machine_names())
        return recaps


def check_idempotence(box: Box, wd: Workdir, extra_vars: Sequence[str] = ()) -> list[provision.Recap]:
    """Run every playbook once more, in full (a prebuilt box's too), and fail naming each task that
    reported a change: a converged VM must come out of a second run unchanged."""
    require_up(wd)
    if not playbooks.provisions(box):
        return []
    if not wd.read_state().get("playbooks_ran"):
        # A prebuilt box: the playbooks ran when it was built, in another VM, and the build cleaned
        # up after them (apt lists, caches). A first run here may rightly change things; the second may not.
        ui.info("the playbooks have not run on this VM (a prebuilt box): converging once before the idempotence run")
        reprovision(box, wd, extra_vars, force=True)
    recaps = reprovision(box, wd, extra_vars, force=True)
    if not recaps:
        raise NotIdempotent(
            "the idempotence run printed no recap: cannot tell what changed",
            hint="see the ansible log in the work directory's logs/",
        )
    changed = [f"{r.host}: {task}" for r in recaps for task in r.changed_tasks]
    if changed or any(r.changed for r in recaps):
        counted = sum(r.changed for r in recaps)
        raise NotIdempotent(
            f"the second provisioning run changed {counted} task{'s' if counted != 1 else ''}: "
            + ("; ".join(changed) if changed else "(names not in the output)"),
            hint="make those tasks report no change when nothing needs doing (a state check, changed_when, creates:)",
        )
    return recaps
