"""Catalog documents: Vagrant's metadata.json checked before use, the box archive a publish takes
(its .box.json description read and checked, with the warm image `build --warm` wrote beside
it), the keys box files get in a catalog, and the catalog with a version added or pruned."""

from __future__ import annotations

import json
import os
import posixpath
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vagabond import files
from vagabond.catalog.versions import BOX_NAME, VERSION, check_version, version_key
from vagabond.errors import PublishError, UsageError


class Conflict(Exception):
    """Someone else changed metadata.json (or created the object) since we looked: read again
    (a store's conditional write: directories and S3 alike)."""


METADATA = "metadata.json"
LOCK = ".publish.lock"  # beside metadata.json in a directory catalog
WARM_KEY_DIGEST = re.compile(r"[0-9a-f]{32}")  # a warm image's key in a name (warmimage.key_digest)
WARM_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar")
WARM_KEY_MAX = 16384  # the key as JSON: a few hundred bytes
WARM_MAX = 1 << 40


def parse_json(raw: str | bytes, where: str) -> dict:
    try:
        return files.loads(raw, where)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PublishError(str(exc), hint="fix or remove it") from None


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
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("version"), str)
            or not VERSION.fullmatch(entry["version"])
        ):
            raise bad(f"version entry {json.dumps(entry)[:80]} has no version of digits and dots")
        providers = entry.get("providers", [])
        if not isinstance(providers, list) or not all(
            isinstance(p, dict) and isinstance(p.get("url", ""), str) for p in providers
        ):
            raise bad(f"version {entry['version']} has malformed providers")
    return doc


@dataclass(frozen=True)
class Warm:
    """A warm image of the box's provisioned VM, which `vagabond build --warm` wrote beside it:
    the file (`vagabond save --export`'s archive), and the key a VM must have for `up` to restore
    it (compared by the VM layer; only carried here)."""

    path: Path
    sha256: str
    size: int
    key: dict
    key_digest: str

    @classmethod
    def load(
        cls, info: object, box_path: Path, where: str, check: Callable[[Path, dict, str], None] | None = None
    ) -> Warm:
        """The warm image a box description names: a plain file name in the box's own directory
        (no path, no link), of the sha256 the description gives."""

        def bad(what: str) -> PublishError:
            return PublishError(f"{where}: its warm image {what}", hint="publish what 'vagabond build --warm' wrote")

        if not isinstance(info, dict):
            raise bad("is not described by an object")
        name, sha, key, digest = (info.get(k) for k in ("file", "sha256", "key", "key_digest"))
        if not isinstance(name, str) or not WARM_FILE.fullmatch(name):
            raise bad(f"file {str(name)[:80]!r} is not a plain .tar file name beside the box")
        if not isinstance(digest, str) or not WARM_KEY_DIGEST.fullmatch(digest):
            raise bad("has no key digest")
        if not isinstance(key, dict) or len(json.dumps(key)) > WARM_KEY_MAX:
            raise bad("has no key")
        path = box_path.with_name(name)
        try:
            with files.open_regular_read(path) as fh:  # a link is refused, not followed
                size = os.fstat(fh.fileno()).st_size
                if not 0 < size <= WARM_MAX:
                    raise bad(f"{path} is empty or too large")
                got = files.sha256_stream(fh)  # of the file opened, not of whatever the name holds later
        except OSError as exc:
            raise bad(f"{path} cannot be read: {exc.strerror or exc}") from None
        if got != sha:
            raise bad(f"{path} does not match the sha256 in the description: the file changed after it was built")
        if check is None:  # what may be published is the VM layer's rule: never skipped
            raise bad("cannot be checked here (publish it with `vagabond publish`)")
        check(path, key, digest)
        return cls(path, got, size, key, digest)

    def entry(self, url: str) -> dict:
        """How a metadata catalog lists it, in its version's vagabond section."""
        return {
            "key": self.key,
            "key_digest": self.key_digest,
            "url": url,
            "checksum_type": "sha256",
            "checksum": self.sha256,
            "size": self.size,
        }


@dataclass(frozen=True)
class Archive:
    """A box and what is known about it (the JSON description that build/repackage write beside it)."""

    path: Path
    name: str
    version: str
    sha256: str
    description: str = ""
    architecture: str = "amd64"
    definition_digest: str | None = None
    warm: Warm | None = None

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        name: str | None = None,
        version: str | None = None,
        warm: bool = True,
        check_warm: Callable[[Path, dict, str], None] | None = None,
    ) -> Archive:
        """The box and its description; with warm, the warm image the description names too,
        which check_warm (the VM layer's rule of what may be published: path, key, key digest)
        then reads."""
        if not path.is_file():
            raise UsageError(f"box file {path} does not exist")
        info_path = path.with_name(path.name + ".json")
        info = parse_json(info_path.read_bytes(), str(info_path)) if info_path.is_file() else {}
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
            raise PublishError(
                f"{path} does not match the sha256 in {info_path.name}: the file changed after it was built"
            )
        description = info.get("description", "")
        digest = info.get("definition_digest")
        return cls(
            path,
            name,
            version,
            sha,
            description if isinstance(description, str) else "",
            "amd64",
            digest if isinstance(digest, str) else None,
            Warm.load(info["warm"], path, str(info_path), check_warm)
            if warm and info.get("warm") is not None
            else None,
        )


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
                if (
                    member.name.startswith("/")
                    or ".." in member.name.split("/")
                    or not (member.isfile() or member.isdir())
                ):
                    kind = (
                        "a link"
                        if member.issym() or member.islnk()
                        else (
                            "absolute"
                            if member.name.startswith("/")
                            else "outside the box"
                            if ".." in member.name.split("/")
                            else "not a plain file"
                        )
                    )
                    raise PublishError(
                        f"{path}: member {member.name[:80]!r} is {kind}; vagrant box add would refuse this box",
                        hint="publish what 'vagabond build' wrote",
                    )
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


def box_key(box: Archive, *, replacing: bool = False) -> str:
    """Where the box lives in the catalog. A forced replacement gets a key of its own (by content),
    so the file the catalog names is never overwritten while the catalog still names it."""
    return f"{_key_stem(box, replacing)}-libvirt.box"


def warm_key(box: Archive, *, replacing: bool = False) -> str:
    """Where the box's warm image lives in the catalog: beside the box, named by its key."""
    return f"{_key_stem(box, replacing)}-warm-{box.warm.key_digest}.tar"


def _key_stem(box: Archive, replacing: bool) -> str:
    """VERSION/NAME-VERSION, and the box's digest for a forced replacement (own_key reads it back)."""
    unique = f"-{box.sha256[:12]}" if replacing else ""
    return f"{box.version}/{files.safe_name(box.name)}-{box.version}{unique}"


def own_key(key: str, name: str) -> str | None:
    """``key`` as box_key or warm_key writes it for box ``name``, once normalised, or None: the only keys a
    publish may delete. A catalog entry can name any URL (metadata.json itself, an alias such as
    '2.0/../1.0/x.box' of a file another entry still lists); only vagabond's own names qualify."""
    if not key or key.startswith("/") or "\\" in key:
        return None
    normal = posixpath.normpath(key)
    if normal != key or normal.startswith("../") or normal in (METADATA, LOCK):
        return None
    match = re.fullmatch(r"([0-9.]+)/(.+)-\1(-[0-9a-f]{12})?-(?:libvirt\.box|warm-[0-9a-f]{32}\.tar)", normal)
    if not match or not VERSION.fullmatch(match[1]) or match[2] != files.safe_name(name):
        return None
    return normal


def merge(
    metadata: dict | None, box: Archive, url: str, *, keep: int | None, warm_url: str | None = None
) -> tuple[dict, list[dict]]:
    """The catalog with this version added (replacing a forced one), its warm image listed when
    it has one; returns it and the version entries that left it (the replaced one and those
    --keep pruned)."""
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
    if box.warm is not None and warm_url is not None:
        entry.setdefault("vagabond", {})["warm"] = [box.warm.entry(warm_url)]
    versions = doc.get("versions", [])
    gone = [v for v in versions if v.get("version") == box.version]
    versions = [v for v in versions if v.get("version") != box.version] + [entry]
    versions.sort(key=lambda v: version_key(v["version"]))
    if keep is not None and len(versions) > keep:
        gone += versions[: len(versions) - keep]
        versions = versions[len(versions) - keep :]
    doc["versions"] = versions
    return doc, gone


def warm_entries(entry: dict) -> list[dict]:
    """A version entry's warm images as listed (each an object; nothing else of them checked)."""
    ours = entry.get("vagabond")
    listed = ours.get("warm") if isinstance(ours, dict) else None
    return [w for w in listed if isinstance(w, dict)] if isinstance(listed, list) else []


def urls(entries: list[dict]) -> set[str]:
    """Every file the version entries name: their boxes and their warm images."""
    boxes = {p.get("url", "") for v in entries for p in v.get("providers", [])}
    return boxes | {w["url"] for v in entries for w in warm_entries(v) if isinstance(w.get("url"), str)}


def check_not_pruned_at_once(archive: Archive, versions, catalog: str, keep: int | None) -> None:
    """The --keep rule of every catalog kind: a version that the prune after its own publish would
    remove at once (older than the keep newest already there) is refused before anything is sent."""
    newer = sorted((version_key(v) for v in versions if v != archive.version), reverse=True)
    if keep is not None and len(newer) >= keep and version_key(archive.version) < newer[keep - 1]:
        raise PublishError(
            f"{archive.name} {archive.version} is older than the {keep} newest versions in {catalog}: "
            f"--keep {keep} would prune it at once",
            hint="publish a newer version",
        )
