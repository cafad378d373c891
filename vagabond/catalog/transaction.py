"""The publish transaction: check everything, upload and read back, add the version to the
catalog in one atomic (or conditional) write, then delete only what left it. A publish that fails
or is interrupted after uploading removes its upload again; nothing it did not name is touched."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from vagabond import ui
from vagabond.catalog.documents import (
    METADATA,
    Archive,
    Conflict,
    box_key,
    check_catalog,
    check_not_pruned_at_once,
    merge,
    own_key,
    urls,
    warm_key,
)
from vagabond.catalog.stores import Store, open_store
from vagabond.catalog.versions import check_version, version_key
from vagabond.errors import PublishError

CONFLICT_RETRIES = 20


def publish_to_store(path: Path, catalog: str, **options) -> dict:
    """A metadata catalog (a directory or S3; catalogs.py chooses): check everything, upload and
    verify, then add the version to metadata.json in one atomic (or conditional) write, then delete
    what left the catalog. Nothing is uploaded before every input is known to be good; a publish
    that fails after uploading removes its upload again."""
    try:
        return _publish(path, catalog, **options)
    except OSError as exc:  # the catalog directory: not writable, not a directory, disk full ...
        where = f" ({exc.filename})" if exc.filename else ""
        raise PublishError(f"cannot publish to {catalog}: {exc.strerror or exc}{where}") from None


def _publish(
    path: Path,
    catalog: str,
    *,
    name: str | None = None,
    version: str | None = None,
    keep: int | None = None,
    force: bool = False,
    base_url: str | None = None,
    acl: str | None = None,
    warm: bool = True,
    check_warm=None,
) -> dict:
    if version is not None:
        check_version(version)
    archive = Archive.load(path, name=name, version=version, warm=warm, check_warm=check_warm)
    store = open_store(catalog, base_url, acl)
    published = _published(store, archive)
    immutable = PublishError(
        f"{archive.name} {archive.version} is already in {catalog}; published boxes are immutable "
        "(publish a new version, or --force to replace it)"
    )
    _check_admissible(archive, published, catalog, keep=keep, force=force, immutable=immutable)
    key = box_key(archive, replacing=archive.version in published)
    url = store.url(key)
    if archive.version in published and url in urls([published[archive.version]]):
        raise PublishError(
            f"{archive.name} {archive.version} is already published with this very file", hint="nothing to do"
        )
    replace = force and archive.version not in published
    warm_at = warm_key(archive, replacing=archive.version in published) if archive.warm else None
    warm_url = store.url(warm_at) if warm_at else None
    with contextlib.ExitStack() as uploads:
        size, sha = uploads.enter_context(
            _uploaded(store, key, url, archive.path, archive.sha256, replace=replace, immutable=immutable)
        )
        if archive.warm is not None:
            uploads.enter_context(
                _uploaded(
                    store,
                    warm_at,
                    warm_url,
                    archive.warm.path,
                    archive.warm.sha256,
                    replace=replace,
                    immutable=immutable,
                )
            )
        doc, gone = _add_version(
            store, archive, url, catalog, keep=keep, force=force, immutable=immutable, warm_url=warm_url
        )
    _prune(store, catalog, archive, doc, gone)
    if url not in urls(doc["versions"]):  # --keep dropped the version just published (a newer one landed meanwhile)
        raise PublishError(
            f"{archive.name} {archive.version} was published, but --keep {keep} pruned it at once "
            "(newer versions landed meanwhile); its file is removed"
        )
    ui.info(f"published {archive.name} {archive.version} ({size / 2**20:.0f} MiB, sha256 {sha[:12]}...) to {catalog}")
    if archive.warm is not None:
        ui.info(f"published its warm image ({archive.warm.size / 2**20:.0f} MiB) to {warm_url}")
    return {
        "name": archive.name,
        "version": archive.version,
        "url": url,
        "sha256": sha,
        "size": size,
        "catalog": catalog,
        "metadata_url": store.url(METADATA),
        "pruned": sorted({v["version"] for v in gone} - {archive.version}, key=version_key),
        "warm": {"url": warm_url, "key_digest": archive.warm.key_digest, "size": archive.warm.size}
        if archive.warm is not None
        else None,
    }


def _published(store: Store, archive: Archive) -> dict[str, dict]:
    """The catalog's versions by number, once its document is known to be one vagabond can use."""
    metadata, _ = store.get_metadata()
    if metadata is not None:
        check_catalog(metadata, store.url(METADATA), archive.name)
    return {v["version"]: v for v in (metadata or {}).get("versions", [])}


def _check_admissible(
    archive: Archive, published: dict, catalog: str, *, keep: int | None, force: bool, immutable: PublishError
) -> None:
    if archive.version in published and not force:
        raise immutable
    check_not_pruned_at_once(archive, published, catalog, keep)


@contextlib.contextmanager
def _uploaded(store: Store, key: str, url: str, path: Path, sha256: str, *, replace: bool, immutable: PublishError):
    """The file (the box, or its warm image) under ``key``, read back as it was sent (size and
    sha256); if what follows fails or is interrupted before the catalog names the upload, the
    upload goes again."""
    uploaded = False
    try:
        try:
            with ui.step(f"upload {path.name}"):
                # Never over a file another publish of this version just made; --force may replace
                # a file the catalog does not name.
                store.put_file(key, path, replace=replace)
                uploaded = True
        except Conflict:
            raise immutable from None  # a concurrent publish of this version got there first
        size, sha = store.read_back(key)
        expected = (path.stat().st_size, sha256)
        if (size, sha) != expected:
            raise PublishError(
                f"uploaded {key} reads back as {size} bytes, sha256 {sha}; expected {expected[0]} bytes, "
                f"sha256 {expected[1]}: upload removed, catalog unchanged"
            )
        yield size, sha
    except BaseException:
        if uploaded:
            with contextlib.suppress(Exception):
                current, _ = store.get_metadata()
                if url not in urls((current or {}).get("versions", [])):
                    store.delete(key)
        raise


def _add_version(
    store: Store,
    archive: Archive,
    url: str,
    catalog: str,
    *,
    keep: int | None,
    force: bool,
    immutable: PublishError,
    warm_url: str | None,
) -> tuple[dict, list[dict]]:
    """metadata.json with this version, written in one step: under the store's lock, or a
    conditional write retried while others change it."""
    with store.exclusive():
        for attempt in range(CONFLICT_RETRIES):
            metadata, token = store.get_metadata()
            if metadata is not None:
                check_catalog(metadata, store.url(METADATA), archive.name)
            if not force and any(v["version"] == archive.version for v in (metadata or {}).get("versions", [])):
                raise immutable  # published meanwhile by someone else
            doc, gone = merge(metadata, archive, url, keep=keep, warm_url=warm_url)
            try:
                store.put_metadata(doc, token)
                return doc, gone
            except Conflict:
                time.sleep(0.05 * (attempt + 1))
    raise PublishError(f"{catalog}: metadata.json kept changing under us ({CONFLICT_RETRIES} attempts)")


def _prune(store: Store, catalog: str, archive: Archive, doc: dict, gone: list[dict]) -> None:
    """Delete the files of the versions that left the catalog: only keys vagabond's own naming
    gives, normalised, that no version the catalog keeps names too."""
    listed = urls(doc["versions"])
    prefix = store.url("")
    kept = {own_key(u[len(prefix) :], archive.name) for u in listed if u.startswith(prefix)} - {None}
    for old in sorted(urls(gone) - listed):
        key = own_key(old[len(prefix) :], archive.name) if old.startswith(prefix) else None
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
