"""`python -m vagabond`."""

from vagabond.cli import run

run()
