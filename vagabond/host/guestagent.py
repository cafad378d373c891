"""The QEMU guest agent of a running domain, through libvirt (`virsh qemu-agent-command`): whether
it answers, and a program run in the guest with its exit code. libvirt carries the requests, so
this works for a user in the libvirt group as for root; the agent's socket is libvirtd's own.

vagabond uses it for a VM restored from a warm image (vagabond.vm.resume): one from elsewhere gets
a new SSH key before its network comes back, and a guest with an agent gets the host's time as it
resumes, while its SSH connection opens, not over it."""

from __future__ import annotations

import base64
import json
import time
from xml.etree import ElementTree

from vagabond import timeouts
from vagabond.errors import WarmError
from vagabond.host import libvirt

CHANNEL = "org.qemu.guest_agent.0"
# The largest output of a guest program kept (the agent sends it base64 in one JSON answer).
OUTPUT_LIMIT = 4096


def _command(domain: str, execute: str, arguments: dict | None = None, *, wait: float = 5) -> dict | None:
    """One agent request; its "return" value, or None when the agent does not answer in ``wait``
    seconds (no agent in the guest, or not started yet)."""
    request = {"execute": execute} | ({"arguments": arguments} if arguments else {})
    result = libvirt.run("qemu-agent-command", domain, json.dumps(request), "--timeout", str(max(1, int(wait))))
    if not result.ok:
        return None
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        return None
    return answer.get("return") if isinstance(answer, dict) else None


def connected(domain: str) -> bool:
    """Whether the running domain has the agent's channel and a guest agent holds it open (libvirt
    says so in the live XML): no waiting on a guest that has none."""
    try:
        root = ElementTree.fromstring(libvirt.domain_xml(domain))
    except ElementTree.ParseError:
        return False
    return any(
        target.get("name") == CHANNEL and target.get("state") == "connected"
        for target in root.iterfind("devices/channel/target")
    )


def answers(domain: str, *, within: float) -> bool:
    """Whether the domain's guest agent answers a ping within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if _command(domain, "guest-ping", wait=1) is not None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def run(
    domain: str, path: str, args: list[str], *, input: str = "", timeout: float = timeouts.GUEST_COMMAND
) -> tuple[int, str]:
    """``path ARGS`` run by the guest agent as root in the guest, ``input`` on its stdin: its exit
    code and stderr. WarmError when the agent does not take it or it does not end in ``timeout``."""
    code, _, stderr = wait(domain, start(domain, path, args, input=input), path, timeout=timeout)
    return code, stderr


def start(domain: str, path: str, args: list[str], *, input: str = "") -> int:
    """``path ARGS`` started by the guest agent as root in the guest, ``input`` on its stdin; its pid
    in the guest, for `wait`. WarmError when the agent does not take it."""
    started = _command(
        domain,
        "guest-exec",
        {
            "path": path,
            "arg": args,
            "input-data": base64.b64encode(input.encode()).decode(),
            "capture-output": True,
        },
    )
    pid = started.get("pid") if isinstance(started, dict) else None
    if type(pid) is not int:  # a JSON true is no pid
        raise WarmError(f"{domain}'s guest agent did not run {path}")
    return pid


def wait(domain: str, pid: int, path: str, *, timeout: float = timeouts.GUEST_COMMAND) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of the program `start` gave ``pid`` (``path``, for the
    error). WarmError when it does not end in ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        status = _command(domain, "guest-exec-status", {"pid": pid})
        if isinstance(status, dict) and status.get("exited"):
            code = status.get("exitcode")
            out, err = (_decoded(status.get(name)) for name in ("out-data", "err-data"))
            return (code if type(code) is int else -1), out, err  # nor a JSON false an exit code
        if time.monotonic() > deadline:
            raise WarmError(f"{path} run by {domain}'s guest agent did not end within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _decoded(data: object) -> str:
    """An output the agent sent (base64), its first OUTPUT_LIMIT bytes; empty when it is not base64."""
    try:
        return base64.b64decode(str(data or ""))[:OUTPUT_LIMIT].decode(errors="replace")
    except ValueError:
        return ""
