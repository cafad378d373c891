"""Console entry point: `vagabond run` takes the fast path before the CLI framework is imported."""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "run":
        from vagabond.cli import quickrun  # light: no typer, pydantic or jinja2 (see quickrun's docstring)

        quickrun.main(sys.argv[2:])  # execs ssh, or returns when the full CLI should answer
    from vagabond.cli.app import app  # the whole CLI, only when the fast path did not answer

    app()
