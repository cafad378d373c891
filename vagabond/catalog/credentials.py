"""Registry credentials the way the container ecosystem keeps them, first found wins:
VAGABOND_REGISTRY_PASSWORD (a token; VAGABOND_REGISTRY_USERNAME beside it) for the one registry
VAGABOND_REGISTRY names, and never for another (a box file may name any registry: a token exported
to publish must not go to it), then the credential files docker and podman keep
($REGISTRY_AUTH_FILE, podman's auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json, with
their credential helpers, each file only if it is a regular one of sane size), else anonymous.
Every secret found is registered with vagabond.redaction: it never reaches a message or a log."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from vagabond import files, process, timeouts
from vagabond.errors import PublishError, UnsafePath
from vagabond.redaction import register_secret

AUTH_FILE_MAX_BYTES = 4 * 2**20


def auth_files() -> list[Path]:
    """Where docker and podman keep registry credentials, in the order they read them."""
    found = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        found.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        found.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    found.append(Path.home() / ".config" / "containers" / "auth.json")
    found.append(Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json")
    return found


def credentials(host: str) -> tuple[str, str] | None:
    """(username, password or token) for this registry, or None (anonymous)."""
    password = os.environ.get("VAGABOND_REGISTRY_PASSWORD")
    if password:
        register_secret(password)
        if os.environ.get("VAGABOND_REGISTRY", "").strip().lower() == host.lower():
            return os.environ.get("VAGABOND_REGISTRY_USERNAME") or "vagabond", password
    for path in auth_files():
        try:
            with files.open_regular_read(path) as fh:
                raw = fh.read(AUTH_FILE_MAX_BYTES + 1)
        except (OSError, UnsafePath):
            continue
        if len(raw) > AUTH_FILE_MAX_BYTES:
            continue  # not a credentials file (/dev/zero, a huge file): read no further
        doc = files.loads(raw, str(path))
        if isinstance(doc, dict) and (found := _from_auth_file(doc, host, path)):
            register_secret(found[1])
            return found
    return None


def unbound_password() -> str:
    """Why an environment password was not offered, for a 401's message ('' when it was, or none)."""
    if os.environ.get("VAGABOND_REGISTRY_PASSWORD") and not os.environ.get("VAGABOND_REGISTRY", "").strip():
        return "VAGABOND_REGISTRY_PASSWORD is set for no registry: set VAGABOND_REGISTRY to the registry's host"
    return ""


def _from_auth_file(doc: dict, host: str, path: Path) -> tuple[str, str] | None:
    names = [host, f"https://{host}", f"http://{host}"]
    if host in ("docker.io", "registry-1.docker.io"):
        names.append("https://index.docker.io/v1/")
    auths = doc.get("auths") if isinstance(doc.get("auths"), dict) else {}
    for name in names:
        entry = auths.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise PublishError(f"{path}: the credentials for {name} are not base64 of user:password") from None
            return user, password
    helpers = doc.get("credHelpers") if isinstance(doc.get("credHelpers"), dict) else {}
    helper = next((helpers[n] for n in names if isinstance(helpers.get(n), str)), None) or doc.get("credsStore")
    if isinstance(helper, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", helper):
        result = process.run([f"docker-credential-{helper}", "get"], input=host, timeout=timeouts.PROBE)
        if result.ok:
            try:
                answer = json.loads(result.stdout)
                return str(answer["Username"]), str(answer["Secret"])
            except (ValueError, KeyError, TypeError):
                pass
    return None
