"""Catalogs in a real OCI registry: Debian's docker-registry (the distribution registry) on
127.0.0.1, anonymous, with htpasswd basic auth, and with the registry's own token auth, whose token
service is a minimal one written here (the registry only checks tokens: it issues none). The real
`vagrant box add` takes what vagabond pulls."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import require_tool
from tests.helpers import free_port
from vagabond import files
from vagabond.catalog import catalogs, distribution, oci
from vagabond.catalog.catalogs import open_catalog
from vagabond.catalog.read import Published
from vagabond.errors import PublishError
from vagabond.host.vagrant import Vagrant
from vagabond.vm import prebuilt

pytestmark = pytest.mark.real

NAME = "vagabond-test/tiny"
DIGEST = "d" * 64
USER, PASSWORD = "ci-bot", "s3cret-registry-pass"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    require_tool("docker-registry", "htpasswd")
    helpers.no_registry_credentials(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))


def make_box(tmp: Path, version: str, *, disk: bytes = b"disk", digest: str = DIGEST) -> Path:
    work = tmp / f"box-{version}-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    box = helpers.tiny_box(work, disk=disk)
    target = work / f"tiny-{version}.box"
    box.rename(target)
    (work / f"tiny-{version}.box.json").write_text(
        json.dumps(
            {
                "name": NAME,
                "version": version,
                "provider": "libvirt",
                "sha256": files.sha256_file(target),
                "description": "tiny test box",
                "definition_digest": digest,
            }
        )
    )
    return target


@pytest.fixture
def served(tmp_path):
    with helpers.registry(tmp_path, free_port()) as (url, proc):
        yield url, proc


@pytest.fixture
def anonymous(served):
    return served[0]


def test_publish_tags_a_version_whose_manifest_says_what_up_needs(anonymous, tmp_path):
    catalog = f"{anonymous}/org/boxes/tiny"
    box = make_box(tmp_path, "1.0.0")
    result = catalogs.publish(box, catalog)
    assert result["url"] == f"{catalog}:1.0.0" and result["sha256"] == files.sha256_file(box)
    reg = oci.open_registry(catalog)
    assert reg.tags() == ["1.0.0"]
    manifest, digest = reg.manifest("1.0.0")
    assert digest == result["manifest_digest"]
    notes = manifest["annotations"]
    assert notes["dev.vagabond.box"] == NAME and notes["dev.vagabond.definition-digest"] == DIGEST
    assert notes["org.opencontainers.image.version"] == "1.0.0"
    (layer,) = manifest["layers"]
    assert layer["digest"] == f"sha256:{files.sha256_file(box)}" and layer["size"] == box.stat().st_size
    assert manifest["artifactType"] == oci.ARTIFACT


def test_versions_are_immutable_unless_forced_and_keep_prunes_the_oldest(anonymous, tmp_path):
    catalog = f"{anonymous}/org/tiny"
    first = make_box(tmp_path, "1.0.0")
    catalogs.publish(first, catalog)
    with pytest.raises(PublishError, match="already published with this very file"):
        catalogs.publish(first, catalog)
    other = make_box(tmp_path, "1.0.0", disk=b"other disk")
    with pytest.raises(PublishError, match=r"already in .* published boxes are immutable"):
        catalogs.publish(other, catalog)
    catalogs.publish(other, catalog, force=True)
    reg = oci.open_registry(catalog)
    assert reg.manifest("1.0.0")[0]["layers"][0]["digest"] == f"sha256:{files.sha256_file(other)}"
    catalogs.publish(make_box(tmp_path, "1.1.0"), catalog)
    result = catalogs.publish(make_box(tmp_path, "1.2.0"), catalog, keep=2)
    assert result["pruned"] == ["1.0.0"]
    assert sorted(reg.tags()) == ["1.1.0", "1.2.0"]
    with pytest.raises(PublishError, match="--keep 2 would prune it at once"):
        catalogs.publish(make_box(tmp_path, "0.9.0"), catalog, keep=2)


def test_a_warm_image_goes_up_as_its_own_artifact_and_comes_back_checked(anonymous, tmp_path):
    """build --warm's file beside the box: pushed to the real registry as the artifact of its
    version and key, offered by its key, pulled back whole, and pruned with its version."""
    catalog = f"{anonymous}/org/warm"
    key = {"format": 2, "driver": "qemu", "domains": ["vagabond-x-12345678-default"]}
    for version in ("1.0.0", "2.0.0"):
        box = make_box(tmp_path, version)
        warm = box.with_name(f"tiny-{version}.warm.tar")
        warm.write_bytes(f"the warm image of {version}".encode() * 1000)
        info = json.loads(box.with_name(box.name + ".json").read_text())
        info["warm"] = {
            "file": warm.name,
            "sha256": files.sha256_file(warm),
            "size": warm.stat().st_size,
            "key": key,
            "key_digest": "b" * 32,
        }
        box.with_name(box.name + ".json").write_text(json.dumps(info))
        result = catalogs.publish(box, catalog, keep=1, check_warm=lambda *checked: None)
        assert result["warm"]["url"] == f"{catalog}:{version}-warm-{'b' * 32}"
    reg = oci.open_registry(catalog)
    assert sorted(reg.tags()) == ["2.0.0", f"2.0.0-warm-{'b' * 32}"], "the pruned version's warm image went with it"
    found = open_catalog(catalog)
    offers, why = found.warm_offers(Published(NAME, "2.0.0", catalog))
    assert why == "" and [o.key for o in offers] == [key]
    pulled = found.download_warm(offers[0])
    assert pulled.read_bytes() == warm.read_bytes()


def test_a_big_box_goes_up_in_chunks_and_comes_back_whole(anonymous, tmp_path, monkeypatch):
    monkeypatch.setattr(distribution, "CHUNK", 2**20)
    catalog = f"{anonymous}/org/big"
    box = make_box(tmp_path, "2.0.0", disk=os.urandom(5 * 2**20 + 123))
    catalogs.publish(box, catalog)
    path, sha = oci.download(catalog, NAME, "2.0.0")
    assert sha == files.sha256_file(box) and path.read_bytes() == box.read_bytes()


def test_up_finds_the_newest_version_built_from_this_definition(anonymous, tmp_path):
    catalog = f"{anonymous}/org/pick"
    catalogs.publish(make_box(tmp_path, "1.0.0"), catalog)
    catalogs.publish(make_box(tmp_path, "1.1.0"), catalog)
    catalogs.publish(make_box(tmp_path, "2.0.0", digest="e" * 64), catalog)
    found, why = open_catalog(catalog).find_current(DIGEST, NAME)
    assert found == Published(NAME, "1.1.0", catalog) and "1.1.0 matches this definition" in why
    found, _ = open_catalog(catalog).find_current(DIGEST, NAME, "< 1.1")
    assert found.version == "1.0.0"
    found, why = open_catalog(catalog).find_current("f" * 64, NAME)
    assert found is None and "no version in" in why and "3 versions listed" in why


def test_a_pulled_box_is_in_vagrants_store_and_a_tampered_blob_is_refused(anonymous, tmp_path, monkeypatch):
    require_tool("vagrant")
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    catalog = f"{anonymous}/org/pull"
    box = make_box(tmp_path, "1.0.0")
    catalogs.publish(box, catalog)
    assert prebuilt.fetch(Published(NAME, "1.0.0", catalog))[0] is not None
    assert Vagrant().has_box(NAME, "1.0.0")
    assert not list((tmp_path / "cache" / "prebuilt").rglob("*.box")), "the download went into the store"

    catalogs.publish(make_box(tmp_path, "1.1.0", disk=b"to be tampered with"), catalog)
    layer = oci.open_registry(catalog).manifest("1.1.0")[0]["layers"][0]["digest"].split(":")[1]
    (blob,) = (tmp_path / "storage").rglob(f"blobs/sha256/{layer[:2]}/{layer}/data")
    blob.write_bytes(blob.read_bytes().replace(b"to be tampered with", b"TAMPERED tampered!!"))
    found, why = prebuilt.fetch(Published(NAME, "1.1.0", catalog))
    assert found is None and why.startswith(f"{NAME} 1.1.0 from the registry: ") and "\n" not in why
    assert not Vagrant().has_box(NAME, "1.1.0")
    assert not list((tmp_path / "cache" / "prebuilt").rglob("*.box*")), "nothing of the bad blob is kept"


def test_an_unreachable_registry_is_one_line_and_no_version(tmp_path):
    found, why = open_catalog(f"oci://127.0.0.1:{free_port()}/org/none").find_current(DIGEST, NAME)
    assert found is None and "could not be read" in why and "\n" not in why


def test_an_interrupted_push_leaves_no_tag(anonymous, tmp_path, monkeypatch):
    catalog = f"{anonymous}/org/cut"
    box = make_box(tmp_path, "1.0.0", disk=os.urandom(3 * 2**20))
    monkeypatch.setattr(distribution, "CHUNK", 2**20)
    sent = []
    real = distribution.Registry.request

    def interrupted(self, method, url, **kwargs):
        if method == "PATCH":
            sent.append(url)
            if len(sent) == 2:
                raise KeyboardInterrupt
        return real(self, method, url, **kwargs)

    monkeypatch.setattr(distribution.Registry, "request", interrupted)
    with pytest.raises(KeyboardInterrupt):
        catalogs.publish(box, catalog)
    monkeypatch.setattr(distribution.Registry, "request", real)
    assert oci.open_registry(catalog).tags() == []


def test_a_publish_killed_mid_push_leaves_no_tag(served, tmp_path):
    """The real signal, to a real `vagabond publish`: once the first chunk is up the registry is
    stopped (the next chunk hangs), then the publish gets SIGTERM; nothing is tagged."""
    url, registry_proc = served
    catalog = f"{url}/org/killed"
    box = make_box(tmp_path, "1.0.0", disk=os.urandom(3 * distribution.CHUNK))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vagabond", "publish", str(box), "--catalog", catalog],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "push tiny-1.0.0.box: " in line and " of " in line:  # a chunk is up, more to go
                registry_proc.send_signal(signal.SIGSTOP)
                time.sleep(0.5)
                proc.terminate()
                break
        rest = proc.communicate(timeout=60)[1]
    finally:
        registry_proc.send_signal(signal.SIGCONT)
    assert proc.returncode == 130 and "interrupted by SIGTERM" in rest, rest
    assert oci.open_registry(catalog).tags() == []


# --- authentication ------------------------------------------------------------------------------


@pytest.fixture
def basic(tmp_path):
    users = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(users), USER, PASSWORD], check=True, capture_output=True)
    block = f"  htpasswd:\n    realm: test\n    path: {users}\n"
    with helpers.registry(tmp_path, free_port(), auth=block) as (url, _):
        yield url


def test_basic_auth_from_the_environment_or_dockers_file_and_never_in_a_message(basic, tmp_path, monkeypatch):
    catalog = f"{basic}/org/private"
    box = make_box(tmp_path, "1.0.0")
    with pytest.raises(PublishError, match=r"HTTP 401 \(.*\)$") as refused:
        catalogs.publish(box, catalog)
    assert "\n" not in str(refused.value)
    monkeypatch.setenv("VAGABOND_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("VAGABOND_REGISTRY", basic.removeprefix("oci://"))
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(PublishError) as wrong:
        catalogs.publish(box, catalog)
    assert PASSWORD not in str(wrong.value) and "HTTP 401" in str(wrong.value)
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", PASSWORD)
    catalogs.publish(box, catalog)
    monkeypatch.delenv("VAGABOND_REGISTRY_USERNAME")
    monkeypatch.delenv("VAGABOND_REGISTRY_PASSWORD")
    host = basic.removeprefix("oci://")
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
    found, why = open_catalog(catalog).find_current(DIGEST, NAME)
    assert found is not None, why


class TokenService(http.server.BaseHTTPRequestHandler):
    """The Docker token flow's token service: anyone may pull, the one user may push. Tokens are
    JWTs signed with a key whose certificate the registry trusts (x5c header)."""

    key = cert_der = None
    issued: list[str] = []

    def do_GET(self):
        from urllib.parse import parse_qs, urlparse

        query = parse_qs(urlparse(self.path).query)
        scope = query.get("scope", [""])[0]
        _, repo, actions = scope.split(":") if scope.count(":") == 2 else ("", "", "")
        sent = self.headers.get("Authorization", "")
        authed = sent == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if sent and not authed:
            self.send_response(401)
            self.end_headers()
            return
        granted = [a for a in actions.split(",") if a and (authed or a == "pull")]
        token = self.sign(repo, granted, query.get("service", [""])[0])
        self.issued.append(",".join(granted))
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

    @classmethod
    def sign(cls, repo: str, actions: list[str], service: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cls.cert_der).decode()]}
        claims = {
            "iss": "vagabond-test-issuer",
            "sub": USER,
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": repo, "actions": actions}],
        }
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = cls.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def token_auth(tmp_path):
    from cryptography.hazmat.primitives import serialization

    key, cert = helpers.self_signed("vagabond-test-token-service", rsa_key=True)
    bundle = tmp_path / "token.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    TokenService.key, TokenService.cert_der = key, cert.public_bytes(serialization.Encoding.DER)
    TokenService.issued = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    block = (
        f"  token:\n    realm: http://127.0.0.1:{server.server_port}/token\n    service: vagabond-test\n"
        f"    issuer: vagabond-test-issuer\n    rootcertbundle: {bundle}\n"
    )
    try:
        with helpers.registry(tmp_path, free_port(), auth=block) as (url, _):
            yield url
    finally:
        server.shutdown()


def test_the_token_flow_anonymous_pulls_and_an_authenticated_push(token_auth, tmp_path, monkeypatch):
    catalog = f"{token_auth}/org/tokens"
    box = make_box(tmp_path, "1.0.0")
    with pytest.raises(PublishError, match="HTTP 401"):
        catalogs.publish(box, catalog)  # an anonymous token holds no push
    monkeypatch.setenv("VAGABOND_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.setenv("VAGABOND_REGISTRY", token_auth.removeprefix("oci://"))
    catalogs.publish(box, catalog)
    assert "pull,push" in TokenService.issued
    monkeypatch.delenv("VAGABOND_REGISTRY_PASSWORD")
    found, why = open_catalog(catalog).find_current(DIGEST, NAME)  # public pulls, as GHCR's, ask for a token too
    assert found is not None, why
    path, _ = oci.download(catalog, NAME, "1.0.0")
    assert path.read_bytes() == box.read_bytes()
    shutil.rmtree(tmp_path / "cache")
