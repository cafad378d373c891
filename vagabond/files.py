"""The one writer of files: atomic writes under names nobody can guess, links refused, deletion
that never follows a link, locks opened without following one.

vagabond runs as root beside other users, in directories they may write (a checkout, a shared
catalog, /run/lock). Every file it writes goes through here: a temporary file made with mkstemp
(O_EXCL, a random name) in the target's own directory, given its mode, then renamed over the
target, so a reader sees the old file or the new one and a link planted at a predictable name
catches nothing. A target that is a symbolic link is refused, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from vagabond.errors import Busy, UnsafePath


# A box name (org/name) as one path component, the way every file and cache entry of it is named.
# (Vagrant's own store spells it -VAGRANTSLASH-; vm.store_name owns that spelling.)
def safe_name(box_name: str) -> str:
    return box_name.replace("/", "-")


def refuse_link(path: Path) -> None:
    """UnsafePath when ``path`` is a symbolic link: vagabond writes and deletes only its own files."""
    if path.is_symlink():
        raise UnsafePath(
            f"refusing {path}: it is a symbolic link (to {os.readlink(path)}), not a file vagabond made",
            hint="remove the link, or choose another place",
        )


def make_dirs(path: Path, *, root: Path | None = None, mode: int = 0o755) -> Path:
    """``path`` and its missing parents as directories. ``path`` itself, and every directory
    between ``root`` (the one the caller owns, e.g. where it renders) and it, must be a real
    directory: a link there would send what is written below it elsewhere, so it is refused.
    Directories above ``root`` are the user's layout (a linked home directory is fine). As root,
    a directory another user owns or can write, here or above, is refused (refuse_foreign)."""
    path = Path(path)
    refuse_link(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    refuse_foreign(existing)  # before anything is made in another user's directory
    if not path.is_dir():
        if path.parent != path:
            make_dirs(path.parent, root=root if root is not None and path.parent != root else path.parent, mode=mode)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=mode)
        refuse_link(path)
        if not path.is_dir():
            raise UnsafePath(f"refusing {path}: it is not a directory")
    if root is not None:
        probe = path.parent
        while probe != root and root in probe.parents:
            refuse_link(probe)
            probe = probe.parent
    return path


def trusted_owners() -> set[int]:
    """Who may own a directory root writes into: root, and the user who ran vagabond through sudo
    (that user has root already; git's safe.directory trusts SUDO_UID the same way)."""
    owners = {0}
    with contextlib.suppress(ValueError):
        owners.add(int(os.environ.get("SUDO_UID", "")))
    return owners


def refuse_foreign(directory: Path) -> None:
    """As root, UnsafePath when ``directory`` or any directory above it (links resolved) is owned by
    another user or writable by one (group or other write, without the sticky bit that /tmp has):
    that user could swap what root is about to write, or write through it, for a link to anywhere.
    Other users' programs are their own business: this holds only when vagabond runs as root."""
    if os.geteuid() != 0:
        return
    owners = trusted_owners()
    real = Path(directory).resolve()
    for probe in (real, *real.parents):
        st = os.stat(probe)
        if st.st_uid not in owners:
            raise UnsafePath(
                f"refusing {directory}: {probe} belongs to {_user(st.st_uid)}, and vagabond runs as root",
                hint=f"run vagabond through sudo as {_user(st.st_uid)}, or choose a directory root or you own",
            )
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafePath(
                f"refusing {directory}: other users can write {probe} (mode {stat.S_IMODE(st.st_mode):o}), "
                "and vagabond runs as root",
                hint=f"chmod go-w {probe}, or choose another directory",
            )


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


@contextlib.contextmanager
def atomic(path: Path, *, mode: int = 0o644, binary: bool = True) -> Iterator[IO[Any]]:
    """A file object whose content replaces ``path`` when the block ends without an error, in one
    rename; on an error (an interrupt included) nothing changes and the temporary file goes."""
    path = Path(path)
    refuse_link(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        refuse_link(path)  # planted while we wrote: still not written through (rename replaces the link itself)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str, *, mode: int = 0o644) -> Path:
    with atomic(path, mode=mode, binary=False) as fh:
        fh.write(text)
    return path


def write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    with atomic(path, mode=mode) as fh:
        fh.write(data)
    return path


def write_json(path: Path, data: Any, *, mode: int = 0o644, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", mode=mode)


def write_if_changed(path: Path, text: str, *, mode: int = 0o644) -> bool:
    """Write ``text`` unless the file already holds it; True when it changed."""
    refuse_link(path)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return False
    write_text(path, text, mode=mode)
    return True


def _open_regular(path: Path, flags: int, mode: int) -> int:
    """os.open with O_NOFOLLOW: a link there is refused, not followed, and so is anything but a
    regular file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"refusing {path}: it is not a regular file")
    return fd


def take_over(earlier: Path, target: Path) -> bool:
    """Give a file this process's user owns a new name in the same directory, when that name is
    free: the file's earlier name (a format moved on) is taken over once. Never a link, never a file
    someone else owns, never over a file at ``target`` (a concurrent run that took it over first, or
    one written anew). True when it moved."""
    try:
        st = os.lstat(earlier)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        return False
    try:
        os.link(earlier, target, follow_symlinks=False)  # fails when target exists: nothing overwritten
    except FileExistsError:
        return False
    moved = os.lstat(target)
    if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):  # earlier was swapped meanwhile
        os.unlink(target)
        return False
    os.unlink(earlier)
    return True


def open_regular_read(path: Path) -> IO[bytes]:
    """A regular file opened for reading: a link, a device (/dev/zero) or a FIFO is refused."""
    return os.fdopen(_open_regular(path, os.O_RDONLY | os.O_NONBLOCK, 0), "rb")


def open_append(path: Path, *, mode: int = 0o644) -> IO[str]:
    """A log file opened for appending; a link there is refused, not followed."""
    fd = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    return os.fdopen(fd, "a", encoding="utf-8")


def open_download(path: Path, *, resume: bool) -> IO[bytes]:
    """A download's partial file, appended to (resume) or started over; a link there is refused."""
    fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if resume else os.O_TRUNC), 0o644)
    return os.fdopen(fd, "ab" if resume else "wb")


CHUNK = 8 * 2**20


def copy(source: Path, target: Path, *, mode: int = 0o644, replace: bool = True) -> Path:
    """A copy of ``source`` at ``target``, whole or not at all. Without replace, a file that is at
    ``target`` already (a concurrent writer's) is never overwritten: FileExistsError."""
    refuse_link(target)
    make_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
            while block := src.read(CHUNK):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
            os.fchmod(dst.fileno(), mode)
        if replace:
            refuse_link(target)
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails when anything (a file, a link) is there: never over it
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def copy_regular(source: Path, target: Path, *, mode: int = 0o644) -> Path:
    """``copy``, reading ``source`` only when it is a regular file and not a link: a link planted
    where a log was expected would have root copy whatever it points at out (a 0600 secret as 0644)."""
    fd = _open_regular(source, os.O_RDONLY, 0)
    refuse_link(target)
    make_dirs(target.parent)
    out, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(out, "wb") as dst, os.fdopen(fd, "rb") as src:
            while block := src.read(CHUNK):
                dst.write(block)
            dst.flush()
            os.fchmod(dst.fileno(), mode)
        refuse_link(target)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def move(source: Path, target: Path, *, mode: int = 0o644) -> Path:
    """A file vagabond made (in a private directory, or under a name nobody could guess) renamed
    over ``target`` in one step; a link at ``target`` is refused, not written through."""
    refuse_link(target)
    os.chmod(source, mode)
    os.replace(source, target)
    return target


@contextlib.contextmanager
def private_dir(parent: Path, prefix: str = ".vagabond-") -> Iterator[Path]:
    """A directory only this process's user can enter, beside where its result goes (one file
    system: the result is renamed into place), removed afterwards whatever happened."""
    make_dirs(parent)
    work = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))  # mode 0700, a name nobody can guess
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove(path: Path) -> bool:
    """Remove a file, a link (the link, never what it points at) or a directory tree (never
    descending through a link inside it); True when something was there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        # On Linux rmtree works on directory descriptors (shutil.rmtree.avoids_symlink_attacks):
        # a link inside is removed as a link, and a directory swapped for a link meanwhile is not followed.
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return True


def open_lock(path: Path, *, mode: int = 0o644) -> int:
    """A lock file's descriptor, opened without following a link and only if it is a regular file.
    ``mode`` is given only to a file this call creates: an existing file keeps its owner's mode."""
    make_dirs(path.parent)
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
        os.fchmod(fd, mode)  # the umask took some of it; this file is ours
        return fd
    except FileExistsError:
        pass
    try:
        try:
            fd = os.open(path, flags)
        except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
            fd = os.open(path, (flags & ~os.O_RDWR) | os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"refusing lock {path}: it is a symbolic link", hint="remove the link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"refusing lock {path}: it is not a regular file")
    return fd


def try_lock(fd: int) -> bool:
    """An exclusive flock on ``fd`` if it is free now."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def wait_for_lock(fd: int, path: Path, timeout: float, what: str, on_wait=None) -> None:
    """An exclusive flock on ``fd``, waiting at most ``timeout`` seconds: anyone who can open the
    file can hold it forever, so the wait ends in a one-line Busy naming the holder. The wait is
    a poll, so a signal stops it at once (and a cleanup section, which ignores signals, still ends)."""
    if try_lock(fd):
        return
    if on_wait is not None:
        on_wait()
    deadline = time.monotonic() + timeout
    while not try_lock(fd):
        if time.monotonic() > deadline:
            raise Busy(
                f"{lock_holder(fd) or 'another process'} has held {path} for over {timeout:g}s: {what} cannot "
                "wait longer",
                hint=f"find it with: fuser -v {path}",
            )
        time.sleep(0.2)


def lock_holder(fd: int) -> str:
    """Who holds a flock on the file behind ``fd`` ('pid 123 (vagabond)'), from /proc/locks."""
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == want and parts[4].isdigit():
                try:
                    comm = Path(f"/proc/{parts[4]}/comm").read_text().strip()
                except OSError:
                    comm = "?"
                return f"pid {parts[4]} ({comm})"
    return ""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 4 * 2**20) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh, chunk)


def sha256_stream(fh: IO[bytes], chunk: int = 4 * 2**20) -> str:
    """The sha256 of what is left to read of an open file."""
    digest = hashlib.sha256()
    while block := fh.read(chunk):
        digest.update(block)
    return digest.hexdigest()


# What vagabond reads as JSON (catalogs, the registry, state.json, descriptions) is bounded: a
# nesting this deep is no document of vagabond's, and Python's parser would recurse until it fails.
JSON_MAX_DEPTH = 64
JSON_MAX_BYTES = 16 * 2**20


def loads(text: str | bytes, where: str, *, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """JSON from an untrusted source: ValueError naming ``where`` when it is not JSON, larger than
    ``max_bytes`` or nested deeper than JSON_MAX_DEPTH."""
    if len(text) > max_bytes:
        raise ValueError(f"{where} is larger than {max_bytes // 2**20} MiB")
    if _depth(text) > JSON_MAX_DEPTH:
        raise ValueError(f"{where} nests deeper than {JSON_MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{where} is not valid JSON ({exc})") from None


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _depth(text: str | bytes) -> int:
    """How deep brackets nest, strings skipped: a bound checked before the parser recurses."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    depth = deepest = 0
    for token in _JSON_TOKENS.finditer(raw):
        byte = token.group()
        if byte in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (b"]", b"}"):
            depth -= 1
    return deepest
