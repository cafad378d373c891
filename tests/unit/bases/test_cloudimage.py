"""Cloud images: the NoCloud user-data, checksum files, and downloads that resume, are checked and
leave nothing behind when they cannot be had."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from vagabond import paths
from vagabond.bases import cloudimage, guest
from vagabond.cli.app import app
from vagabond.definition import boxfile
from vagabond.errors import UsageError, VagabondError


def test_user_data_makes_the_vagrant_user_and_a_self_cleaning_unit():
    text = cloudimage.user_data()
    assert text.startswith("#cloud-config\n")
    config = json.loads(text.split("\n", 1)[1])
    vagrant = next(u for u in config["users"] if isinstance(u, dict))
    assert vagrant["name"] == "vagrant" and vagrant["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert vagrant["ssh_authorized_keys"] == [guest.INSECURE_PUBLIC_KEY]
    finish = next(f for f in config["write_files"] if f["path"].endswith("vagabond-finish.service"))
    assert "After=cloud-final.service" in finish["content"]
    assert f"ExecStart={cloudimage.FINISH_SCRIPT_PATH}" in finish["content"]
    script = next(f for f in config["write_files"] if f["path"] == cloudimage.FINISH_SCRIPT_PATH)
    assert script["permissions"] == "0755" and "cloud-init clean --logs" in script["content"]


def test_the_import_boot_leaves_a_box_whose_network_fits_any_card_and_no_cloud_init(tmp_path):
    """The finish script, run with / moved into a scratch root: cloud-init's network files for the
    import boot's card (CentOS 7's ifcfg, NetworkManager's keyfile, netplan) lose its MAC address,
    cloud-init is switched off, and the guest's identity goes."""
    root = tmp_path
    files = {
        "etc/sysconfig/network-scripts/ifcfg-eth0": (
            "BOOTPROTO=dhcp\nDEVICE=eth0\nHWADDR=52:54:00:aa:bb:cc\nONBOOT=yes\n"
        ),
        "etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection": (
            "[connection]\nid=cloud-init eth0\ntype=ethernet\n"
            "[ethernet]\nmac-address=52:54:00:AA:BB:CC\n[ipv4]\nmethod=auto\n"
        ),
        "etc/netplan/50-cloud-init.yaml": (
            "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n"
            "      match:\n        macaddress: 52:54:00:aa:bb:cc\n      set-name: eth0\n  version: 2\n"
        ),
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "secret",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    script = (
        cloudimage.FINISH_SCRIPT.replace(" /etc/", f" {root}/etc/")
        .replace(" /var/", f" {root}/var/")
        .replace("/dev/console", f"{root}/console")
    )
    assert "/etc/" not in script.replace(f"{root}/etc/", ""), "every path moved into the scratch root"
    env = {"PATH": "/usr/bin:/bin"}  # no cloud-init here: the script goes on without it
    subprocess.run(["sh", "-c", script], check=True, env=env)
    assert "HWADDR" not in (root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    assert "DEVICE=eth0" in (root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    keyfile = (root / "etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection").read_text()
    assert "mac-address" not in keyfile and "method=auto" in keyfile
    netplan = (root / "etc/netplan/50-cloud-init.yaml").read_text()
    assert "macaddress" not in netplan and "dhcp4: true" in netplan
    assert (root / "etc/cloud/cloud-init.disabled").exists()
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / "etc/ssh/ssh_host_ed25519_key").exists()
    assert "vagabond-finish" in (root / "console").read_text(), "the host sees the import boot end"


@pytest.mark.parametrize(
    ("release", "switched"),
    [
        ("CentOS Linux release 7.9.2009 (Core)\n", True),
        ("CentOS Stream release 8\n", False),
        (None, False),  # Debian, AlmaLinux: no /etc/centos-release
    ],
)
def test_the_import_boot_points_only_centos_7_at_the_vault(tmp_path, release, switched):
    """The cloud-config's own command, run with /etc moved into a scratch root."""
    config = json.loads(cloudimage.user_data().split("\n", 1)[1])
    etc = tmp_path / "etc"
    (etc / "yum.repos.d").mkdir(parents=True)
    for item in config["write_files"]:
        if item["path"] == cloudimage.CENTOS7_REPOS_STAGED:
            staged = tmp_path / item["path"].lstrip("/")
            staged.parent.mkdir(parents=True)
            staged.write_text(item["content"])
    if release is not None:
        (etc / "centos-release").write_text(release)
    (command,) = [c for c in config["runcmd"] if c[:2] == ["sh", "-c"]]
    subprocess.run(["sh", "-c", command[2].replace("/etc/", f"{etc}/")], check=True)
    repo = etc / "yum.repos.d" / "CentOS-Base.repo"
    assert repo.exists() == switched
    if switched:
        assert "baseurl=https://vault.centos.org/7.9.2009/os/$basearch/" in repo.read_text()
        assert "[updates]" in repo.read_text() and "[extras]" in repo.read_text()
    assert not (etc / "vagabond").exists(), "nothing of it stays"


def test_fetch_checks_the_checksum_of_a_local_image(tmp_path):
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"image bytes")
    good = "sha256:" + hashlib.sha256(b"image bytes").hexdigest()
    assert cloudimage.fetch(str(image), good, tmp_path) == image
    assert cloudimage.fetch(image.as_uri(), None, tmp_path) == image
    with pytest.raises(VagabondError, match="refusing a changed or corrupt image"):
        cloudimage.fetch(str(image), "sha256:" + "0" * 64, tmp_path)
    assert image.read_bytes() == b"image bytes", "a local image is the user's: never removed"
    with pytest.raises(UsageError, match="does not exist"):
        cloudimage.fetch(str(tmp_path / "nope.qcow2"), None, tmp_path)


SUM = "a" * 64


@pytest.mark.parametrize(
    "text",
    [
        f"{SUM}  CentOS-7-x86_64-GenericCloud-2211.qcow2\n",
        f"{'b' * 64}  other.qcow2\n{SUM} *CentOS-7-x86_64-GenericCloud-2211.qcow2\n",
        f"SHA256 (CentOS-7-x86_64-GenericCloud-2211.qcow2) = {SUM}\n",
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# comment\nSHA256 "
        f"(CentOS-7-x86_64-GenericCloud-2211.qcow2) = {SUM.upper()}\n"
        "-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n",
    ],
)
def test_checksum_files_in_either_form(text):
    assert cloudimage.parse_checksums(text, "CentOS-7-x86_64-GenericCloud-2211.qcow2") == SUM
    assert cloudimage.parse_checksums(text, "absent.qcow2") is None


class Server:
    """A local HTTP server that honours Range, as distributions' mirrors do, and records requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.ranges = files, []
        self.announce: dict[str, int] = {}  # a length to announce instead of the body's (a short response)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng := self.headers.get("Range"):
                    outer.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(outer.announce.get(self.path, len(body)) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    data = bytes(range(256)) * 4096
    srv = Server(
        {"/img.qcow2": data, "/CHECKSUM": f"SHA256 (img.qcow2) = {hashlib.sha256(data).hexdigest()}\n".encode()}
    )
    yield srv, data
    srv.httpd.shutdown()


def test_a_download_is_checked_cached_by_checksum_and_resumed(server, tmp_path):
    srv, data = server
    sha = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "images"
    cache.mkdir()
    # An earlier download stopped half-way: the rest is asked for with a Range request.
    (cache / f"{sha[:16]}-img.qcow2.partial").write_bytes(data[:1000])
    path = cloudimage.fetch(f"{srv.url}/img.qcow2", None, cache, f"{srv.url}/CHECKSUM")
    assert path == cache / f"{sha[:16]}-img.qcow2" and path.read_bytes() == data
    assert srv.ranges == ["bytes=1000-"]
    assert cloudimage.fetch(f"{srv.url}/img.qcow2", f"sha256:{sha}", cache) == path, "downloaded once"


def test_a_corrupt_download_is_refused_and_not_kept(server, tmp_path):
    srv, _ = server
    with pytest.raises(
        VagabondError,
        match=r"sha256 is .*, the pinned checksum says 0+: refusing a changed or corrupt image; the download "
        r"was removed",
    ):
        cloudimage.fetch(f"{srv.url}/img.qcow2", "sha256:" + "0" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_image_is_one_line_naming_the_url_and_leaves_nothing(tmp_path, monkeypatch):
    from vagabond.host import libvirt

    monkeypatch.setattr(libvirt, "domains", lambda prefix="": {})  # a host without libvirt will do
    monkeypatch.setattr(libvirt, "networks", lambda: [])
    monkeypatch.setattr(libvirt, "volumes", lambda prefix="", pool="default": [])
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "boxes").mkdir()
    url = "http://127.0.0.1:9/CentOS-7-x86_64-GenericCloud-2211.qcow2"  # nothing listens on port 9
    (tmp_path / "boxes" / "el7.yaml").write_text(
        f"description: x\nbase: {{kind: image, image: '{url}', checksum: 'sha256:{SUM}', box: test/el7}}\n"
    )
    result = CliRunner().invoke(app, ["up", "el7"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"cannot download {url}: " in errors[0], result.stderr
    assert not list((tmp_path / "cache").rglob("*.qcow2*")) and not list((tmp_path / "cache").rglob("imported*"))


def test_no_shipped_box_comes_from_a_box_catalog_that_is_closing():
    for box in boxfile.list_boxes(paths.shipped_boxes_dir()):
        assert box.spec.base.kind in ("mmdebstrap", "image"), (
            f"{box.name} still needs HCP Vagrant ({box.spec.base.box_name})"
        )
        if box.spec.base.kind == "image":
            assert box.spec.base.checksum or box.spec.base.checksums_url, f"{box.name}'s image is not checked"
            assert "latest" not in box.spec.base.image, f"{box.name}'s image is not pinned to a dated file"


def test_a_short_response_is_refused_and_kept_only_as_a_part_to_resume(server, tmp_path):
    """A server that announces 3,000,000 bytes and sends 1,000 was taken at its word."""
    srv, data = server
    srv.files["/short.qcow2"] = data[:1000]
    srv.announce["/short.qcow2"] = 3_000_000
    with pytest.raises(
        VagabondError, match=r"ended after 1000 of the 3000000 bytes the server announced \(run the command again"
    ):
        cloudimage.fetch(f"{srv.url}/short.qcow2", None, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [
        f"{hashlib.sha256(f'{srv.url}/short.qcow2'.encode()).hexdigest()[:16]}-short.qcow2.partial"
    ]


def test_an_interrupted_download_never_takes_its_final_name_unchecked(server, tmp_path, monkeypatch):
    """A download stopped while its checksum was being verified stayed under its final name, and
    the next fetch returned it unchecked; now the final name is given only to a matching file, and
    a cached copy (as a CI cache restores it) is checked again."""
    srv, data = server
    sha = hashlib.sha256(data).hexdigest()

    def interrupted(path, chunk=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(cloudimage.files, "sha256_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cloudimage.fetch(f"{srv.url}/img.qcow2", f"sha256:{sha}", tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / f"{sha[:16]}-img.qcow2").exists() and (tmp_path / f"{sha[:16]}-img.qcow2.partial").is_file()
    path = cloudimage.fetch(f"{srv.url}/img.qcow2", f"sha256:{sha}", tmp_path)
    assert path.read_bytes() == data
    path.write_bytes(b"tampered in the cache")
    with pytest.raises(VagabondError, match="refusing a changed or corrupt image"):
        cloudimage.fetch(f"{srv.url}/img.qcow2", f"sha256:{sha}", tmp_path)
    assert not path.exists()
