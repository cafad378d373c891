"""A catalog, opened from its URL: one protocol, one implementation per kind, and the choice of
kind made here and nowhere else.

- A **metadata catalog** is a `metadata.json` (Vagrant's own catalog format) with its boxes: a
  directory, an S3 bucket, or any web server. Vagrant reads it itself, so a Vagrantfile's
  `box_url` can name it; vagabond writes it through a store (stores.py: a directory or S3).
- An **OCI catalog** (`oci://REGISTRY/NAMESPACE/NAME`) keeps each version as an artifact in a
  registry (oci.py). Vagrant cannot read it: vagabond downloads the box and hands Vagrant a
  one-version catalog beside it.

A fourth kind is one more class with these methods, and a line in ``open_catalog``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from vagabond import files
from vagabond.bases import archive
from vagabond.catalog import oci, read, transaction
from vagabond.catalog.read import Published, WarmOffer
from vagabond.errors import CommandFailed, PublishError, UsageError
from vagabond.host.vagrant import Vagrant


class Catalog(Protocol):
    url: str
    vagrant_reads: bool  # Vagrant itself reads it: a Vagrantfile's box_url can name it

    def find_current(self, digest: str, name: str, constraint: str | None = None) -> tuple[Published | None, str]:
        """The newest version built from this definition, or None and why (never an exception)."""
        ...

    def add_to_vagrant(self, vagrant: Vagrant, source: Published) -> str:
        """The version in Vagrant's box store, its checksum checked: '' when it is, else why not."""
        ...

    def publish(self, path: Path, **options) -> dict:
        """Add a .box as a new version (checked, uploaded, read back), pruning beyond --keep; the
        warm image its description names goes with it (unless warm=False)."""
        ...

    def warm_offers(self, source: Published) -> tuple[list[WarmOffer], str]:
        """The warm images the catalog lists for this version, or none and why (never an exception)."""
        ...

    def download_warm(self, offer: WarmOffer) -> Path:
        """One of them in vagabond's cache, checked against its sha256 (PublishError when it fails)."""
        ...


def open_catalog(url: str) -> Catalog:
    """The catalog at this URL, of the kind its scheme says."""
    if urlparse(url).scheme == oci.SCHEME:
        return OciCatalog(url)
    return MetadataCatalog(url)


def check_keep(keep: int | None) -> None:
    """--keep, for every kind: how many of a box's newest versions stay."""
    if keep is not None and keep < 1:
        raise UsageError("--keep must be at least 1")


class MetadataCatalog:
    vagrant_reads = True

    def __init__(self, url: str):
        self.url = url

    def find_current(self, digest: str, name: str, constraint: str | None = None) -> tuple[Published | None, str]:
        return read.find_current_in_metadata(self.url, digest, name, constraint)

    def add_to_vagrant(self, vagrant: Vagrant, source: Published) -> str:
        try:
            vagrant.box_add_catalog(source.url, source.version)
        except CommandFailed as exc:
            # Vagrant's message is a paragraph (then details): keep the paragraph, on one line.
            reason = " ".join(exc.stderr.strip().split("\n\n")[0].split()) or str(exc)
            return f"download of {source.name} {source.version} failed: {reason}"
        return ""

    def publish(self, path: Path, **options) -> dict:
        check_keep(options.get("keep"))
        return transaction.publish_to_store(path, self.url, **options)

    def warm_offers(self, source: Published) -> tuple[list[WarmOffer], str]:
        return read.warm_offers_in_metadata(self.url, source)

    def download_warm(self, offer: WarmOffer) -> Path:
        return read.download_warm_over_url(offer, self.url)


class OciCatalog:
    vagrant_reads = False

    def __init__(self, url: str):
        self.url = url

    def find_current(self, digest: str, name: str, constraint: str | None = None) -> tuple[Published | None, str]:
        version, why = oci.find_current(self.url, digest, name, constraint)
        return (Published(name, version, self.url) if version else None), why

    def add_to_vagrant(self, vagrant: Vagrant, source: Published) -> str:
        """Vagrant cannot read a registry: the blob is downloaded (checked against its digest) and
        Vagrant given a one-version catalog beside it, so its store records the version and it
        checks the checksum once more as it adds the box."""
        try:
            box_file, sha = oci.download(self.url, source.name, source.version)
            with files.private_dir(box_file.parent) as work:
                catalog = work / "metadata.json"
                archive.write_catalog(
                    catalog,
                    name=source.name,
                    description=f"from {self.url}",
                    version=source.version,
                    box_url=box_file.as_uri(),
                    sha256=sha,
                )
                vagrant.box_add_catalog(catalog.as_uri(), source.version)
            files.remove(box_file)  # Vagrant's store holds it now
        except (PublishError, CommandFailed) as exc:
            return f"{source.name} {source.version} from the registry: {' '.join(str(exc).split())[:300]}"
        return ""

    def publish(self, path: Path, **options) -> dict:
        for option in ("base_url", "acl"):
            if options.pop(option, None):
                raise UsageError(f"--{option.replace('_', '-')} does not apply to an oci:// catalog")
        check_keep(options.get("keep"))
        return oci.publish(path, self.url, **options)

    def warm_offers(self, source: Published) -> tuple[list[WarmOffer], str]:
        return oci.warm_offers(self.url, source.name, source.version)

    def download_warm(self, offer: WarmOffer) -> Path:
        return oci.download_warm(self.url, offer)


def publish(path: Path, catalog: str, **options) -> dict:
    """`vagabond publish`: the box into the catalog at this URL, whatever its kind."""
    return open_catalog(catalog).publish(path, **options)
