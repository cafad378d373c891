"""A catalog in an OCI registry (oci://REGISTRY/NAMESPACE/NAME): each box version is an OCI
artifact under the tag of its version. The box archive is its one layer, its description the
config, and the manifest's annotations say what `up` needs to choose a version (box name,
definition digest, provider) without downloading a blob. Content addressing is the integrity
check: a blob is taken only when its sha256 is the digest the manifest names.

A version's warm image (`build --warm`) is an artifact of its own, per version and key, under the
tag VERSION-warm-KEYDIGEST, pushed before the version's tag (a version that has one names it from
the start) and pruned with it; its annotations carry the key `up` compares.

The tag is the commit point of a publish: blobs go first, the manifest last, so a push that fails
or is interrupted leaves no tag (the registry collects blobs nothing names)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

from vagabond import __version__, files, paths, ui
from vagabond.catalog.distribution import Registry, check_digest, check_tag
from vagabond.catalog.documents import Archive, Warm, check_not_pruned_at_once
from vagabond.catalog.read import WARM_OFFERS_MAX, WarmOffer, download_into_cache, offer
from vagabond.catalog.versions import VERSION, check_version, satisfies, version_key
from vagabond.errors import PublishError, RegistryError, UsageError

SCHEME = "oci"
ARTIFACT = "application/vnd.vagabond.box.v1"
CONFIG = "application/vnd.vagabond.box.config.v1+json"
LAYER = "application/vnd.vagabond.box.layer.v1.tar"
WARM_ARTIFACT = "application/vnd.vagabond.box.warm.v1"
WARM_CONFIG = "application/vnd.vagabond.box.warm.config.v1+json"
WARM_LAYER = "application/vnd.vagabond.box.warm.layer.v1.tar"
ANNOTATION = "dev.vagabond."  # prefix of vagabond's own annotations
# At most this many manifests are read when choosing a prebuilt box (newest first).
MAX_CANDIDATES = 50


def open_registry(catalog: str) -> Registry:
    """oci://HOST[:PORT]/REPOSITORY, checked, as a Registry client (credentials found, not used yet)."""
    parsed = urlparse(catalog)  # which drops tabs and line breaks silently: refused before
    if (
        not catalog.isprintable()
        or " " in catalog
        or parsed.scheme != SCHEME
        or parsed.query
        or parsed.fragment
        or parsed.params
        or "@" in parsed.netloc
    ):
        raise UsageError(f"catalog {catalog!r}: an OCI catalog is oci://REGISTRY/NAMESPACE/NAME")
    return Registry(parsed.netloc, parsed.path.strip("/"))


def _annotations(archive: Archive, size: int) -> dict[str, str]:
    return {
        "org.opencontainers.image.version": archive.version,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "org.opencontainers.image.description": archive.description[:1000],
        f"{ANNOTATION}box": archive.name,
        f"{ANNOTATION}provider": "libvirt",
        f"{ANNOTATION}architecture": archive.architecture,
        f"{ANNOTATION}definition-digest": archive.definition_digest or "",
        f"{ANNOTATION}sha256": archive.sha256,
        f"{ANNOTATION}size": str(size),
        f"{ANNOTATION}vagabond-version": __version__,
    }


def warm_tag(version: str, key_digest: str) -> str:
    return f"{version}-warm-{key_digest}"


def publish(
    path: Path, catalog: str, *, name=None, version=None, keep=None, force=False, warm=True, check_warm=None
) -> dict:
    """Push the box as the artifact of its version's tag (refused when the tag exists, unless
    force), its warm image first as an artifact of its own; with keep, remove this box's oldest
    versions beyond the keep newest."""
    if version is not None:
        check_version(version)
    archive = Archive.load(path, name=name, version=version, warm=warm, check_warm=check_warm)
    check_tag(archive.version)
    reg = open_registry(catalog)
    versions = _versions(reg)
    existing = reg.manifest(archive.version) if archive.version in versions else None
    layer_digest = f"sha256:{archive.sha256}"
    if existing is not None:
        if any(layer.get("digest") == layer_digest for layer in existing[0].get("layers", [])):
            raise PublishError(
                f"{archive.name} {archive.version} is already published with this very file", hint="nothing to do"
            )
        if not force:
            raise PublishError(
                f"{archive.name} {archive.version} is already in {catalog}; published boxes are immutable "
                "(publish a new version, or --force to replace it)"
            )
    check_not_pruned_at_once(archive, versions, catalog, keep)
    size = archive.path.stat().st_size
    config = {
        "name": archive.name,
        "version": archive.version,
        "provider": "libvirt",
        "architecture": archive.architecture,
        "sha256": archive.sha256,
        "size": size,
        "description": archive.description,
        "definition_digest": archive.definition_digest,
        "vagabond": __version__,
    }
    warm_pushed = _push_warm(reg, archive, archive.warm, catalog) if archive.warm is not None else None
    try:
        body = _push_artifact(
            reg, catalog, archive.path, archive.sha256, config, (ARTIFACT, CONFIG, LAYER), _annotations(archive, size)
        )
        digest = "sha256:" + files.sha256_bytes(body)
        reg.put_manifest(archive.version, body)  # the commit: from here the version is in the catalog
        got = reg.manifest(archive.version)
        if got is None or got[1] != digest:
            raise PublishError(
                f"{catalog}:{archive.version} names another manifest than the one just pushed: "
                "a concurrent publish of this version replaced it"
            )
    except BaseException:
        if warm_pushed is not None:  # no version names it: it goes again (a registry may refuse)
            with contextlib.suppress(Exception):
                reg.delete_manifest(warm_pushed["manifest_digest"])
        raise
    # Warm images of this version made for another box file (a --force that replaced it) go.
    for _, stale_digest in _warm_manifests(reg, archive.name, archive.version, reg.tags()):
        if stale_digest != (warm_pushed or {}).get("manifest_digest"):
            reg.delete_manifest(stale_digest)
    pruned, left = _prune(reg, archive, keep) if keep is not None else ([], [])
    for version_left in left:
        ui.warning(f"left {archive.name} {version_left} in {catalog}: the registry does not allow deleting it")
    ui.info(f"published {archive.name} {archive.version} ({size / 2**20:.0f} MiB, {digest[:19]}...) to {catalog}")
    return {
        "name": archive.name,
        "version": archive.version,
        "url": f"{catalog}:{archive.version}",
        "sha256": archive.sha256,
        "size": size,
        "catalog": catalog,
        "manifest_digest": digest,
        "pruned": pruned,
        "warm": {k: v for k, v in warm_pushed.items() if k != "manifest_digest"} if warm_pushed else None,
    }


def _push_artifact(
    reg: Registry, catalog: str, path: Path, sha256: str, config: dict, kinds: tuple[str, str, str], annotations: dict
) -> bytes:
    """One file as an artifact's one layer, with its description as the config: both blobs
    pushed; the manifest that names them, to be put under its tag by the caller."""
    artifact, config_type, layer_type = kinds
    config_body = json.dumps(config, sort_keys=True).encode()
    config_digest = "sha256:" + files.sha256_bytes(config_body)
    with ui.step(f"push {path.name} to {catalog}"):
        reg.push_blob(path, f"sha256:{sha256}", progress=_progress(f"push {path.name}"))
        reg.push_blob(config_body, config_digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact,
        "config": {"mediaType": config_type, "digest": config_digest, "size": len(config_body)},
        "layers": [
            {
                "mediaType": layer_type,
                "digest": f"sha256:{sha256}",
                "size": path.stat().st_size,
                "annotations": {"org.opencontainers.image.title": path.name},
            }
        ],
        "annotations": annotations,
    }
    return json.dumps(manifest, sort_keys=True).encode()


def _push_warm(reg: Registry, archive: Archive, warm: Warm, catalog: str) -> dict:
    """The warm image as the artifact of its version and key (replacing one of the same key)."""
    tag = warm_tag(archive.version, warm.key_digest)
    check_tag(tag)
    config = {"name": archive.name, "version": archive.version, "key": warm.key, "key_digest": warm.key_digest}
    annotations = {
        "org.opencontainers.image.version": archive.version,
        f"{ANNOTATION}box": archive.name,
        f"{ANNOTATION}box-sha256": archive.sha256,
        f"{ANNOTATION}warm-key": json.dumps(warm.key, sort_keys=True),
        f"{ANNOTATION}warm-key-digest": warm.key_digest,
        f"{ANNOTATION}vagabond-version": __version__,
    }
    body = _push_artifact(
        reg, catalog, warm.path, warm.sha256, config, (WARM_ARTIFACT, WARM_CONFIG, WARM_LAYER), annotations
    )
    reg.put_manifest(tag, body)
    return {
        "url": f"{catalog}:{tag}",
        "key_digest": warm.key_digest,
        "size": warm.size,
        "manifest_digest": "sha256:" + files.sha256_bytes(body),
    }


def _versions(reg: Registry) -> list[str]:
    """The repository's tags that are box versions (others, such as latest, are not vagabond's)."""
    return [t for t in reg.tags() if VERSION.fullmatch(t)]


def _prune(reg: Registry, archive: Archive, keep: int) -> tuple[list[str], list[str]]:
    """Remove this box's versions beyond the keep newest: only tags that are versions, whose
    manifest is a vagabond box of this name. Returns (removed, left because deletion is refused)."""
    ours = []
    for tag in _versions(reg):
        found = reg.manifest(tag)
        if found and found[0].get("annotations", {}).get(f"{ANNOTATION}box") == archive.name:
            ours.append((tag, found[1]))
    ours.sort(key=lambda item: version_key(item[0]), reverse=True)
    removed, left = [], []
    tags = reg.tags()
    for tag, digest in ours[keep:]:
        (removed if reg.delete_manifest(digest) else left).append(tag)
        for _, warm_digest in _warm_manifests(reg, archive.name, tag, tags):
            if not reg.delete_manifest(warm_digest):
                ui.warning(f"left a warm image of {archive.name} {tag}: the registry does not allow deleting it")
    return sorted(removed, key=version_key), sorted(left, key=version_key)


def _warm_manifests(reg: Registry, name: str, version: str, tags: list[str]) -> list[tuple[dict, str]]:
    """This box version's warm images in the registry (manifest, digest): tags VERSION-warm-KEY
    whose manifest is vagabond's warm image of this box and version, of that very key."""
    pattern = re.compile(re.escape(version) + r"-warm-([0-9a-f]{32})")
    found = []
    for tag in [t for t in tags if pattern.fullmatch(t)][:WARM_OFFERS_MAX]:
        got = reg.manifest(tag)
        notes = got[0].get("annotations") if got and isinstance(got[0], dict) else None
        if (
            isinstance(notes, dict)
            and got[0].get("artifactType") == WARM_ARTIFACT
            and notes.get(f"{ANNOTATION}box") == name
            and notes.get("org.opencontainers.image.version") == version
            and notes.get(f"{ANNOTATION}warm-key-digest") == pattern.fullmatch(tag)[1]
        ):
            found.append((got[0], got[1]))
    return found


def warm_offers(catalog: str, name: str, version: str) -> tuple[list[WarmOffer], str]:
    """The warm images of this box version in the registry made with the box file its tag names
    now, from their manifests (no blob read); or none and why (never an exception)."""
    try:
        reg = open_registry(catalog)
        box = reg.manifest(version)
        notes = box[0].get("annotations") if box and isinstance(box[0], dict) else None
        box_sha = notes.get(f"{ANNOTATION}sha256") if isinstance(notes, dict) else None
        found = []
        for manifest, _ in _warm_manifests(reg, name, version, reg.tags()):
            candidate = _offer(manifest, catalog, version)
            made_with = manifest["annotations"].get(f"{ANNOTATION}box-sha256")
            if candidate is not None and isinstance(box_sha, str) and box_sha and made_with == box_sha:
                found.append(candidate)
    except (PublishError, UsageError) as exc:
        return [], f"catalog {catalog} could not be read ({' '.join(str(exc).split())[:200]})"
    return found, "" if found else f"{name} {version} in {catalog} has no warm image"


def _offer(manifest: dict, catalog: str, version: str) -> WarmOffer | None:
    """A warm image's manifest as an offer, or None when it is not one vagabond wrote."""
    layers = manifest.get("layers")
    notes = manifest["annotations"]
    text = notes.get(f"{ANNOTATION}warm-key")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict) or not isinstance(text, str):
        return None
    try:
        key = files.loads(text, f"{catalog}: a warm image's key")
    except ValueError:
        return None
    digest = layers[0].get("digest")
    if layers[0].get("mediaType") != WARM_LAYER or not isinstance(digest, str) or not digest.startswith("sha256:"):
        return None
    tag = f"{version}-warm-{notes[f'{ANNOTATION}warm-key-digest']}"
    return offer(key, f"{catalog}:{tag}", digest.removeprefix("sha256:"), layers[0].get("size"))


def download_warm(catalog: str, found: WarmOffer) -> Path:
    """A warm image's blob into vagabond's cache (a partial download resumed), checked against its digest."""
    reg = open_registry(catalog)
    return download_into_cache(
        found,
        f"the warm image {found.url}",
        lambda partial: reg.download_blob(
            f"sha256:{found.sha256}", partial, found.size, progress=_progress("download the warm image")
        ),
        resumes=True,
    )


# --- reading ---------------------------------------------------------------------------------------


def find_current(catalog: str, digest: str, name: str, constraint: str | None) -> tuple[str | None, str]:
    """The newest version of box ``name`` in the registry built from this exact definition (among
    the versions the constraint allows), from the manifests' annotations alone; or None and why."""
    try:
        reg = open_registry(catalog)
        versions = sorted(_versions(reg), key=version_key, reverse=True)
        allowed = [v for v in versions if satisfies(v, constraint)]
        if versions and not allowed:
            return None, f"no version in {catalog} meets the version constraint {constraint!r}"
        for version in allowed[:MAX_CANDIDATES]:
            found = reg.manifest(version)
            notes = (found[0].get("annotations") or {}) if found else {}
            if (
                isinstance(notes, dict)
                and notes.get(f"{ANNOTATION}box") == name
                and notes.get(f"{ANNOTATION}provider") == "libvirt"
                and notes.get(f"{ANNOTATION}definition-digest") == digest
            ):
                return version, f"prebuilt {name} {version} matches this definition"
    except (PublishError, UsageError) as exc:
        return None, f"catalog {catalog} could not be read ({' '.join(str(exc).split())[:200]})"
    return None, (
        f"no version in {catalog} was built from this box definition and its playbooks "
        f"(digest {digest[:12]}...; {len(versions)} versions listed)"
    )


def download(catalog: str, name: str, version: str) -> tuple[Path, str]:
    """The box file of a version, downloaded (resumed when a partial download is there) into
    vagabond's cache and checked against the digest its manifest names; (path, sha256)."""
    reg = open_registry(catalog)
    found = reg.manifest(version)
    if found is None:
        raise PublishError(f"{catalog} has no version {version} (tag gone)")
    manifest = found[0]
    listed, notes = manifest.get("layers"), manifest.get("annotations")
    layers = [
        layer
        for layer in (listed if isinstance(listed, list) else [])
        if isinstance(layer, dict) and layer.get("mediaType") == LAYER
    ]
    if not isinstance(notes, dict) or notes.get(f"{ANNOTATION}box") != name or len(layers) != 1:
        raise PublishError(f"{catalog}:{version} is not a vagabond box of {name}")
    digest = check_digest(layers[0].get("digest"), f"{catalog}:{version}")
    size = layers[0].get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise PublishError(f"{catalog}:{version}: the box layer has no size")
    where = files.make_dirs(paths.cache_dir() / "prebuilt" / files.safe_name(name))
    final = where / f"{digest.split(':')[1]}.box"
    partial = final.with_name(final.name + ".part")
    if not (final.is_file() and files.sha256_file(final) == digest.split(":")[1]):
        with ui.step(f"download {name} {version} ({size / 2**20:.0f} MiB)"):
            try:
                reg.download_blob(digest, partial, size, progress=_progress(f"download {name} {version}"))
            except RegistryError:
                raise
            got = files.sha256_file(partial) if partial.exists() else ""
            if got != digest.split(":")[1]:
                files.remove(partial)  # a resume would only append to what is wrong
                raise PublishError(
                    f"the box blob of {catalog}:{version} does not match its digest (got sha256 {got[:12]}..., "
                    f"the manifest names {digest[7:19]}...): refused, nothing kept"
                )
            files.move(partial, final)
    return final, digest.split(":")[1]


def _progress(what: str):
    """A progress callback that says how far a long transfer got, every 10% (CI logs stay short)."""
    said = [-1]

    def progress(done: int, total: int) -> None:
        tenth = done * 10 // total if total else 10
        if tenth > said[0] and tenth < 10:
            said[0] = tenth
            ui.info(f"{what}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB")

    return progress
