"""One recording stand-in for every program vagabond starts (process.run, hence process.check too):
answers and failures per program, matched on the start of its argv; every argv recorded in order.
In the spirit of tox's patch_execute: a seam test says what the programs answer and then reads
what vagabond asked of them.

    def test_x(processes):
        processes.answer("virsh", "list", stdout="vm1\\n")
        processes.fail("qemu-img", stderr="no space")
        ...
        assert processes.asked("virsh", "undefine") == [["virsh", "-c", "qemu:///system", "undefine", "vm1"]]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from vagabond import process


@dataclass
class _Rule:
    words: tuple[str, ...]  # the program, then words that must appear in order after it
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    times: int | None = None  # answers this many times, then the next rule that matches
    effect: Callable[[list[str]], None] | None = None  # what the program leaves behind (files it writes)

    def matches(self, argv: list[str]) -> bool:
        program, *rest = argv
        if os.path.basename(program) != self.words[0]:
            return False
        position = 0
        for word in self.words[1:]:
            try:
                position = rest.index(word, position) + 1
            except ValueError:
                return False
        return True


@dataclass
class Processes:
    calls: list[list[str]] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)  # what each call got on its stdin
    rules: list[_Rule] = field(default_factory=list)
    strict: bool = True  # a program no rule answers fails the test (nothing runs for real)

    def answer(
        self, *words: str, stdout: str = "", stderr: str = "", returncode: int = 0, times=None, effect=None
    ) -> None:
        """``words``: the program and words its argv holds in this order; the newest rule wins.
        ``effect(argv)`` runs when the rule answers: the files the real program would leave."""
        self.rules.insert(0, _Rule(words, returncode, stdout, stderr, times, effect))

    def fail(self, *words: str, stderr: str = "failed", returncode: int = 1, times=None) -> None:
        self.answer(*words, stderr=stderr, returncode=returncode, times=times)

    def asked(self, *words: str) -> list[list[str]]:
        """The argvs recorded that these words match, in order."""
        rule = _Rule(words)
        return [argv for argv in self.calls if rule.matches(argv)]

    def run(self, argv, **kwargs) -> process.Result:
        args = [str(a) for a in argv]
        self.calls.append(args)
        self.inputs.append(kwargs.get("input"))
        for rule in self.rules:
            if rule.times != 0 and rule.matches(args):
                if rule.times is not None:
                    rule.times -= 1
                if rule.effect is not None:
                    rule.effect(args)
                return process.Result(args, rule.returncode, rule.stdout, rule.stderr, 0.0)
        if self.strict:
            raise AssertionError(f"no answer for {args}: say what it answers with processes.answer(...)")
        return process.Result(args, 0, "", "", 0.0)


@pytest.fixture
def processes(monkeypatch) -> Processes:
    fake = Processes()
    monkeypatch.setattr(process, "run", fake.run)
    monkeypatch.setattr(process, "which", lambda name: f"/usr/bin/{name}")
    return fake
