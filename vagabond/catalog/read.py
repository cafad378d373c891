"""Reading a catalog (vagabond up with a prebuilt box): the newest version built from this very
box definition, with a checksum Vagrant can check, or the reason there is none."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse
from urllib.request import urlopen

from vagabond import files, timeouts, ui
from vagabond.catalog.documents import check_catalog
from vagabond.catalog.versions import satisfies, version_key
from vagabond.errors import PublishError


@dataclass(frozen=True)
class Published:
    """A box version in a catalog: what Vagrant adds by name and version from the catalog's URL
    (and what a work directory records of the prebuilt box its VM was made from)."""

    name: str
    version: str
    url: str


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
