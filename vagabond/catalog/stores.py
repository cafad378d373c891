"""Where a catalog lives: the interface every store gives the publish transaction (Store), a local
directory (DirStore), and the choice of store from a catalog's URL."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

from vagabond import files, timeouts
from vagabond.catalog.documents import LOCK, METADATA, Conflict, parse_json
from vagabond.errors import PublishError, UsageError


class Store(Protocol):
    """What the publish transaction needs of a catalog's storage: box files by key, metadata.json
    read with a token and written only if nobody wrote it since (or under a lock)."""

    base_url: str

    def url(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def put_file(self, key: str, source: Path, *, replace: bool = False) -> None: ...
    def read_back(self, key: str) -> tuple[int, str]: ...
    def delete(self, key: str) -> None: ...
    def exclusive(self) -> AbstractContextManager[None]: ...
    def get_metadata(self) -> tuple[dict | None, str | None]: ...
    def put_metadata(self, data: dict, token: str | None) -> None: ...


class DirStore:
    """A catalog in a local directory (plain path or file://), e.g. one a web server serves."""

    def __init__(self, root: Path, base_url: str | None) -> None:
        self.root = root.absolute()
        self.base_url = (base_url or self.root.as_uri()).rstrip("/")

    def _path(self, key: str) -> Path:
        """The file for ``key``, refused unless it lies inside the catalog directory: a plain relative
        path with no directory on the way that is a link. The file itself is not resolved: a link
        there is the link (deleting it removes the link, never what it points at)."""
        rel = PurePosixPath(key)
        if not key or rel.is_absolute() or ".." in rel.parts or str(rel) != key.rstrip("/") or key.endswith("/"):
            raise PublishError(f"refusing {key!r}: it points outside the catalog directory {self.root}")
        path = self.root / rel
        probe = path.parent
        while probe != self.root:
            if probe.is_symlink():
                raise PublishError(f"refusing {key!r}: {probe} is a link, which may lead outside {self.root}")
            probe = probe.parent
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
        return parse_json(raw, str(path)), None

    def put_metadata(self, data: dict, token: str | None) -> None:
        # Under exclusive(): nobody else writes; temp file + rename makes readers see old or new.
        files.write_json(self.root / METADATA, data)


def open_store(catalog: str, base_url: str | None = None, acl: str | None = None) -> Store:
    parsed = urlparse(catalog)
    if parsed.scheme == "s3":
        from vagabond.catalog.s3 import S3Store  # boto3 only for an s3:// catalog

        if not parsed.netloc:
            raise UsageError(f"S3 catalog {catalog!r} needs a bucket: s3://BUCKET/PREFIX")
        return S3Store(parsed.netloc, parsed.path, base_url, acl)
    if acl:
        raise UsageError("--s3-acl applies to s3:// catalogs only")
    if parsed.scheme == "file":
        return DirStore(Path(parsed.path), base_url)
    if parsed.scheme == "":
        return DirStore(Path(catalog), base_url)
    raise UsageError(
        f"catalog {catalog!r}: use a directory, file://PATH or s3://BUCKET/PREFIX "
        "(an HTTP URL is where a catalog is read from, not written to)"
    )
