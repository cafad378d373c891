"""Secrets that may travel in a child's environment but must never be printed: the one list of
them, and the one function every message passes through (logs, errors, the step summary)."""

from __future__ import annotations

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Make sure ``value`` never shows up in logs or error messages (it may still travel in env).
    A value shorter than 8 characters is no credential worth the name, and masking it would mangle
    every message that happens to contain it (a test's "test")."""
    if value and len(value) >= 8:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def forget_all() -> None:
    """For tests: a secret registered by one must not mask another's output."""
    _secrets.clear()
