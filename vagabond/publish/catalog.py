"""Self-hosted Vagrant box catalogs: a metadata.json in Vagrant's format plus the box files, in a
directory or an S3-compatible bucket. Boxes are uploaded and verified before the catalog names
them; the catalog changes in one atomic step; concurrent publishers never lose an update; a
failed or interrupted publish leaves no file the catalog does not name.

Everything read from a catalog, a .box.json or the command line is checked before it is used:
versions are digits and dots (what Vagrant can order), and every path or key taken from a URL must
lie inside the catalog's directory or the bucket's prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

from vagabond import files, process, timeouts, ui
from vagabond.errors import PublishError, UsageError

METADATA = "metadata.json"
LOCK = ".publish.lock"  # beside metadata.json in a directory catalog
CONFLICT_RETRIES = 20
# Vagrant orders versions as numbers; vagabond also uses them in paths and keys.
VERSION = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")  # ASCII: \d would take any script's digits
BOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class Conflict(Exception):
    """Someone else changed metadata.json (or created the object) since we looked: read again."""


log = logging.getLogger("vagabond.catalog")  # --debug: every request to a bucket, by URL


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise UsageError(f"version {version!r} is not one Vagrant can order",
                           hint="use digits and dots, e.g. 1.2.0 or 20261127.1200")  # fmt: skip
    return version


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in check_version(version).split("."))


_REQUIREMENT = re.compile(r"\s*(~>|>=|<=|!=|>|<|=)?\s*([0-9]+(?:\.[0-9]+)*)\s*")


def satisfies(version: str, constraint: str | None) -> bool:
    """Does ``version`` meet a Vagrant (RubyGems) constraint such as '>= 1.2, < 2' or '~> 1.4'
    (>= 1.4, < 2)? 1.0 and 1.0.0 are equal; None allows every version."""
    if constraint is None:
        return True
    have = version_key(version)
    for part in constraint.split(","):
        match = _REQUIREMENT.fullmatch(part)
        if match is None:
            raise ValueError(f"not a version constraint: {constraint!r}")
        op, want = match[1] or "=", tuple(int(x) for x in match[2].split("."))
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        if op == "~>":  # at least want, below want with its last segment dropped and the one before bumped
            top = want[:-1] if len(want) > 1 else want
            upper = top[:-1] + (top[-1] + 1,)
            span = max(len(have), len(upper))
            ok = a >= b and have + (0,) * (span - len(have)) < upper + (0,) * (span - len(upper))
        else:
            ok = {"=": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        if not ok:
            return False
    return True


# --- stores --------------------------------------------------------------------------------------


class DirStore:
    """A catalog in a local directory (plain path or file://), e.g. one a web server serves."""

    def __init__(self, root: Path, base_url: str | None) -> None:
        self.root = root.absolute()
        self.base_url = (base_url or self.root.as_uri()).rstrip("/")

    def _path(self, key: str) -> Path:
        """The file for ``key``, refused unless it lies inside the catalog directory."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise PublishError(f"refusing {key!r}: it points outside the catalog directory {self.root}")
        return path

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def put_file(self, key: str, source: Path, *, replace: bool = False) -> None:
        """Copy in under a temporary name, then link it into place: without replace, a file that
        appeared meanwhile (a concurrent publish of the same version) is never overwritten."""
        target = self._path(key)
        made_dir = not target.parent.exists()
        try:
            files.make_dirs(target.parent, root=self.root)
            files.copy(source, target, replace=replace)
        except FileExistsError:
            raise Conflict from None
        finally:
            if made_dir and not target.exists():
                with contextlib.suppress(OSError):
                    target.parent.rmdir()  # the version directory this failed upload made

    def read_back(self, key: str) -> tuple[int, str]:
        path = self._path(key)
        return path.stat().st_size, files.sha256_file(path)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_symlink() or path.is_file():
            path.unlink()  # a link is removed as a link, never what it points at
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the version directory, once empty

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A lock file next to metadata.json: publishes to one directory take turns."""
        files.make_dirs(self.root)
        fd = files.open_lock(self.root / LOCK)  # others may write this directory: no link is followed
        try:
            files.wait_for_lock(fd, self.root / LOCK, timeouts.PUBLISH_LOCK, "publishing to this catalog")
            yield
        finally:
            os.close(fd)

    def get_metadata(self) -> tuple[dict | None, str | None]:
        path = self.root / METADATA
        files.refuse_link(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None, None
        return _parse_json(raw, str(path)), None

    def put_metadata(self, data: dict, token: str | None) -> None:
        # Under exclusive(): nobody else writes; temp file + rename makes readers see old or new.
        files.write_json(self.root / METADATA, data)


class S3Store:
    """A catalog in an S3-compatible bucket (s3://bucket/prefix). Endpoint and credentials come from
    the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from the command line."""

    def __init__(self, bucket: str, prefix: str, base_url: str | None, acl: str | None = None) -> None:
        try:
            import boto3  # only publishers to S3 pay for importing it (and need the s3 extra)
        except ImportError:
            raise UsageError("s3:// catalogs need boto3", hint="pip install 'vagabond-vm[s3]'") from None
        for name in AWS_SECRETS:  # whatever botocore or an error message repeats, the output does not
            process.register_secret(os.environ.get(name, ""))
        with _s3_errors(f"s3://{bucket}"):
            self.client = boto3.client("s3")
        # Vagrant downloads with plain HTTP GETs: the objects must be readable that way (a bucket
        # policy, a CDN in front, or a canned ACL such as public-read given here).
        self.acl = {"ACL": acl} if acl else {}
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        endpoint = self.client.meta.endpoint_url.rstrip("/")
        default = f"{endpoint}/{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.base_url = (base_url or default).rstrip("/")

    def _key(self, key: str) -> str:
        """The object key for ``key``, refused unless it lies under the catalog's prefix."""
        full = posixpath.normpath(f"{self.prefix}/{key}" if self.prefix else key)
        inside = full.startswith(f"{self.prefix}/") if self.prefix else not full.startswith(("..", "/"))
        if not inside or key.startswith("/") or ".." in key.split("/"):
            raise PublishError(f"refusing {key!r}: it points outside s3://{self.bucket}/{self.prefix}")
        return full

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def exists(self, key: str) -> bool:
        log.debug("s3: HEAD %s", self.url(key))
        try:
            with _s3_errors(self.url(key), missing_ok=True):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except _Missing:
            return False

    def put_file(self, key: str, source: Path, *, replace: bool = False) -> None:
        """Without replace, a conditional PUT (If-None-Match: *): an object that appeared meanwhile
        (a concurrent publish of the same version) is never overwritten."""
        log.debug("s3: PUT %s%s", self.url(key), "" if replace else " (If-None-Match: *)")
        with _s3_errors(self.url(key)):
            if replace:
                self.client.upload_file(str(source), self.bucket, self._key(key),
                                        ExtraArgs={"ContentType": "application/octet-stream", **self.acl})  # fmt: skip
                return
            with source.open("rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, IfNoneMatch="*",
                                       ContentType="application/octet-stream", **self.acl)  # fmt: skip

    def read_back(self, key: str) -> tuple[int, str]:
        log.debug("s3: GET %s (read back)", self.url(key))
        with _s3_errors(self.url(key)):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            digest, size = hashlib.sha256(), 0
            for block in body.iter_chunks(8 * 2**20):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()

    def delete(self, key: str) -> None:
        log.debug("s3: DELETE %s", self.url(key))
        with _s3_errors(self.url(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield  # no lock: put_metadata is a conditional write (If-Match / If-None-Match)

    def get_metadata(self) -> tuple[dict | None, str | None]:
        log.debug("s3: GET %s", self.url(METADATA))
        try:
            with _s3_errors(self.url(METADATA), missing_ok=True):
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(METADATA))
                raw = obj["Body"].read()
        except _Missing:
            return None, None
        return _parse_json(raw, self.url(METADATA)), obj["ETag"]

    def put_metadata(self, data: dict, token: str | None) -> None:
        condition = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        log.debug("s3: PUT %s (%s)", self.url(METADATA), f"If-Match: {token}" if token else "If-None-Match: *")
        with _s3_errors(self.url(METADATA)):
            self.client.put_object(Bucket=self.bucket, Key=self._key(METADATA), ContentType="application/json",
                                   Body=(json.dumps(data, indent=2) + "\n").encode(), **condition, **self.acl)  # fmt: skip


class _Missing(Exception):
    """An S3 object that does not exist (where that is an answer, not an error)."""


@contextlib.contextmanager
def _s3_errors(where: str, *, missing_ok: bool = False) -> Iterator[None]:
    """botocore's exceptions as one line that says what to do; conditional-write losses as Conflict."""
    try:
        yield
    except (PublishError, UsageError, Conflict, _Missing):
        raise
    except Exception as exc:  # botocore's classes: imported lazily with boto3
        kind = type(exc).__name__
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if missing_ok and code in ("404", "NoSuchKey", "NotFound"):
            raise _Missing from None
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            raise Conflict from None
        if kind in ("NoCredentialsError", "PartialCredentialsError"):
            raise PublishError(f"{where}: no S3 credentials",
                               hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from None  # fmt: skip
        if code == "NoSuchBucket":
            raise PublishError(f"{where}: the bucket does not exist", hint="create it, or fix the s3:// URL") from None
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
            endpoint = os.environ.get("AWS_ENDPOINT_URL", "AWS's default endpoint")
            raise PublishError(f"{where}: cannot reach the S3 endpoint ({endpoint})",
                               hint="check AWS_ENDPOINT_URL and the network") from None  # fmt: skip
        detail = " ".join(str(exc).split())[:200]
        raise PublishError(f"{where}: S3 said {code or kind}: {detail}") from None


def _parse_json(raw: str | bytes, where: str) -> dict:
    try:
        return files.loads(raw, where)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PublishError(str(exc), hint="fix or remove it") from None


# S3's canned ACLs: the only values --s3-acl takes.
S3_CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
                  "bucket-owner-read", "bucket-owner-full-control")  # fmt: skip


def open_store(catalog: str, base_url: str | None = None, acl: str | None = None):
    if acl and acl not in S3_CANNED_ACLS:
        raise UsageError(f"--s3-acl {acl[:40]!r}: not a canned ACL", hint=f"use one of {', '.join(S3_CANNED_ACLS)}")
    parsed = urlparse(catalog)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"S3 catalog {catalog!r} needs a bucket: s3://BUCKET/PREFIX")
        return S3Store(parsed.netloc, parsed.path, base_url, acl)
    if acl:
        raise UsageError("--s3-acl applies to s3:// catalogs only")
    if parsed.scheme == "file":
        return DirStore(Path(parsed.path), base_url)
    if parsed.scheme == "":
        return DirStore(Path(catalog), base_url)
    raise UsageError(f"catalog {catalog!r}: use a directory, file://PATH or s3://BUCKET/PREFIX "
                     "(an HTTP URL is where a catalog is read from, not written to)")  # fmt: skip


# --- catalog documents ---------------------------------------------------------------------------


def check_catalog(doc: object, where: str, name: str | None = None) -> dict:
    """A Vagrant box catalog as vagabond can use it, or PublishError saying what is wrong with it."""
    def bad(what: str) -> PublishError:
        return PublishError(f"{where} is not a box catalog vagabond can use: {what}", hint="fix or remove it")

    if not isinstance(doc, dict):
        raise bad(f"a JSON {type(doc).__name__} instead of an object")
    if not isinstance(doc.get("name"), str):
        raise bad("no box name")
    if name is not None and doc["name"] != name:
        raise bad(f"it holds box {doc['name']!r}, not {name!r} (one catalog per box)")
    versions = doc.get("versions", [])
    if not isinstance(versions, list):
        raise bad("'versions' is not a list")
    for entry in versions:
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), str) or not VERSION.fullmatch(entry["version"]):
            raise bad(f"version entry {json.dumps(entry)[:80]} has no version of digits and dots")
        providers = entry.get("providers", [])
        if not isinstance(providers, list) or not all(isinstance(p, dict) and isinstance(p.get("url", ""), str)
                                                      for p in providers):  # fmt: skip
            raise bad(f"version {entry['version']} has malformed providers")
    return doc


@dataclass(frozen=True)
class BoxFile:
    """A box and what is known about it (the JSON description that build/repackage write beside it)."""

    path: Path
    name: str
    version: str
    sha256: str
    description: str = ""
    architecture: str = "amd64"
    definition_digest: str | None = None

    @classmethod
    def load(cls, path: Path, *, name: str | None = None, version: str | None = None) -> BoxFile:
        if not path.is_file():
            raise UsageError(f"box file {path} does not exist")
        info_path = path.with_name(path.name + ".json")
        info = _parse_json(info_path.read_bytes(), str(info_path)) if info_path.is_file() else {}
        if not isinstance(info, dict):
            raise PublishError(f"{info_path} is not a box description (a JSON object)")
        name = name or info.get("name")
        version = version or info.get("version")
        if not name or not version:
            raise UsageError(f"{path}: no {info_path.name} beside it; pass --name and --version")
        if not isinstance(name, str) or not BOX_NAME.fullmatch(name):
            raise PublishError(f"box name {name!r} is not a Vagrant box name (like 'org/name')")
        check_version(version)
        check_box_archive(path)
        sha = files.sha256_file(path)
        if info.get("sha256") and info["sha256"] != sha:
            raise PublishError(f"{path} does not match the sha256 in {info_path.name}: the file changed after it was built")
        description = info.get("description", "")
        digest = info.get("definition_digest")
        return cls(path, name, version, sha, description if isinstance(description, str) else "",
                   "amd64", digest if isinstance(digest, str) else None)  # fmt: skip


def check_box_archive(path: Path) -> None:
    """A vagrant-libvirt box: a tar (plain, gzip or xz) holding metadata.json for libvirt and
    box.img, every member a plain file or directory inside the box. `vagrant box add` refuses an
    archive with an absolute, '..' or linked member, so such a version could never be installed:
    refused before anything is uploaded. The whole archive is read (a bad member may come last)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.name.startswith("/") or ".." in member.name.split("/") or not (member.isfile() or member.isdir()):
                    kind = "a link" if member.issym() or member.islnk() else ("absolute" if member.name.startswith("/")
                                                                              else "outside the box" if ".." in member.name.split("/")
                                                                              else "not a plain file")  # fmt: skip
                    raise PublishError(f"{path}: member {member.name[:80]!r} is {kind}; vagrant box add would refuse this box",
                                       hint="publish what 'vagabond build' wrote")  # fmt: skip
                if name == "metadata.json" and member.isfile() and member.size < 2**16:
                    found[name] = tar.extractfile(member).read()
                elif name == "box.img" and member.isfile():
                    found[name] = b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PublishError(f"{path} is not a box archive ({exc})", hint="publish what 'vagabond build' wrote") from None
    if "box.img" not in found or "metadata.json" not in found:
        missing = " and ".join(n for n in ("metadata.json", "box.img") if n not in found)
        raise PublishError(f"{path} is not a vagrant-libvirt box: no {missing} in it")
    try:
        provider = json.loads(found["metadata.json"]).get("provider")
    except (ValueError, AttributeError):
        provider = None
    if provider != "libvirt":
        raise PublishError(f"{path}: its metadata.json names provider {provider!r}, not 'libvirt'")


def box_key(box: BoxFile, *, replacing: bool = False) -> str:
    """Where the box lives in the catalog. A forced replacement gets a key of its own (by content),
    so the file the catalog names is never overwritten while the catalog still names it."""
    safe = files.safe_name(box.name)
    unique = f"-{box.sha256[:12]}" if replacing else ""
    return f"{box.version}/{safe}-{box.version}{unique}-libvirt.box"


def own_key(key: str, name: str) -> str | None:
    """``key`` as box_key writes it for box ``name``, once normalised, or None: the only keys a
    publish may delete. A catalog entry can name any URL (metadata.json itself, an alias such as
    '2.0/../1.0/x.box' of a file another entry still lists); only vagabond's own names qualify."""
    if not key or key.startswith("/") or "\\" in key:
        return None
    normal = posixpath.normpath(key)
    if normal != key or normal.startswith("../") or normal in (METADATA, LOCK):
        return None
    match = re.fullmatch(r"([0-9.]+)/(.+)-\1(-[0-9a-f]{12})?-libvirt\.box", normal)
    if not match or not VERSION.fullmatch(match[1]) or match[2] != files.safe_name(name):
        return None
    return normal


def merge(metadata: dict | None, box: BoxFile, url: str, *, keep: int | None) -> tuple[dict, list[dict]]:
    """The catalog with this version added (replacing a forced one); returns it and the version
    entries that left it (the replaced one and those --keep pruned)."""
    doc = dict(metadata or {"name": box.name, "description": box.description, "versions": []})
    if doc.get("name") != box.name:
        raise PublishError(f"the catalog holds box {doc.get('name')!r}, not {box.name!r}: use one catalog per box")
    provider = {
        "name": "libvirt",
        "url": url,
        "checksum_type": "sha256",
        "checksum": box.sha256,
        "architecture": box.architecture,
        "default_architecture": True,
    }
    entry = {"version": box.version, "providers": [provider]}
    if box.definition_digest:
        # Vagrant ignores unknown keys; vagabond up reads this to decide if the box is current.
        entry["vagabond"] = {"definition_digest": box.definition_digest}
    versions = doc.get("versions", [])
    gone = [v for v in versions if v.get("version") == box.version]
    versions = [v for v in versions if v.get("version") != box.version] + [entry]
    versions.sort(key=lambda v: version_key(v["version"]))
    if keep is not None and len(versions) > keep:
        gone += versions[: len(versions) - keep]
        versions = versions[len(versions) - keep :]
    doc["versions"] = versions
    return doc, gone


def _urls(entries: list[dict]) -> set[str]:
    return {p.get("url", "") for v in entries for p in v.get("providers", [])}


def publish(path: Path, catalog: str, **options) -> dict:
    """Check everything, upload and verify, then add the version to metadata.json in one atomic (or
    conditional) write, then delete what left the catalog. Nothing is uploaded before every input
    is known to be good; a publish that fails after uploading removes its upload again."""
    try:
        return _publish(path, catalog, **options)
    except OSError as exc:  # the catalog directory: not writable, not a directory, disk full ...
        where = f" ({exc.filename})" if exc.filename else ""
        raise PublishError(f"cannot publish to {catalog}: {exc.strerror or exc}{where}") from None


def _publish(path: Path, catalog: str, *, name: str | None = None, version: str | None = None,
             keep: int | None = None, force: bool = False, base_url: str | None = None,
             acl: str | None = None) -> dict:  # fmt: skip
    if keep is not None and keep < 1:
        raise UsageError("--keep must be at least 1")
    if version is not None:
        check_version(version)
    box = BoxFile.load(path, name=name, version=version)
    store = open_store(catalog, base_url, acl)
    metadata, _ = store.get_metadata()
    if metadata is not None:
        check_catalog(metadata, store.url(METADATA), box.name)
    published = {v["version"]: v for v in (metadata or {}).get("versions", [])}
    immutable = PublishError(f"{box.name} {box.version} is already in {catalog}; published boxes are immutable "
                             "(publish a new version, or --force to replace it)")  # fmt: skip
    if box.version in published and not force:
        raise immutable
    newer = sorted((version_key(v) for v in published if v != box.version), reverse=True)
    if keep is not None and len(newer) >= keep and version_key(box.version) < newer[keep - 1]:
        raise PublishError(f"{box.name} {box.version} is older than the {keep} newest versions in {catalog}: "
                           f"--keep {keep} would prune it at once", hint="publish a newer version")  # fmt: skip
    key = box_key(box, replacing=box.version in published)
    url = store.url(key)
    if box.version in published and url in _urls([published[box.version]]):
        raise PublishError(f"{box.name} {box.version} is already published with this very file", hint="nothing to do")

    uploaded = False
    try:
        try:
            with ui.step(f"upload {path.name} to {catalog}"):
                # Never over a file another publish of this version just made; --force may replace
                # a file the catalog does not name.
                store.put_file(key, path, replace=force and box.version not in published)
                uploaded = True
        except Conflict:
            raise immutable from None  # a concurrent publish of this version got there first
        size, sha = store.read_back(key)
        if (size, sha) != (path.stat().st_size, box.sha256):
            raise PublishError(f"uploaded {key} reads back as {size} bytes, sha256 {sha}; expected "
                               f"{path.stat().st_size} bytes, sha256 {box.sha256}: upload removed, catalog unchanged")  # fmt: skip
        with store.exclusive():
            for attempt in range(CONFLICT_RETRIES):
                metadata, token = store.get_metadata()
                if metadata is not None:
                    check_catalog(metadata, store.url(METADATA), box.name)
                if not force and any(v["version"] == box.version for v in (metadata or {}).get("versions", [])):
                    raise immutable  # published meanwhile by someone else
                doc, gone = merge(metadata, box, url, keep=keep)
                try:
                    store.put_metadata(doc, token)
                    break
                except Conflict:
                    time.sleep(0.05 * (attempt + 1))
            else:
                raise PublishError(f"{catalog}: metadata.json kept changing under us ({CONFLICT_RETRIES} attempts)")
    except BaseException:
        # Interrupted or failed before the catalog named it: the upload must not stay behind.
        if uploaded:
            with contextlib.suppress(Exception):
                current, _ = store.get_metadata()
                if url not in _urls((current or {}).get("versions", [])):
                    store.delete(key)
        raise
    listed = _urls(doc["versions"])
    prefix = store.url("")
    kept = {own_key(u[len(prefix):], box.name) for u in listed if u.startswith(prefix)} - {None}
    for old in sorted(_urls(gone) - listed):
        key = own_key(old[len(prefix):], box.name) if old.startswith(prefix) else None
        if key is None:
            ui.info(f"left {old} alone: not a box file vagabond named in {catalog}")
            continue
        if key in kept:
            ui.info(f"left {old} alone: a version the catalog keeps names it too")
            continue
        try:
            store.delete(key)
        except PublishError as exc:
            ui.info(f"left {old} alone: {exc}")
    if url not in listed:  # --keep dropped the version just published (a newer one landed meanwhile)
        raise PublishError(f"{box.name} {box.version} was published, but --keep {keep} pruned it at once "
                           "(newer versions landed meanwhile); its file is removed")  # fmt: skip
    ui.info(f"published {box.name} {box.version} ({size / 2**20:.0f} MiB, sha256 {sha[:12]}...) to {catalog}")
    return {"name": box.name, "version": box.version, "url": url, "sha256": sha, "size": size,
            "catalog": catalog, "metadata_url": store.url(METADATA),
            "pruned": sorted({v["version"] for v in gone} - {box.version}, key=version_key)}  # fmt: skip


# --- reading a catalog (vagabond up with a prebuilt box) ------------------------------------------


@dataclass(frozen=True)
class Prebuilt:
    """A catalog version whose recorded definition digest matches the box as it is now."""

    name: str
    version: str
    catalog_url: str


def fetch_metadata(url: str, timeout: float = timeouts.CATALOG) -> object:
    """GET a catalog's metadata.json (http(s):// or file://) as Vagrant would."""
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"{url!r} is not an http(s):// or file:// URL")
    with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's own catalog URL, scheme checked above
        return files.loads(resp.read(files.JSON_MAX_BYTES + 1), f"catalog {url}")


def find_current(url: str, digest: str, name: str, constraint: str | None = None) -> tuple[Prebuilt | None, str]:
    """The newest version of box ``name`` built from this exact definition (among the versions the
    constraint allows), or None and the reason there is none. Whatever the catalog holds, the
    answer is one of the two, never an exception."""
    try:
        doc = check_catalog(fetch_metadata(url), f"catalog {url}", name)
    except PublishError as exc:
        return None, str(exc)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return None, f"catalog {url} could not be read ({' '.join(str(exc).split())[:200]})"
    built = [
        v for v in doc.get("versions", [])
        if isinstance(v.get("vagabond"), dict) and v["vagabond"].get("definition_digest") == digest
        and any(p.get("name") == "libvirt" for p in v.get("providers", []))
    ]  # fmt: skip
    # Vagrant checks a download only against the checksum its catalog entry lists: an entry without
    # one would boot whatever the server (or anyone between it and this host) sends.
    matching = [v for v in built if any(p.get("name") == "libvirt" and _checksummed(p) for p in v["providers"])]
    if built and not matching:
        return None, (f"the versions in {url} built from this box definition ({', '.join(v['version'] for v in built)}) "
                      "list no sha256 checksum, so their download could not be checked")  # fmt: skip
    allowed = [v for v in matching if satisfies(v["version"], constraint)]
    if matching and not allowed:
        return None, (f"no version in {url} built from this box definition meets the version constraint "
                      f"{constraint!r} ({', '.join(v['version'] for v in matching)} do not)")  # fmt: skip
    matching = allowed
    if not matching:
        return None, (f"no version in {url} was built from this box definition and its playbooks "
                      f"(digest {digest[:12]}...; {len(doc.get('versions', []))} versions listed)")  # fmt: skip
    best = max(matching, key=lambda v: version_key(v["version"]))
    if urlparse(url).scheme == "http":
        ui.warning(f"catalog {url} is read over plain http: anyone on the way can change it, its checksums "
                   "included; serve it over https")  # fmt: skip
    return Prebuilt(name, best["version"], url), f"prebuilt {name} {best['version']} matches this definition"


def _checksummed(provider: dict) -> bool:
    kind, value = provider.get("checksum_type"), provider.get("checksum")
    sizes = {"sha256": 64, "sha384": 96, "sha512": 128}
    return isinstance(value, str) and kind in sizes and re.fullmatch(f"[0-9a-fA-F]{{{sizes[kind]}}}", value) is not None
