"""The kinds of base box behind one small interface: each kind's module says how its base is
made (built, imported, downloaded), what names its cache entry and where that lives. Every
decision that depends on a base's kind asks here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Protocol

from vagabond.bases import cloudimage, made, mmdebstrap, vagrantbox
from vagabond.definition.schema import Box
from vagabond.errors import UsageError


class Kind(Protocol):
    """What a base kind's module gives (vagabond.bases.mmdebstrap, .cloudimage, .vagrantbox)."""

    def cache_key(self, box: Box) -> str:
        """The CI cache key of the made base: it changes exactly when vagabond would make it again
        ("": nothing to cache)."""

    def cache_path(self, box: Box) -> Path | None:
        """The one directory that holds the made base (None: Vagrant's store keeps it)."""

    def make(self, box: Box, image: str | None = None) -> made.MadeBase | None:
        """The base, made or taken from the cache (None: Vagrant added it to its store itself)."""


KINDS: dict[str, ModuleType] = {"mmdebstrap": mmdebstrap, "image": cloudimage, "vagrant": vagrantbox}


def of(box: Box) -> Kind:
    return KINDS[box.spec.base.kind]  # type: ignore[return-value]


def cache_key(box: Box) -> str:
    return of(box).cache_key(box)


def cache_path(box: Box) -> Path | None:
    return of(box).cache_path(box)


def ensure_base(box: Box, image: str | None = None) -> str | None:
    """The box's base in Vagrant's box store, made (or taken from the cache) as its kind says;
    returns the version a made base has (None for a base Vagrant downloads itself)."""
    if image is not None and box.spec.base.kind != "image":
        raise UsageError(
            f"--image applies to boxes whose base is a cloud image; {box.name}'s is of kind {box.spec.base.kind!r}"
        )
    base = of(box).make(box, image)
    if base is None:
        return None
    made.add_to_store(base)
    return base.version
