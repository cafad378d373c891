"""Self-hosted Vagrant box catalogs: a metadata.json in Vagrant's format plus the box files, in a
directory or an S3-compatible bucket. Boxes are uploaded and verified before the catalog names
them; the catalog changes in one atomic step; concurrent publishers never lose an update."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

from vagabond import images, timeouts, ui
from vagabond.errors import PublishError, UsageError

METADATA = "metadata.json"
CONFLICT_RETRIES = 20


class Conflict(Exception):
    """Someone else changed metadata.json since we read it: read again and retry."""


# --- stores --------------------------------------------------------------------------------------


class DirStore:
    """A catalog in a local directory (plain path or file://), e.g. one a web server serves."""

    def __init__(self, root: Path, base_url: str | None) -> None:
        self.root = root
        self.base_url = (base_url or root.resolve().as_uri()).rstrip("/")

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def put_file(self, key: str, source: Path, *, replace: bool = False) -> None:
        """Copy in under a temporary name, then link it into place: without replace, a file that
        appeared meanwhile (a concurrent publish of the same version) is never overwritten."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with source.open("rb") as src, tmp.open("wb") as dst:
            while block := src.read(8 * 2**20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        if replace:
            tmp.replace(target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise Conflict from None
        finally:
            tmp.unlink()

    def read_back(self, key: str) -> tuple[int, str]:
        path = self.root / key
        return path.stat().st_size, images.sha256_file(path)

    def delete(self, key: str) -> None:
        path = self.root / key
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the version directory, once empty

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A lock file next to metadata.json: publishes to one directory take turns."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".publish.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def get_metadata(self) -> tuple[dict | None, str | None]:
        try:
            return json.loads((self.root / METADATA).read_text()), None
        except FileNotFoundError:
            return None, None

    def put_metadata(self, data: dict, token: str | None) -> None:
        # Under exclusive(): nobody else writes; temp file + rename makes readers see old or new.
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".metadata.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.root / METADATA)


class S3Store:
    """A catalog in an S3-compatible bucket (s3://bucket/prefix). Endpoint and credentials come from
    the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from the command line."""

    def __init__(self, bucket: str, prefix: str, base_url: str | None, acl: str | None = None) -> None:
        import boto3  # only publishers to S3 pay for importing it

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
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def _missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:  # botocore.ClientError; imported lazily with boto3
            if self._missing(exc):
                return False
            raise

    def put_file(self, key: str, source: Path, *, replace: bool = False) -> None:
        """Without replace, a conditional PUT (If-None-Match: *): an object that appeared meanwhile
        (a concurrent publish of the same version) is never overwritten."""
        if replace:
            self.client.upload_file(str(source), self.bucket, self._key(key),
                                    ExtraArgs={"ContentType": "application/octet-stream", **self.acl})  # fmt: skip
            return
        try:
            with source.open("rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, IfNoneMatch="*",
                                       ContentType="application/octet-stream", **self.acl)  # fmt: skip
        except Exception as exc:
            if self._conflict(exc):
                raise Conflict from None
            raise

    @staticmethod
    def _conflict(exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")

    def read_back(self, key: str) -> tuple[int, str]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        digest, size = hashlib.sha256(), 0
        for block in body.iter_chunks(8 * 2**20):
            digest.update(block)
            size += len(block)
        return size, digest.hexdigest()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        yield  # no lock: put_metadata is a conditional write (If-Match / If-None-Match)

    def get_metadata(self) -> tuple[dict | None, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(METADATA))
        except Exception as exc:
            if self._missing(exc):
                return None, None
            raise
        return json.loads(obj["Body"].read()), obj["ETag"]

    def put_metadata(self, data: dict, token: str | None) -> None:
        condition = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(METADATA), ContentType="application/json",
                                   Body=(json.dumps(data, indent=2) + "\n").encode(), **condition, **self.acl)  # fmt: skip
        except Exception as exc:
            if self._conflict(exc):
                raise Conflict from None
            raise


def open_store(catalog: str, base_url: str | None = None, acl: str | None = None):
    parsed = urlparse(catalog)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"S3 catalog {catalog!r} needs a bucket: s3://BUCKET/PREFIX")
        return S3Store(parsed.netloc, parsed.path, base_url, acl)
    if acl:
        raise UsageError("--s3-acl applies to s3:// catalogs only")
    if parsed.scheme == "file":
        return DirStore(Path(parsed.path), base_url)
    if parsed.scheme in ("", ) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return DirStore(Path(catalog), base_url)
    raise UsageError(f"catalog {catalog!r}: use a directory, file://PATH or s3://BUCKET/PREFIX "
                     "(an HTTP URL is where a catalog is read from, not written to)")  # fmt: skip


# --- catalog documents ---------------------------------------------------------------------------


def version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.-]", version))


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
    def load(cls, path: Path, *, name: str | None = None, version: str | None = None) -> "BoxFile":
        if not path.is_file():
            raise UsageError(f"box file {path} does not exist")
        info_path = path.with_name(path.name + ".json")
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        name = name or info.get("name")
        version = version or info.get("version")
        if not name or not version:
            raise UsageError(f"{path}: no {info_path.name} beside it; pass --name and --version")
        sha = images.sha256_file(path)
        if info.get("sha256") and info["sha256"] != sha:
            raise PublishError(f"{path} does not match the sha256 in {info_path.name}: the file changed after it was built")
        return cls(path, name, version, sha, info.get("description", ""), info.get("architecture", "amd64"),
                   info.get("definition_digest"))  # fmt: skip


def box_key(box: BoxFile) -> str:
    safe = box.name.replace("/", "-")
    return f"{box.version}/{safe}-{box.version}-libvirt.box"


def merge(metadata: dict | None, box: BoxFile, url: str, *, keep: int | None) -> tuple[dict, list[str]]:
    """The catalog with this version added (replacing a forced one); returns it and the pruned URLs."""
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
    versions = [v for v in doc.get("versions", []) if v.get("version") != box.version] + [entry]
    versions.sort(key=lambda v: version_key(v["version"]))
    pruned: list[str] = []
    if keep is not None and len(versions) > keep:
        for old in versions[: len(versions) - keep]:
            pruned += [p["url"] for p in old.get("providers", [])]
        versions = versions[len(versions) - keep :]
    doc["versions"] = versions
    return doc, pruned


def publish(path: Path, catalog: str, *, name: str | None = None, version: str | None = None,
            keep: int | None = None, force: bool = False, base_url: str | None = None,
            acl: str | None = None) -> dict:  # fmt: skip
    """Upload, verify, then add the version to metadata.json in one atomic (or conditional) write."""
    if keep is not None and keep < 1:
        raise UsageError("--keep must be at least 1")
    box = BoxFile.load(path, name=name, version=version)
    store = open_store(catalog, base_url, acl)
    key = box_key(box)
    metadata, _ = store.get_metadata()
    published = {v.get("version") for v in (metadata or {}).get("versions", [])}
    immutable = PublishError(f"{box.name} {box.version} is already in {catalog}; published boxes are immutable "
                             "(publish a new version, or --force to replace it)")  # fmt: skip
    if not force and (box.version in published or store.exists(key)):
        raise immutable
    try:
        with ui.step(f"upload {path.name} to {catalog}"):
            store.put_file(key, path, replace=force)
    except Conflict:
        raise immutable from None  # a concurrent publish of this version got there first
    size, sha = store.read_back(key)
    if (size, sha) != (path.stat().st_size, box.sha256):
        store.delete(key)
        raise PublishError(f"uploaded {key} reads back as {size} bytes, sha256 {sha}; expected "
                           f"{path.stat().st_size} bytes, sha256 {box.sha256}: upload removed, catalog unchanged")  # fmt: skip
    with store.exclusive():
        for attempt in range(CONFLICT_RETRIES):
            metadata, token = store.get_metadata()
            doc, pruned = merge(metadata, box, store.url(key), keep=keep)
            try:
                store.put_metadata(doc, token)
                break
            except Conflict:
                time.sleep(0.05 * (attempt + 1))
        else:
            raise PublishError(f"{catalog}: metadata.json kept changing under us ({CONFLICT_RETRIES} attempts)")
    prefix = store.url("")
    for url in pruned:
        if url.startswith(prefix) and url != store.url(key):
            store.delete(url[len(prefix):])
    ui.info(f"published {box.name} {box.version} ({size / 2**20:.0f} MiB, sha256 {sha[:12]}...) to {catalog}")
    return {"name": box.name, "version": box.version, "url": store.url(key), "sha256": sha, "size": size,
            "catalog": catalog, "metadata_url": store.url(METADATA), "pruned": pruned}  # fmt: skip


# --- reading a catalog (vagabond up with a prebuilt box) ------------------------------------------


@dataclass(frozen=True)
class Prebuilt:
    """A catalog version whose recorded definition digest matches the box as it is now."""

    name: str
    version: str
    catalog_url: str


def fetch_metadata(url: str, timeout: float = timeouts.CATALOG) -> dict:
    """GET a catalog's metadata.json (http(s):// or file://) as Vagrant would."""
    with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's own catalog URL
        return json.loads(resp.read())


def find_current(url: str, digest: str) -> tuple[Prebuilt | None, str]:
    """The newest version built from this exact definition, or None and the reason there is none."""
    try:
        doc = fetch_metadata(url)
    except (OSError, ValueError) as exc:
        return None, f"catalog {url} could not be read ({exc})"
    matching = [
        v for v in doc.get("versions", [])
        if v.get("vagabond", {}).get("definition_digest") == digest
        and any(p.get("name") == "libvirt" for p in v.get("providers", []))
    ]  # fmt: skip
    if not matching:
        return None, (f"no version in {url} was built from this box definition and its playbooks "
                      f"(digest {digest[:12]}...; {len(doc.get('versions', []))} versions listed)")  # fmt: skip
    best = max(matching, key=lambda v: version_key(v["version"]))
    return Prebuilt(doc["name"], best["version"], url), f"prebuilt {doc['name']} {best['version']} matches this definition"
