"""A base box built through sudo lands in the shared cache (/var/lib/vagabond/cache), which root
writes and every user reads: root is needed for that one step, nothing in the user's home is
touched, and their own `vagabond up` finds the box there and adds it to their Vagrant store."""

from __future__ import annotations

import os
import pwd

import pytest
from typer.testing import CliRunner

from vagabond import files, paths
from vagabond.bases import made, mmdebstrap
from vagabond.cli.app import app

NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned shared cache needs root (CI runs as root)")


def as_sudo(monkeypatch, uid: int = NOBODY.pw_uid, home: str = "/nonexistent") -> None:
    monkeypatch.setattr(paths.os, "geteuid", lambda: 0)
    monkeypatch.setenv("SUDO_UID", str(uid))
    monkeypatch.setenv("SUDO_GID", str(NOBODY.pw_gid))
    real = pwd.getpwuid

    def getpwuid(u: int) -> pwd.struct_passwd:
        entry = real(u)
        return pwd.struct_passwd((*entry[:5], home, entry[6])) if u == uid else entry

    monkeypatch.setattr(paths.pwd, "getpwuid", getpwuid)


def test_the_invoker_is_the_sudo_user_and_never_root(monkeypatch, tmp_path):
    as_sudo(monkeypatch, home=str(tmp_path))
    assert paths.sudo_invoker() == (NOBODY.pw_uid, NOBODY.pw_gid, tmp_path)
    monkeypatch.setenv("SUDO_UID", "0")
    assert paths.sudo_invoker() is None, "root through sudo is root"
    monkeypatch.setenv("SUDO_UID", "12x")
    assert paths.sudo_invoker() is None
    monkeypatch.setenv("SUDO_UID", str(NOBODY.pw_uid))
    monkeypatch.setattr(paths.os, "geteuid", lambda: 1000)
    assert paths.sudo_invoker() is None, "not root: nothing to hand over"


@root_only
def test_base_build_through_sudo_builds_into_the_shared_cache_and_touches_nothing_of_the_user(
    project, monkeypatch, tmp_path
):
    home = tmp_path / "home"
    home.mkdir()
    as_sudo(monkeypatch, home=str(home))
    monkeypatch.setattr(paths, "SHARED_CACHE", tmp_path / "shared")
    monkeypatch.delenv("VAGABOND_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    added, seen = [], []

    def build(box, force=False):
        seen.append(paths.cache_dir())
        return made.MadeBase("vagabond/debian12", "1", tmp_path / "b.box", tmp_path / "metadata.json", "0" * 64)

    monkeypatch.setattr(mmdebstrap, "build", build)
    monkeypatch.setattr(made, "add_to_store", lambda built: added.append(built))
    result = CliRunner().invoke(app, ["base", "build", "debian12"])
    assert result.exit_code == 0, result.output
    assert seen == [tmp_path / "shared"] and list(home.iterdir()) == [], "nothing in the user's home"
    assert added == [], "root's Vagrant store is not the user's: their up adds it"
    assert "'vagabond up debian12' as you adds it to your Vagrant store" in " ".join(result.stderr.split())


@root_only
def test_a_user_finds_the_shared_build_only_where_only_root_can_change_it(project, monkeypatch, tmp_path):
    """A shared cache someone else could write (or a link in it) is not trusted: the user's up
    builds (or says how to) instead of booting what another user may have planted."""
    from vagabond.bases import archive
    from vagabond.definition import boxfile

    monkeypatch.setattr(paths, "SHARED_CACHE", tmp_path / "shared")
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "mine"))
    base = boxfile.find_box("debian12", paths.shipped_boxes_dir()).spec.base
    where = paths.SHARED_CACHE / mmdebstrap.cache_dir_for(base).relative_to(paths.cache_dir())
    where.mkdir(parents=True)
    (tmp_path / "box.img").write_bytes(b"disk")
    box = archive.write_box(tmp_path / "box.img", where / "vagabond-debian12.box", virtual_size_gib=1)
    archive.write_catalog(
        where / "metadata.json",
        name="vagabond/debian12",
        description="d",
        version="1",
        box_url=box.as_uri(),
        sha256=files.sha256_file(box),
    )
    made.MadeBase("vagabond/debian12", "1", box, where / "metadata.json", files.sha256_file(box)).save(where)
    assert mmdebstrap.cached(base).box_file == box, "root's shared build, read by the user"
    os.chmod(paths.SHARED_CACHE, 0o777)
    assert mmdebstrap.cached(base) is None, "a shared cache anyone can write"
    os.chmod(paths.SHARED_CACHE, 0o755)
    os.chown(where, NOBODY.pw_uid, NOBODY.pw_gid)
    assert mmdebstrap.cached(base) is None, "a directory another user owns"


def test_a_base_build_without_root_says_the_one_command_that_needs_it(project, monkeypatch):
    monkeypatch.setattr(mmdebstrap.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(mmdebstrap, "cached", lambda base: None)
    result = CliRunner().invoke(app, ["base", "build", "debian12"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert "the base box of debian12 is built once, as root" in said
    assert (
        'sudo "$(command -v vagabond)" base build debian12' in said and "then vagabond up debian12 runs as you" in said
    )


def test_a_made_base_copied_out_is_publishable_as_it_is(tmp_path):
    """base build -o DIR writes the .box and its description, which publish takes without options."""
    from vagabond.bases import archive
    from vagabond.catalog import catalogs
    from vagabond.catalog.documents import Archive

    (tmp_path / "box.img").write_bytes(b"disk")
    box = archive.write_box(tmp_path / "box.img", tmp_path / "cache.box", virtual_size_gib=1)
    built = made.MadeBase("vagabond/debian12", "20261206.1", box, tmp_path / "metadata.json", files.sha256_file(box))
    copied = made.copy_box(built, tmp_path / "dist")
    assert copied.name == "vagabond-debian12-20261206.1.box"
    loaded = Archive.load(copied)
    assert (loaded.name, loaded.version, loaded.sha256) == ("vagabond/debian12", "20261206.1", built.sha256)
    result = catalogs.publish(copied, str(tmp_path / "site"), base_url="https://example.org/boxes")
    assert result["metadata_url"] == "https://example.org/boxes/metadata.json"
