"""A small project whose boxes exercise every part of the generated GitHub workflow."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO

EXTRA = {
    "centos7-selinux": "synced_folders:\n  - {src: ., dest: /src}\n",
    "debian12-selinux": (
        "synced_folders:\n  - {src: ., dest: /home/vagrant/project, exclude: [.vagabond]}\n"
        "prebuilt: {name: myorg/debian12-selinux, catalog: 'https://boxes.example.org/debian12-selinux/metadata.json'}\n"
    ),
}


def make(root: Path, *, makefile: bool = True) -> Path:
    """The project; with a Makefile whose test target the workflow runs (`make test`, detected)."""
    (root / "boxes").mkdir(parents=True, exist_ok=True)
    if makefile:
        (root / "Makefile").write_text("test:\n\t@echo the project's tests\n")
    for name, extra in EXTRA.items():
        (root / "boxes" / f"{name}.yaml").write_text((REPO / "boxes" / f"{name}.yaml").read_text() + extra)
    return root
