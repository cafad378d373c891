"""Where vagabond finds its shipped data (template, boxes, playbooks) and keeps its cache."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def package_dir() -> Path:
    """The vagabond package's own directory (where a release keeps its _origin.json)."""
    return _PACKAGE


def data_dir() -> Path:
    """The directory holding Vagrantfile.j2, boxes/ and playbooks/.

    A wheel carries them inside the package (``vagabond/_data``, see pyproject.toml); a source
    checkout or editable install keeps them at the top of the repository.
    """
    bundled = _PACKAGE / "_data"
    if (bundled / "Vagrantfile.j2").is_file():
        return bundled
    source = _PACKAGE.parent
    if (source / "Vagrantfile.j2").is_file():
        return source
    raise FileNotFoundError(f"vagabond's data files (Vagrantfile.j2) are missing next to {_PACKAGE}")


def template_path() -> Path:
    return data_dir() / "Vagrantfile.j2"


def shipped_boxes_dir() -> Path:
    return data_dir() / "boxes"


def shipped_playbooks_dir() -> Path:
    return data_dir() / "playbooks"


def sudo_invoker() -> tuple[int, int, Path] | None:
    """The user who ran vagabond through sudo, as (uid, gid, home), when that is why this process
    is root; None for root itself, or a process that is not root."""
    uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() != 0 or not uid.isdigit() or int(uid) == 0:
        return None
    try:
        entry = pwd.getpwuid(int(uid))
    except KeyError:
        return None
    gid = os.environ.get("SUDO_GID", "")
    return entry.pw_uid, int(gid) if gid.isdigit() else entry.pw_gid, Path(entry.pw_dir)


# Base boxes built as root through sudo: root writes here, every user reads (and nobody else writes).
SHARED_CACHE = Path("/var/lib/vagabond/cache")


def cache_dir() -> Path:
    """Large artifacts (base boxes, probe kernels, verdicts) live here, never in a repository."""
    env = os.environ.get("VAGABOND_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vagabond"


def logs_on_failure_dir(option: str | Path | None = None) -> Path | None:
    """Where up and run collect logs when they fail: --logs-on-failure, $VAGABOND_LOGS_ON_FAILURE,
    or ./vagabond-logs when running under CI ($CI or $GITHUB_ACTIONS); otherwise nowhere."""
    if option:
        return Path(option)
    env = os.environ.get("VAGABOND_LOGS_ON_FAILURE")
    if env:
        return Path(env)
    if os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("GITHUB_ACTIONS") == "true":
        return Path("vagabond-logs")
    return None


def state_dir() -> Path:
    """Small records that outlive a work directory (what vagabond created in libvirt, for gc)."""
    env = os.environ.get("VAGABOND_STATE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "vagabond"
