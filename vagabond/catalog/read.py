"""Reading a catalog (vagabond up with a prebuilt box): the newest version built from this very
box definition, with a checksum Vagrant can check, or the reason there is none; and the warm
images a version lists, downloaded into vagabond's cache and checked against their sha256."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import urlopen

from vagabond import files, paths, timeouts, ui
from vagabond.catalog.documents import WARM_MAX, check_catalog, warm_entries
from vagabond.catalog.versions import satisfies, version_key
from vagabond.errors import PublishError

WARM_OFFERS_MAX = 20  # warm images read per version: one per kind of runner, a few kinds
DISK_SLACK = 1 << 30  # what a download leaves free on the cache's file system
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Published:
    """A box version in a catalog: what Vagrant adds by name and version from the catalog's URL
    (and what a work directory records of the prebuilt box its VM was made from)."""

    name: str
    version: str
    url: str


@dataclass(frozen=True)
class WarmOffer:
    """A warm image a catalog lists for a box version: the key a VM must have to restore it (the
    VM layer compares it; the archive's own manifest is checked again when it is taken in), where
    it is, and the sha256 and size its download must have."""

    key: dict
    url: str
    sha256: str
    size: int


def offer(key: object, url: object, sha256: object, size: object) -> WarmOffer | None:
    """A warm image as a catalog describes it, or None when the description is not one."""
    if (
        not isinstance(key, dict)
        or not isinstance(url, str)
        or not url.isprintable()
        or not isinstance(sha256, str)
        or not SHA256.fullmatch(sha256)
        or not isinstance(size, int)
        or isinstance(size, bool)
        or not 0 < size <= WARM_MAX
    ):
        return None
    return WarmOffer(key, url, sha256, size)


def download_into_cache(found: WarmOffer, what: str, fill: Callable[[Path], None], *, resumes: bool = False) -> Path:
    """The warm image in vagabond's cache (private to its user), downloaded by ``fill`` into a
    partial file that must then have the offer's sha256: otherwise nothing of it is kept. A fill
    that fails leaves its partial file only when the next one resumes it."""
    where = files.make_dirs(paths.cache_dir() / "warm-downloads", mode=0o700)
    final = where / f"{found.sha256}.tar"
    if final.is_file() and files.sha256_file(final) == found.sha256:
        return final
    partial = final.with_name(final.name + ".part")
    free = shutil.disk_usage(where).free + (partial.stat().st_size if partial.is_file() else 0)
    # Twice the file (it is unpacked beside itself when taken in: the memory image grows), and the
    # file system keeps its slack. Not enough is said before anything is written.
    if 2 * found.size + DISK_SLACK > free:
        raise PublishError(
            f"{what} is {found.size / 2**20:.0f} MiB, and {where} has {free / 2**20:.0f} MiB free: not downloaded"
        )
    with ui.step(f"download {what} ({found.size / 2**20:.0f} MiB)"):
        try:
            fill(partial)
        except BaseException:
            if not resumes:
                files.remove(partial)
            raise
        got = files.sha256_file(partial) if partial.is_file() else ""
        if got != found.sha256:
            files.remove(partial)  # a resume would only append to what is wrong
            raise PublishError(
                f"{what} does not match its sha256 (got {got[:12] or 'nothing'}..., the catalog names "
                f"{found.sha256[:12]}...): refused, nothing kept"
            )
        files.move(partial, final, mode=0o600)
    return final


def fetch_metadata(url: str, timeout: float = timeouts.CATALOG) -> object:
    """GET a catalog's metadata.json (http(s):// or file://) as Vagrant would."""
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"{url!r} is not an http(s):// or file:// URL")
    with urlopen(url, timeout=timeout) as resp:
        return files.loads(resp.read(files.JSON_MAX_BYTES + 1), f"catalog {url}")


def find_current_in_metadata(
    url: str, digest: str, name: str, constraint: str | None = None
) -> tuple[Published | None, str]:
    """In a metadata.json catalog: the newest version of box ``name`` built from this exact
    definition (among the versions the constraint allows), or None and the reason there is none.
    Whatever the catalog holds, the answer is one of the two, never an exception."""
    try:
        doc = check_catalog(fetch_metadata(url), f"catalog {url}", name)
    except PublishError as exc:
        return None, str(exc)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return None, f"catalog {url} could not be read ({' '.join(str(exc).split())[:200]})"
    built = [
        v
        for v in doc.get("versions", [])
        if isinstance(v.get("vagabond"), dict)
        and v["vagabond"].get("definition_digest") == digest
        and any(p.get("name") == "libvirt" for p in v.get("providers", []))
    ]
    # Vagrant checks a download only against the checksum its catalog entry lists: an entry without
    # one would boot whatever the server (or anyone between it and this host) sends.
    matching = [v for v in built if any(p.get("name") == "libvirt" and _checksummed(p) for p in v["providers"])]
    if built and not matching:
        return None, (
            f"the versions in {url} built from this box definition ({', '.join(v['version'] for v in built)}) "
            "list no sha256 checksum, so their download could not be checked"
        )
    allowed = [v for v in matching if satisfies(v["version"], constraint)]
    if matching and not allowed:
        return None, (
            f"no version in {url} built from this box definition meets the version constraint "
            f"{constraint!r} ({', '.join(v['version'] for v in matching)} do not)"
        )
    matching = allowed
    if not matching:
        return None, (
            f"no version in {url} was built from this box definition and its playbooks "
            f"(digest {digest[:12]}...; {len(doc.get('versions', []))} versions listed)"
        )
    best = max(matching, key=lambda v: version_key(v["version"]))
    if urlparse(url).scheme == "http":
        ui.warning(
            f"catalog {url} is read over plain http: anyone on the way can change it, its checksums "
            "included; serve it over https"
        )
    return Published(name, best["version"], url), f"prebuilt {name} {best['version']} matches this definition"


def _checksummed(provider: dict) -> bool:
    kind, value = provider.get("checksum_type"), provider.get("checksum")
    sizes = {"sha256": 64, "sha384": 96, "sha512": 128}
    return isinstance(value, str) and kind in sizes and re.fullmatch(f"[0-9a-fA-F]{{{sizes[kind]}}}", value) is not None


def warm_offers_in_metadata(url: str, source: Published) -> tuple[list[WarmOffer], str]:
    """The warm images a metadata catalog lists for this version, or none and why (never an
    exception). A file:// warm image must lie inside the catalog's own directory."""
    try:
        doc = check_catalog(fetch_metadata(url), f"catalog {url}", source.name)
    except PublishError as exc:
        return [], str(exc)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return [], f"catalog {url} could not be read ({' '.join(str(exc).split())[:200]})"
    entry = next((v for v in doc.get("versions", []) if v.get("version") == source.version), None)
    if entry is None:
        return [], f"{url} no longer lists {source.name} {source.version}"
    found = []
    for listed in warm_entries(entry)[:WARM_OFFERS_MAX]:
        if listed.get("checksum_type") != "sha256":
            continue
        candidate = offer(listed.get("key"), listed.get("url"), listed.get("checksum"), listed.get("size"))
        if candidate is not None and _reachable(candidate.url, url):
            found.append(candidate)
    if not found:
        return [], f"{source.name} {source.version} in {url} lists no warm image"
    return found, ""


def _reachable(link: str, catalog: str) -> bool:
    """http(s), or a file inside the catalog's own directory (a catalog names no other file here)."""
    try:
        scheme = urlparse(link).scheme
        if scheme in ("http", "https"):
            return True
        if scheme != "file" or urlparse(catalog).scheme != "file":
            return False
        local, base = _local(link), _local(catalog)
        return local is not None and base is not None and local.is_relative_to(base.parent)
    except ValueError:  # not a URL (an unclosed [ ...)
        return False


def _local(url: str) -> Path | None:
    """A file:// URL's path with every link resolved, or None for one with a host."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        return None
    return Path(os.path.realpath(unquote(parsed.path)))


def download_warm_over_url(found: WarmOffer, catalog: str) -> Path:
    """A warm image a metadata catalog lists, from its http(s) or file:// URL, into the cache."""

    def fill(partial: Path) -> None:
        local = _local(found.url) if urlparse(found.url).scheme == "file" else None
        deadline = time.monotonic() + timeouts.BOX_DOWNLOAD
        source = files.open_regular_read(local) if local else urlopen(found.url, timeout=timeouts.CONNECT)
        with source as src, files.open_download(partial, resume=False) as out:
            written = 0
            while block := src.read(4 << 20):
                written += len(block)
                if written > found.size:
                    break  # more than the catalog said: the digest check refuses it
                if time.monotonic() > deadline:
                    raise PublishError(f"the warm image at {found.url} took over {timeouts.BOX_DOWNLOAD}s to download")
                out.write(block)

    if not _reachable(found.url, catalog):
        raise PublishError(f"the warm image at {found.url} is not one the catalog {catalog} may name")
    try:
        return download_into_cache(found, f"the warm image {found.url}", fill)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:200]
        raise PublishError(f"the warm image at {found.url} could not be downloaded: {reason}") from None
