"""Helpers the tiers share: libvirt's command line, a static file server, the smallest real box.

Written once here; the tiers' conftest files and tests import them.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from vagabond.bases import archive


def virsh(*args: str, check: bool = True) -> str:
    """`virsh` on the system libvirt; its standard output."""
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=check).stdout


def network_users(network: str) -> list[str]:
    """Every domain, running or not, with an interface on this libvirt network."""
    return [
        name
        for name in virsh("list", "--all", "--name").split()
        if any(line.split()[2:3] == [network] for line in virsh("domiflist", name).splitlines()[2:])
    ]


# The accounts tests make on this host take ids from 20000 up: never the runner twin's 1001 (GitHub's
# runner user), whose processes run meanwhile in the other lane (tests/lanes.py), where a
# `pkill -u` or a `userdel` of a test's account would reach them.
USER_IDS = ["-K", "UID_MIN=20000", "-K", "GID_MIN=20000"]


def sandbox_pids(command: str, netns: str) -> list[str]:
    """The processes named `command` in network namespace `netns`: the sandbox's libvirtd, say, and
    not the one a runner twin runs in its own namespace meanwhile."""
    listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    found = []
    for pid in listed:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                found.append(pid)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 30) -> None:
    """Until something answers HTTP at url (any status counts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def nginx(root: Path, port: int, netns: str | None = None) -> Iterator[str]:
    """nginx serving the directory root on 127.0.0.1:port (in the network namespace netns when
    given); yields the base URL. Its configuration, pid and body files sit beside root."""
    conf = root.parent / f"nginx-{root.name}-{port}.conf"
    conf.write_text(
        # Workers as root: pytest's temporary directories are private to root.
        f"user root; daemon off; pid {conf.with_suffix('.pid')}; error_log stderr;\n"
        "events {}\n"
        f"http {{ include /etc/nginx/mime.types; access_log off; client_body_temp_path {conf.with_suffix('.body')};\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n"
    )
    argv = ["nginx", "-c", str(conf), "-p", str(root.parent)]
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv] if netns else argv)
    try:
        if netns:
            time.sleep(1)  # the namespace's loopback is not reachable from here to poll
            assert proc.poll() is None, f"nginx did not start in the namespace {netns}"
        else:
            wait_for(f"http://127.0.0.1:{port}/")
            assert proc.poll() is None, "nginx did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def tiny_box(work: Path, disk: bytes | None = None) -> Path:
    """A vagrant-libvirt box file in work: metadata.json, a Vagrantfile and a disk. The disk is
    a real 16 MiB qcow2 made by qemu-img, or the given bytes where no tool may run."""
    image = work / "box.img"
    if disk is None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"], check=True)
    else:
        image.write_bytes(disk)
    return archive.write_box(image, work / "tiny.box", virtual_size_gib=1)


@contextlib.contextmanager
def registry(root: Path, port: int, auth: str = "") -> Iterator[tuple[str, subprocess.Popen]]:
    """The distribution registry (Debian's docker-registry) on 127.0.0.1:port, its storage under
    root, deletes allowed; auth is '' (anonymous) or a YAML block for its auth: section. Yields
    oci://127.0.0.1:port and the registry's process."""
    config = root / f"registry-{port}.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n" + (f"auth:\n{auth}" if auth else "")
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/v2/")
        assert proc.poll() is None, "the registry did not start"
        yield f"oci://127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGCONT)  # a test may have stopped it
        proc.terminate()
        proc.wait(timeout=10)


def self_signed(common_name: str, *, rsa_key: bool = False, dns_name: str | None = None, ca: bool = False):
    """A key and a certificate signed by itself, valid from yesterday to tomorrow: (key, cert),
    cryptography's objects. rsa_key for an RSA key (a JWT signer), else P-256; dns_name adds it as
    the subject's alternative name (a TLS server); ca marks it a CA (a bundle to trust)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if dns_name:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return key, builder.sign(key, hashes.SHA256())


# Where vagabond finds registry credentials: a test of registries starts with none of them.
REGISTRY_CREDENTIAL_VARIABLES = (
    "VAGABOND_REGISTRY",
    "VAGABOND_REGISTRY_USERNAME",
    "VAGABOND_REGISTRY_PASSWORD",
    "REGISTRY_AUTH_FILE",
    "XDG_RUNTIME_DIR",
)


def no_registry_credentials(monkeypatch, home: Path) -> None:
    """No registry credential from the environment, and a home directory with no docker or podman file."""
    for var in REGISTRY_CREDENTIAL_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))


def pool_as_files(monkeypatch, pool: Path) -> Path:
    """libvirt's default pool as a directory of the test's own: the volume calls vagabond makes
    (libvirtd does them for real) done on its files."""
    import shutil as _shutil

    from vagabond.host import libvirt

    pool.mkdir(exist_ok=True)
    monkeypatch.setattr(libvirt, "POOL_DIR", pool)
    monkeypatch.setattr(libvirt, "refresh_pool", lambda pool="default": None)

    def delete(name, pool_name="default"):
        path = pool / name
        if not path.is_file():
            return False
        path.unlink()
        return True

    monkeypatch.setattr(libvirt, "delete_volume", delete)
    monkeypatch.setattr(libvirt, "volume_exists", lambda name, pool_name="default": (pool / name).is_file())
    monkeypatch.setattr(
        libvirt, "upload_volume", lambda name, source, pool_name="default": _shutil.copyfile(source, pool / name)
    )
    monkeypatch.setattr(
        libvirt, "download_volume", lambda name, target, pool_name="default": _shutil.copyfile(pool / name, target)
    )
    monkeypatch.setattr(
        libvirt,
        "freeze_volume",
        lambda source, target, pool_name="default": _shutil.copyfile(pool / source, pool / target),
    )
    monkeypatch.setattr(
        libvirt,
        "create_overlay",
        lambda name, backing, pool_name="default": (pool / name).write_text(f"over {backing}"),
    )
    return pool
