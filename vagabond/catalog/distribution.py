"""The OCI distribution API over HTTP, as container registries serve it (GitHub's, quay.io, Docker
Hub, Harbor, Pulp, the distribution registry): requests with the credentials the ecosystem keeps,
the Docker token flow, blob uploads in chunks that resume, downloads that resume.

Built on the standard library's http.client on purpose: reading a prebuilt box must work in every
install (no extra), and what vagabond needs of the API is small (tags, manifests, blobs); an
Authorization header never follows a redirect to another host (blob storage behind a registry).

Credentials come from vagabond.catalog.credentials; they never reach argv or a message.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlencode, urljoin, urlparse

from vagabond import files, timeouts
from vagabond.catalog import bodies
from vagabond.catalog.credentials import credentials, unbound_password
from vagabond.errors import RegistryError
from vagabond.redaction import redact, register_secret

USER_AGENT = "vagabond (+https://github.com/vagabond-vm)"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Registries answer small documents; anything bigger than this is not one of them.
# A repository's tags, at most: a registry that lists more (or pages on for ever) is refused
# before it fills memory (100 pages of 4 MiB took 1.5 GiB).
MAX_TAGS = 10000
TAG_PAGES = 20
RETRIES = 3
CHUNK = 32 * 2**20  # bytes per PATCH of a chunked upload (registries cap a request's body, GHCR too)

_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?::\d{1,5})?$"
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_repository(host: str, repository: str, where: str) -> None:
    """host[:port] and a repository path as the distribution spec allows them, or a one-line error."""
    if not _HOST.fullmatch(host):
        raise RegistryError(f"{where}: {host!r} is not a registry host (HOST or HOST:PORT)")
    parts = repository.split("/")
    if not repository or len(repository) > 255 or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise RegistryError(
            f"{where}: {repository!r} is not a repository path (lowercase letters, digits, '.', '_', '-', "
            "separated by '/')"
        )


def check_tag(tag: str) -> None:
    if not _TAG.fullmatch(tag):
        raise RegistryError(f"{tag!r} is not a valid tag")


def check_digest(digest: object, where: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise RegistryError(f"{where}: {digest!r} is not a sha256 digest")
    return digest


def plain_http(host: str) -> bool:
    """Plain HTTP only for a registry on this host's loopback (as docker allows it)."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --- requests ----------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    def json(self, where: str) -> object:
        """The body as JSON; a RegistryError when it is not (a proxy's error page, too deep, too big)."""
        try:
            return files.loads(self.body, where)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None


@dataclass
class Registry:
    """One repository on one registry, with the tokens its token service gave for it."""

    host: str
    repository: str
    timeout: float = timeouts.CATALOG
    creds: tuple[str, str] | None = None
    _tokens: dict[str, str] = field(default_factory=dict)
    _basic: bool = False
    _looked_up: bool = False

    def __post_init__(self) -> None:
        check_repository(self.host, self.repository, f"oci://{self.host}/{self.repository}")
        # Credentials are looked up only when the registry asks for them (a 401): an anonymous
        # read runs no credential helper and offers nothing.
        self._looked_up = self.creds is not None
        self.scheme = "http" if plain_http(self.host) else "https"

    @property
    def name(self) -> str:
        return f"oci://{self.host}/{self.repository}"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.repository}/{path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str = "pull",
        headers: dict[str, str] | None = None,
        body: bytes | IO[bytes] | None = None,
        length: int | None = None,
        ok: tuple[int, ...] = (200,),
        sink: IO[bytes] | None = None,
    ) -> Response:
        """One request, authenticated as the registry asks (Basic, or a bearer token for the scope);
        its body read (bounded) or copied to sink; RegistryError unless the status is in ok."""
        for attempt in range(2):
            response = self._send(method, url, scope, headers or {}, body, length, sink)
            if response.status != 401 or attempt == 1 or not self._authenticate(response, scope):
                break
            if hasattr(body, "seek"):
                body.seek(0)
        if response.status not in ok:
            raise RegistryError(self._failure(method, url, response))
        return response

    def _own(self, url: str) -> bool:
        """Whether a URL is this registry's own (its scheme and host): only there do its credentials go."""
        parsed = urlparse(url)
        return parsed.scheme == self.scheme and parsed.netloc == self.host

    def _send(self, method, url, scope, headers, body, length, sink, redirects: int = 5) -> Response:
        # A Location or a Link the registry answered may name another host (blob storage behind it,
        # or anyone): the credentials go to the registry's own scheme and host only, and plain http
        # only on this host's loopback.
        current, auth = url, self._own(url)
        started = time.monotonic()
        for _ in range(redirects + 1):
            parsed = urlparse(current)
            if parsed.scheme not in ("https", "http") or (parsed.scheme == "http" and not plain_http(parsed.netloc)):
                raise RegistryError(
                    f"{method} {self._where(url)}: the registry sent vagabond to {self._where(current)}, "
                    "which is not https: refused"
                )
            all_headers = {"User-Agent": USER_AGENT, **headers}
            if auth and (value := self._authorization(scope)):
                all_headers["Authorization"] = value
            if length is not None:
                all_headers["Content-Length"] = str(length)
            elif body is None and method in ("PUT", "POST", "PATCH"):
                all_headers["Content-Length"] = "0"
            conn_type = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
            conn = conn_type(parsed.netloc, timeout=self.timeout)
            try:
                path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
                conn.request(method, path or "/", body=body, headers=all_headers)
                resp = conn.getresponse()
                status, resp_headers = resp.status, {k.lower(): v for k, v in resp.getheaders()}
                if status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") and "location" in resp_headers:
                    target = urljoin(current, resp_headers["location"])
                    # Blob storage behind the registry is another host: the registry's credentials stay here.
                    auth = auth and self._own(target)
                    current = target
                    continue
                if sink is not None and 200 <= status < 300:
                    if hasattr(sink, "begin"):
                        sink.begin(status)
                    limit = getattr(sink, "limit", None)
                    while chunk := resp.read(2**20):
                        sink.write(chunk)
                        if limit is not None and sink.have > limit:
                            raise RegistryError(
                                f"{method} {self._where(url)}: the registry sent more than the "
                                f"{limit} bytes the manifest declares: refused"
                            )
                        if time.monotonic() - started > timeouts.REGISTRY_TRANSFER:
                            raise RegistryError(
                                f"{method} {self._where(url)}: not done after {timeouts.REGISTRY_TRANSFER:g}s"
                            )
                    return Response(status, resp_headers)
                data = bodies.read_document(resp, started, f"{method} {self._where(url)}") if method != "HEAD" else b""
                return Response(status, resp_headers, data)
            except (OSError, http.client.HTTPException) as exc:
                raise RegistryError(f"{method} {self._where(url)}: {redact(str(exc)) or type(exc).__name__}") from None
            finally:
                conn.close()
        raise RegistryError(f"{method} {self._where(url)}: more than {redirects} redirects")

    def _authorization(self, scope: str) -> str | None:
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self.creds:
            return "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
        return None

    def _authenticate(self, response: Response, scope: str) -> bool:
        """Answer a 401's challenge (True: ask again)."""
        if not self._looked_up:
            self.creds, self._looked_up = credentials(self.host), True
        challenge = response.headers.get("www-authenticate", "")
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if self.creds is None or self._basic:
                return False
            self._basic = True
            return True
        if kind.lower() != "bearer":
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.get("realm", "")
        if urlparse(realm).scheme not in ("https", "http") or (
            urlparse(realm).scheme == "http" and not plain_http(urlparse(realm).netloc)
        ):
            raise RegistryError(f"{self.name}: the registry's token service {realm!r} is not an https URL")
        query = {"service": fields["service"]} if "service" in fields else {}
        query["scope"] = f"repository:{self.repository}:{scope}"
        headers = {"User-Agent": USER_AGENT}
        if self.creds:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
        token_url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        parsed = urlparse(token_url)
        conn_type = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        conn = conn_type(parsed.netloc, timeout=self.timeout)
        try:
            conn.request("GET", f"{parsed.path}?{parsed.query}", headers=headers)
            resp = conn.getresponse()
            data = bodies.read_document(resp, time.monotonic(), f"{self.name}: token service {parsed.netloc}")
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"{self.name}: token service {parsed.netloc}: {exc}") from None
        finally:
            conn.close()
        if resp.status != 200:
            who = "these credentials" if self.creds else "anonymous access"
            raise RegistryError(
                f"{self.name}: the registry's token service refused {who} for {scope} (HTTP {resp.status})",
                hint="log in (docker login / podman login) or set VAGABOND_REGISTRY_USERNAME and "
                "VAGABOND_REGISTRY_PASSWORD",
            )
        answer = Response(resp.status, {}, data).json(f"token from {parsed.netloc}")
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.name}: the token service answered no token")
        register_secret(token)
        self._tokens[scope] = token
        return True

    def _where(self, url: str) -> str:
        return redact(urlparse(url)._replace(query="").geturl())

    def _failure(self, method: str, url: str, response: Response) -> str:
        detail = ""
        try:
            doc = json.loads(response.body or b"{}")
        except (ValueError, RecursionError):
            doc = None
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list):  # the distribution spec's shape; anything else says nothing
            detail = "; ".join(
                f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors[:3] if isinstance(e, dict)
            )
        if response.status == 401:
            detail = detail or ("no credentials" if self.creds is None else "credentials refused")
            if self.creds is None and (why := unbound_password()):
                detail += f"; {why}"
        return f"{method} {self._where(url)}: HTTP {response.status}" + (f" ({redact(detail)[:300]})" if detail else "")

    # --- the API -----------------------------------------------------------------------------------

    def tags(self) -> list[str]:
        """Every tag of the repository (all pages); none when the repository does not exist yet."""
        found: list[str] = []
        url = self.url("tags/list?n=1000")
        for _ in range(TAG_PAGES):
            response = self.request("GET", url, ok=(200, 404))
            if response.status == 404:
                return found
            doc = response.json(f"{self.name} tags")
            if not isinstance(doc, dict):
                raise RegistryError(f"{self.name}: the tag list is not a JSON object")
            listed = doc.get("tags")
            if listed is not None and not isinstance(listed, list):
                raise RegistryError(f"{self.name}: the tag list is not a list")
            found += [t for t in listed or [] if isinstance(t, str)]
            if len(found) > MAX_TAGS:
                raise RegistryError(f"{self.name}: more than {MAX_TAGS} tags: refused")
            link = re.match(r"<([^>]+)>", response.headers.get("link", ""))
            if not link:
                return found
            url = urljoin(url, link.group(1))
        raise RegistryError(f"{self.name}: the tag list goes on past {TAG_PAGES} pages: refused")

    def manifest(self, reference: str) -> tuple[dict, str] | None:
        """The manifest a tag (or digest) names and its digest, None when there is none."""
        response = self.request("GET", self.url(f"manifests/{reference}"), headers={"Accept": MANIFEST}, ok=(200, 404))
        if response.status == 404:
            return None
        digest = "sha256:" + files.sha256_bytes(response.body)
        named = response.headers.get("docker-content-digest")
        if _DIGEST.fullmatch(reference) and digest != reference or named and named != digest:
            raise RegistryError(f"{self.name}: manifest {reference} does not match its digest")
        doc = response.json(f"{self.name} manifest {reference}")
        if not isinstance(doc, dict):
            raise RegistryError(f"{self.name}: manifest {reference} is not a JSON object")
        return doc, digest

    def has_blob(self, digest: str) -> bool:
        return self.request("HEAD", self.url(f"blobs/{digest}"), scope="pull,push", ok=(200, 404)).status == 200

    def push_blob(self, source: Path | bytes, digest: str, *, progress=None) -> None:
        """A blob, unless the registry has it: in one request when small, else in chunks; a chunk
        that fails is resumed from where the registry says the upload got to."""
        if self.has_blob(digest):
            return
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        start = self.request("POST", self.url("blobs/uploads/"), scope="pull,push", ok=(202,))
        location = self._location(start)
        if isinstance(source, bytes):
            self.request(
                "PUT",
                _with_digest(location, digest),
                scope="pull,push",
                body=source,
                length=size,
                headers={"Content-Type": "application/octet-stream"},
                ok=(201,),
            )
            return
        with open(source, "rb") as fh:
            offset = 0
            while offset < size:
                length = min(CHUNK, size - offset)
                for attempt in range(RETRIES):
                    fh.seek(offset)
                    try:
                        response = self.request(
                            "PATCH",
                            location,
                            scope="pull,push",
                            body=bodies.Slice(fh, length),
                            length=length,
                            headers={
                                "Content-Type": "application/octet-stream",
                                "Content-Range": f"{offset}-{offset + length - 1}",
                            },
                            ok=(202,),
                        )
                        location = self._location(response)
                        break
                    except RegistryError:
                        if attempt == RETRIES - 1:
                            raise
                        time.sleep(2**attempt)
                        got = self._uploaded_to(location)
                        # Part of the chunk arrived: go on after it. A Range beyond what was sent is a lie: resend.
                        if got is not None and offset < got <= offset + length:
                            length = 0
                            offset = got
                            break
                offset += length
                if progress:
                    progress(offset, size)
        self.request("PUT", _with_digest(location, digest), scope="pull,push", ok=(201,))

    def _uploaded_to(self, location: str) -> int | None:
        """How many bytes of an upload the registry holds (its Range header), None if it cannot say."""
        try:
            response = self.request("GET", location, scope="pull,push", ok=(204,))
        except RegistryError:
            return None
        match = re.fullmatch(r"0-(\d+)", response.headers.get("range", ""))
        return int(match.group(1)) + 1 if match else None

    def _location(self, response: Response) -> str:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{self.name}: the registry gave no upload location")
        return urljoin(self.url(""), location)

    def put_manifest(self, tag: str, body: bytes) -> str:
        check_tag(tag)
        response = self.request(
            "PUT",
            self.url(f"manifests/{tag}"),
            scope="pull,push",
            body=body,
            length=len(body),
            headers={"Content-Type": MANIFEST},
            ok=(201,),
        )
        return response.headers.get("docker-content-digest", "")

    def delete_manifest(self, digest: str) -> bool:
        """Remove a manifest (every tag naming it); False when the registry does not allow it."""
        response = self.request(
            "DELETE", self.url(f"manifests/{digest}"), scope="pull,push,delete", ok=(202, 200, 404, 405, 400, 403, 401)
        )
        return response.status in (200, 202, 404)

    def download_blob(self, digest: str, partial: Path, size: int, *, progress=None) -> None:
        """The blob into partial, resumed from what partial holds (HTTP Range); not checked here."""
        for attempt in range(RETRIES):
            have = partial.stat().st_size if partial.exists() else 0
            if have >= size:
                return
            with files.open_download(partial, resume=have > 0) as sink:
                headers = {"Range": f"bytes={have}-"} if have else {}
                try:
                    self.request(
                        "GET",
                        self.url(f"blobs/{digest}"),
                        headers=headers,
                        ok=(200, 206),
                        sink=bodies.Progress(sink, have, size, progress, limit=size),
                    )
                except RegistryError:
                    if attempt == RETRIES - 1:
                        raise
                    time.sleep(2**attempt)


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + urlencode({"digest": digest})
