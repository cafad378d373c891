"""A hostile registry on 127.0.0.1, scripted answer by answer: each answer ends in a RegistryError
or PublishError (for `up`: the base box, with the reason) or is read within its bounds; nothing is
written beyond what the manifest declares, nothing is sent to another host, nothing hangs."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from tests import helpers
from vagabond import timeouts
from vagabond.catalog import distribution, oci
from vagabond.errors import PublishError, RegistryError

NAME = "org/box"
DIGEST = "sha256:" + "a" * 64


class Hostile:
    """A registry whose every answer a test scripts: route(method, path, headers) -> (status,
    headers, body); a body that is a list of bytes is sent a piece at a time, `drip` seconds apart."""

    def __init__(self, route, drip: float = 0.0):
        self.seen: list[tuple[str, str, str | None]] = []
        seen, server = self.seen, self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, body = route(self.command, self.path, self.headers)
                self.send_response(status)
                pieces = body if isinstance(body, list) else [body]
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(sum(len(b) for b in pieces)))
                self.end_headers()
                try:
                    for piece in pieces:
                        self.wfile.write(piece)
                        self.wfile.flush()
                        if drip:
                            time.sleep(drip)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        server.catalog = f"oci://{self.host}/{NAME}"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def hostile():
    made = []

    def make(route, drip=0.0):
        made.append(Hostile(route, drip))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture(autouse=True)
def anonymous(monkeypatch, tmp_path):
    helpers.no_registry_credentials(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))


def manifest(**changes) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": distribution.MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": DIGEST, "size": 2},
        "layers": [{"mediaType": oci.LAYER, "digest": DIGEST, "size": 1000}],
        "annotations": {f"{oci.ANNOTATION}box": NAME},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


# Answers to a manifest request that are not a manifest: each must be one error, not a traceback.
MALFORMED = {
    "not JSON": b"<html>502 Bad Gateway</html>",
    "nested too deep": b"[" * 100000 + b"]" * 100000,
    "a list": b"[1, 2]",
    "a string": b'"manifest"',
    "annotations a list": manifest(annotations=["x"]),
    "annotations a string": manifest(annotations="x"),
    "layers an object": manifest(layers={"a": 1}),
    "layers a number": manifest(layers=7),
    "layers of strings": manifest(layers=["x"]),
    "size a string": manifest(layers=[{"mediaType": oci.LAYER, "digest": DIGEST, "size": "1000"}]),
    "size negative": manifest(layers=[{"mediaType": oci.LAYER, "digest": DIGEST, "size": -1}]),
    "size true": manifest(layers=[{"mediaType": oci.LAYER, "digest": DIGEST, "size": True}]),
    "digest not sha256": manifest(layers=[{"mediaType": oci.LAYER, "digest": "md5:00", "size": 10}]),
    "digest a path": manifest(layers=[{"mediaType": oci.LAYER, "digest": "sha256:../../etc/passwd", "size": 10}]),
    "two box layers": manifest(
        layers=[
            {"mediaType": oci.LAYER, "digest": DIGEST, "size": 1},
            {"mediaType": oci.LAYER, "digest": DIGEST, "size": 1},
        ]
    ),
    "another box": manifest(annotations={f"{oci.ANNOTATION}box": "other/box"}),
}


@pytest.mark.parametrize("answer", list(MALFORMED))
def test_a_malformed_manifest_is_one_error(hostile, answer):
    server = hostile(lambda m, path, h: (200, {"Content-Type": distribution.MANIFEST}, MALFORMED[answer]))
    with pytest.raises((RegistryError, PublishError)) as err:
        oci.download(server.catalog, NAME, "1.0.0")
    assert "\n" not in str(err.value)


# Error answers whose body is not the distribution spec's shape: the status is still reported.
ERROR_BODIES = {
    "errors an object": b'{"errors": {"code": "DENIED"}}',
    "errors of strings": b'{"errors": ["denied"]}',
    "not JSON": b"<html>proxy error</html>",
    "deep": b"[" * 100000,
    "a list": b"[]",
}


@pytest.mark.parametrize("body", list(ERROR_BODIES))
def test_an_error_answer_of_any_shape_is_its_status(hostile, body):
    server = hostile(lambda m, path, h: (500, {}, ERROR_BODIES[body]))
    with pytest.raises(RegistryError, match=r"HTTP 500"):
        distribution.Registry(server.host, NAME).manifest("1.0.0")


@pytest.mark.parametrize("tags", [b'{"tags": "1.0.0"}', b'{"tags": {"a": 1}}', b"[]", b"nonsense"])
def test_a_malformed_tag_list_falls_back_with_a_reason(hostile, tags):
    server = hostile(lambda m, path, h: (200, {}, tags))
    found, why = oci.find_current(server.catalog, "d" * 64, NAME, None)
    assert found is None and why.startswith(f"catalog {server.catalog} could not be read (")


def test_a_blob_larger_than_its_manifest_says_is_not_written_past_that_size(hostile, tmp_path):
    """The layer is declared as 1000 bytes; the registry sends 3 MiB. Nothing past 1000 bytes lands."""
    big = [b"x" * 2**20] * 3

    def route(method, path, headers):
        if "/manifests/" in path:
            return 200, {"Content-Type": distribution.MANIFEST}, manifest()
        return 200, {}, big

    server = hostile(route)
    with pytest.raises(PublishError, match=r"does not match its digest"):
        oci.download(server.catalog, NAME, "1.0.0")
    left = list((tmp_path / "cache").rglob("*"))
    assert all(p.stat().st_size <= 1000 for p in left if p.is_file()), "nothing beyond the declared size"


def test_a_document_dripped_a_byte_at_a_time_ends_at_its_deadline(hostile, monkeypatch):
    monkeypatch.setattr(timeouts, "REGISTRY_DOCUMENT", 1.0)
    server = hostile(lambda m, path, h: (200, {}, [b"{"] + [b" "] * 100 + [b"}"]), drip=0.1)
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"took longer than 1s"):
        distribution.Registry(server.host, NAME).manifest("1.0.0")
    assert time.monotonic() - started < 5


def test_a_tag_list_that_pages_on_for_ever_is_refused(hostile):
    def route(method, path, headers):
        n = path.count("p")
        return 200, {"Link": f'</v2/{NAME}/tags/list?n=1000&last=p{"p" * n}>; rel="next"'}, b'{"tags": ["1.0.0"]}'

    server = hostile(route)
    with pytest.raises(RegistryError, match=r"goes on past 20 pages"):
        distribution.Registry(server.host, NAME).tags()
    assert len(server.seen) == distribution.TAG_PAGES


def test_too_many_tags_are_refused(hostile):
    tags = json.dumps({"tags": [f"1.0.{n}" for n in range(distribution.MAX_TAGS + 1)]}).encode()
    server = hostile(lambda m, path, h: (200, {}, tags))
    with pytest.raises(RegistryError, match=r"more than 10000 tags"):
        distribution.Registry(server.host, NAME).tags()


def test_the_credentials_go_to_no_other_host_a_link_or_location_names(hostile, monkeypatch):
    """Registry A asks for credentials, then points its tag list's next page, and an upload, at
    server B: B sees no Authorization header."""
    other = hostile(lambda m, path, h: (201 if m == "PUT" else 200, {}, b'{"tags": []}'))

    def route(method, path, headers):
        if headers.get("Authorization") is None:
            return 401, {"WWW-Authenticate": 'Basic realm="a"'}, b""
        if "tags/list" in path:
            return 200, {"Link": f'<http://{other.host}/v2/{NAME}/tags/list?last=x>; rel="next"'}, b'{"tags": []}'
        if method == "HEAD":
            return 404, {}, b""
        if method == "POST":
            return 202, {"Location": f"http://{other.host}/upload/1"}, b""
        return 201, {}, b""

    server = hostile(route)
    monkeypatch.setenv("VAGABOND_REGISTRY", server.host)
    monkeypatch.setenv("VAGABOND_REGISTRY_PASSWORD", "the-registrys-own-secret")
    reg = distribution.Registry(server.host, NAME)
    reg.tags()
    reg.push_blob(b"blob", "sha256:" + "b" * 64)
    assert [auth for _, _, auth in other.seen] == [None] * len(other.seen) and len(other.seen) >= 2
    assert any(auth for _, _, auth in server.seen), "the registry itself got them"


def test_a_location_to_plain_http_elsewhere_is_refused(hostile):
    server = hostile(lambda m, path, h: (307, {"Location": "http://registry.example.org/blob"}, b""))
    with pytest.raises(RegistryError, match=r"which is not https: refused"):
        distribution.Registry(server.host, NAME).manifest("1.0.0")


def test_an_anonymous_read_runs_no_credential_helper(hostile, monkeypatch, tmp_path):
    """docker's config names a helper for every registry: a read that needs no credentials never runs it."""
    config = tmp_path / "home" / ".docker" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"credsStore": "vagabond-test-helper"}))
    ran = tmp_path / "helper-ran"
    helper = tmp_path / "bin" / "docker-credential-vagabond-test-helper"
    helper.parent.mkdir()
    helper.write_text(f"#!/bin/sh\ntouch {ran}\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:/usr/bin:/bin")
    server = hostile(lambda m, path, h: (200, {}, b'{"tags": ["1.0.0"]}'))
    assert distribution.Registry(server.host, NAME).tags() == ["1.0.0"]
    assert not ran.exists()


def test_an_auth_file_that_is_a_device_is_not_read(monkeypatch, tmp_path):
    from vagabond.catalog import credentials

    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/dev/zero")
    assert credentials.credentials("registry.example.org") is None


def test_registry_text_on_a_terminal_is_printed_as_it_is_not_as_markup(monkeypatch, capsys):
    """'[/]' in a registry's answer raised rich's MarkupError through up on a terminal."""
    from vagabond import ui

    monkeypatch.setattr(ui, "interactive", lambda: True)
    ui.info("catalog oci://x could not be read (HTTP 500 ([/] [bold]denied))")
    with ui.step("download org/box [/]"):
        pass
    err = capsys.readouterr().err
    assert "(HTTP 500 ([/] [bold]denied))" in err and "download org/box [/]" in err
