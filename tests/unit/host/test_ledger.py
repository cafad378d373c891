"""The record of what vagabond created: updates under a lock, and a corrupt file is never read as empty."""

from __future__ import annotations

import json

import pytest

from vagabond.errors import UnsafePath
from vagabond.host import ledger


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


@pytest.mark.parametrize(
    "garbage", ["{truncated", "[]", '{"workdirs": []}', '{"volumes": "x"}', "\x00\x01", "[" * 100000]
)
def test_a_corrupt_ledger_is_kept_aside_said_and_rebuilt(state, tmp_path, capsys, garbage):
    wd = tmp_path / ".vagabond" / "debian12"
    wd.mkdir(parents=True)
    (wd / "state.json").write_text(json.dumps({"prefix": "vagabond-debian12-0123abcd-"}))
    state.mkdir()
    (state / "ledger.json").write_text(garbage)
    data = ledger.read()
    assert data["workdirs"] == {"vagabond-debian12-0123abcd-": str(wd)}
    kept = list(state.glob("ledger.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == garbage
    assert "was not vagabond's ledger; kept it as ledger.json.corrupt-" in capsys.readouterr().err
    ledger.add_volumes(
        ["vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img"]
    )  # the next update keeps what was rebuilt
    assert json.loads((state / "ledger.json").read_text())["workdirs"] == {"vagabond-debian12-0123abcd-": str(wd)}


def test_updates_keep_every_record(state):
    ledger.add_workdir("vagabond-a-11111111-", ledger.Path("/p/a"))
    ledger.add_volumes(["vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img"])
    ledger.add_networks(["vagrant-libvirt"])
    ledger.add_warm(["vagabond-warm-a-11111111-default-20261206.qcow2"])
    data = ledger.read()
    assert data == {
        "workdirs": {"vagabond-a-11111111-": "/p/a"},
        "volumes": ["vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img"],
        "networks": ["vagrant-libvirt"],
        "swapfiles": [],
        "warm": ["vagabond-warm-a-11111111-default-20261206.qcow2"],
    }
    ledger.forget(warm=["vagabond-warm-a-11111111-default-20261206.qcow2"])
    assert ledger.read()["warm"] == []


def test_a_ledger_under_its_earlier_name_is_taken_over(state):
    state.mkdir()
    (state / "registry.json").write_text(json.dumps({"workdirs": {"vagabond-a-11111111-": "/p/a"}}))
    assert ledger.read()["workdirs"] == {"vagabond-a-11111111-": "/p/a"}
    assert sorted(p.name for p in state.iterdir()) == ["ledger.json", "ledger.lock"]


def test_a_link_under_the_earlier_name_is_not_followed(state, tmp_path):
    state.mkdir()
    elsewhere = tmp_path / "someone-elses.json"
    elsewhere.write_text(json.dumps({"workdirs": {"vagabond-x-22222222-": "/etc"}}))
    (state / "registry.json").symlink_to(elsewhere)
    assert ledger.read()["workdirs"] == {}
    assert (state / "registry.json").is_symlink() and not (state / "ledger.json").exists()


def test_a_link_at_the_ledgers_name_is_refused_not_followed(state, tmp_path):
    state.mkdir()
    elsewhere = tmp_path / "someone-elses.json"
    elsewhere.write_text(json.dumps({"workdirs": {"vagabond-x-22222222-": "/etc"}}))
    (state / "ledger.json").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="ledger.json"):
        ledger.read()
    with pytest.raises(UnsafePath, match="ledger.json"):
        ledger.add_workdir("vagabond-a-11111111-", ledger.Path("/p/a"))
    assert json.loads(elsewhere.read_text()) == {"workdirs": {"vagabond-x-22222222-": "/etc"}}
