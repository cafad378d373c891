"""The VM lifecycle recipes: up (render, boot, provision, verify), provision, run, halt, destroy, status."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vagabond import interrupts, timeouts, ui
from vagabond.boxes import base
from vagabond.host import detect, libvirt, registry
from vagabond.publish import read
from vagabond.vm import logs, playbooks, provision, remote, render
from vagabond.spec.schema import Box, ImageBase, MmdebstrapBase, VagrantBase
from vagabond.errors import CommandFailed, Interrupted, NotIdempotent, NotRunning, StepFailed, VagabondError
from vagabond.host.vagrant import Vagrant
from vagabond.vm.workdir import Workdir


@dataclass
class Options:
    driver: str | None = None
    keep_on_failure: bool = False
    extra_vars: Sequence[str] = ()
    provision: bool = True
    prebuilt: bool = True  # use the box's prebuilt dependency box when its catalog has a current one
    boot_timeout: int | None = None
    logs_dir: Path | None = None  # collect `vagabond logs` here when up fails, before cleaning up
    image: str | None = None  # a local copy of a kind-image base's cloud image
    sync_project: str | None = None  # also sync the project to this guest path (a box without synced folders, in CI)


def _vagrant(wd: Workdir, timeout: float = timeouts.VAGRANT, stream=False) -> Vagrant:
    # The Vagrantfile decides the driver itself when a person runs it; vagabond hands it its own
    # decision (which may rest on a smoke boot the file cannot do), and this VM's own SSH key.
    state = wd.read_state()
    env = {"VAGABOND_DRIVER": state.get("driver")} if state.get("driver") else {}
    if state.get("ssh_key") and wd.ssh_key.is_file():
        env["VAGABOND_SSH_KEY"] = str(wd.ssh_key)
    return Vagrant(wd.path, timeout=timeout, stream=stream, env=env or None)


def _log_sink(wd: Workdir, name: str):
    fh = wd.log_file(name)

    def sink(line: str) -> None:
        fh.write(line)
        fh.flush()
        text = line.strip()
        # vagrant-libvirt redraws a progress bar with escape codes: keep those out of the log lines.
        if text and "Progress:" not in text:
            ui.info(f"vagrant: {text}")

    return sink, fh


def render_workdir(wd: Workdir, source: render.BoxSource | None = None, boot_timeout: int | None = None,
                   sync_project: str | None = None) -> None:  # fmt: skip
    """The Vagrantfile and provisioning directory `vagrant up` and `vagabond provision` use here:
    the box vagabond chose (the prebuilt one it downloaded), else the base box, never a catalog
    vagabond found unusable."""
    options = render.RenderOptions(source=source, boot_timeout=boot_timeout, sync_project=sync_project, fresh=source is None)
    wd.claim(playbooks.PROVISION_DIR)
    render.write(wd.box, options, wd.path, force=True)  # the work directory's Vagrantfile is vagabond's own


def current_prebuilt(box: Box) -> dict:
    """Which prebuilt box `up` would boot, and why (for `vagabond prebuilt` and CI cache keys):
    version is None when the box has no prebuilt section or no catalog version matches."""
    spec = box.spec.prebuilt
    if spec is None:
        return {"box": box.name, "name": None, "catalog": None, "version": None, "store": None,
                "reason": f"box {box.name!r} has no prebuilt section"}  # fmt: skip
    found, why = read.find_current(spec.catalog, playbooks.definition_digest(box), spec.name, spec.version)
    # The version's own directory: a CI cache of it holds that version once, not every version stored.
    store = str(Vagrant().box_dir(spec.name) / found.version) if found else None
    return {"box": box.name, "name": spec.name, "catalog": spec.catalog, "version": found.version if found else None,
            "store": store, "reason": why}  # fmt: skip


def fetch_current_prebuilt(box: Box, opts: Options) -> render.BoxSource | None:
    """The prebuilt box, downloaded into Vagrant's box store, when its catalog has a version built
    from this exact definition; otherwise None (base box + full provisioning), always saying why."""
    if box.spec.prebuilt is None:
        return None
    if not opts.prebuilt:
        ui.info("--fresh: using the base box with full provisioning")
        return None
    spec = box.spec.prebuilt
    found, why = read.find_current(spec.catalog, playbooks.definition_digest(box), spec.name, spec.version)
    if found is None:
        ui.info(f"using the base box with full provisioning: {why}")
        return None
    source = fetch_prebuilt(render.BoxSource(found.name, found.version, found.catalog_url))
    if source is not None:
        ui.info(f"using {why}")
    return source


def fetch_prebuilt(source: render.BoxSource) -> render.BoxSource | None:
    """Download the prebuilt box before `vagrant up`, so that a failed download (server down,
    checksum mismatch) falls back to the base box instead of failing the run. Vagrant checks the
    checksum from the catalog and keeps nothing of a box that does not match."""
    v = Vagrant(timeout=timeouts.BOX_DOWNLOAD)
    if v.has_box(source.name, source.version):
        return source
    try:
        with ui.step(f"download {source.name} {source.version}"):
            v.box_add_catalog(source.url, source.version)
    except CommandFailed as exc:
        # Vagrant's message is a paragraph (then details): keep the paragraph, on one line.
        reason = " ".join(exc.stderr.strip().split("\n\n")[0].split()) or str(exc)
        ui.info(f"using the base box with full provisioning: download of {source.name} {source.version} failed: {reason}")
        return None
    return source


def refresh_ssh_config(wd: Workdir) -> None:
    v = _vagrant(wd, timeout=timeouts.VAGRANT_QUERY)
    configs = [v.ssh_config(vm_name=m) for m in wd.box.machine_names()]
    remote.write_ssh_config(wd, "\n".join(configs))


class _IpWatch:
    """vagrant-libvirt waits up to 10 minutes for a DHCP lease whatever boot_timeout says: stop
    `vagrant up` when the guest has no IP address after the boot timeout."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since: float | None = None
        self.done = False

    WAITING = "Waiting for domain to get an IP address"

    def see(self, line: str) -> None:
        if self.WAITING in line and self.since is None:
            self.since = time.monotonic()
        elif "SSH address:" in line or "Waiting for machine to boot" in line:
            self.done = True

    def __call__(self) -> str | None:
        if self.since is not None and not self.done and time.monotonic() - self.since > self.limit:
            return f"the guest got no IP address within {self.limit:.0f}s (its serial console log is kept in logs/)"
        return None


class _EarlySshConfig:
    """Ask Vagrant for the SSH config as soon as it says the machine is ready.

    `vagrant up` goes on for a few seconds after "Machine booted and ready!"; `vagrant ssh-config`
    takes no machine lock and costs ~2 s, so running it then keeps it off the critical path.
    Multi-machine boxes fetch it afterwards as usual.
    """

    READY = "Machine booted and ready!"

    def __init__(self, wd: Workdir) -> None:
        self.wd = wd
        self.thread: threading.Thread | None = None
        self.text: str | None = None

    def watching(self, sink):
        def watch(line: str) -> None:
            sink(line)
            if self.READY in line and self.thread is None and len(self.wd.box.machine_names()) == 1:
                self.thread = threading.Thread(target=self._fetch, daemon=True)
                self.thread.start()

        return watch

    def _fetch(self) -> None:
        with contextlib.suppress(VagabondError):
            self.text = _vagrant(self.wd, timeout=timeouts.VAGRANT_QUERY).ssh_config(vm_name=self.wd.box.primary())

    def result(self) -> bool:
        if self.thread is None:
            return False
        self.thread.join(timeout=timeouts.VAGRANT_QUERY)
        if not self.text:
            return False
        remote.write_ssh_config(self.wd, self.text)
        return True


@dataclass
class Ours:
    """What a failed `up` may take away again, and nothing else: other projects share the pool and
    the network, and a volume or network that merely appeared meanwhile may be another job's.

    Ours are the domains and volumes with this work directory's prefix; the box's image volume only
    when this run started uploading it (vagrant-libvirt says so) and no domain uses it; the
    management network only when it did not exist before this run and no domain uses it."""

    network_existed: bool
    box_name: str = ""
    images_before: set[str] = field(default_factory=set)
    upload_started: bool = False

    UPLOAD = "Uploading base box image as volume"

    def before_up(self, box_name: str) -> None:
        self.box_name = box_name
        self.images_before = set(libvirt.box_images(box_name))

    def see(self, line: str) -> None:
        if self.UPLOAD in line:
            self.upload_started = True


def already_provisioned(recorded: bool, was_new: bool, prebuilt: bool, extra_vars: Sequence[str]) -> bool:
    """Whether `up` may skip the playbooks: the VM it keeps was provisioned, or it boots a prebuilt
    box, which holds what the playbooks install, unless extra vars ask for something else."""
    return (recorded and not was_new) or (prebuilt and not extra_vars)


def up(box: Box, wd: Workdir, opts: Options) -> dict:
    """Render, boot, provision and verify. Any failure names its step; a failed or interrupted run
    removes what it created (unless keep_on_failure), so the next run starts clean."""
    timings: dict[str, float] = {}
    with wd.lock("up"):
        decision = detect.choose_driver(opts.driver)
        ui.info(f"driver {decision.driver}: {decision.reason}")
        step = "prepare base box"
        # Only a run that creates the domain may remove it again on failure.
        was_new = not libvirt.domains(wd.prefix)
        ours = Ours(libvirt.MGMT_NETWORK in libvirt.networks()) if was_new else None
        try:
            if was_new:
                source = fetch_current_prebuilt(box, opts)
            else:  # an existing VM keeps the box it was made from
                previous = wd.read_state().get("prebuilt")
                source = render.BoxSource(**previous) if previous else None
            base_version = box.spec.base.version
            if source is None and isinstance(box.spec.base, (MmdebstrapBase, ImageBase)):
                with _timed(timings, step), ui.step(step):
                    base_version = base.ensure_added(box, opts.image).version
            elif source is None and isinstance(box.spec.base, VagrantBase):
                with _timed(timings, step):
                    base.download_vagrant_base(box.spec.base)
            step = "render Vagrantfile"
            render_workdir(wd, source, opts.boot_timeout, opts.sync_project)
            provisioned = already_provisioned(bool(wd.read_state().get("provisioned")), was_new, source is not None,
                                              opts.extra_vars)  # fmt: skip
            if source is not None and opts.extra_vars and opts.provision:
                ui.info("extra vars given (-e): the playbooks run on the prebuilt box too, so that they apply")
            wd.write_state(sync_project=opts.sync_project, box=box.name, driver=decision.driver, driver_reason=decision.reason, prefix=wd.prefix,
                           machines=box.machine_names(), primary=box.primary(), env=box.spec.env, base_version=base_version,
                           prebuilt=source.__dict__ if source else None, provisioned=provisioned)  # fmt: skip
            registry.add_workdir(wd.prefix, wd.path)  # `vagabond gc` finds what this directory leaves
            if was_new:
                remote.make_key(wd)  # this VM's own SSH key (the box's insecure one opens nothing then)
                wd.write_state(ssh_key=True)
            step = "vagrant up"
            if ours is not None:
                ours.before_up(source.name if source else box.spec.base.box_name)
            boot_timeout = opts.boot_timeout or timeouts.for_driver(timeouts.BOOT, decision.driver)
            sink, fh = _log_sink(wd, "vagrant")
            early = _EarlySshConfig(wd)
            ip_watch = _IpWatch(boot_timeout)
            forward = early.watching(sink)

            turn = libvirt.Turn()

            def watch(line: str) -> None:
                ip_watch.see(line)
                if ours is not None:
                    ours.see(line)
                if _IpWatch.WAITING in line:
                    turn.release()  # the domain exists: the next run may create its own
                forward(line)

            try:
                with _timed(timings, step), ui.step(f"vagrant up ({decision.driver})"):
                    turn.acquire(on_wait=lambda: ui.info("waiting for another vagabond to create its domain first"))
                    wd.claim(".vagrant")  # Vagrant's machine state, made by this up
                    v = _vagrant(wd, timeout=boot_timeout + timeouts.UP_SLACK, stream=watch)
                    v.watchdog = ip_watch
                    v.up(provider="libvirt", provision=False)
            finally:
                turn.release()
                fh.close()
            step = "ssh config"
            if not early.result():
                refresh_ssh_config(wd)
            if opts.provision and not wd.read_state().get("provisioned"):
                step = "provision"
                with _timed(timings, step), ui.step("provision (ansible-playbook)"):
                    recaps = provision.run_playbooks(wd, opts.extra_vars)
                # They ran in full: a base box holds no definition, and -e on a prebuilt one forces them.
                wd.write_state(provisioned=True, playbooks_ran=True, recap=[r.__dict__ for r in recaps])
            step = "verify modes"
            with _timed(timings, step):
                results = provision.run_checks(wd, box.machine_names())
            for machine, check, got in results:
                ui.info(f"{check.mode} on {machine}: {got}")
        except (VagabondError, KeyboardInterrupt) as exc:
            wd.save_console(box.machine_names())
            if opts.logs_dir is not None and not isinstance(exc, (Interrupted, KeyboardInterrupt)):
                logs.collect_on_failure(box, wd, opts.logs_dir)
            if ours is not None and not opts.keep_on_failure:
                with interrupts.cleanup():
                    ui.info(f"{step} failed: removing what this run created (keep it with --keep-on-failure)")
                    _cleanup(wd, ours)
            if isinstance(exc, Interrupted):
                raise Interrupted(f"{exc.message} during step '{step}'") from None
            if isinstance(exc, StepFailed):
                raise
            raise StepFailed(step, exc) from None
        if ours is not None and not ours.network_existed and libvirt.MGMT_NETWORK in libvirt.networks():
            registry.add_networks([libvirt.MGMT_NETWORK])
        if ours is not None and ours.upload_started:
            # The box's image volume this run uploaded: gc may take it once nothing needs it.
            registry.add_volumes(sorted(set(libvirt.box_images(ours.box_name)) - ours.images_before))
        state = wd.write_state(up_at=time.time(), timings=timings)
        return state


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - started, 1)


def _cleanup(wd: Workdir, ours: Ours) -> list[str]:
    removed = _remove_libvirt_objects(wd)
    if ours.upload_started and ours.box_name:
        # The upload this run started may be incomplete; another job's finished image is in use, or not ours.
        fresh = set(libvirt.box_images(ours.box_name)) - ours.images_before
        for vol in sorted(fresh - libvirt.volumes_in_use()):
            if libvirt.delete_volume(vol):
                removed.append(f"volume {vol}")
    net = libvirt.MGMT_NETWORK
    if not ours.network_existed and libvirt.remove_network_if_unused(net):
        removed.append(f"network {net}")
    wd.remove_state()
    for item in removed:
        ui.info(f"removed {item}")
    return removed


def _remove_libvirt_objects(wd: Workdir) -> list[str]:
    removed = []
    for machine in wd.box.machine_names():
        remote.close_master(wd, machine)
    for name in libvirt.domains(wd.prefix):
        removed += libvirt.remove_domain(name)
    for vol in libvirt.volumes(wd.prefix):
        if libvirt.delete_volume(vol):
            removed.append(f"volume {vol}")
    wd.forget_console(wd.box.machine_names())
    return removed


def destroy(box: Box, wd: Workdir) -> list[str]:
    """Remove the domains, their volumes and the work directory's state, with or without .vagrant."""
    with wd.lock("destroy"), interrupts.cleanup():
        removed: list[str] = []
        before = libvirt.domains(wd.prefix)
        if (wd.path / ".vagrant").exists() and wd.vagrantfile.is_file():
            try:
                _vagrant(wd).destroy()
            except VagabondError as exc:
                ui.info(f"vagrant destroy failed ({exc}); removing the libvirt objects directly")
            gone = set(before) - set(libvirt.domains(wd.prefix))
            removed += [f"domain {name} (vagrant destroy)" for name in sorted(gone)]
        removed += _remove_libvirt_objects(wd)
        # The management network only with the record that a vagabond run made it: another tool's stays.
        net = libvirt.MGMT_NETWORK
        if net in registry.read()["networks"]:
            if libvirt.remove_network_if_unused(net):
                removed.append(f"network {net}")
            if net not in libvirt.networks():  # gone with it, or vagrant destroy took it with the last domain
                registry.forget(networks=[net])
        wd.remove_state()
        return removed


def halt(box: Box, wd: Workdir) -> None:
    with wd.lock("halt"):
        require_up(wd)
        for machine in box.machine_names():
            remote.close_master(wd, machine)
        sink, fh = _log_sink(wd, "vagrant")
        with fh:
            _vagrant(wd, stream=sink).halt()


def reprovision(box: Box, wd: Workdir, extra_vars: Sequence[str] = (), *, force: bool = False) -> list[provision.Recap]:
    with wd.lock("provision"):
        require_up(wd)
        if not wd.ssh_config.is_file():
            refresh_ssh_config(wd)
        state = wd.read_state()
        previous = state.get("prebuilt")
        render_workdir(wd, render.BoxSource(**previous) if previous else None,  # the playbooks as they are now
                       sync_project=state.get("sync_project"))  # fmt: skip
        recaps = provision.run_playbooks(wd, extra_vars, force=force)
        # On a prebuilt box of this definition, site.yml skips the playbooks unless forced.
        ran = force or bool(extra_vars) or not state.get("prebuilt") or bool(state.get("playbooks_ran"))
        wd.write_state(provisioned=True, playbooks_ran=ran, env=box.spec.env, recap=[r.__dict__ for r in recaps])
        provision.run_checks(wd, box.machine_names())
        return recaps


def check_idempotence(box: Box, wd: Workdir, extra_vars: Sequence[str] = ()) -> list[provision.Recap]:
    """Run every playbook once more, in full (a prebuilt box's too), and fail naming each task that
    reported a change: a converged VM must come out of a second run unchanged."""
    require_up(wd)
    if not playbooks.all_playbooks(box):
        return []
    if not wd.read_state().get("playbooks_ran"):
        # A prebuilt box: the playbooks ran when it was built, in another VM, and the build cleaned
        # up after them (apt lists, caches). A first run here may rightly change things; the second may not.
        ui.info("the playbooks have not run on this VM (a prebuilt box): converging once before the idempotence run")
        reprovision(box, wd, extra_vars, force=True)
    recaps = reprovision(box, wd, extra_vars, force=True)
    if not recaps:
        raise NotIdempotent("the idempotence run printed no recap: cannot tell what changed",
                            hint="see the ansible log in the work directory's logs/")  # fmt: skip
    changed = [f"{r.host}: {task}" for r in recaps for task in r.changed_tasks]
    if changed or any(r.changed for r in recaps):
        counted = sum(r.changed for r in recaps)
        raise NotIdempotent(
            f"the second provisioning run changed {counted} task{'s' if counted != 1 else ''}: "
            + ("; ".join(changed) if changed else "(names not in the output)"),
            hint="make those tasks report no change when nothing needs doing (a state check, changed_when, creates:)",
        )
    return recaps


def require_up(wd: Workdir) -> None:
    """The one answer for a box with no VM in this work directory (run, ssh, halt, status, provision)."""
    # Files first: `vagabond run` must not pay for a virsh call. (The Vagrantfile stays after a
    # destroy, as a rendered file a user may keep; the VM's state and ssh_config do not.)
    if not wd.ssh_config.is_file() and not wd.state_file.is_file() and not libvirt.domains(wd.prefix):
        raise NotRunning(f"box {wd.box.name!r} is not up here ({wd.path})", hint=f"run 'vagabond up {wd.box.name}' first")



def running() -> list[dict]:
    """`vagabond ps`: every VM of a work directory vagabond recorded, one row per machine, with what
    libvirt says of its domain now; a work directory whose domains are all gone is left out."""
    recorded = registry.read()["workdirs"]
    domains = libvirt.domains(tuple(recorded))  # the state of ours only: one virsh call per domain
    rows = []
    now = time.time()
    for prefix, path in sorted(recorded.items(), key=lambda item: item[1]):
        mine = {name: st for name, st in domains.items() if name.startswith(prefix)}
        if not mine:
            continue
        wd = Workdir.at(Path(path))
        state = wd.read_state() if state_matches(wd, prefix) else {}
        address = remote.addresses(wd) if state else {}
        for domain, domain_state in sorted(mine.items()):
            machine = domain.removeprefix(prefix)
            up_at = state.get("up_at")
            rows.append({
                "box": state.get("box") or "?", "workdir": path, "machine": machine, "domain": domain, "state": domain_state,
                "driver": state.get("driver"), "address": address.get(machine), "up_at": up_at,
                "age_seconds": round(now - up_at) if isinstance(up_at, (int, float)) else None,
            })  # fmt: skip
    return rows


def state_matches(wd: Workdir, prefix: str) -> bool:
    """Does this work directory still describe the VM with these domains (not one made since)?"""
    return wd.read_state().get("prefix") == prefix


def status(box: Box, wd: Workdir) -> dict:
    """What Vagrant and libvirt say, without taking the lock (status must answer while up runs)."""
    if not wd.busy():
        require_up(wd)
    state = wd.read_state()
    domains = libvirt.domains(wd.prefix)
    result = {
        "box": box.name,
        "workdir": str(wd.path),
        "driver": state.get("driver"),
        "provisioned": bool(state.get("provisioned")),
        "machines": [],
    }
    for machine in box.machine_names():
        domain = wd.domain(machine)
        result["machines"].append({"name": machine, "domain": domain, "state": domains.get(domain, "not created")})
    return result
