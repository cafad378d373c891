"""Rendered Vagrantfiles against the real Vagrant + vagrant-libvirt: validate, and what Vagrant sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import REPO, require_tool, write_box
from tests.helpers import virsh
from vagabond import paths, process
from vagabond.definition import boxfile
from vagabond.errors import BoxDefinitionError
from vagabond.vm import render, workdir

pytestmark = pytest.mark.real

DUMP = Path(__file__).with_name("vagrant_config_dump.rb")
SHIPPED = sorted(p.stem for p in (REPO / "boxes").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _tools():
    require_tool("vagrant", "ruby")


def vagrant_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A private VAGRANT_HOME: no user Vagrantfile or box store leaks into the test.
    env.update(VAGRANT_HOME=str(home), VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER="libvirt")
    env.pop("VAGABOND_DRIVER", None)
    return env


@pytest.mark.parametrize("driver", [None, "qemu", "kvm"])
@pytest.mark.parametrize("name", SHIPPED)
def test_vagrant_validate_passes_for_shipped_boxes(tmp_path, name, driver):
    box = boxfile.find_box(name, paths.shipped_boxes_dir())
    render.write(box, render.RenderOptions(driver=driver), tmp_path)
    result = process.check(["vagrant", "validate"], cwd=tmp_path, env=vagrant_env(tmp_path / "home"), timeout=120)
    assert "Vagrantfile validated successfully." in result.stdout


def test_vagrant_sees_the_rendered_values(tmp_path):
    box = boxfile.find_box("centos7-selinux", paths.shipped_boxes_dir())
    render.write(box, render.RenderOptions(driver="qemu"), tmp_path)
    seen = json.loads(process.check(["ruby", DUMP, tmp_path], env=vagrant_env(tmp_path / "home")).stdout)
    assert seen["default"]["box"] == "vagabond/centos7"  # imported from CentOS's own cloud image
    assert seen["default"]["driver"] == "qemu"
    assert seen["default"]["memory"] == 1024
    assert seen["default"]["default_prefix"] == workdir.domain_prefix("centos7-selinux", tmp_path)
    # Plain Vagrant's Ansible keeps its connection alive as vagabond's does: a reboot cannot hang it.
    assert seen["default"]["ansible"] == [
        {
            "playbook": "vagabond-provision/site.yml",
            "raw_ssh_args": ["-o ServerAliveInterval=15", "-o ServerAliveCountMax=8"],
        }
    ]


def test_the_vms_own_key_reaches_the_domain_xml_and_vagrants_key_list(tmp_path):
    """vagabond up hands the VM its own key: its public half as an SMBIOS OEM string (the box's
    unit makes it the only authorized key), the private one first in Vagrant's list, the insecure
    key after it (a box made before keeps working). Plain vagrant up: no string, Vagrant's default."""
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    render.write(box, render.RenderOptions(driver="qemu"), tmp_path)
    key = tmp_path / "ssh_key"
    process.check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vagabond", "-f", str(key)])
    pub = (tmp_path / "ssh_key.pub").read_text().strip()
    seen = json.loads(
        process.check(
            ["ruby", DUMP, tmp_path], env=vagrant_env(tmp_path / "home") | {"VAGABOND_SSH_KEY": str(key)}
        ).stdout
    )
    xml = seen["default"]["domain_xml"]
    assert "<smbios mode='sysinfo'/>" in xml and f"<entry>vagabond:authorized-key={pub}</entry>" in xml
    assert seen["default"]["private_key_path"][0] == str(key) and len(seen["default"]["private_key_path"]) >= 2
    # The fallbacks are Vagrant's copies in its home, the user's own: the install's keys are root's,
    # and ssh (so Vagrant) refuses a key another user owns (found by up as a runner's user).
    fallbacks = seen["default"]["private_key_path"][1:]
    assert all(Path(k).is_relative_to(tmp_path / "home") and Path(k).is_file() for k in fallbacks), fallbacks
    plain = json.loads(process.check(["ruby", DUMP, tmp_path], env=vagrant_env(tmp_path / "home")).stdout)["default"]
    assert "sysinfo" not in plain["domain_xml"] and plain["private_key_path"] is None
    (tmp_path / "ssh_key.pub").write_text(pub + "\n<evil/>\n")
    bad = process.run(
        ["vagrant", "validate"], cwd=tmp_path, env=vagrant_env(tmp_path / "home") | {"VAGABOND_SSH_KEY": str(key)}
    )
    assert bad.returncode != 0 and "is not one OpenSSH public key line" in bad.stderr


def test_vagrantfile_honours_vagabond_driver_at_up_time(tmp_path):
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    render.write(box, render.RenderOptions(), tmp_path)
    env = vagrant_env(tmp_path / "home") | {"VAGABOND_DRIVER": "kvm"}
    assert json.loads(process.check(["ruby", DUMP, tmp_path], env=env).stdout)["default"]["driver"] == "kvm"
    env["VAGABOND_DRIVER"] = "xen"
    bad = process.run(["vagrant", "validate"], cwd=tmp_path, env=env)
    assert bad.returncode != 0 and "VAGABOND_DRIVER must be 'kvm' or 'qemu', not 'xen'" in bad.stderr


def fake_host(
    root: Path,
    *,
    kvm: str | None = "rw",
    flags: str = "fpu vmx sse",
    modules=("kvm", "kvm_intel"),
    verdict: bool | None = None,
    cache: Path | None = None,
) -> None:
    """A /dev, /proc and /sys of our making for the Vagrantfile's driver probe."""
    (root / "dev").mkdir(parents=True)
    if kvm == "rw":
        (root / "dev" / "kvm").write_text("")
    elif kvm == "unopenable":  # even root cannot open a directory read-write
        (root / "dev" / "kvm").mkdir()
    (root / "proc" / "sys" / "kernel" / "random").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    (root / "proc" / "sys" / "kernel" / "random" / "boot_id").write_text("b00t\n")
    for module in modules:
        (root / "sys" / "module" / module).mkdir(parents=True)
    if verdict is not None and cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "driver-probe.json").write_text(json.dumps({"key": "b00t:/k:1:1", "smoke": {"banner": verdict}}))


@pytest.mark.parametrize(
    ("host", "override", "driver", "reason"),
    [
        ({}, None, "kvm", "hardware virtualization works: /dev/kvm opens, CPU flag vmx, module kvm_intel"),
        ({"flags": "fpu svm", "modules": ("kvm", "kvm_amd")}, None, "kvm", "CPU flag svm, module kvm_amd"),
        ({"modules": ("kvm", "kvm_pvm")}, None, "qemu", "no kvm_intel or kvm_amd module is loaded"),
        ({"kvm": "unopenable"}, None, "qemu", "/dev/kvm cannot be opened read-write"),
        ({"kvm": None}, None, "qemu", "/dev/kvm does not exist"),
        ({"flags": "fpu sse"}, None, "qemu", "the CPU shows no vmx/svm flag"),
        ({"verdict": False}, None, "qemu", "vagabond's smoke boot of a real kernel under KVM hung on this host"),
        ({"verdict": True}, None, "kvm", "hardware virtualization works"),
        ({"modules": ("kvm", "kvm_pvm")}, "kvm", "kvm", "set by VAGABOND_DRIVER"),
        ({}, "qemu", "qemu", "set by VAGABOND_DRIVER"),
    ],
)
def test_the_vagrantfile_decides_the_driver_on_the_host_it_runs_on(tmp_path, host, override, driver, reason):
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    render.write(box, render.RenderOptions(), tmp_path / "vm")
    cache = tmp_path / "cache"
    fake_host(tmp_path / "host", cache=cache, **host)
    env = vagrant_env(tmp_path / "home") | {"VAGABOND_PROBE_ROOT": str(tmp_path / "host"), "VAGABOND_CACHE": str(cache)}
    if override:
        env["VAGABOND_DRIVER"] = override
    seen = json.loads(process.check(["ruby", DUMP, tmp_path / "vm"], env=env).stdout)["default"]
    assert seen["driver"] == driver
    said = process.check(["ruby", DUMP, tmp_path / "vm", "up"], env=env).stderr
    assert f"vagabond: libvirt driver {driver}: " in said and reason in said, said


# --- injection corpus ------------------------------------------------------------------------------

CORPUS = [
    "#{system('touch CANARY')}",
    "#{`touch CANARY`}",
    "'",
    '"',
    "\\",
    "ends with a backslash\\",
    "`touch CANARY`",
    "%q(touch CANARY)",
    "';system('touch CANARY');'",
    "\\';system('touch CANARY');#",
    "__END__",
    "~root",  # a synced folder's relative src: never a home directory
    "non-ASCII: héllo ✓ 日本",
    "\"; system('touch CANARY'); \"",
    # Markup that reaches libvirt's domain XML through vagrant-libvirt's template.
    "</description><qemu:commandline><qemu:arg value='-device'/></qemu:commandline><description>",
    "a & b < c > d ]]> &amp; &#x41;",
]
REFUSED = ["new\nline", "nul\x00byte", "tab\there", "cr\rhere"]


def domain_description(seen: dict) -> str | None:
    """The description element of the domain XML vagrant-libvirt's template made, as an XML parser
    (libvirt's) reads it; fails when the value broke out of the element."""
    root = ElementTree.fromstring(seen["domain_xml"])
    assert [child.tag for child in root].count("description") == 1
    assert not any("commandline" in el.tag for el in root.iter()), "markup from the box file became XML"
    return root.findtext("description")


# Every free-text field that reaches the Vagrantfile, with the prefix its schema requires.
# The description goes on into libvirt's domain XML: what counts is what an XML parser reads there.
FREE_TEXT = {
    "description": ("", domain_description),
    "base.url": ("", lambda d: d["box_url"][0]),  # Vagrant keeps box_url as a list
    "synced_folders[0].src": ("", lambda d: d["synced_folders"][1][0]),
    "synced_folders[0].dest": ("/", lambda d: d["synced_folders"][1][1]),
}


def box_yaml(payload: str) -> str:
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    return (
        f"description: {q(payload)}\n"
        f"base:\n  box: centos/7\n  url: {q(payload)}\n"
        f"synced_folders:\n  - src: {q(payload)}\n    dest: {q('/' + payload)}\n"
    )


@pytest.mark.parametrize("payload", CORPUS, ids=range(len(CORPUS)))
def test_injection_corpus_comes_out_byte_exact_and_runs_nothing(project, payload):
    write_box(project, "inj", box_yaml(payload))
    work = project / "work"
    render.write(boxfile.find_box("inj", project / "boxes"), render.RenderOptions(driver="qemu"), work)
    env = vagrant_env(project / "home")
    # `vagrant validate` executes the Vagrantfile: the point is that nothing in it runs the payload.
    process.run(["vagrant", "validate"], cwd=work, env=env, timeout=120)
    seen = json.loads(process.check(["ruby", DUMP, work], cwd=work, env=env).stdout)["default"]
    for field, (prefix, get) in FREE_TEXT.items():
        if field == "synced_folders[0].src":
            prefix = f"{project}/"  # a relative src is the project's directory
        assert get(seen) == prefix + payload, f"{field} changed on its way to Vagrant"
    assert not list(project.rglob("CANARY")), "the payload ran"


@pytest.mark.parametrize("payload", REFUSED, ids=["newline", "nul", "tab", "cr"])
def test_control_characters_are_refused_with_clear_error(project, payload):
    write_box(project, "inj", box_yaml(payload))
    with pytest.raises(BoxDefinitionError) as info:
        boxfile.find_box("inj", project / "boxes")
    assert len(info.value.problems) == 4
    for problem in info.value.problems:
        assert "control character" in problem and problem.startswith("boxes/inj.yaml:")


@pytest.mark.parametrize(
    ("field", "yaml"),
    [
        ("base.box", "base: {box: \"centos/7'#{system('touch CANARY')}\"}"),
        ("base.version", "base: {box: centos/7, version: \"#{system('touch CANARY')}\"}"),
        ("guest", "base: {box: centos/7}\nguest: \"debian; system('touch CANARY')\""),
        ("machines[0].name", "base: {box: centos/7}\nmachines: [{name: \"#{system('touch CANARY')}\"}]"),
        ("synced_folders[0].type", 'base: {box: centos/7}\nsynced_folders: [{src: a, dest: /b, type: "rsync\'"}]'),
        ("forwarded_ports[0].host_ip", 'base: {box: centos/7}\nforwarded_ports: [{guest: 1, host: 2, host_ip: "\'"}]'),
        ("env.A'B", 'base: {box: centos/7}\nenv: {"A\'B": x}'),
    ],
)
def test_allow_listed_fields_refuse_payloads(project, field, yaml):
    write_box(project, "inj", f"description: x\n{yaml}\n")
    with pytest.raises(BoxDefinitionError) as info:
        boxfile.find_box("inj", project / "boxes")
    assert any(f": {field}: " in p or f": {field.split('.')[0]}" in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("in_store", "constraint", "boots"),
    [
        (None, None, "base"),
        ("1.2.0", None, "prebuilt"),
        ("1.2.0", ">= 2", "base"),  # the version in the store is not one the box file allows
        ("2.0.1", ">= 2, < 3", "prebuilt"),
    ],
)
def test_a_prebuilt_box_in_a_registry_boots_by_name_once_pulled(project, in_store, constraint, boots):
    """Vagrant cannot read a registry: the rendered file boots the prebuilt box when Vagrant's store
    has an allowed version of it (what `vagabond pull` adds), the base box otherwise."""
    version = f"  version: '{constraint}'\n" if constraint else ""
    write_box(
        project,
        "reg",
        "description: x\nbase: {box: org/base}\n"
        f"prebuilt:\n  name: org/reg-deps\n  catalog: oci://ghcr.io/org/repo/reg\n{version}",
    )
    box = boxfile.find_box("reg", project / "boxes")
    out = project / "out"
    render.write(box, render.RenderOptions(driver="qemu"), out)
    home = project / "home"
    if in_store:
        stored = home / "boxes" / "org-VAGRANTSLASH-reg-deps" / in_store / "libvirt"
        stored.mkdir(parents=True)
        (stored / "metadata.json").write_text('{"provider": "libvirt", "format": "qcow2", "virtual_size": 1}')
    seen = json.loads(process.check(["ruby", DUMP, out], env=vagrant_env(home)).stdout)["default"]
    if boots == "prebuilt":
        assert (seen["box"], seen["box_version"], seen["box_url"]) == ("org/reg-deps", constraint, None)
    else:
        assert seen["box"] == "org/base"
    up_note = process.run(["vagrant", "validate"], cwd=out, env=vagrant_env(home))
    assert up_note.ok, up_note.stderr


CAPTURE = Path(__file__).with_name("domain_xml_capture.rb")
# What vagrant-libvirt's domain.xml.erb writes whether or not the configuration sets it.
TEMPLATE_EMPTIES = ("uuid", "title", "os/kernel", "os/initrd", "os/cmdline")


@pytest.mark.parametrize(
    ("name", "driver"),
    [(name, "kvm") for name in SHIPPED] + [("debian12", "qemu"), ("alma9-fips", "qemu"), ("alma10", "qemu")],
)
def test_the_domain_vagrant_libvirt_defines_passes_libvirts_schema_and_parser(tmp_path, name, driver):
    """Every x64 runner takes driver kvm, which this host cannot boot. What can be checked is what
    libvirt is given: vagrant-libvirt's own CreateDomain action runs on the rendered Vagrantfile
    (with this VM's key, so the SMBIOS block is in), its XML is validated against libvirt's RNG
    schema (`virsh define --validate`) and defined by libvirt's parser, as vagrant-libvirt does it,
    then undefined. The template writes some elements even when empty (libvirt's parser reads an
    empty one as absent, its schema refuses it): those are dropped for the schema check only, after
    checking that they are empty."""
    require_tool("virsh")
    if subprocess.run(["virsh", "-c", "qemu:///system", "uri"], capture_output=True).returncode != 0:
        pytest.skip("REAL TOOL MISSING: libvirtd is not running (scripts/sandbox.sh start)")
    box = boxfile.find_box(name, paths.shipped_boxes_dir())
    render.write(box, render.RenderOptions(driver=driver), tmp_path)
    key = tmp_path / "ssh_key"
    process.check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vagabond", "-f", str(key)])
    env = vagrant_env(tmp_path / "home") | {"VAGABOND_SSH_KEY": str(key)}
    xml = process.check(["ruby", CAPTURE, tmp_path], env=env, timeout=120).stdout
    root = ElementTree.fromstring(xml)
    assert root.get("type") == driver
    domain = root.findtext("name")
    assert domain and domain.startswith(workdir.domain_prefix(name, tmp_path))
    for path in TEMPLATE_EMPTIES:
        assert (root.findtext(path) or "") == "", f"{path} carries a value: the schema must see it"
    names = "|".join(path.rpartition("/")[2] for path in TEMPLATE_EMPTIES)
    for_schema = tmp_path / "for-schema.xml"
    for_schema.write_text(re.sub(rf"\s*<({names})></\1>", "", xml))
    for_parser = tmp_path / "domain.xml"
    for_parser.write_text(xml)
    try:
        virsh("define", "--validate", str(for_schema))
        virsh("undefine", domain)
        virsh("define", str(for_parser))
        defined = ElementTree.fromstring(virsh("dumpxml", "--inactive", domain))
    finally:
        virsh("undefine", domain, check=False)
    assert defined.get("type") == driver
    cpu = defined.find("cpu")
    if driver == "kvm":  # the host's CPU as it is; under TCG a model it emulates in full
        assert cpu is not None and cpu.get("mode") == "host-passthrough"
    elif render.cpu_model_for(box) == "max":  # every feature TCG emulates: libvirt's maximum mode
        assert cpu is not None and cpu.get("mode") == "maximum"
    else:
        assert cpu is not None and cpu.get("mode") == "custom" and cpu.findtext("model") == render.cpu_model_for(box)
    [disk] = defined.findall("devices/disk")
    assert disk.find("source").get("file").endswith(f"{domain}.img")
    oem = [entry.text for entry in defined.iterfind("sysinfo/oemStrings/entry")]
    assert oem == [f"vagabond:authorized-key={(tmp_path / 'ssh_key.pub').read_text().strip()}"]
    assert not any("commandline" in element.tag for element in defined.iter())
