"""The `vagabond` command: the typer app on top of everything, and the fast path of `vagabond run`."""
