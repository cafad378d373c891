"""vagabond build at its seams: what a failed build leaves (nothing: its VM destroyed, no half
image), and that it builds from the base box without changing its caller's options."""

from __future__ import annotations

import pytest

from tests.conftest import write_box
from vagabond import build
from vagabond.definition import boxfile
from vagabond.errors import CommandFailed
from vagabond.process import Result
from vagabond.vm import lifecycle
from vagabond.vm.workdir import Workdir


@pytest.fixture
def world(project, monkeypatch):
    write_box(project, "b", "description: x\nbase: {box: a/b}\n")
    box = boxfile.find_box("b", project / "boxes")
    seen: dict[str, list] = {"up": [], "destroy": [], "guest": []}
    monkeypatch.setattr(lifecycle, "up", lambda box, wd, opts: seen["up"].append(opts))
    monkeypatch.setattr(lifecycle, "destroy", lambda box, wd: seen["destroy"].append(wd.prefix) or [])
    return box, Workdir.for_box(box), seen


def test_a_build_that_fails_in_the_guest_destroys_its_vm_and_leaves_no_image(world, monkeypatch, tmp_path):
    box, wd, seen = world

    def guest(wd, machine, argv, **kwargs):
        seen["guest"].append(argv[-1])
        if argv[-1] == build.CLEAN_GUEST:  # the guest's cleanup fails
            raise CommandFailed.from_result(Result(["ssh", "default"], 1, "", "no space left on device", 0.1))
        return Result(["ssh"], 0, "", "", 0.1)

    monkeypatch.setattr(build.remote, "check", guest)
    opts = lifecycle.UpOptions()
    out = tmp_path / "dist"
    with pytest.raises(CommandFailed, match="no space left on device"):
        build.build(box, wd, opts, out=out, version="1.0.0")
    assert len(seen["guest"]) == 2 and seen["guest"][-1] == build.CLEAN_GUEST, "it stopped at the cleanup"
    assert seen["destroy"] == [wd.prefix], "the build's VM is destroyed when a step fails"
    assert not out.exists() or list(out.iterdir()) == [], "no half-written image or box"
    assert opts.prebuilt is True and seen["up"][0].prebuilt is False, "built from the base; the caller's options intact"


def test_a_build_whose_domain_has_no_disk_says_so_and_cleans_up(world, monkeypatch, tmp_path):
    box, wd, seen = world
    monkeypatch.setattr(build.remote, "check", lambda wd, machine, argv, **kw: Result(["ssh"], 0, "", "", 0.1))
    monkeypatch.setattr(build, "_wait_shut_off", lambda domain, timeout: None)
    monkeypatch.setattr(lifecycle, "halt", lambda box, wd: None)
    monkeypatch.setattr(build.libvirt, "domain_volumes", lambda domain: [])
    with pytest.raises(build.VagabondError, match=rf"domain {wd.domain('default')} has no disk to package"):
        build.build(box, wd, lifecycle.UpOptions(), out=tmp_path / "dist", version="1.0.0")
    assert seen["destroy"] == [wd.prefix]
