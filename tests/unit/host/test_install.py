"""Install routes per distribution, the advice doctor gives, and the pip spec of this vagabond."""

from __future__ import annotations

import json
import subprocess

import pytest

from vagabond import process
from vagabond.errors import UsageError
from vagabond.host import doctor, install

UBUNTU = {"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "24.04", "VERSION_CODENAME": "noble"}
DEBIAN = {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}
FEDORA = {"ID": "fedora", "VERSION_ID": "41"}
ROCKY = {"ID": "rocky", "ID_LIKE": "rhel centos fedora"}


def test_os_release_is_parsed_like_a_shell_would(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('# comment\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 26.04 LTS"\nBROKEN="unterminated\n')
    assert install.os_release(path) == {"ID": "ubuntu", "ID_LIKE": "debian", "PRETTY_NAME": "Ubuntu 26.04 LTS"}
    assert install.os_release(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    ("release", "family"),
    [(UBUNTU, "ubuntu"), (DEBIAN, "debian"), (FEDORA, "fedora"), (ROCKY, "fedora"), ({"ID": "arch"}, "")],
)
def test_family(release, family):
    assert install.family(release) == family


def test_ubuntu_gets_hashicorp_and_the_plugin(monkeypatch):
    monkeypatch.setattr(install, "source_checkout", lambda: None)
    advice = install.advice(UBUNTU)
    assert install.HASHICORP_APT_URL in advice.vagrant and install.HASHICORP_FINGERPRINT in advice.vagrant
    assert f"vagrant={install.VAGRANT_VERSION}" in advice.vagrant
    assert f"vagrant plugin install vagrant-libvirt --plugin-version {install.VAGRANT_LIBVIRT_VERSION}" in advice.plugin
    assert "libvirt-dev" in advice.plugin and "apt-get install vagrant " not in advice.vagrant


def test_debian_and_fedora_use_their_packages(monkeypatch):
    monkeypatch.setattr(install, "source_checkout", lambda: None)
    assert install.advice(DEBIAN).vagrant == "sudo apt-get install vagrant vagrant-libvirt"
    assert install.advice(FEDORA).vagrant == "sudo dnf install vagrant vagrant-libvirt"
    assert "scripts/install.sh" not in json.dumps(install.advice(DEBIAN).__dict__), "a pip install has no scripts/"
    monkeypatch.setattr(install, "source_checkout", lambda: "/src/vagabond")
    assert install.advice(DEBIAN).vagrant.endswith("(or run scripts/install.sh)")
    assert "scripts/install.sh" not in install.advice(UBUNTU).vagrant


def test_doctor_gives_the_advice_of_this_distribution(monkeypatch):
    monkeypatch.setattr(install, "os_release", lambda path=None: UBUNTU)
    monkeypatch.setattr(process, "which", lambda name: None)
    checks = {c.name: c for c in doctor.check_vagrant(install.advice())}
    assert install.HASHICORP_APT_URL in checks["vagrant"].fix
    assert checks["vagrant-libvirt"].fix.startswith("sudo apt-get install gcc")


def test_the_package_metadata_allows_the_pythons_doctor_names_and_no_other():
    """pip refuses vagabond on a Python ansible-core 2.16 cannot run on, and doctor says the range."""
    import tomllib  # 3.11+, the Python the tests run on

    from tests.conftest import REPO

    low, high = install.CONTROLLER_PYTHON
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}"
    assert doctor.check_python((3, 11, 4)).ok and doctor.check_python((3, 10, 0)).ok
    for outside in ((3, 13, 1), (3, 14, 0), (3, 9, 18)):
        check = doctor.check_python(outside)
        text = ".".join(map(str, outside))
        assert not check.ok and check.detail.startswith(f"Python {text}: vagabond runs on 3.10 to 3.12")
        assert "--python 3.12" in check.fix


class FakeDistribution:
    def __init__(self, direct_url):
        self.direct_url = direct_url

    def read_text(self, name):
        return None if self.direct_url is None else json.dumps(self.direct_url)


SHA = "ab" * 20


@pytest.mark.parametrize(
    ("direct_url", "origin"),
    [
        (
            {"url": "https://github.com/o/vagabond.git", "vcs_info": {"vcs": "git", "commit_id": SHA}},
            install.Origin(f"vagabond-vm @ git+https://github.com/o/vagabond.git@{SHA}", f"o/vagabond@{SHA}"),
        ),
        (
            {"url": "https://git.example.org/o/vagabond.git", "vcs_info": {"vcs": "git", "commit_id": SHA}},
            install.Origin(f"vagabond-vm @ git+https://git.example.org/o/vagabond.git@{SHA}"),
        ),
        (
            {"url": "https://example.org/vagabond_vm-0.1.0-py3-none-any.whl", "archive_info": {}},
            install.Origin("vagabond-vm @ https://example.org/vagabond_vm-0.1.0-py3-none-any.whl"),
        ),
    ],
)
def test_origin_from_how_it_was_installed(monkeypatch, direct_url, origin):
    monkeypatch.setattr(install.metadata, "distribution", lambda name: FakeDistribution(direct_url))
    assert install.origin() == origin


def test_origin_of_a_release_is_what_its_build_recorded(monkeypatch, tmp_path):
    stamp = tmp_path / "_origin.json"
    stamp.write_text(json.dumps({"repository": "https://github.com/o/vagabond", "commit": SHA, "tag": "v1.0.0"}))
    monkeypatch.setattr(install, "RELEASE_ORIGIN", stamp)
    monkeypatch.setattr(install.metadata, "distribution", lambda name: FakeDistribution(None))
    monkeypatch.setattr(install, "source_checkout", lambda: None)
    assert install.origin() == install.Origin(
        f"vagabond-vm @ git+https://github.com/o/vagabond@{SHA}", f"o/vagabond@{SHA}"
    )


def _repo(path, remote=None):
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (path / "f").write_text("1")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    if remote:
        subprocess.run([*git, "remote", "add", "origin", remote], check=True)
    return git, subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def _checkout(monkeypatch, path):
    monkeypatch.setattr(
        install.metadata,
        "distribution",
        lambda name: FakeDistribution({"url": f"file://{path}", "dir_info": {"editable": True}}),
    )
    monkeypatch.setattr(install, "source_checkout", lambda: path)


def test_origin_of_a_checkout_is_its_remote_at_head_once_pushed(monkeypatch, tmp_path):
    git, head = _repo(tmp_path, "git@github.com:o/vagabond.git")
    _checkout(monkeypatch, tmp_path)
    with pytest.raises(
        UsageError, match=r"^the commit .* is at is not on its origin \(https://github.com/o/vagabond.git\)"
    ):
        install.origin()
    subprocess.run([*git, "update-ref", "refs/remotes/origin/main", "HEAD"], check=True)  # as a push and fetch leave it
    assert install.origin() == install.Origin(
        f"vagabond-vm @ git+https://github.com/o/vagabond.git@{head}", f"o/vagabond@{head}"
    )
    (tmp_path / "f").write_text("2")
    assert install.origin().note == "the checkout has uncommitted changes the runner will not get"


def test_a_local_clone_with_no_https_origin_is_refused_in_one_line(monkeypatch, tmp_path):
    _repo(tmp_path)
    _checkout(monkeypatch, tmp_path)
    with pytest.raises(UsageError) as info:
        install.origin()
    assert str(info.value) == (
        f"cannot tell where a runner would install this vagabond from: {tmp_path} has no https (or "
        "GitHub ssh) origin (pass --vagabond-spec (a git URL pinned to a commit, or a wheel URL), "
        "or --use-action OWNER/REPO@COMMIT)"
    )


def test_an_index_install_without_a_record_is_refused(monkeypatch):
    """Never a bare PyPI version: vagabond-vm==VERSION is whatever the name's owner uploads."""
    monkeypatch.setattr(install.metadata, "distribution", lambda name: FakeDistribution(None))
    monkeypatch.setattr(install, "source_checkout", lambda: None)
    monkeypatch.setattr(install, "RELEASE_ORIGIN", install.Path("/nonexistent/_origin.json"))
    with pytest.raises(UsageError, match="--vagabond-spec .* or --use-action OWNER/REPO@COMMIT"):
        install.origin()


@pytest.mark.parametrize(
    ("url", "https"),
    [
        ("git@github.com:o/r.git", "https://github.com/o/r.git"),
        ("ssh://git@gitlab.com/o/r", "https://gitlab.com/o/r.git"),
        ("https://github.com/o/r", "https://github.com/o/r"),
        ("/srv/git/r.git", None),
        ("file:///srv/r", None),
        ("https://github.com/o/r x", None),
    ],
)
def test_https_remote(url, https):
    assert install.https_remote(url) == https


def test_every_timeout_has_its_variable_and_a_bad_one_is_said_not_used():
    import re
    import subprocess
    import sys

    from tests.conftest import REPO
    from vagabond import environment, timeouts

    names = {n for n, v in vars(timeouts).items() if n.isupper() and isinstance(v, (int, float))} - {"NON_KVM_COEF"}
    assert names == set(timeouts.DOCUMENTED), "a timeout no variable overrides"
    assert {f"VAGABOND_TIMEOUT_{n}" for n in names} <= set(environment.VARIABLES)
    scaled = set()
    for path in (REPO / "vagabond").rglob("*.py"):
        scaled |= set(re.findall(r"for_driver\(timeouts\.([A-Z_]+)", path.read_text()))
    assert scaled == set(timeouts.SCALED), "the reference's 'under emulation, 4x' must name what for_driver scales"
    code = "from vagabond import timeouts; print(timeouts.BOOT, timeouts.GUEST_COMMAND, timeouts.MALFORMED)"
    env = {"VAGABOND_TIMEOUT_BOOT": "900", "VAGABOND_TIMEOUT_GUEST_COMMAND": "soon", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "900.0 120 {'VAGABOND_TIMEOUT_GUEST_COMMAND': 'soon'}"
    timeouts.MALFORMED["VAGABOND_TIMEOUT_GUEST_COMMAND"] = "soon"
    try:
        (check,) = doctor.check_timeouts()
    finally:
        del timeouts.MALFORMED["VAGABOND_TIMEOUT_GUEST_COMMAND"]
    assert (
        not check.ok and not check.required and check.detail == "'soon' is not a number of seconds: the default holds"
    )
