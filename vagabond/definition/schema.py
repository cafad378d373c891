"""The box file's schema: every key, its type, default and check (pydantic, strict: unknown keys
are errors), and the Box a loaded file becomes."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from vagabond import paths

# --- field types --------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    match = _CONTROL.search(value)
    if match:
        raise ValueError(
            f"control character {match.group()!r} is not allowed (write the value on one line, without tabs or NUL)"
        )
    return value


def _pattern(regex: str, what: str):
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return AfterValidator(check)


# Free text: anything printable. It reaches Ruby only through the ruby-literal filter.
Text = Annotated[str, AfterValidator(_printable)]
# Names that become Ruby identifiers or libvirt/vagrant names are allow-listed, not escaped.
Identifier = Annotated[
    str, _pattern(r"[a-z][a-z0-9-]{0,30}", "name (lowercase letters, digits and '-', starting with a letter)")
]
BoxName = Annotated[
    str,
    _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?", "Vagrant box name (like 'centos/7')"),
]
VersionConstraint = Annotated[
    str,
    _pattern(
        r" *(?:(?:[<>]=?|=|!=|~>) *)?[0-9]+(?:\.[0-9]+)*(?: *, *(?:(?:[<>]=?|=|!=|~>) *)?[0-9]+(?:\.[0-9]+)*)* *",
        "version constraint (like '>= 2004.01' or '~> 9.4, < 10')",
    ),
]
Checksum = Annotated[str, _pattern(r"sha(256|384|512):[0-9a-fA-F]{64,128}", "checksum (sha256:HEX)")]
EnvName = Annotated[str, _pattern(r"[A-Za-z_][A-Za-z0-9_]*", "environment variable name")]
GuestPath = Annotated[str, AfterValidator(_printable), _pattern(r"/.*", "absolute guest path")]
Port = Annotated[int, Field(ge=1, le=65535)]


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- base box kinds -----------------------------------------------------------------------------


class VagrantBase(_Strict):
    """A box Vagrant can add by name: from a box catalog, a URL or the local box store."""

    kind: Literal["vagrant"] = Field("vagrant", description="A box Vagrant adds itself (the default kind).")
    box: BoxName = Field(description="The box's name in Vagrant's store or catalog.", examples=["generic/debian12"])
    version: VersionConstraint | None = Field(
        None, description="Which versions Vagrant may take (its syntax).", examples=["~> 4.3"]
    )
    url: Text | None = Field(
        None, description="A catalog's metadata.json or a box file, where Vagrant has no catalog of its own."
    )
    checksum: Checksum | None = Field(
        None, description="The box file's checksum, checked on download.", examples=["sha256:0f3c..."]
    )

    @property
    def box_name(self) -> str:
        return self.box

    @model_validator(mode="after")
    def _checked_download(self) -> VagrantBase:
        # A box file names no checksum of its own: fetched over plain http, anyone on the way could
        # replace it. (A catalog .json lists one per version, which Vagrant checks.)
        if self.url and self.url.startswith("http://") and not self.url.endswith(".json") and not self.checksum:
            raise ValueError("a box file fetched over plain http needs checksum: sha256:HEX (or an https:// URL)")
        return self


class _LocalBase(_Strict):
    """A base box vagabond makes itself: it has a box name, no version constraint, and a catalog
    only where the project publishes the made box for plain Vagrant."""

    box: BoxName = Field(description="The name the made box gets in Vagrant's store.", examples=["vagabond/debian12"])
    catalog: Text | None = Field(
        None,
        description="A metadata.json catalog the made box is published to (vagabond publish): the rendered "
        "Vagrantfile names it, so plain `vagrant up` on a machine that never ran vagabond downloads it.",
        examples=["https://example.org/boxes/debian12/metadata.json"],
    )

    @field_validator("catalog")
    @classmethod
    def _catalog_vagrant_reads(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(https?|file)://\S+\.json", value):
            raise ValueError("a catalog Vagrant reads: an http(s):// or file:// URL of its metadata.json")
        return value

    @property
    def box_name(self) -> str:
        return self.box

    @property
    def version(self) -> None:
        return None

    @property
    def url(self) -> str | None:
        return self.catalog


class MmdebstrapBase(_LocalBase):
    """A Debian/Ubuntu base box built locally from the distribution's packages (vagabond base build)."""

    kind: Literal["mmdebstrap"] = Field(description="Built locally from the distribution's packages.")
    suite: Annotated[str, _pattern(r"[a-z][a-z0-9-]*", "suite name (like 'bookworm')")] = Field(
        description="The Debian or Ubuntu suite.", examples=["bookworm"]
    )
    packages: list[Annotated[str, _pattern(r"[a-z0-9][a-z0-9+.-]*", "Debian package name")]] = Field(
        [], description="Packages beyond the base set.", examples=[["curl", "git"]]
    )
    disk: GiB = Field(8, ge=2, le=1024, description="The base image's disk, in GiB (or with a unit: 8G).")


class ImageBase(_LocalBase):
    """A distribution's generic cloud image (qcow2 with cloud-init), imported with `vagabond import`."""

    kind: Literal["image"] = Field(description="Imported from a distribution's generic cloud image.")
    image: Text = Field(
        description="A local path or an http(s)/file URL, pinned to a dated file (never a moving 'latest').",
        examples=["https://cloud.centos.org/centos/7/images/CentOS-7-x86_64-GenericCloud-2211.qcow2"],
    )
    checksum: Checksum | None = Field(
        None, description="sha256:HEX, where the distribution's published value is known."
    )
    checksums_url: Text | None = Field(
        None, description="Else the distribution's checksum file (sha256sum or BSD lines), read over https."
    )


Base = Annotated[
    Union[VagrantBase, MmdebstrapBase, ImageBase],
    Field(discriminator="kind"),
    BeforeValidator(lambda v: {"kind": "vagrant", **v} if isinstance(v, dict) and "kind" not in v else v),
]

# --- the rest of a box ---------------------------------------------------------------------------


_SIZE = re.compile(r"\s*(\d{1,9}(?:\.\d{1,6})?)\s*([KMGT]i?B?)?\s*", re.I)
_UNITS = {"K": Fraction(1, 1024), "M": 1, "G": 1024, "T": 1024 * 1024}  # in MiB


def _size_in(unit: str):
    """A size given as a number (in ``unit``) or with a unit of its own: 2G, 2048M, 2 GiB."""

    def convert(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str):
            return value
        match = _SIZE.fullmatch(value)
        if not match:
            raise ValueError(f"{value!r} is not a size: write a number of {unit}, or one with a unit (512M, 2G)")
        mib = Fraction(match[1]) * Fraction(_UNITS[(match[2] or unit[0]).upper()[0]])
        amount = mib / Fraction(_UNITS[unit[0]])
        if amount.denominator != 1:
            raise ValueError(f"{value!r} is not a whole number of {unit}")
        return int(amount)

    return BeforeValidator(convert)


MiB = Annotated[int, _size_in("MiB")]
GiB = Annotated[int, _size_in("GiB")]


class Resources(_Strict):
    memory: MiB = Field(1024, ge=256, le=1024 * 1024, description="Memory in MiB, or with a unit: 2G, 2048M.")
    cpus: int = Field(1, ge=1, le=256, description="Virtual CPUs.")
    disk: GiB = Field(20, ge=1, le=65536, description="The VM's disk in GiB, or with a unit: 40G.")
    cpu: Literal["qemu64", "Nehalem", "max"] | None = Field(
        None,
        description="The CPU under software emulation (under KVM the host's own): qemu64 (x86-64), Nehalem "
        "(x86-64-v2, which EL 9 needs), max (all TCG emulates, x86-64-v3 included, which EL 10 needs). "
        "Default: Nehalem for the redhat and fedora families, qemu64 otherwise.",
    )


class ResourceOverrides(_Strict):
    memory: MiB | None = Field(None, ge=256, le=1024 * 1024, description="This machine's memory (default: the box's).")
    cpus: int | None = Field(None, ge=1, le=256, description="This machine's CPUs (default: the box's).")
    disk: GiB | None = Field(None, ge=1, le=65536, description="This machine's disk (default: the box's).")


class Modes(_Strict):
    selinux: Literal["enforcing", "permissive", "disabled"] | None = Field(
        None, description="SELinux mode, set by a playbook and checked in the guest after provisioning."
    )
    fips: bool = Field(False, description="FIPS mode (a reboot), checked in the guest after provisioning.")


class Playbook(_Strict):
    path: Annotated[str, AfterValidator(_printable)] = Field(
        description="The playbook, relative to the project.", examples=["playbooks/deps.yml"]
    )
    vars: dict[Annotated[str, _pattern(r"[A-Za-z_][A-Za-z0-9_]*", "Ansible variable name")], Any] = Field(
        {}, description="Variables for this playbook only (they win over the box's vars)."
    )


class Prebuilt(_Strict):
    name: BoxName = Field(description="The prebuilt box's name.", examples=["myorg/debian12-selinux"])
    catalog: Text = Field(
        description="Where it is published: oci://REGISTRY/NAMESPACE/NAME, or a catalog's metadata.json URL.",
        examples=["oci://ghcr.io/myorg/myrepo/debian12-selinux"],
    )
    version: VersionConstraint | None = Field(
        None,
        description="Which versions may be used (Vagrant's syntax): plain Vagrant's box_version; vagabond "
        "picks the newest built from this definition among them.",
        examples=["~> 1.0"],
    )


class SyncedFolder(_Strict):
    src: Text = Field(description="A host directory, relative to the project.", examples=["."])
    dest: GuestPath = Field(description="Where it appears in the guest.", examples=["/src"])
    type: Literal["rsync", "nfs", "9p", "virtiofs"] = Field("rsync", description="How it gets there (rsync copies).")
    exclude: list[Text] = Field([], description="rsync only: patterns left out.", examples=[[".git"]])


class ForwardedPort(_Strict):
    guest: Port = Field(description="The port in the guest.", examples=[80])
    host: Port = Field(description="The port on the host.", examples=[8080])
    host_ip: Annotated[str, AfterValidator(_ip)] = Field("127.0.0.1", description="The host address it listens on.")
    protocol: Literal["tcp", "udp"] = Field("tcp", description="tcp or udp.")


class Machine(_Strict):
    name: Identifier = Field(description="The machine's name (lowercase letters, digits, '-').", examples=["db"])
    primary: bool = Field(False, description="The machine `run` and `test` use (default: the first).")
    resources: ResourceOverrides = Field(ResourceOverrides(), description="What differs from the box's resources.")
    forwarded_ports: list[ForwardedPort] | None = Field(None, description="This machine's ports (default: the box's).")


class BoxSpec(_Strict):
    """A box file: boxes/<name>.yaml."""

    description: Text = Field(description="One line on what the box is for.", examples=["CentOS 7, SELinux enforcing"])
    base: Base = Field(description="The base box: a Vagrant box, or one vagabond builds or imports (see kind).")
    guest: Literal["debian", "ubuntu", "redhat", "fedora", "suse", "arch", "linux"] | None = Field(
        None, description="The guest's family: saves Vagrant its probes, and picks the mode playbooks' tasks."
    )
    resources: Resources = Field(Resources(), description="Memory, CPUs and disk of each machine.")
    modes: Modes = Field(Modes(), description="Security modes to set and check (SELinux, FIPS).")
    packages: list[Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9+._-]*", "package name")]] = Field(
        [],
        description="Packages the guest's package manager installs when the VM is provisioned (apt, yum, dnf; "
        "others through Ansible's package module), after the modes and before the playbooks, and baked into "
        "prebuilt boxes: the test tools a project needs, without a playbook.",
        examples=[["make", "gcc"]],
    )
    playbooks: list[Annotated[Playbook, BeforeValidator(lambda v: {"path": v} if isinstance(v, str) else v)]] = Field(
        [], description="Dependency playbooks, run in order after the mode playbooks (a path, or path and vars)."
    )
    vars: dict[Annotated[str, _pattern(r"[A-Za-z_][A-Za-z0-9_]*", "Ansible variable name")], Any] = Field(
        {}, description="Ansible variables for every playbook, the mode playbooks too (a playbook's own vars win)."
    )
    prebuilt: Prebuilt | None = Field(None, description="The prebuilt dependency box `up` boots when it is current.")
    machines: list[Machine] = Field([], description="Several machines in one VM set (default: one, 'default').")
    synced_folders: list[SyncedFolder] = Field([], description="Host directories in the guest.")
    forwarded_ports: list[ForwardedPort] = Field([], description="Guest ports on the host.")
    env: dict[EnvName, Text] = Field({}, description="Environment of every `vagabond run` and `test` command.")
    verify: list[Text] = Field(
        [], description="Shell command lines `vagabond test` runs in the primary machine, each its own result."
    )

    @model_validator(mode="after")
    def _unique_machines(self) -> BoxSpec:
        names = [m.name for m in self.machines]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"machine names must be unique: {', '.join(dupes)} repeated")
        if sum(m.primary for m in self.machines) > 1:
            raise ValueError("at most one machine can be primary")
        return self


# --- the box a file becomes ------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    name: str
    path: Path
    spec: BoxSpec
    origin: str = ""  # which box directory it came from: project, shipped, --boxes-dir, VAGABOND_BOXES

    @property
    def project_dir(self) -> Path:
        """Playbook paths in a box file are relative to the directory above boxes/."""
        return self.path.parent.parent

    def machine_names(self) -> list[str]:
        return [m.name for m in self.spec.machines] or ["default"]

    def machine_specs(self) -> list[tuple[str, bool, Resources, list[ForwardedPort]]]:
        """Each machine as it runs: name, primary, resources (its overrides over the box's), ports."""
        spec = self.spec
        if not spec.machines:
            return [("default", True, spec.resources, spec.forwarded_ports)]
        return [
            (
                m.name,
                m.primary,
                spec.resources.model_copy(update={k: v for k, v in m.resources.model_dump().items() if v}),
                spec.forwarded_ports if m.forwarded_ports is None else m.forwarded_ports,
            )
            for m in spec.machines
        ]

    def memory_mib(self) -> int:
        """What the box's machines need at once."""
        return sum(res.memory for _, _, res, _ in self.machine_specs())

    def primary(self) -> str:
        """The machine commands go to when none is named: the one marked primary, else the first."""
        return next((m.name for m in self.spec.machines if m.primary), self.machine_names()[0])

    def playbook_paths(self) -> list[Path]:
        return [resolve_playbook(self, p.path) for p in self.spec.playbooks]


def resolve_playbook(box: Box, path: str) -> Path:
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    local = box.project_dir / candidate
    if local.exists():
        return local
    shipped = paths.data_dir() / candidate
    return shipped if shipped.exists() else local
