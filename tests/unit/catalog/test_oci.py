"""OCI catalogs without a registry: what a catalog URL may be, where credentials come from, and an
HTTP server standing in for a registry where the registry's own behaviour is not the point
(a redirect to blob storage on another host, a token service over plain http elsewhere)."""

from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest

from tests import helpers
from tests.conftest import stub_programs
from vagabond import redaction
from vagabond.catalog import bodies, credentials, distribution, oci
from vagabond.errors import PublishError, RegistryError, UsageError


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch, tmp_path):
    helpers.no_registry_credentials(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))


@pytest.mark.parametrize(
    "catalog",
    [
        "oci://ghcr.io/Org/Repo/box",  # uppercase: not a repository name
        "oci://ghcr.io/org/../box",
        "oci://ghcr.io/",
        "oci://user:pass@ghcr.io/org/box",  # credentials never travel in the URL
        "oci://ghcr.io/org/box?x=1",
        "oci://ghcr.io/org/box#frag",
        "oci://gh cr.io/org/box",
        "oci://ghcr.io/org//box",
        "oci://ghcr.io/org/box\n",
    ],
)
def test_a_catalog_url_is_refused_unless_it_names_a_registry_and_a_repository(catalog):
    with pytest.raises((RegistryError, UsageError)) as refused:
        oci.open_registry(catalog)
    assert "\n" not in str(refused.value)


def test_a_catalog_url_names_host_port_and_repository():
    reg = oci.open_registry("oci://127.0.0.1:5000/org/team/debian12-selinux")
    assert (reg.host, reg.repository, reg.scheme) == ("127.0.0.1:5000", "org/team/debian12-selinux", "http")
    assert oci.open_registry("oci://ghcr.io/org/box").scheme == "https", "plain http on loopback only"


@pytest.mark.parametrize("tag", ["latest", "1.0.0", "20261201.2200"])
def test_tags_that_are_tags(tag):
    distribution.check_tag(tag)


@pytest.mark.parametrize("tag", ["", "-x", "a" * 129, "1.0/../x", "v 1"])
def test_tags_that_are_not(tag):
    with pytest.raises(RegistryError):
        distribution.check_tag(tag)


def test_credentials_from_the_environment_are_kept_out_of_every_message(monkeypatch):
    monkeypatch.setenv("VAGABOND_REGISTRY_USERNAME", "bot")
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", "ghp_secret_token_value")
    monkeypatch.setenv("VAGABOND_REGISTRY", "ghcr.io")
    assert credentials.credentials("ghcr.io") == ("bot", "ghp_secret_token_value")
    assert redaction.redact("failed with ghp_secret_token_value") == "failed with ***"


def test_the_environments_credentials_go_to_the_registry_they_name_and_no_other(monkeypatch):
    """A token exported to publish, then `up` in a project whose box file names oci://evil/x: evil
    gets nothing. Without VAGABOND_REGISTRY the token is offered nowhere, and a 401 says why."""
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", "ghp_secret_token_value")
    assert credentials.credentials("evil.example.org") is None
    assert credentials.credentials("ghcr.io") is None
    assert credentials.unbound_password().startswith("VAGABOND_REGISTRY_PASSWORD is set for no registry")
    monkeypatch.setenv("VAGABOND_REGISTRY", "ghcr.io")
    assert credentials.credentials("evil.example.org") is None
    assert credentials.credentials("GHCR.io") == ("vagabond", "ghp_secret_token_value")


def test_credentials_from_dockers_and_podmans_files_in_their_order(monkeypatch, tmp_path):
    def auth_file(path, user, password, host="registry.example.org"):
        path.parent.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {host: {"auth": token}}}))

    auth_file(tmp_path / "docker" / "config.json", "docker-user", "docker-password")
    assert credentials.credentials("registry.example.org") == ("docker-user", "docker-password")
    auth_file(tmp_path / "home" / ".config" / "containers" / "auth.json", "podman-user", "podman-password")
    assert credentials.credentials("registry.example.org") == ("podman-user", "podman-password")
    auth_file(tmp_path / "explicit.json", "file-user", "file-password")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "explicit.json"))
    assert credentials.credentials("registry.example.org") == ("file-user", "file-password")
    assert credentials.credentials("other.example.org") is None


def test_a_credential_helper_answers_for_its_registry(monkeypatch, tmp_path):
    stub_programs(
        tmp_path,
        monkeypatch,
        **{
            "docker-credential-test": '#!/bin/sh\nread host\n[ "$1" = get ] && [ "$host" = quay.io ] && '
            'echo \'{"Username": "robot", "Secret": "helper-secret-value"}\'\n'
        },
    )
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"credHelpers": {"quay.io": "test"}}))
    assert credentials.credentials("quay.io") == ("robot", "helper-secret-value")
    assert redaction.redact("helper-secret-value") == "***"


def test_a_garbled_auth_file_entry_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {"auth": "%%%"}}}))
    with pytest.raises(
        PublishError, match=r"config.json: the credentials for ghcr.io are not base64 of user:password$"
    ):
        credentials.credentials("ghcr.io")


class _Server:
    """A stand-in registry: handlers by path, every request's Authorization header recorded."""

    def __init__(self, routes):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.server.server_port, self.path, self.headers.get("Authorization")))
                status, headers, body = routes(self.server.server_port, self.path, self.headers)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_the_registrys_credentials_do_not_follow_a_redirect_to_blob_storage(monkeypatch, tmp_path):
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", "registry-only-secret")
    storage = _Server(lambda port, path, headers: (200, {}, b"blob bytes"))

    def routes(port, path, headers):
        if headers.get("Authorization") is None:
            return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""
        return 307, {"Location": f"http://localhost:{storage.port}/storage/blob"}, b""

    reg_server = _Server(routes)
    monkeypatch.setenv("VAGABOND_REGISTRY", f"127.0.0.1:{reg_server.port}")
    reg = distribution.Registry(f"127.0.0.1:{reg_server.port}", "org/box")
    partial = tmp_path / "blob.part"
    reg.download_blob("sha256:" + "0" * 64, partial, len(b"blob bytes"))
    assert partial.read_bytes() == b"blob bytes"
    assert reg_server.seen[-1][2].startswith("Basic "), "the registry got its credentials"
    assert storage.seen == [(storage.port, "/storage/blob", None)], "the storage host got none"


def test_a_token_service_over_plain_http_elsewhere_is_refused():
    def routes(port, path, headers):
        return 401, {"WWW-Authenticate": 'Bearer realm="http://auth.example.org/token",service="x"'}, b""

    server = _Server(routes)
    reg = distribution.Registry(f"127.0.0.1:{server.port}", "org/box")
    with pytest.raises(RegistryError, match="token service 'http://auth.example.org/token' is not an https URL"):
        reg.tags()


def test_an_answer_larger_than_a_registry_document_is_refused():
    big = b"{" + b" " * (bodies.DOCUMENT_MAX_BYTES + 10) + b"}"
    server = _Server(lambda port, path, headers: (200, {}, big))
    reg = distribution.Registry(f"127.0.0.1:{server.port}", "org/box")
    with pytest.raises(RegistryError, match="larger than a registry document"):
        reg.tags()
