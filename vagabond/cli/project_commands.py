"""Commands about the project: `init`, `list`, `render`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from vagabond import errors, ui
from vagabond.cli.common import (
    DriverChoice,
    JsonOption,
    _box_dirs,
    app,
)


@app.command("list")
def list_(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Only these boxes (each must load).", metavar="[BOX]...")
    ] = None,
    as_json: JsonOption = False,
    github_output: Annotated[
        bool,
        typer.Option(
            "--github-output",
            help="One box: print kind= (its base's) and synced= (how many synced "
            "folders it names) lines for $GITHUB_OUTPUT.",
        ),
    ] = False,
) -> None:
    """List the boxes: name, where it comes from, description and modes.

    The project's boxes (boxes/ at the project root, or --boxes-dir) come first and override a
    shipped box of the same name; the boxes shipped with vagabond are always there. A box file
    that does not load is listed with its error, and the others still are.

    With box names, only those (an unknown or broken one is an error, others' problems are not).

    Example: vagabond list --json | jq -r '.[].name'   # or: vagabond list centos7-selinux --json
    """
    from vagabond import github
    from vagabond.definition import boxfile

    rows = []
    entries = boxfile.scan(_box_dirs())
    if names:
        known = {e.name: e for e in entries}
        missing = [n for n in names if n not in known]
        if missing:
            boxfile.find_box(missing[0], _box_dirs())  # the one "no box named ..." answer, with its hint
        entries = [known[n] for n in names]
    for entry in entries:
        row: dict = {"name": entry.name, "origin": entry.origin, "path": str(entry.path), "overrides": entry.overrides}
        if entry.box is None:
            row["error"] = list(entry.problems)
        else:
            spec = entry.box.spec
            row |= {
                "description": spec.description,
                "modes": {k: v for k, v in spec.modes.model_dump().items() if v not in (None, False)},
                "base": spec.base.box_name,
                "base_kind": spec.base.kind,
                "synced_folders": [f.dest for f in spec.synced_folders],
            }
        rows.append(row)
    broken = [p for r in rows for p in r.get("error", [])]
    if github_output:
        if len(rows) != 1 or not names:
            raise errors.UsageError(
                "--github-output describes one box: name it", hint="vagabond list BOX --github-output"
            )
        if broken:
            raise errors.BoxDefinitionError(broken)
        (row,) = rows
        sys.stdout.write(github.outputs({"kind": row["base_kind"], "synced": len(row["synced_folders"])}))
        return
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=0)
        for r in rows:
            origin = r["origin"] + (f", overrides {r['overrides']}" if r["overrides"] else "")
            if "error" in r:
                ui.out.print(
                    f"{r['name']:<{width}}  [red]BROKEN[/] [dim]({escape(origin)}; see the error below)[/]", markup=True
                )
                continue
            modes = ", ".join(f"{k}={v if not isinstance(v, bool) else 'on'}" for k, v in r["modes"].items()) or "-"
            ui.out.print(
                f"{r['name']:<{width}}  {escape(r['description'])}  [dim]({escape(modes)}; {escape(origin)})[/]",
                markup=True,
            )
    if broken:  # every box is listed; the broken ones still make the exit code say so
        raise errors.BoxDefinitionError(broken)


@app.command("init")
def init_(
    names: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Shipped boxes to copy into the project (see 'vagabond list'); none: a commented starter box.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start a project here: box files in boxes/ and a starter playbook in playbooks/.

    Named boxes are copied from the ones shipped with vagabond, so the project can change them (a
    project box overrides the shipped box of the same name). Nothing is ever overwritten.

    Example: vagabond init debian12-selinux && vagabond up debian12-selinux
    """
    from vagabond.definition import project

    root = Path.cwd()
    written, kept = project.init(root, names or [])
    for path in written:
        ui.info(f"wrote {path.relative_to(root)}")
    for path in kept:
        ui.info(f"kept {path.relative_to(root)} (it exists already)")
    first = (names or [project.STARTER_BOX])[0]
    steps = [
        ("vagabond doctor", "is this host ready for VMs?"),
        (f"vagabond up {first}", "boot, provision, check its modes"),
        (f"vagabond run {first} -- CMD", "run the tests in it"),
        ("vagabond ci github -o .github/workflows/vagabond.yml", "the same in CI"),
    ]
    width = max(len(cmd) for cmd, _ in steps)
    ui.out.print("next:\n" + "\n".join(f"  {cmd:<{width}}  # {why}" for cmd, why in steps), markup=False)


@app.command("render")
def render_(
    box: Annotated[str, typer.Argument(help="Box name (a file boxes/<name>.yaml).")],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "-o",
            "--out",
            "--output",
            metavar="DIR",
            help="Directory to write the Vagrantfile and its vagabond-provision/ into (default: print the "
            "Vagrantfile).",
        ),
    ] = None,
    driver: Annotated[
        Optional[DriverChoice],
        typer.Option(
            "--driver",
            case_sensitive=False,
            help="Pin the libvirt driver into the file (default: the file decides on the host it runs on).",
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="The base box even when the box file names a prebuilt one (full provisioning)."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a Vagrantfile in DIR that vagabond did not render.")
    ] = False,
) -> None:
    """Write the box's Vagrantfile for plain `vagrant up`: the same VM as `vagabond up`.

    With -o DIR: DIR/Vagrantfile and DIR/vagabond-provision/ (the one playbook that both
    `vagrant provision` and `vagabond provision` run, the mode playbooks it needs, the mode checks).
    Paths are relative to DIR, so the files can be committed and used in any checkout, with no
    vagabond installed. Rendering again is safe: it says what changed.

    Example: vagabond render centos7-selinux -o . && vagrant up && vagrant ssh -c getenforce
    """
    from vagabond.catalog.catalogs import open_catalog
    from vagabond.definition import boxfile
    from vagabond.vm import render

    definition = boxfile.find_box(box, _box_dirs())
    options = render.RenderOptions(driver=driver.value if driver else None, fresh=fresh)
    spec = definition.spec.prebuilt
    if spec is not None and not fresh and not open_catalog(spec.catalog).vagrant_reads:
        ui.info(
            f"the prebuilt box {spec.name} is in an OCI registry, which plain `vagrant up` cannot read: the "
            f"Vagrantfile boots it once `vagabond pull {box}` has added it to Vagrant's box store, and the base "
            "box with the full playbooks until then"
        )
    if output is None:
        sys.stdout.write(render.render(definition, options, Path.cwd()))
        _needs_vagabond_note(definition, box, fresh)
        return
    if output.name == "Vagrantfile" and not output.is_dir():
        output = output.parent  # -o vm/Vagrantfile, as earlier versions took it
    changed = render.write(definition, options, output, force=force)
    _needs_vagabond_note(definition, box, fresh)
    if changed:
        ui.info(f"wrote {', '.join(changed)} in {output}")
    else:
        ui.info(f"{output}/Vagrantfile and {output}/vagabond-provision are up to date")


def _needs_vagabond_note(definition, box: str, fresh: bool) -> None:
    """One line when the rendered Vagrantfile cannot boot on a machine where vagabond never ran."""
    from vagabond.catalog.catalogs import open_catalog

    spec = definition.spec.prebuilt
    base = definition.spec.base
    prebuilt_for_vagrant = spec is not None and not fresh and open_catalog(spec.catalog).vagrant_reads
    if base.kind != "vagrant" and base.catalog is None and not prebuilt_for_vagrant:
        ui.info(
            f"note: the base box {base.box} is made by vagabond ({base.kind}), and no catalog of it is named: on "
            f"a machine where vagabond never ran, plain `vagrant up` needs `vagabond up {box}` once first (or "
            "publish the base box and give its base a catalog:, see the base boxes guide)"
        )
