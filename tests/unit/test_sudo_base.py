"""A base box built through sudo lands in the cache of the user who ran sudo, owned by them: root
is needed for that one step, and their own `vagabond up` adds the box to their Vagrant store."""

from __future__ import annotations

import os
import pwd

import pytest
from typer.testing import CliRunner

from vagabond import files, paths
from vagabond.boxes import made, mmdebstrap
from vagabond.cli.app import app

NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root (CI runs as root)")


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
def test_give_to_hands_over_what_root_made_and_follows_no_link(tmp_path):
    top = tmp_path / "cache"
    (top / "boxes").mkdir(parents=True)
    (top / "boxes" / "box.img").write_text("x")
    outside = tmp_path / "outside"
    outside.write_text("root's")
    (top / "link").symlink_to(outside)
    theirs = top / "someone-elses"
    theirs.write_text("y")
    os.chown(theirs, 4242, 4242)
    given = files.give_to(top, NOBODY.pw_uid, NOBODY.pw_gid)
    assert set(given) == {top, top / "boxes", top / "boxes" / "box.img", top / "link"}
    assert (top / "boxes" / "box.img").stat().st_uid == NOBODY.pw_uid
    assert os.lstat(top / "link").st_uid == NOBODY.pw_uid and outside.stat().st_uid == 0, "the link, not its target"
    assert theirs.stat().st_uid == 4242


@root_only
def test_base_build_through_sudo_builds_into_the_users_cache_theirs_and_adds_nothing(project, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    as_sudo(monkeypatch, home=str(home))
    monkeypatch.delenv("VAGABOND_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    added = []

    def build(box, force=False):
        where = mmdebstrap.paths.cache_dir() / "boxes" / "vagabond-debian12" / "abc"
        where.mkdir(parents=True)
        (where / "box.box").write_text("box")
        return made.MadeBase("vagabond/debian12", "1", where / "box.box", where / "metadata.json", "0" * 64)

    monkeypatch.setattr(mmdebstrap, "build", build)
    monkeypatch.setattr(made, "add_to_store", lambda built: added.append(built))
    result = CliRunner().invoke(app, ["base", "build", "debian12"])
    assert result.exit_code == 0, result.output
    cache = home / ".cache" / "vagabond"
    assert result.stdout.strip() == str(cache / "boxes" / "vagabond-debian12" / "abc" / "box.box")
    owners = {p.lstat().st_uid for p in [home / ".cache", *cache.rglob("*"), cache]}
    assert owners == {NOBODY.pw_uid}, "everything the build made in the user's cache is theirs"
    assert added == [], "root's Vagrant store is not the user's: their up adds it"
    assert "'vagabond up debian12' adds it to your Vagrant store" in " ".join(result.stderr.split())


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
    from vagabond.boxes import archive
    from vagabond.publish import catalogs
    from vagabond.publish.documents import Archive

    (tmp_path / "box.img").write_bytes(b"disk")
    box = archive.write_box(tmp_path / "box.img", tmp_path / "cache.box", virtual_size_gib=1)
    built = made.MadeBase("vagabond/debian12", "20261206.1", box, tmp_path / "metadata.json", files.sha256_file(box))
    copied = made.copy_box(built, tmp_path / "dist")
    assert copied.name == "vagabond-debian12-20261206.1.box"
    loaded = Archive.load(copied)
    assert (loaded.name, loaded.version, loaded.sha256) == ("vagabond/debian12", "20261206.1", built.sha256)
    result = catalogs.publish(copied, str(tmp_path / "site"), base_url="https://example.org/boxes")
    assert result["metadata_url"] == "https://example.org/boxes/metadata.json"
