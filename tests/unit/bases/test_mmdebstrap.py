"""mmdebstrap bases: the archive keyring vagabond hands mmdebstrap (an Ubuntu host has no Debian
keyring), and the one line a missing key becomes."""

from __future__ import annotations

import pytest

from vagabond.bases import mmdebstrap
from vagabond.definition.schema import MmdebstrapBase
from vagabond.errors import CommandFailed, UsageError


@pytest.fixture
def keyrings(tmp_path, monkeypatch):
    """The keyring files in a scratch directory (both present), and no distro-info-data."""
    found = {}
    for distro, (path, package) in mmdebstrap.ARCHIVE_KEYRINGS.items():
        fake = tmp_path / path.name
        fake.write_bytes(b"keys")
        found[distro] = (fake, package)
    monkeypatch.setattr(mmdebstrap, "ARCHIVE_KEYRINGS", found)
    monkeypatch.setattr(mmdebstrap, "DISTRO_INFO", tmp_path / "no-distro-info")
    return found


def base(suite: str = "bookworm") -> MmdebstrapBase:
    return MmdebstrapBase(kind="mmdebstrap", suite=suite, box="vagabond/test")


@pytest.mark.parametrize(
    ("suite", "distro"), [("bookworm", "debian"), ("trixie", "debian"), ("noble", "ubuntu"), ("resolute", "ubuntu")]
)
def test_a_suite_belongs_to_its_distribution(keyrings, suite, distro):
    assert mmdebstrap.distribution(suite) == distro


def test_distro_info_data_names_ubuntu_suites_vagabond_does_not_know(keyrings, tmp_path, monkeypatch):
    info = tmp_path / "distro-info"
    info.mkdir()
    (info / "ubuntu.csv").write_text("version,codename,series,created\n28.04 LTS,Zesty Zebra,zesty,2028-04-01\n")
    monkeypatch.setattr(mmdebstrap, "DISTRO_INFO", info)
    assert mmdebstrap.distribution("zesty") == "ubuntu"
    assert mmdebstrap.distribution("forky") == "debian"


def test_mmdebstrap_is_handed_the_suites_keyring(keyrings, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(mmdebstrap.process, "check", lambda argv, **kw: calls.append(argv))
    mmdebstrap.run_mmdebstrap(base("bookworm"), tmp_path / "out.tar", ["sudo"])
    mmdebstrap.run_mmdebstrap(base("noble"), tmp_path / "out.tar", ["sudo"])
    assert f"--keyring={keyrings['debian'][0]}" in calls[0]
    assert f"--keyring={keyrings['ubuntu'][0]}" in calls[1]
    assert calls[0][-2:] == ["bookworm", str(tmp_path / "out.tar")]


def test_a_host_without_the_keyring_is_told_which_package_has_it(keyrings, monkeypatch, tmp_path):
    """An Ubuntu runner: no debian-archive-keyring. One line, before anything is downloaded."""
    keyrings["debian"][0].unlink()
    monkeypatch.setattr(mmdebstrap.process, "check", lambda argv, **kw: pytest.fail("mmdebstrap must not run"))
    with pytest.raises(UsageError, match=r"^building a bookworm base box needs Debian's archive key \(") as err:
        mmdebstrap.run_mmdebstrap(base(), tmp_path / "out.tar", ["sudo"])
    assert err.value.hint == "sudo apt-get install debian-archive-keyring"


def test_a_missing_key_in_apt_becomes_one_line(keyrings, monkeypatch, tmp_path):
    """The keyring is there but lacks the key (an old keyring, a new suite): apt's NO_PUBKEY, named."""

    def fail(argv, **kw):
        raise CommandFailed(argv, 25, "", "W: GPG error: ... NO_PUBKEY 6ED0E7B82643E131\nE: apt-get update failed\n")

    monkeypatch.setattr(mmdebstrap.process, "check", fail)
    with pytest.raises(UsageError, match=r"^mmdebstrap could not check the trixie archive's signature with ") as err:
        mmdebstrap.run_mmdebstrap(base("trixie"), tmp_path / "out.tar", ["sudo"])
    assert err.value.hint.startswith("sudo apt-get install --reinstall debian-archive-keyring")


def test_other_failures_pass_through(keyrings, monkeypatch, tmp_path):
    def fail(argv, **kw):
        raise CommandFailed(argv, 1, "", "E: Unable to locate package nosuch\n")

    monkeypatch.setattr(mmdebstrap.process, "check", fail)
    with pytest.raises(CommandFailed):
        mmdebstrap.run_mmdebstrap(base(), tmp_path / "out.tar", ["nosuch"])
