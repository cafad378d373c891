"""A warm image that travels, without a VM: an archive as export writes it is taken in whole (the
layer in the pool, the memory image and key in the cache, a description `load` accepts, vagabond's
own state); one of another VM is a Mismatch with its reason; a hostile or broken one is refused
with nothing of it left behind. (tests/e2e/test_lifecycle.py exports and takes in a real one.)"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import write_box
from tests.helpers import pool_as_files
from tests.unit.vm.test_warm import KEY as WARM_KEY
from tests.unit.vm.test_warmchecks import SAVED
from vagabond import files
from vagabond.definition import boxfile
from vagabond.errors import CommandFailed, UsageError, WarmError
from vagabond.host import ledger, libvirt
from vagabond.host.detect import Decision
from vagabond.vm import lifecycle, warmarchive, warmimage
from vagabond.vm.lifecycle import UpOptions, UpRun
from vagabond.vm.workdir import Workdir

# test_warm's key, of a VM under qemu with 1 MiB (an unpacked memory image's cap stays small); the
# work directory's domains are the test's own.
KEY = {k: v for k, v in WARM_KEY.items() if k != "domains"} | {
    "driver": "qemu",
    "cpu": "qemu64",
    "memory": {"default": 1},
}
MEMORY = b"LibvirtQemudSave" + b"\0" * 4096
DISK = b"QFI\xfb" + b"\0" * 4096


@pytest.fixture
def world(project, tmp_path, monkeypatch):
    """A work directory, a pool directory and a ledger of the test's own, and a libvirt and
    qemu-img that answer as this host's would for a good archive."""
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    pool = pool_as_files(monkeypatch, tmp_path / "pool")
    write_box(project, "wx", "description: x\nbase: {box: org/base}\n")
    box = boxfile.find_box("wx", project / "boxes")
    wd = Workdir.for_box(box)
    host = {"disk": {"format": "qcow2", "virtual-size": 8 << 30}, "xml": None, "networks": [], "defined": []}
    monkeypatch.setattr(libvirt, "networks", lambda: host["networks"])
    monkeypatch.setattr(libvirt, "emulators", lambda: {"/usr/bin/qemu-system-x86_64"})
    monkeypatch.setattr(libvirt, "serial_log", lambda domain: Path(f"/var/log/libvirt/qemu/{domain}-serial.log"))
    monkeypatch.setattr(libvirt, "saved_domain_xml", lambda image: host["xml"] or saved_xml(wd))
    monkeypatch.setattr(libvirt, "define_saved_image", lambda image, xml: host["defined"].append(xml))

    class Info:
        stdout = ""

    def qemu_img(argv, **kwargs):
        if argv[:2] == ["qemu-img", "convert"]:  # export's flattening: the layer as it is, here
            Path(argv[-1]).write_bytes(Path(argv[-2]).read_bytes())
            return Info()
        assert argv[:3] == ["prlimit", "--as=1073741824", "--cpu=30"] and argv[3:5] == ["qemu-img", "info"], argv
        info = Info()
        info.stdout = json.dumps(host["disk"])
        return info

    monkeypatch.setattr(warmarchive.process, "check", qemu_img)
    wanted = KEY | {"domains": [wd.domain("default")]}
    return box, wd, pool, host, wanted


def saved_xml(wd: Workdir) -> str:
    """The domain as libvirt keeps it in the memory image of this work directory's VM."""
    xml = SAVED.replace("vagabond-wx-6b60becd-", wd.prefix).replace("/var/lib/libvirt/images/", f"{libvirt.POOL_DIR}/")
    return xml.replace(">1048576<", ">1024<")  # the key's 1 MiB


def manifest_meta(wd: Workdir, key: dict) -> dict:
    frozen = warmimage.frozen_prefix(wd) + "default-20261207113220.qcow2"
    return {
        "key": key,
        "saved_at": 1.0,
        "box": "wx",
        "machines": [
            {
                "name": "default",
                "domain": wd.domain("default"),
                "uuid": "5435e76c-8002-4a5d-9bf3-16076bcc8f32",
                "memory_image": "default.20261207113220.save",
                "disk": str(libvirt.POOL_DIR / f"{wd.prefix}default.img"),
                "frozen": [frozen],
                "interfaces": [{"mac": "52:54:00:20:d1:fc", "network": "vagrant-libvirt"}],
                "agent": True,
            }
        ],
        "vagrant": {"default": {"box_meta": '{"name":"org/base"}', "id": "x", "vagrant_cwd": "/etc"}},
        "networks": {"vagrant-libvirt": "<network><name>vagrant-libvirt</name><forward mode='bridge'/></network>"},
        "state": {"created": ["../../etc"], "prebuilt": {"name": "org/b", "version": "1", "url": "https://c/m.json"}},
        "ssh": (
            f"Host default\n  HostName 192.168.121.7\n  User vagrant\n  IdentityFile {wd.ssh_key}\n"
            "  IdentityFile /root/.vagrant.d/insecure_private_key\n  IdentitiesOnly yes\n\nHost *\n"
            "  ControlMaster auto\n"
        ),
        "workdir": str(wd.path),
    }


def archive(path: Path, meta: dict, members: dict[str, bytes] | None = None, *, manifest=None, first=None) -> Path:
    """An archive as export writes it (members: name -> bytes, in order after the manifest)."""
    m = meta["machines"][0]
    if members is None:
        members = {m["frozen"][0]: DISK, m["memory_image"] + ".gz": gzip.compress(MEMORY)}
        if not m["agent"]:  # a VM that cannot take a new key travels with its own
            members["ssh_key"] = b"KEY\n"
    sums = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in members.items()}
    body = manifest if manifest is not None else {"format": warmarchive.FORMAT, "meta": meta, "files": sums}
    text = body if isinstance(body, str) else json.dumps(body)
    entries = [("manifest.json", text.encode()), *members.items()]
    if first is not None:
        entries.insert(0, first)
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def m_frozen(meta: dict) -> str:
    return meta["machines"][0]["frozen"][0]


def left_behind(wd: Workdir, pool: Path) -> list[str]:
    cache = warmimage.image_dir(wd).parent
    return sorted(str(p) for p in [*pool.iterdir(), *(cache.iterdir() if cache.is_dir() else [])])


def test_an_exported_image_is_taken_in_whole_and_only_vagabonds_own_values_are_kept(world, tmp_path):
    box, wd, pool, host, wanted = world
    meta = manifest_meta(wd, wanted)
    installed = warmarchive.import_(box, wd, archive(tmp_path / "w.tar", meta), wanted)
    layer = meta["machines"][0]["frozen"][0]
    assert (pool / layer).read_bytes() == DISK, "uploaded through libvirt (a volume only its owner reads)"
    image = warmimage.image_dir(wd)
    assert (image / "default.20261207113220.save").read_bytes() == MEMORY, "the memory image unpacked"
    assert not (image / "ssh_key").exists(), "the VM takes a new key where it is restored"
    assert layer in ledger.read()["warm"], "recorded: gc finds it"
    assert warmimage.load(wd) == installed, "a description load accepts"
    assert host["defined"] and "backingStore" not in host["defined"][0], "the recorded chain dropped"
    assert installed["networks"] == {"vagrant-libvirt": libvirt.MGMT_NETWORK_XML}, "vagabond's network, not theirs"
    assert installed["vagrant"] == {"default": {"box_meta": '{"name":"org/base"}'}}
    assert "created" not in installed["state"] and installed["state"]["box"] == "wx"
    assert installed["state"]["prebuilt"] == {"name": "org/b", "version": "1", "url": "https://c/m.json"}
    assert "insecure_private_key" not in installed["ssh"] and "ControlMaster" not in installed["ssh"]
    assert f"IdentityFile {wd.ssh_key}" in installed["ssh"]


def test_an_image_of_a_vm_with_a_guest_agent_travels_without_a_key_and_one_without_an_agent_needs_its_key(
    world, tmp_path
):
    box, wd, pool, host, wanted = world
    meta = manifest_meta(wd, wanted)
    m = meta["machines"][0]
    m["agent"] = False
    keyless = {m["frozen"][0]: DISK, m["memory_image"] + ".gz": gzip.compress(MEMORY)}
    with pytest.raises(WarmError, match="holds no SSH key, and its VM has no guest agent to take a new one"):
        warmarchive.import_(box, wd, archive(tmp_path / "a.tar", meta, keyless), wanted)
    assert left_behind(wd, pool) == []
    m["agent"] = True
    installed = warmarchive.import_(box, wd, archive(tmp_path / "b.tar", meta, keyless), wanted)
    assert warmimage.rekeys(installed) and not (warmimage.image_dir(wd) / "ssh_key").exists()


def test_an_image_of_another_vm_is_a_mismatch_with_its_reason_and_leaves_nothing(world, tmp_path):
    box, wd, pool, host, wanted = world
    meta = manifest_meta(wd, wanted | {"qemu": "QEMU 9.2.0"})
    with pytest.raises(warmarchive.Mismatch, match=r"the QEMU version differs \(saved QEMU 9.2.0, now QEMU 7.2.0\)"):
        warmarchive.import_(box, wd, archive(tmp_path / "w.tar", meta), wanted)
    other = copy.deepcopy(manifest_meta(wd, wanted))
    other["machines"][0]["domain"] = "vagabond-wx-00000000-default"
    with pytest.raises(warmarchive.Mismatch, match="the work directory differs"):
        warmarchive.import_(box, wd, archive(tmp_path / "o.tar", other), wanted)
    lonely = manifest_meta(wd, wanted)
    lonely["machines"][0]["interfaces"][0]["network"] = "their-net"
    lonely["networks"] = {}
    with pytest.raises(warmarchive.Mismatch, match="its network their-net is not vagabond's management network"):
        warmarchive.import_(box, wd, archive(tmp_path / "n.tar", lonely), wanted)
    assert left_behind(wd, pool) == []


def hostile(wd: Workdir, wanted: dict, case: str, tmp_path: Path, host: dict) -> Path:
    meta = manifest_meta(wd, wanted)
    m = meta["machines"][0]
    good = {m["frozen"][0]: DISK, m["memory_image"] + ".gz": gzip.compress(MEMORY)}
    path = tmp_path / "w.tar"
    if case == "not a tar":
        path.write_bytes(b"nothing of the kind")
        return path
    if case == "manifest not first":
        return archive(path, meta, good, first=("ssh_key", b"x"))
    if case == "a member the manifest does not name":
        archive(path, meta, good)
        with tarfile.open(path, "a") as tar:
            info = tarfile.TarInfo("authorized_keys")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        return path
    if case == "a link in place of a file":
        sums = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in good.items()}
        archive(
            path, meta, {m["frozen"][0]: DISK}, manifest={"format": warmarchive.FORMAT, "meta": meta, "files": sums}
        )
        with tarfile.open(path, "a") as tar:
            info = tarfile.TarInfo(m["memory_image"] + ".gz")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
            tar.addfile(info)
        return path
    if case == "a name out of its directory":
        bad = copy.deepcopy(meta)
        bad["machines"][0]["frozen"] = ["../../vagabond-warm-x.qcow2"]
        return archive(path, bad, {"../../vagabond-warm-x.qcow2": DISK})
    if case == "a file that is not the one named":
        archive(path, meta, good)
        data = bytearray(path.read_bytes())
        at = data.index(DISK)
        data[at + 100] = 1  # same size, another content
        path.write_bytes(bytes(data))
        return path
    if case == "a file missing":
        sums = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in good.items()}
        return archive(
            path, meta, {m["frozen"][0]: DISK}, manifest={"format": warmarchive.FORMAT, "meta": meta, "files": sums}
        )
    if case == "a memory image larger than its VM":
        return archive(path, meta, {m["frozen"][0]: DISK, m["memory_image"] + ".gz": gzip.compress(bytes(3 << 20))})
    if case == "a disk that stands on another file":
        host["disk"] = {"format": "qcow2", "virtual-size": 1 << 30, "backing-filename": "/dev/sda"}
        return archive(path, meta, good)
    if case == "a disk with an external data file":
        host["disk"] = {"format": "qcow2", "virtual-size": 1, "format-specific": {"data": {"data-file": "/etc/x"}}}
        return archive(path, meta, good)
    if case == "a domain with a host device":
        host["xml"] = saved_xml(wd).replace("<memballoon", "<hostdev mode='subsystem' type='pci'/><memballoon")
        return archive(path, meta, good)
    if case == "an SSH configuration that runs a program":
        bad = copy.deepcopy(meta)
        bad["ssh"] = "Host default\n  HostName 192.168.121.7\n  KnownHostsCommand /bin/sh -c id\n"
        return archive(path, bad, good)
    if case == "a sparse member":
        archive(path, meta, good)
        with tarfile.open(path) as tar:
            members = tar.getmembers()
        data = bytearray(path.read_bytes())
        disk = next(m for m in members if m.name == m_frozen(meta))
        data[disk.offset + 156] = ord("S")  # GNU sparse: its size is what it expands to
        header = data[disk.offset : disk.offset + 512]
        header[148:156] = b" " * 8
        header[148:155] = f"{sum(header):06o}\0".encode()
        data[disk.offset : disk.offset + 512] = header
        path.write_bytes(bytes(data))
        return path
    if case == "a file cut short":
        archive(path, meta, good)
        path.write_bytes(path.read_bytes()[:1500])
        return path
    if case == "a manifest that is not JSON":
        return archive(path, meta, good, manifest="{not json")
    if case == "a key with a VM that takes a new one":
        return archive(path, meta, {**good, "ssh_key": b"KEY\n"})
    if case == "a key larger than a key":
        m["agent"] = False
        big = {**good, "ssh_key": bytes(20000)}
        return archive(path, meta, big)
    if case == "a name save never gives":
        bad = copy.deepcopy(meta)
        bad["machines"][0]["memory_image"] = "ssh_key"
        return archive(path, bad, {m["frozen"][0]: DISK, "ssh_key.gz": gzip.compress(MEMORY)})
    if case == "network cards other than its description names":
        bad = copy.deepcopy(meta)
        bad["machines"][0]["interfaces"][0]["mac"] = "52:54:00:00:00:01"
        return archive(path, bad, good)
    if case == "two disk layers":
        bad = copy.deepcopy(meta)
        bad["machines"][0]["frozen"].append(warmimage.frozen_prefix(wd) + "default-base.qcow2")
        return archive(path, bad, good)
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, said",
    [
        ("not a tar", "is not a warm image archive"),
        ("manifest not first", "does not start with its manifest.json"),
        ("a member the manifest does not name", "holds 'authorized_keys', which is not a file its manifest names"),
        ("a link in place of a file", "which is not a file its manifest names"),
        ("a name out of its directory", "names '../../vagabond-warm-x.qcow2', which is not a plain file name"),
        ("a file that is not the one named", "sha256 differs"),
        ("a file missing", "lacks default.20261207113220.save.gz"),
        ("a memory image larger than its VM", "unpacks to more than its VM's memory"),
        ("a disk that stands on another file", "is not a standalone qcow2 disk"),
        ("a disk with an external data file", "is not a standalone qcow2 disk"),
        ("a domain with a host device", "asks for the device <hostdev>"),
        ("an SSH configuration that runs a program", "says KnownHostsCommand"),
        ("two disk layers", "has 2 disk layers, not one standalone disk"),
        ("a sparse member", "which is not a file its manifest names"),
        ("a file cut short", "is not a whole warm image archive"),
        ("a manifest that is not JSON", "is not a whole warm image archive|manifest is not of format"),
        ("a key larger than a key", "its ssh_key is larger than a key"),
        (
            "a key with a VM that takes a new one",
            "holds an SSH key, which a VM that takes a new one never travels with",
        ),
        ("a name save never gives", "its files' names are not those save gives"),
        ("network cards other than its description names", "has the network cards"),
    ],
)
def test_a_hostile_or_broken_archive_is_refused_and_nothing_of_it_stays(world, tmp_path, monkeypatch, case, said):
    box, wd, pool, host, wanted = world
    monkeypatch.setattr(warmarchive, "MEMORY_SLACK", 1 << 20)  # the VM's 1 MiB and 1 MiB more
    before = ledger.read()["warm"]
    with pytest.raises(WarmError, match=said):
        warmarchive.import_(box, wd, hostile(wd, wanted, case, tmp_path, host), wanted)
    assert left_behind(wd, pool) == [] and ledger.read()["warm"] == before


def test_a_vm_given_values_with_e_is_not_exported_unless_they_are_said_to_be_no_secret(world):
    box, wd, pool, host, wanted = world
    given = warmimage.extra_vars_digest(["password=hunter2"])
    with pytest.raises(UsageError, match="provisioned with -e values") as caught:
        warmarchive.check_exportable(box, given, no_secrets=False)
    assert "hunter2" not in caught.value.message and "--no-secrets" in caught.value.hint
    warmarchive.check_exportable(box, given, no_secrets=True)
    warmarchive.check_exportable(box, warmimage.extra_vars_digest(()), no_secrets=False)


def test_up_says_in_one_line_why_it_takes_nothing_in_and_boots_cold(world, tmp_path, capsys, monkeypatch):
    box, wd, pool, host, wanted = world
    monkeypatch.setattr(warmimage, "key_for", lambda *a, **k: copy.deepcopy(wanted))
    run = UpRun(box, wd, UpOptions(warm_from=tmp_path / "none.tar"), Decision("qemu", "test"), None)
    assert lifecycle.warm_image(run) is None
    assert f"no warm image at {tmp_path / 'none.tar'} yet: booting cold" in capsys.readouterr().err
    stale = archive(tmp_path / "stale.tar", manifest_meta(wd, wanted | {"driver": "kvm"}))
    run.opts.warm_from = stale
    assert lifecycle.warm_image(run) is None
    said = " ".join(capsys.readouterr().err.split())
    assert f"booting cold, not from the warm image in {stale}: the driver differs (saved kvm, now qemu)" in said
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"x")
    run.opts.warm_from = broken
    assert lifecycle.warm_image(run) is None
    assert f"warning: not using the warm image in {broken}: {broken} is not a warm image archive" in " ".join(
        capsys.readouterr().err.split()
    )


def test_up_restores_what_it_took_in_and_a_matching_image_here_wins_over_the_file(world, tmp_path, monkeypatch):
    box, wd, pool, host, wanted = world
    monkeypatch.setattr(warmimage, "key_for", lambda *a, **k: copy.deepcopy(wanted))
    good = archive(tmp_path / "good.tar", manifest_meta(wd, wanted))
    run = UpRun(box, wd, UpOptions(warm_from=good), Decision("qemu", "test"), None)
    meta = lifecycle.warm_image(run)
    assert meta is not None and meta["imported"] is True
    taken = []
    monkeypatch.setattr(warmarchive, "import_", lambda *a: taken.append(a))
    assert lifecycle.warm_image(run) == meta and taken == [], "the image here matches: the file is not read again"


def test_what_export_writes_is_what_import_takes_in_and_a_failed_upload_leaves_nothing(world, tmp_path, monkeypatch):
    """save's warm image, exported and taken in again where it was dropped: the layer, the memory
    image and (of a VM that cannot take a new key) the key come back byte for byte; an upload
    libvirt refuses leaves no volume, no record and no warm image behind."""
    box, wd, pool, host, wanted = world
    monkeypatch.setattr(libvirt, "volumes_in_use", lambda names=None: set())  # no domain uses a layer
    meta = manifest_meta(wd, wanted)
    meta["machines"][0]["agent"] = False
    layer, memory = meta["machines"][0]["frozen"][0], meta["machines"][0]["memory_image"]
    (pool / layer).write_bytes(DISK)
    image = warmimage.image_dir(wd)
    files.make_dirs(image, mode=0o700)
    (image / memory).write_bytes(MEMORY)
    (image / "ssh_key").write_bytes(b"KEY\n")
    files.write_json(image / warmimage.META, meta, mode=0o600)
    assert warmimage.load(wd) is not None
    target = tmp_path / "out" / "warm.tar"
    written = warmarchive.export(box, wd, target)
    assert target.stat().st_mode & 0o777 == 0o600 and written["size"] == target.stat().st_size
    with tarfile.open(target) as tar:
        assert tar.getnames()[0] == "manifest.json" and all(m.isreg() and m.mode == 0o600 for m in tar)
    warmimage.drop(wd)
    assert not (pool / layer).exists() and not image.exists()
    warmarchive.import_(box, wd, target, wanted)
    assert (pool / layer).read_bytes() == DISK and (image / memory).read_bytes() == MEMORY
    assert (image / "ssh_key").read_bytes() == b"KEY\n"

    # A VM whose agent gives it a new key: the same image travels without its key.
    (image / "ssh_key").write_bytes(b"KEY\n")
    meta["machines"][0]["agent"] = True
    files.write_json(image / warmimage.META, meta, mode=0o600)
    warmarchive.export(box, wd, target)
    with tarfile.open(target) as tar:
        assert "ssh_key" not in tar.getnames() and "ssh_key.pub" not in tar.getnames()
    warmimage.drop(wd)
    warmarchive.import_(box, wd, target, wanted)
    assert not (image / "ssh_key").exists() and (image / memory).read_bytes() == MEMORY

    warmimage.drop(wd)
    before = ledger.read()["warm"]

    def refused(name, source, pool_name="default"):
        raise CommandFailed(["virsh", "vol-upload"], 1, "", "error: no space left on device")

    monkeypatch.setattr(libvirt, "upload_volume", refused)
    with pytest.raises(CommandFailed, match="no space left"):
        warmarchive.import_(box, wd, target, wanted)
    assert left_behind(wd, pool) == [] and ledger.read()["warm"] == before
