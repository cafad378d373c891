"""`vagabond test`: the whole sequence in one command, as molecule's `test` runs it: up (provision
and the mode checks included), idempotence (the playbooks again: nothing may change), verify
(the box's `verify:` commands and the command line's, each its own result), logs on failure,
destroy (unless kept). Each phase is timed; the first failed phase decides the exit code; the
result can be written as JUnit XML for CI."""

from __future__ import annotations

import shlex
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vagabond import files, github, ui
from vagabond.definition.schema import Box
from vagabond.errors import TEST_PHASE_CODES, CommandFailed, Interrupted, PhaseFailed, UsageError, VagabondError
from vagabond.host import libvirt
from vagabond.vm import lifecycle, logs, playbooks, remote, warm, warmarchive
from vagabond.vm.workdir import Workdir

# Output kept per failed phase: enough to see why, small enough for a CI report.
OUTPUT_TAIL = 20000


@dataclass
class Phase:
    name: str  # up, idempotence, verify: <command>, destroy
    kind: str  # the key of TEST_PHASE_CODES
    status: str = "skipped"  # passed, failed, skipped
    seconds: float = 0.0
    message: str = ""
    output: str = ""


@dataclass
class Result:
    box: str
    phases: list[Phase] = field(default_factory=list)

    @property
    def failed(self) -> Phase | None:
        return next((p for p in self.phases if p.status == "failed"), None)

    def as_dict(self) -> dict:
        return {"box": self.box, "ok": self.failed is None, "phases": [p.__dict__ for p in self.phases]}


def verify_commands(box: Box, command: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(name, argv) of each verify command: the box's `verify:` lines (run by sh -c) and the command
    line's (run as given)."""
    found = [(line, ["sh", "-c", line]) for line in box.spec.verify]
    if command:
        found.append((shlex.join(command), list(command)))
    return found


def run(
    box: Box,
    wd: Workdir,
    opts: lifecycle.UpOptions,
    command: Sequence[str],
    *,
    keep: bool = False,
    idempotence: bool = True,
    verify_timeout: float = 3600,
    junit: Path | None = None,
    save_warm: bool = False,
    export: Path | None = None,
) -> Result:
    """The sequence, in a work directory of its own: a VM already there is someone's (a developer's
    `vagabond up`), and the destroy phase must never take it."""
    if wd.read_state() or libvirt.domains(wd.prefix):
        raise UsageError(
            f"box {box.name!r} already has a VM in {wd.path}: vagabond test brings up its own and destroys it",
            hint=f"use another work directory (--workdir DIR), or 'vagabond destroy {box.name}' first",
        )
    result = Result(box.name)
    try:
        _converge_and_verify(result, box, wd, opts, command, idempotence, verify_timeout)
        if result.failed is None:
            _offer_warm(box, wd, save_warm, export)
    finally:  # an interrupted test still destroys its VM (destroy runs as a cleanup section) and reports
        try:
            if keep:
                _phase(result, "destroy", "destroy", "skipped: --keep")
                ui.info(
                    f"the VM stays (--keep): vagabond run {box.name} -- ..., and vagabond destroy {box.name} when done"
                )
            else:
                _timed(_phase(result, "destroy", "destroy"), lambda: lifecycle.destroy(box, wd))
        finally:
            if junit is not None:
                write_junit(result, junit)
    return result


def _converge_and_verify(
    result: Result,
    box: Box,
    wd: Workdir,
    opts: lifecycle.UpOptions,
    command: Sequence[str],
    idempotence: bool,
    verify_timeout: float,
) -> None:
    up = _phase(result, "up", "up")
    if _timed(up, lambda: lifecycle.up(box, wd, opts)):
        if not idempotence:
            _phase(result, "idempotence", "idempotence", "skipped: --no-idempotence")
        elif not playbooks.provisions(box):
            _phase(result, "idempotence", "idempotence", "skipped: the box has no playbooks")
        else:
            _timed(
                _phase(result, "idempotence", "idempotence"),
                lambda: lifecycle.check_idempotence(box, wd, opts.extra_vars),
            )
        env = wd.read_state().get("env")
        for name, argv in verify_commands(box, command):
            _timed(
                _phase(result, f"verify: {name}", "verify"),
                lambda argv=argv: _verify(wd, box, argv, env, verify_timeout),
            )
        if result.failed is not None and opts.logs_dir is not None:
            logs.collect_on_failure(box, wd, opts.logs_dir)


def _offer_warm(box: Box, wd: Workdir, save: bool, export: Path | None = None) -> None:
    """After a green run: the VM as it stands saved as the next run's warm image (--save), and
    written to one file (--export, after a cold run only: a restored VM's image is there already),
    or a line that says how, when this run booted cold. A save or export that fails is said, and
    fails nothing."""
    state = wd.read_state()
    restored = "restored_at" in (state.get("warm") or {})
    if export is not None:
        if restored:
            ui.info(f"restored from a warm image: nothing to export to {export}")
            return
        try:
            warmarchive.check_exportable(box, state.get("extra_vars_sha256"), no_secrets=False)
            warm.save(box, wd)
            warmarchive.export(box, wd, export)
        except Interrupted:
            raise
        except (VagabondError, OSError) as exc:  # a full disk too: the run stays green
            said = exc.message if isinstance(exc, VagabondError) else f"{exc.filename or export}: {exc.strerror or exc}"
            ui.warning(f"no warm image exported: {said}", title=f"vagabond test {box.name}: export")
        return
    if save:
        try:
            warm.save(box, wd)
            ui.info(f"saved a warm image of {box.name}: the next 'vagabond test {box.name}' starts from it")
        except Interrupted:
            raise
        except VagabondError as exc:
            ui.warning(f"no warm image saved: {exc}", title=f"vagabond test {box.name}: save")
    elif not restored:
        ui.info(f"the next run can start from a warm image in seconds: vagabond test {box.name} --save")


def _phase(result: Result, name: str, kind: str, skipped: str = "") -> Phase:
    phase = Phase(name, kind, message=skipped)
    result.phases.append(phase)
    if skipped:
        ui.info(f"phase {name}: {skipped}")
    return phase


def _timed(phase: Phase, action) -> bool:
    ui.info(f"phase {phase.name} ...")
    started = time.monotonic()
    try:
        action()
        phase.status = "passed"
    except Interrupted:
        phase.status, phase.message = "failed", "interrupted"
        raise
    except VagabondError as exc:
        phase.status, phase.message = "failed", str(exc)
        phase.output = phase.output or getattr(exc, "stderr", "") or ""
    finally:
        phase.seconds = time.monotonic() - started
        github.record_step(f"phase {phase.name}", phase.seconds, phase.status == "passed")
        ui.info(
            f"phase {phase.name}: {phase.status} in {phase.seconds:.1f}s"
            + (f": {phase.message}" if phase.message else "")
        )
    return phase.status == "passed"


def _verify(wd: Workdir, box: Box, argv: list[str], env, timeout: float) -> None:
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        ui.out.print(line.rstrip("\n"), markup=False, highlight=False)

    try:
        outcome = remote.run(wd, box.primary(), argv, env=env, stream=sink, timeout=timeout)
    except CommandFailed as exc:  # timed out: the command was killed
        error = PhaseFailed(
            f"{shlex.join(argv)} {f'timed out after {timeout:g}s' if exc.timeout else 'failed'}",
            TEST_PHASE_CODES["verify"],
        )
        error.stderr = "".join(lines)[-OUTPUT_TAIL:]
        raise error from None
    if outcome.returncode != 0:
        error = PhaseFailed(f"{shlex.join(argv)} exited {outcome.returncode}", TEST_PHASE_CODES["verify"])
        error.stderr = "".join(lines)[-OUTPUT_TAIL:]
        raise error


def raise_for(result: Result) -> None:
    """The first failed phase as the command's error (its exit code names the phase)."""
    failed = result.failed
    if failed is None:
        return
    others = [p.name for p in result.phases if p.status == "failed" and p is not failed]
    also = f" (also failed: {', '.join(others)})" if others else ""
    raise PhaseFailed(
        f"vagabond test {result.box}: phase {failed.name} failed: {failed.message}{also}", TEST_PHASE_CODES[failed.kind]
    )


def write_junit(result: Result, path: Path) -> None:
    """JUnit XML as CI systems read it (Jenkins' junit-10 schema): one test case per phase and per
    verify command; a failure carries its message and the end of its output."""
    cases = result.phases
    suite = ET.Element(
        "testsuite",
        {
            "name": f"vagabond test {result.box}",
            "tests": str(len(cases)),
            "failures": str(sum(p.status == "failed" for p in cases)),
            "errors": "0",
            "skipped": str(sum(p.status == "skipped" for p in cases)),
            "time": f"{sum(p.seconds for p in cases):.3f}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    for phase in cases:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"vagabond.{result.box}", "name": _xml_text(phase.name), "time": f"{phase.seconds:.3f}"},
        )
        if phase.status == "failed":
            failure = ET.SubElement(case, "failure", {"message": _xml_text(phase.message)[:2000], "type": phase.kind})
            failure.text = _xml_text(phase.output or phase.message)
        elif phase.status == "skipped":
            ET.SubElement(case, "skipped", {"message": _xml_text(phase.message)})
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    files.make_dirs(path.parent)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _xml_text(text: str) -> str:
    """XML 1.0 cannot hold most control characters (a guest's output may have any): drop them."""
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r" or (" " <= ch and ch not in "\ufffe\uffff" and not "\ud800" <= ch <= "\udfff")
    )
