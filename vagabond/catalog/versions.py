"""Box versions as Vagrant orders them (digits and dots; vagabond also uses them in paths and
keys), and Vagrant's version constraints ('>= 1.2, < 2', '~> 1.4')."""

from __future__ import annotations

import re

from vagabond.errors import UsageError

# Vagrant orders versions as numbers; vagabond also uses them in paths and keys.
VERSION = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")  # ASCII: \d would take any script's digits
# A Vagrant box name: 'name' or 'org/name'.
BOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise UsageError(
            f"version {version!r} is not one Vagrant can order", hint="use digits and dots, e.g. 1.2.0 or 20261127.1200"
        )
    return version


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in check_version(version).split("."))


_REQUIREMENT = re.compile(r"\s*(~>|>=|<=|!=|>|<|=)?\s*([0-9]+(?:\.[0-9]+)*)\s*")


def satisfies(version: str, constraint: str | None) -> bool:
    """Does ``version`` meet a Vagrant (RubyGems) constraint such as '>= 1.2, < 2' or '~> 1.4'
    (>= 1.4, < 2)? 1.0 and 1.0.0 are equal; None allows every version."""
    if constraint is None:
        return True
    have = version_key(version)
    for part in constraint.split(","):
        match = _REQUIREMENT.fullmatch(part)
        if match is None:
            raise ValueError(f"not a version constraint: {constraint!r}")
        op, want = match[1] or "=", tuple(int(x) for x in match[2].split("."))
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        if op == "~>":  # at least want, below want with its last segment dropped and the one before bumped
            top = want[:-1] if len(want) > 1 else want
            upper = top[:-1] + (top[-1] + 1,)
            span = max(len(have), len(upper))
            ok = a >= b and have + (0,) * (span - len(have)) < upper + (0,) * (span - len(upper))
        else:
            ok = {"=": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        if not ok:
            return False
    return True
