"""Render Vagrantfile.j2: decisions are made here in Python, every value reaches Ruby as a safe literal."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import jinja2

from vagabond import files, paths, timeouts
from vagabond.bases import guest
from vagabond.catalog.catalogs import open_catalog
from vagabond.catalog.read import Published
from vagabond.definition import project
from vagabond.definition.schema import Box, SyncedFolder, VagrantBase
from vagabond.errors import RenderError, UsageError
from vagabond.host import libvirt
from vagabond.vm import ansiblecfg, playbooks, remote

# A CPU model every qemu TCG build provides. RHEL 9 family boxes need x86-64-v2, so they ask for
# a model with SSE4.2/POPCNT; the box decides through its guest family (see cpu_model_for).
QEMU_CPU_MODEL = "qemu64"
QEMU_CPU_MODEL_V2 = "Nehalem"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9-]{0,30}|default")
_SYMBOL = re.compile(r"[a-z][a-z0-9_]*")


class RubyCode(str):
    """Text that is already a Ruby literal; the only thing the template may print."""


def ruby(value: Any) -> RubyCode:
    """Any box value -> Ruby literal. Strings become single-quoted (no #{} interpolation in Ruby)."""
    if isinstance(value, RubyCode):
        return value
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # raises UndefinedError naming the missing variable
    if value is None:
        return RubyCode("nil")
    if isinstance(value, bool):
        return RubyCode("true" if value else "false")
    if isinstance(value, int):
        return RubyCode(str(value))
    if isinstance(value, str):
        match = _CONTROL.search(value)
        if match:
            raise RenderError(
                f"value {value[:40]!r} contains control character {match.group()!r}, which cannot go into a Vagrantfile"
            )
        return RubyCode("'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
    if isinstance(value, (list, tuple)):
        return RubyCode("[" + ", ".join(ruby(v) for v in value) + "]")
    if isinstance(value, dict):
        return RubyCode("{" + ", ".join(f"{ruby(k)} => {ruby(v)}" for k, v in value.items()) + "}")
    raise RenderError(f"cannot write a {type(value).__name__} into a Vagrantfile")


def ruby_identifier(value: Any) -> RubyCode:
    """A machine name: allow-listed, then quoted; never escaped into shape."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise RenderError(f"{value!r} is not an allowed machine name (lowercase letters, digits, '-')")
    return ruby(value)


def xml_text(value: Any) -> str:
    """Text that vagrant-libvirt copies unescaped into libvirt's domain XML (its ERB template prints
    it raw): escaped here, so markup in it stays text and libvirt stores the value as it was written."""
    if not isinstance(value, str):
        raise RenderError(f"cannot write a {type(value).__name__} into domain XML")
    return escape(value, {'"': "&quot;", "'": "&apos;"})


def ruby_symbol(value: Any) -> RubyCode:
    if not isinstance(value, str) or not _SYMBOL.fullmatch(value):
        raise RenderError(f"{value!r} is not an allowed Ruby symbol")
    return RubyCode(":" + value)


def _only_literals(value: Any) -> Any:
    # Jinja calls this on every {{ expression }}: anything that skipped the filters is a bug.
    if isinstance(value, RubyCode):
        return value
    raise RenderError(f"template printed {value!r} without the ruby filter")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.template_path().parent)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_only_literals,
    )
    env.filters["ruby"] = ruby
    env.filters["ruby_identifier"] = ruby_identifier
    env.filters["ruby_symbol"] = ruby_symbol
    env.filters["xml_text"] = xml_text
    return env


def cpu_model_for(box: Box) -> str:
    """The CPU model under software emulation: the box's own, else one its guest family boots on."""
    if box.spec.resources.cpu:
        return box.spec.resources.cpu
    return QEMU_CPU_MODEL_V2 if box.spec.guest in ("redhat", "fedora") else QEMU_CPU_MODEL


@dataclass(frozen=True)
class RenderOptions:
    driver: str | None = None  # pinned into the file; None: decided by the file when Vagrant loads it
    source: Published | None = None  # the box vagabond up chose; None: the prebuilt box if the box file names one
    boot_timeout: int | None = None  # seconds for IP + SSH; default scales with the driver
    sync_project: str | None = None  # a guest path the project is synced to, besides the box's own folders
    fresh: bool = False  # the base box even when the box file names a prebuilt one (vagabond up chose it)


# Synced folder types Vagrant mounts (and records in the guest's /etc/fstab); rsync copies.
MOUNTED_FOLDERS = ("nfs", "9p", "virtiofs")


def context(box: Box, options: RenderOptions, vagrantfile_dir: Path) -> dict[str, Any]:
    """Everything the template prints, decided here. Paths are relative to the Vagrantfile's own
    directory: a committed file works in every checkout."""
    if options.driver not in (None, "kvm", "qemu"):
        raise RenderError(f"driver must be 'kvm' or 'qemu', not {options.driver!r}")
    spec = box.spec
    machines = [
        {"name": name, "primary": primary, **res.model_dump(), "forwarded_ports": [p.model_dump() for p in ports]}
        for name, primary, res, ports in box.machine_specs()
    ]
    inputs, input_dirs = playbooks.rendered_inputs(box, vagrantfile_dir)
    names = box.machine_names()
    return _box_coordinates(box, options) | {
        "box_name": box.name,
        "description": spec.description,
        "pinned_driver": options.driver,
        "guest": spec.guest,
        "qemu_cpu_model": cpu_model_for(box),
        # The guest's serial console goes to a file beside libvirt's own log, kept on failure.
        "serial_log_dir": str(libvirt.LOG_DIR),
        "authorized_key_prefix": guest.AUTHORIZED_KEY_PREFIX,
        "boot_timeout_kvm": options.boot_timeout or timeouts.for_driver(timeouts.BOOT, "kvm"),
        "boot_timeout_qemu": options.boot_timeout or timeouts.for_driver(timeouts.BOOT, "qemu"),
        "machines": machines,
        "synced_folders": (folders := _synced_folders(box, options, vagrantfile_dir)),
        "fstab_mounts": any(f["type"] in MOUNTED_FOLDERS for f in folders),
        "provision": playbooks.provisions(box),
        "inputs": inputs,
        "input_dirs": input_dirs,
        "site_playbook": f"{playbooks.PROVISION_DIR}/site.yml",
        "ansible_config": f"{playbooks.PROVISION_DIR}/ansible.cfg",
        "ssh_keepalive": [f"-o {key}={value}" for key, value in remote.KEEPALIVE.items()],
        # Plain `vagrant up` installs the requirements through Vagrant's own galaxy support, into the
        # directory vagabond's route installs them to (the first requirements file: Vagrant takes one).
        "galaxy_role_file": playbooks.relative_requirements(box, vagrantfile_dir),
        "galaxy_roles_path": f"{playbooks.PROVISION_DIR}/{ansiblecfg.GALAXY}/roles",
        "groups": {playbooks.GROUP: names},
        "host_vars": {name: dict(playbooks.HOST_VARS) for name in names},
    }


def _box_coordinates(box: Box, options: RenderOptions) -> dict[str, Any]:
    """Which box the Vagrantfile names, where Vagrant finds it and what it checks it against."""
    spec, base = box.spec, box.spec.base
    # A catalog box's own checksum, which Vagrant checks on download; an image base's checksum is
    # the image's, checked by vagabond's import, and its box comes from the local store.
    checksum_type, _, checksum = ((base.checksum or "") if isinstance(base, VagrantBase) else "").partition(":")
    name, version, url = base.box_name, base.version, base.url
    from_registry = None
    if options.source is not None:
        # A catalog lists each box's checksum itself; Vagrant checks it on download. A box from a
        # registry is in Vagrant's store already (vagabond downloaded and checked it).
        name, version = options.source.name, f"= {options.source.version}"
        url = options.source.url if open_catalog(options.source.url).vagrant_reads else None
        checksum_type = checksum = ""
    elif spec.prebuilt is not None and not options.fresh and not open_catalog(spec.prebuilt.catalog).vagrant_reads:
        # Vagrant cannot read a registry: the file boots the prebuilt box when Vagrant's store has a
        # version the constraint allows (`vagabond pull`), and the base box otherwise.
        from_registry = {
            "name": spec.prebuilt.name,
            "version": spec.prebuilt.version,
            "catalog": spec.prebuilt.catalog,
            "store_dir": spec.prebuilt.name.replace("/", "-VAGRANTSLASH-"),
        }
    elif spec.prebuilt is not None and not options.fresh:
        # Plain Vagrant takes the newest prebuilt box the constraint allows from the catalog; site.yml
        # skips the playbooks when that box holds this definition, and runs them when it does not.
        name, version, url = spec.prebuilt.name, spec.prebuilt.version, spec.prebuilt.catalog
        checksum_type = checksum = ""
    return {
        "base_box": name,
        "base_version": version,
        "base_url": url,
        "checksum_type": checksum_type or None,
        "checksum": checksum or None,
        "prebuilt_in_registry": from_registry,
        # A box pinned to one version (prebuilt) or made on this host (mmdebstrap, image) has no
        # newer version to look for: skip Vagrant's catalog request on every up.
        "box_check_update": False
        if options.source is not None or (base.kind != "vagrant" and spec.prebuilt is None)
        else None,
    }


def copies_folders(box: Box, sync_project: str | None) -> bool:
    """Whether the VM gets rsync synced folders: copied at `vagrant up`, and again by `vagrant rsync`."""
    return any(f["type"] == "rsync" for f in _synced_folders(box, RenderOptions(sync_project=sync_project), Path.cwd()))


def _synced_folders(box: Box, options: RenderOptions, vagrantfile_dir: Path) -> list[dict]:
    """A relative src is the project's (the directory holding boxes/), not the work directory's; the
    project synced with --sync is the one vagabond runs in (a shipped box has none of its own)."""
    wanted = [(f, box.project_dir) for f in box.spec.synced_folders]
    if options.sync_project:
        try:
            extra = SyncedFolder(src=".", dest=options.sync_project, exclude=[".git", ".vagabond"])
        except ValueError as exc:  # pydantic's ValidationError: the guest path is the user's
            raise RenderError(f"--sync {options.sync_project!r}: {exc.errors()[0]['msg']}") from None
        wanted.append((extra, project.project_root()))
    folders = []
    for f, home in wanted:
        if os.path.isabs(f.src):
            folders.append(f.model_dump() | {"relative": False})
            continue
        rel = os.path.relpath(home / f.src, vagrantfile_dir)
        # "./" first: Ruby's expand_path would read a leading "~" as a home directory.
        folders.append(f.model_dump() | {"src": rel if rel.startswith("..") else f"./{rel}", "relative": True})
    return folders


def render(box: Box, options: RenderOptions, vagrantfile_dir: Path) -> str:
    template = environment().get_template(paths.template_path().name)
    try:
        return template.render(context(box, options, vagrantfile_dir))
    except jinja2.UndefinedError as exc:
        raise RenderError(f"Vagrantfile.j2: {exc.message}") from None


# The first line of every Vagrantfile vagabond renders (Vagrantfile.j2): a file without it is someone's own.
MARKER = "# -*- mode: ruby -*-\n# Generated by vagabond"


def write(box: Box, options: RenderOptions, directory: Path, *, force: bool = False) -> list[str]:
    """The Vagrantfile and its provisioning directory, written atomically file by file: a failed
    render never leaves a half-written Vagrantfile. A Vagrantfile vagabond did not write is
    replaced only with force; a link where a file or directory goes is refused. Returns what
    changed (nothing when the definition is the same as last time)."""
    text = render(box, options, directory)
    output = directory / "Vagrantfile"
    files.refuse_link(output)
    if output.exists() and not force:
        try:
            ours = output.read_text(encoding="utf-8", errors="replace").startswith(MARKER)
        except OSError:
            ours = False
        if not ours:
            raise UsageError(
                f"{output} exists and was not rendered by vagabond; nothing was written",
                hint="use --force to replace it, or render into another directory (-o DIR)",
            )
    files.make_dirs(directory)
    changed = playbooks.write_provisioning(box, directory)
    if files.write_if_changed(output, text):
        changed.insert(0, "Vagrantfile")
    return changed
