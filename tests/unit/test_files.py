"""files.take_over: a file of this user's gets its new name once, never through a link, never over
another file, never when someone else owns it."""

from __future__ import annotations

import os
import pwd

import pytest

from vagabond import files


def test_a_regular_file_takes_its_new_name(tmp_path):
    (tmp_path / "old.json").write_text("record")
    assert files.take_over(tmp_path / "old.json", tmp_path / "new.json") is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json"]
    assert (tmp_path / "new.json").read_text() == "record"


def test_nothing_to_take_over(tmp_path):
    assert files.take_over(tmp_path / "old.json", tmp_path / "new.json") is False
    assert list(tmp_path.iterdir()) == []


def test_a_link_is_left_where_it_is(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("theirs")
    (tmp_path / "old.json").symlink_to(victim)
    assert files.take_over(tmp_path / "old.json", tmp_path / "new.json") is False
    assert not (tmp_path / "new.json").exists() and (tmp_path / "old.json").is_symlink()


def test_a_file_at_the_new_name_is_never_overwritten(tmp_path):
    (tmp_path / "old.json").write_text("old")
    (tmp_path / "new.json").write_text("newer")
    assert files.take_over(tmp_path / "old.json", tmp_path / "new.json") is False
    assert (tmp_path / "new.json").read_text() == "newer" and (tmp_path / "old.json").read_text() == "old"


def test_a_hard_link_to_another_file_is_not_taken(tmp_path):
    (tmp_path / "elsewhere").write_text("theirs")
    os.link(tmp_path / "elsewhere", tmp_path / "old.json")
    assert files.take_over(tmp_path / "old.json", tmp_path / "new.json") is False
    assert not (tmp_path / "new.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root (CI runs as root)")
def test_a_file_someone_else_owns_is_not_taken(tmp_path):
    nobody = pwd.getpwnam("nobody")
    (tmp_path / "old.json").write_text("theirs")
    os.chown(tmp_path / "old.json", nobody.pw_uid, nobody.pw_gid)
    assert files.take_over(tmp_path / "old.json", tmp_path / "new.json") is False
    assert not (tmp_path / "new.json").exists()
