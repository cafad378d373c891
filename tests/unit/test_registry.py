"""The record of what vagabond created: updates under a lock, and a corrupt file is never read as empty."""

from __future__ import annotations

import json

import pytest

from vagabond.host import registry


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state"


@pytest.mark.parametrize(
    "garbage", ["{truncated", "[]", '{"workdirs": []}', '{"volumes": "x"}', "\x00\x01", "[" * 100000]
)
def test_a_corrupt_registry_is_kept_aside_said_and_rebuilt(state, tmp_path, capsys, garbage):
    wd = tmp_path / ".vagabond" / "debian12"
    wd.mkdir(parents=True)
    (wd / "state.json").write_text(json.dumps({"prefix": "vagabond-debian12-0123abcd-"}))
    state.mkdir()
    (state / "registry.json").write_text(garbage)
    data = registry.read()
    assert data["workdirs"] == {"vagabond-debian12-0123abcd-": str(wd)}
    kept = list(state.glob("registry.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == garbage
    assert "was not a vagabond registry; kept it as registry.json.corrupt-" in capsys.readouterr().err
    registry.add_volumes(
        ["vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img"]
    )  # the next update keeps what was rebuilt
    assert json.loads((state / "registry.json").read_text())["workdirs"] == {"vagabond-debian12-0123abcd-": str(wd)}


def test_updates_keep_every_record(state):
    registry.add_workdir("vagabond-a-11111111-", registry.Path("/p/a"))
    registry.add_volumes(["vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img"])
    registry.add_networks(["vagrant-libvirt"])
    registry.add_warm(["vagabond-warm-a-11111111-default-20261206.qcow2"])
    data = registry.read()
    assert data == {
        "workdirs": {"vagabond-a-11111111-": "/p/a"},
        "volumes": ["vagabond-VAGRANTSLASH-debian12_vagrant_box_image_1_box.img"],
        "networks": ["vagrant-libvirt"],
        "swapfiles": [],
        "warm": ["vagabond-warm-a-11111111-default-20261206.qcow2"],
    }
    registry.forget(warm=["vagabond-warm-a-11111111-default-20261206.qcow2"])
    assert registry.read()["warm"] == []
